"""`customs-gateway tokens issue | revoke | list`: API tokens, directly in the store.

All work whether or not the gateway runs (SQLite waits for its writer; PostgreSQL is shared). A
running gateway refuses a token revoked here within a couple of seconds (it caches token records
for `gateway.TOKEN_CACHE_SECONDS`); `POST /v1/admin/tokens/{token_id}/revoke` takes effect at once.
Audit entries name who ran the command: `cli:<verb>:<os user>@<host>`."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import os
import socket
import sys
from typing import Any

from rich.table import Table

from ..core.clock import SystemClock
from ..core.encoding import format_ts
from ..service.auth import ROLES
from ..service.gateway import issue_token, revoke_token
from ..service.server import open_store
from ..startup.config import load_config
from ..store.base import TokenRecord
from .common import add_config_arg, print_json, result_console


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("tokens", help="API tokens")
    tsub = p.add_subparsers(dest="tokens_verb", metavar="VERB")
    issue = tsub.add_parser("issue", help="issue a token with one role; the token is shown once")
    add_config_arg(issue)
    issue.add_argument("--role", required=True, choices=ROLES)
    issue.add_argument("--label", default="", help="who or what the token is for")
    issue.add_argument(
        "--valid-days", type=int, metavar="N", help="the token expires N days from now (default: never, until revoked)"
    )
    issue.add_argument("--json", action="store_true", help="print JSON for scripts")
    issue.set_defaults(func=run_issue)
    revoke = tsub.add_parser("revoke", help="revoke a token from now on (audit entry token_revoked)")
    add_config_arg(revoke)
    revoke.add_argument("token_id", metavar="TOKEN_ID", help="the token's id (16 hex digits, as issued)")
    revoke.add_argument("--json", action="store_true", help="print JSON for scripts")
    revoke.set_defaults(func=run_revoke)
    lst = tsub.add_parser("list", help="every token issued, revoked ones too (never a secret)")
    add_config_arg(lst)
    lst.add_argument("--json", action="store_true", help="print JSON for scripts")
    lst.set_defaults(func=run_list)


def run_issue(args: argparse.Namespace) -> int:
    config = load_config(args.config)

    async def go() -> tuple[str, str, dt.datetime | None]:
        store = open_store(config)
        await store.open()
        try:
            tid, secret = await issue_token(
                store, SystemClock(), args.role, args.label, cli_actor("tokens-issue"), valid_days=args.valid_days
            )
            rec = await store.get_token(tid)
            return tid, secret, rec.expires_at if rec is not None else None
        finally:
            await store.close()

    tid, secret, expires = asyncio.run(go())
    until = format_ts(expires) if expires else None
    if args.json:
        print_json({"id": tid, "role": args.role, "token": secret, "expires_at": until})
    else:
        print(secret)
        ends = f"; it expires at {until}" if until else ""
        print(f"token {tid} ({args.role}) issued; it is shown only this once{ends}.", file=sys.stderr)
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    config = load_config(args.config)

    async def go() -> TokenRecord:
        store = open_store(config)
        await store.open()
        try:
            return await revoke_token(store, SystemClock(), args.token_id, cli_actor("tokens-revoke"))
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


def cli_actor(verb: str) -> str:
    """Who ran a CLI verb, for its audit entry: `cli:<verb>:<os user>@<host>`."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    return f"cli:{verb}:{user}@{socket.gethostname()}"


def run_list(args: argparse.Namespace) -> int:
    config = load_config(args.config)

    async def go() -> list[TokenRecord]:
        store = open_store(config)
        await store.open()
        try:
            return await store.list_tokens()
        finally:
            await store.close()

    tokens = asyncio.run(go())
    now = SystemClock().now()
    rows: list[dict[str, Any]] = [
        {
            "id": t.id,
            "role": t.role,
            "label": t.label,
            "created_at": format_ts(t.created_at),
            "revoked_at": format_ts(t.revoked_at) if t.revoked_at else None,
            "expires_at": format_ts(t.expires_at) if t.expires_at else None,
            "expired": t.expires_at is not None and t.expires_at <= now,
        }
        for t in tokens
    ]
    if args.json:
        print_json({"tokens": rows})
        return 0
    table = Table(title=f"{len(rows)} token(s)")
    for col in ("id", "role", "label", "created", "revoked", "expires"):
        table.add_column(col)
    for r in rows:
        expires = (r["expires_at"] or "never") + (" (expired)" if r["expired"] else "")
        table.add_row(r["id"], r["role"], r["label"], r["created_at"], r["revoked_at"] or "", expires)
    result_console().print(table)
    return 0
