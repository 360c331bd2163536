"""Where the time goes: top functions of a py-spy raw profile (collapsed stacks), as percentages.

`customs-gateway bench --py-spy DIR` records one raw profile per gateway process during the
throughput window; this prints, for each file, the share of samples per thread and the top
functions by inclusive time (the function or anything it calls) and by self time.

    python benchmarks/profile_summary.py DIR/US-CBP.txt DIR/CN-GACC.txt [--top 25] [--thread NAME]
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path


def _frame_name(frame: str) -> str:
    """`func (path/file.py:123)` -> `func (file.py)`: one entry per function, not per line."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0].rsplit('/', 1)[-1]})" if where else name


def summarize(path: Path, top: int, thread_filter: str | None) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        # With --subprocesses each stack starts with its process chain (the gateway, then for a
        # crypto worker the fork server and the worker): a worker's threads are named as such.
        processes = 0
        while frames and frames[0].startswith("process "):
            quotes = frames[0].count('"')
            frames, processes = frames[1:], processes + 1
            while quotes % 2 and frames:  # a command line with a ';' in it (the fork server's)
                quotes += frames[0].count('"')
                frames = frames[1:]
        if not frames:
            continue
        thread = frames[0].split(": ", 1)[-1] if frames[0].startswith("thread") else "?"
        thread = thread.rstrip("0123456789").rstrip("_") or thread
        if processes > 1:
            thread = f"worker {thread}"
        if thread_filter and thread != thread_filter:
            continue
        threads[thread] += n
        total += n
        names = [_frame_name(f) for f in frames[1:]] if frames[0].startswith("thread") else frames
        for name in set(names):
            inclusive[name] += n
        if names:
            self_time[names[-1]] += n
    out = [f"== {path.name}: {total} samples"]
    out.append("threads: " + ", ".join(f"{t} {100 * c / total:.1f}%" for t, c in threads.most_common()))
    out.append(f"-- top {top} inclusive")
    out += [f"{100 * c / total:6.1f}%  {name}" for name, c in inclusive.most_common(top)]
    out.append(f"-- top {top} self")
    out += [f"{100 * c / total:6.1f}%  {name}" for name, c in self_time.most_common(top)]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profiles", nargs="+", type=Path)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--thread", help="only this thread (e.g. MainThread, sqlite-write, crypto)")
    args = ap.parse_args()
    for p in args.profiles:
        print(summarize(p, args.top, args.thread))
    return 0


if __name__ == "__main__":
    sys.exit(main())
