"""Memory of a gateway holding a large queue for a stopped peer (default 1,000,000 messages).

A thin wrapper over `customs-gateway bench --only rss_queued`: the messages are queued through
the documented bulk path (`benchmark_pair.queue_bulk`), then the sender runs as a `serve`
process with its peer down and its VmRSS is read from /proc.

    python benchmarks/queued_rss.py [--queued 1000000] [--json]
"""

from __future__ import annotations

import sys

from customs_gateway.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--only", "rss_queued", *sys.argv[1:]]))
