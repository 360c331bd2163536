"""Write the JSON Schema of every message-body type to docs/schemas/<type>.json.

Run after changing `customs_gateway.core.schemas`; `--check` exits 1 instead of writing when a file
is missing or stale (tests/core/test_schemas.py makes the same check). Files for other types in the
directory (control messages written by other tools) are left alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from customs_gateway.core.schemas import all_schemas

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "docs" / "schemas"


def render(schema: dict[str, object]) -> str:
    """The file text for one schema: pretty-printed, sorted keys, UTF-8, final newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="report stale files instead of writing")
    parser.add_argument("--out", type=Path, default=SCHEMA_DIR, help=f"directory (default {SCHEMA_DIR})")
    args = parser.parse_args(argv)

    stale = []
    for msg_type, schema in all_schemas().items():
        path: Path = args.out / f"{msg_type}.json"
        text = render(schema)
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    for path in stale:
        print(f"{'stale' if args.check else 'wrote'} {path}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
