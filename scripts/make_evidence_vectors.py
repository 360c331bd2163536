"""Write tests/vectors/evidence.jsonl: a valid evidence file for one message (DESIGN §10), and
evidence-disposed.jsonl: the same message's file made after its sender disposed of it (§12).

Built by `tests/core/evidence_builder.py` from fixed test-only seeds and fixed times, so the file
is the same on every run (Ed25519 signatures are deterministic); `tests/core/test_evidence.py`
checks the file equals what the builder makes and mutates it byte by byte.

Usage: .venv/bin/python scripts/make_evidence_vectors.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.core.evidence_builder import build  # noqa: E402


def main() -> int:
    for name, disposed in (("evidence.jsonl", False), ("evidence-disposed.jsonl", True)):
        out = ROOT / "tests" / "vectors" / name
        out.write_bytes(build(disposed=disposed).raw())
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
