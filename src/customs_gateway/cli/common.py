"""What every CLI verb shares: the config argument, the key passphrase, and output to people or scripts.

Messages for people go to stderr (rich); machine-readable results go to stdout as JSON, so
`customs-gateway … --json | jq` always sees clean JSON.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from functools import cache
from pathlib import Path
from typing import Any, Final

from rich.console import Console

from ..core.errors import ConfigError, KeyFileError
from ..startup.config import PASSPHRASE_ENV, Config, load_config

CONFIG_ENV: Final = "CUSTOMS_GATEWAY_CONFIG"
DEFAULT_CONFIG: Final = "gateway.toml"


#: Variables with our prefix that name CLI inputs, not configuration keys.
def add_config_arg(parser: argparse.ArgumentParser) -> None:
    """`--config PATH` (default: $CUSTOMS_GATEWAY_CONFIG, else gateway.toml)."""
    parser.add_argument(
        "--config",
        default=os.environ.get(CONFIG_ENV, DEFAULT_CONFIG),
        metavar="PATH",
        help=f"configuration file (default: ${CONFIG_ENV} or {DEFAULT_CONFIG})",
    )


def add_passphrase_arg(parser: argparse.ArgumentParser) -> None:
    """`--passphrase-file PATH`, the non-interactive alternative to the environment or a prompt."""
    parser.add_argument(
        "--passphrase-file",
        metavar="PATH",
        help=f"file holding the key passphrase (else ${PASSPHRASE_ENV}, else a prompt)",
    )


def load_cli_config(args: argparse.Namespace) -> Config:
    """The configuration named by `--config`, with environment overrides (config.RESERVED_ENV, the
    CLI's own variables, are never read as configuration keys)."""
    return load_config(args.config)


def get_passphrase(args: argparse.Namespace, *, confirm: bool = False) -> bytes:
    """The key passphrase: $CUSTOMS_GATEWAY_PASSPHRASE, else `--passphrase-file`, else a prompt.

    The prompt never echoes; with `confirm` it asks twice. Raises KeyFileError for an empty or
    mismatched passphrase; the passphrase itself never appears in a message.
    """
    env = os.environ.get(PASSPHRASE_ENV)
    if env:
        return env.encode("utf-8")
    path = getattr(args, "passphrase_file", None)
    if path:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise ConfigError(f"passphrase file {path} cannot be read: {e.strerror}", field="passphrase-file") from e
        phrase = data.removesuffix(b"\n").removesuffix(b"\r")
    else:
        if not sys.stdin.isatty():
            raise ConfigError(
                f"no terminal to ask for the key passphrase on: set ${PASSPHRASE_ENV} or pass --passphrase-file",
                field="passphrase",
                code="config.passphrase_missing",
            )
        phrase = getpass.getpass("Key passphrase: ").encode("utf-8")
        if confirm and getpass.getpass("Repeat the passphrase: ").encode("utf-8") != phrase:
            raise KeyFileError("the two passphrases differ", code="keyfile.passphrase_mismatch", field="passphrase")
    if not phrase:
        raise KeyFileError("the passphrase is empty", code="keyfile.passphrase_empty", field="passphrase")
    return phrase


_PIPED_WIDTH: Final = 200  # rich assumes 80 columns when not on a terminal; tables need more


def _console(*, stderr: bool) -> Console:
    probe = Console(stderr=stderr)
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=None if probe.is_terminal else _PIPED_WIDTH)


@cache
def console() -> Console:
    """A rich console on stderr, for messages to people (stdout stays clean for results)."""
    return _console(stderr=True)


@cache
def result_console() -> Console:
    """A rich console on stdout for results meant for people (tables)."""
    return _console(stderr=False)


def print_json(obj: Any) -> None:
    """One JSON document on stdout (UTF-8, indented, keys in insertion order)."""
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()
