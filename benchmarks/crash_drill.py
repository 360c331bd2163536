"""Crash drill, long form: two gateway processes, SIGKILLed at random moments under steady load.

The same drill as tests/e2e/test_crash_drill.py (the engine is tests/e2e/drill.py), with the
number of kills, the timing and the seed on the command line. At the end it checks that every
message that got a 202 is in the peer inbox exactly once and in order, that every receipt
verifies, that nothing else arrived, and that both audit logs verify (live against their signed
checkpoints, then offline via `audit export` + `audit verify`). Prints the counts; exits 0 only
if every check held.

    python benchmarks/crash_drill.py [--kills 50] [--seed N] [--min-gap 0.5] [--max-gap 3]
                                     [--max-down 1.5] [--interval 0.01] [--keep DIR] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.e2e.drill import CrashDrillConfig, run_crash_drill

    defaults = CrashDrillConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--kills", type=int, default=50, help="SIGKILLs in total (default 50)")
    p.add_argument("--seed", type=int, default=int(time.time()), help="RNG seed of the kill schedule (default: now)")
    p.add_argument("--min-gap", type=float, default=0.5, help="least seconds of traffic between kills")
    p.add_argument("--max-gap", type=float, default=3.0, help="most seconds of traffic between kills")
    p.add_argument("--max-down", type=float, default=1.5, help="most seconds a killed gateway stays down")
    p.add_argument("--interval", type=float, default=0.01, help="the back-end's pause between submissions")
    p.add_argument("--drain-timeout", type=float, default=defaults.drain_timeout * 2)
    p.add_argument("--keep", type=Path, help="keep the gateway homes and logs in this (new) directory")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)

    cfg = CrashDrillConfig(
        seed=args.seed,
        kills=args.kills,
        min_gap=args.min_gap,
        max_gap=args.max_gap,
        max_down=args.max_down,
        interval=args.interval,
        drain_timeout=args.drain_timeout,
    )
    root = args.keep or Path(tempfile.mkdtemp(prefix="crash-drill-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        rep = run_crash_drill(root, cfg, progress=lambda line: print(line, file=sys.stderr, flush=True))
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        d = dataclasses.asdict(rep)
        d["ok"] = rep.ok
        print(json.dumps(d, indent=2, default=str))
    else:
        print("\n".join(rep.lines()))
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
