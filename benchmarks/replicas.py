"""Throughput with 1, 2 and 3 US-CBP replicas on PostgreSQL, beside one process on SQLite.

Each row is a fresh cluster of real `customs-gateway serve` processes (the failover drill's
`ReplicaCluster`: replicas behind loopback round-robin TCP balancers for the local and the peer
API, CN-GACC one process on SQLite). N back-end clients submit as fast as answers come for a fixed
time; the figure is messages delivered end to end (in CN's inbox, receipt stored at US) per second,
from the first submission to the last delivery. The SQLite row has no balancer in front.

    python benchmarks/replicas.py [--clients 8] [--seconds 10] [--replicas 1,2,3] [--no-sqlite] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Row:
    store: str
    replicas: int
    clients: int
    seconds: float
    accepted: int
    delivered: int
    submit_per_s: float
    delivered_per_s: float
    drain_s: float
    refused: int  # not accepted (non-202, unresolved) or accepted and then refused/expired at delivery


def run_one(replicas: int, clients: int, seconds: float) -> Row:
    from tests.e2e.drill import CN, US, Submitter, wait_until
    from tests.postgres.test_failover_drill import ReplicaCluster

    root = Path(tempfile.mkdtemp(prefix=f"replicas-{replicas}-"))
    # Checkpoints at their usual pace: the figure is about messages, not the log's signer.
    cluster = ReplicaCluster.prepare(root, replicas, overrides={"audit": {"checkpoint_every_seconds": 10.0}})
    subs = []
    try:
        cluster.start()
        token = cluster.pair.tokens[US]["agency"]
        subs = [Submitter(cluster.url, token, to=CN, interval=0.0, prefix=f"B{replicas}-{i}") for i in range(clients)]
        t0 = time.monotonic()
        for s in subs:
            s.start()
        time.sleep(seconds)
        for s in subs:
            s.halt()
        t1 = time.monotonic()
        ids = [a.id for s in subs for a in s.accepted]
        # Drained: nothing queued or in flight. A message the peer refused counts as not delivered.
        wait_until("the outbox to drain", lambda: cluster.pair.queue_depth(US) == 0, 600, every=0.2)
        t2 = time.monotonic()
        statuses = Counter(cluster.pair.call(US, "GET", f"/v1/messages/{i}")[1]["status"] for i in ids)
    finally:
        for s in subs:
            if s.is_alive():
                s.halt()
        cluster.stop()
        cluster.drop()
        shutil.rmtree(root, ignore_errors=True)
    return Row(
        store="postgres" if replicas else "sqlite",
        replicas=max(replicas, 1),
        clients=clients,
        seconds=round(t1 - t0, 2),
        accepted=len(ids),
        delivered=statuses["delivered"],
        submit_per_s=round(len(ids) / (t1 - t0), 1),
        delivered_per_s=round(statuses["delivered"] / (t2 - t0), 1),
        drain_s=round(t2 - t1, 2),
        refused=sum(len(s.refused) + len(s.unresolved) for s in subs) + statuses["refused"] + statuses["expired"],
    )


def main(argv: list[str] | None = None) -> int:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--clients", type=int, default=8, help="concurrent back-end clients (default 8)")
    p.add_argument("--seconds", type=float, default=10.0, help="submission time per row (default 10)")
    p.add_argument("--replicas", default="1,2,3", help="PostgreSQL replica counts (default 1,2,3)")
    p.add_argument("--no-sqlite", action="store_true", help="skip the single-process SQLite row")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = p.parse_args(argv)
    counts = ([] if args.no_sqlite else [0]) + [int(x) for x in args.replicas.split(",") if x]
    rows = []
    for n in counts:
        print(f"running {'sqlite' if n == 0 else f'{n} postgres replica(s)'} ...", file=sys.stderr, flush=True)
        rows.append(run_one(n, args.clients, args.seconds))
    load = os.getloadavg()
    if args.json:
        print(json.dumps({"loadavg": load, "cpus": os.cpu_count(), "rows": [asdict(r) for r in rows]}, indent=2))
        return 0
    print(f"{args.clients} clients, {args.seconds:g} s each; {os.cpu_count()} CPUs, load average {load[0]:.2f}")
    columns = ("accepted", "submit/s", "delivered/s", "drain s", "refused")
    head = f"{'store':<9} {'replicas':>8} " + " ".join(f"{c:>{max(len(c), 8)}}" for c in columns)
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r.store:<9} {r.replicas:>8} {r.accepted:>8} {r.submit_per_s:>8.1f} {r.delivered_per_s:>11.1f}"
            f" {r.drain_s:>8.1f} {r.refused:>8}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
