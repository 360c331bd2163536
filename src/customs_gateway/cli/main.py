"""Entry point `customs-gateway`: builds the argument parser from each verb module and dispatches.

Exit codes: 0 success, 1 a check failed (verify, demo), 2 usage or configuration error,
3 a refusal from the gateway or a key file that cannot be opened.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ..core.errors import ConfigError, GatewayError

# Each module defines `register(subparsers) -> None`; its parsers set `func(args) -> int`.
VERB_MODULES = (
    "customs_gateway.cli.init_cmd",
    "customs_gateway.cli.keys_cmd",
    "customs_gateway.cli.tokens_cmd",
    "customs_gateway.cli.serve_cmd",
    "customs_gateway.cli.client_cmd",
    "customs_gateway.cli.demo_cmd",
    "customs_gateway.cli.audit_cmd",
    "customs_gateway.cli.bench_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="customs-gateway",
        description="Secure bilateral message gateway between two customs administrations.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name in VERB_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue  # verb not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code: int = args.func(args)
    except ConfigError as e:
        where = f" ({e.field})" if e.field else ""
        print(f"customs-gateway: configuration error{where}: {e.detail}", file=sys.stderr)
        return 2
    except GatewayError as e:
        print(f"customs-gateway: {e.code}: {e.detail}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
