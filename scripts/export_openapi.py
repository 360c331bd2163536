"""Write the gateway's OpenAPI 3.1 document to docs/api/openapi.json.

Run after changing a route, a handler's answer or a message schema; `--check` exits 1 instead of
writing when the file is missing or stale (tests/gateway/test_openapi.py makes the same check).
The file is the same document the gateway serves at `GET /openapi.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from customs_gateway.http.local import openapi_document

OPENAPI_FILE = Path(__file__).resolve().parent.parent / "docs" / "api" / "openapi.json"


def render(document: dict[str, Any]) -> str:
    """The file text: pretty-printed in the document's own key order, UTF-8, final newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="report a stale file instead of writing")
    parser.add_argument("--out", type=Path, default=OPENAPI_FILE, help=f"file to write (default {OPENAPI_FILE})")
    args = parser.parse_args(argv)

    path: Path = args.out
    text = render(openapi_document())
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return 0
    if args.check:
        print(f"stale {path}: run scripts/export_openapi.py")
        return 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
