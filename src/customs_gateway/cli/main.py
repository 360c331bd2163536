"""Entry point `customs-gateway`: builds the argument parser from each verb module and dispatches.

Exit codes: 0 success, 1 a check failed (verify, demo), 2 usage or configuration error (also:
no terminal to ask for a passphrase), 3 a refusal from the gateway or a key file that cannot be
opened, 4 the system refused (a port already in use, a file that cannot be written).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
from collections.abc import Sequence

from .. import __version__
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
    "customs_gateway.cli.recover_cmd",
    "customs_gateway.cli.retention_cmd",
    "customs_gateway.cli.bench_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="customs-gateway",
        description="Secure bilateral message gateway between two customs administrations.",
    )
    parser.add_argument("--version", action="version", version=f"customs-gateway {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name in VERB_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue  # verb not built yet
            raise
        module.register(sub)
    _consistent_metavars(parser)
    return parser


#: One placeholder per kind of value, whatever module added the option.
_METAVARS = {
    "--config": "PATH",
    "--token-file": "PATH",
    "--passphrase-file": "PATH",
    "--new-passphrase-file": "PATH",
    "--out": "FILE",
    "--limit": "N",
    "--wait": "SECONDS",
    "--seconds": "SECONDS",
    "--local-port": "PORT",
    "--peer-port": "PORT",
    "--peer-url": "URL",
    "--url": "URL",
    "--amqp-url": "URL",
    "--peer-identity": "ID",
    "--identity": "ID",
    "--expires-at": "TIME",
    "--since": "TIME",
}


def _consistent_metavars(parser: argparse.ArgumentParser) -> None:
    """Every option that takes a value shows the same placeholder everywhere (`--config PATH`,
    `--limit N`), not argparse's upper-cased destination."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _consistent_metavars(child)
            continue
        if not action.option_strings or action.nargs == 0:
            continue
        name = max(action.option_strings, key=len)
        if name in _METAVARS:
            action.metavar = _METAVARS[name]
        elif action.metavar is None and action.type in (int, float):
            action.metavar = "N"


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
        where = f" [{e.field}]" if e.field else ""  # as the client prints an API problem's field
        print(f"customs-gateway: {e.code}{where}: {e.detail}", file=sys.stderr)
        return 3
    except EOFError:
        print(
            "customs-gateway: error: no terminal to ask for the passphrase on: set "
            "CUSTOMS_GATEWAY_PASSPHRASE or pass --passphrase-file",
            file=sys.stderr,
        )
        return 2
    except OSError as e:
        print(f"customs-gateway: error: {_os_error(e)}", file=sys.stderr)
        return 4
    except KeyboardInterrupt:
        return 130
    return code


def _os_error(e: OSError) -> str:
    if e.errno == errno.EADDRINUSE:
        return f"cannot listen: {e.strerror or 'address already in use'} (is another gateway running on that port?)"
    where = f" {e.filename}" if e.filename else ""
    return f"{e.strerror or e}{':' if where else ''}{where}"


if __name__ == "__main__":
    sys.exit(main())
