"""`customs-gateway tokens issue`: create an API token directly in the store (bootstrap, offline)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from ..auth import ROLES
from ..config import load_config
from ..core.clock import SystemClock
from ..gateway import issue_token
from ..server import open_store
from .common import add_config_arg, print_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("tokens", help="API tokens")
    tsub = p.add_subparsers(dest="tokens_verb", metavar="VERB")
    issue = tsub.add_parser("issue", help="issue a token with one role; the token is shown once")
    add_config_arg(issue)
    issue.add_argument("--role", required=True, choices=ROLES)
    issue.add_argument("--label", default="", help="who or what the token is for")
    issue.add_argument("--json", action="store_true", help="print JSON for scripts")
    issue.set_defaults(func=run_issue)


def run_issue(args: argparse.Namespace) -> int:
    config = load_config(args.config)

    async def go() -> tuple[str, str]:
        store = open_store(config)
        await store.open()
        try:
            return await issue_token(store, SystemClock(), args.role, args.label, "cli:tokens-issue")
        finally:
            await store.close()

    tid, secret = asyncio.run(go())
    if args.json:
        print_json({"id": tid, "role": args.role, "token": secret})
    else:
        print(secret)
        print(f"token {tid} ({args.role}) issued; it is shown only this once.", file=sys.stderr)
    return 0
