"""Two real gateways end to end: throughput, latency and memory under load, beside the crypto ceiling.

A thin wrapper over `customs-gateway bench --only ceiling,gateway,latency,ratio,rss`; every
other option of `bench` passes through (e.g. `--seconds 30 --clients 64 --rate 300 --in-process
--py-spy prof/ --json`).

    python benchmarks/end_to_end.py [bench options]
"""

from __future__ import annotations

import sys

from customs_gateway.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--only", "ceiling,gateway,latency,ratio,rss", *sys.argv[1:]]))
