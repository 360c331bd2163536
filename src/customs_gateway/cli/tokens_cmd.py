"""`customs-gateway tokens issue | revoke`: create or revoke an API token directly in the store.

Both work whether or not the gateway runs (SQLite waits for its writer; PostgreSQL is shared). A
running gateway refuses a token revoked here within a couple of seconds (it caches token records
for `gateway.TOKEN_CACHE_SECONDS`); `POST /v1/admin/tokens/{token_id}/revoke` takes effect at once."""

from __future__ import annotations

import argparse
import asyncio
import sys

from ..auth import ROLES
from ..config import load_config
from ..core.clock import SystemClock
from ..core.encoding import format_ts
from ..gateway import issue_token, revoke_token
from ..server import open_store
from ..store.base import TokenRecord
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
    revoke = tsub.add_parser("revoke", help="revoke a token from now on (audit entry token_revoked)")
    add_config_arg(revoke)
    revoke.add_argument("token_id", metavar="TOKEN_ID", help="the token's id (16 hex digits, as issued)")
    revoke.add_argument("--json", action="store_true", help="print JSON for scripts")
    revoke.set_defaults(func=run_revoke)


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


def run_revoke(args: argparse.Namespace) -> int:
    config = load_config(args.config)

    async def go() -> TokenRecord:
        store = open_store(config)
        await store.open()
        try:
            return await revoke_token(store, SystemClock(), args.token_id, "cli:tokens-revoke")
        finally:
            await store.close()

    rec = asyncio.run(go())
    assert rec.revoked_at is not None
    if args.json:
        print_json({"id": rec.id, "role": rec.role, "label": rec.label, "revoked_at": format_ts(rec.revoked_at)})
    else:
        label = f", {rec.label}" if rec.label else ""
        print(f"token {rec.id} ({rec.role}{label}) revoked at {format_ts(rec.revoked_at)}")
    return 0
