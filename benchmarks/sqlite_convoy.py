"""What the GIL costs a SQLite writer thread: the same commit groups in a thread beside a busy
thread, and in a process of their own.

    python benchmarks/sqlite_convoy.py [--groups 300]

Each group is one transaction: 6 inserts of a 4 KB document, 6 updates of earlier rows, 12
history rows, `synchronous=FULL` in WAL mode, as the gateway's writer does per commit. A second
thread of this process stays busy with Python for `duty` of every 2 ms and sleeps the rest (an
event loop at that load). Compare the lines of one run: this machine's speed drifts between runs
(docs/performance.md, session 12).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sqlite3
import tempfile
import threading
import time
from multiprocessing.queues import Queue
from pathlib import Path


def groups(path: Path, n: int) -> tuple[float, float]:
    """Run `n` commit groups on a fresh connection: (wall seconds, this thread's CPU seconds)."""
    c = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=FULL")
    c.execute("PRAGMA secure_delete=ON")
    c.execute("CREATE TABLE IF NOT EXISTS m(id INTEGER PRIMARY KEY, status TEXT, doc BLOB)")
    c.execute("CREATE TABLE IF NOT EXISTS h(mid INTEGER, at TEXT, s TEXT)")
    doc = os.urandom(4100)
    t0, cpu0, k = time.perf_counter(), time.thread_time(), 0
    for _ in range(n):
        c.execute("BEGIN IMMEDIATE")
        c.executemany("INSERT INTO m VALUES (?,?,?)", [(k + i, "queued", doc) for i in range(6)])
        c.executemany("INSERT INTO h VALUES (?,?,?)", [(k + i, "t", "queued") for i in range(6)])
        for i in range(6):
            c.execute("UPDATE m SET status='delivered' WHERE id=?", (k + i - 6,))
            c.execute("INSERT INTO h VALUES (?,?,?)", (k + i, "t", "delivered"))
        c.execute("COMMIT")
        k += 6
    c.close()
    return time.perf_counter() - t0, time.thread_time() - cpu0


def _child(path: Path, n: int, out: Queue[tuple[float, float]]) -> None:
    out.put(groups(path, n))


def _busy(stop: threading.Event, duty: float) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        while time.perf_counter() - t < 0.002 * duty:
            sum(range(100))
        time.sleep(0.002 * (1 - duty))


def run(mode: str, duty: float, n: int, directory: Path) -> None:
    path = directory / f"{mode}-{duty}.db"
    stop = threading.Event()
    busy = threading.Thread(target=_busy, args=(stop, duty))
    busy.start()
    try:
        if mode == "thread":
            result: list[tuple[float, float]] = []
            t = threading.Thread(target=lambda: result.append(groups(path, n)))
            t.start()
            t.join()
            wall, cpu = result[0]
        else:
            ctx = multiprocessing.get_context("fork")
            q: Queue[tuple[float, float]] = ctx.Queue()
            p = ctx.Process(target=_child, args=(path, n, q))
            p.start()
            wall, cpu = q.get()
            p.join()
    finally:
        stop.set()
        busy.join()
    print(f"{mode:7s} busy {duty:.0%}: wall {1000 * wall / n:.2f} ms a group, writer CPU {1000 * cpu / n:.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        for duty in (0.0, 0.6, 0.9):
            for mode in ("thread", "process"):
                run(mode, duty, args.groups, Path(d))


if __name__ == "__main__":
    main()
