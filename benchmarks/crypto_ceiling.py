"""The cryptographic ceiling: all crypto of one message end to end, in a tight loop, messages/s.

One message = document sign, HPKE seal, envelope sign, envelope verify, HPKE open, document
verify, receipt sign, receipt verify — what every message costs the two gateways together,
with no I/O at all. The gateway's throughput is judged against this figure. The loop itself is
`customs_gateway.bench.benchmark.crypto_ceiling`, the row `customs-gateway bench` reports.

    python benchmarks/crypto_ceiling.py [--seconds 3] [--suite hybrid|x25519] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys

from customs_gateway.bench.benchmark import crypto_ceiling


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--suite", choices=("hybrid", "x25519"), default="hybrid")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    res = crypto_ceiling(args.seconds, args.suite)
    if args.json:
        print(json.dumps(res))
    else:
        rate, n, secs = res["messages_per_second"], res["messages"], res["seconds"]
        print(f"crypto ceiling ({args.suite}): {rate:.0f} messages/s ({n:.0f} in {secs:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
