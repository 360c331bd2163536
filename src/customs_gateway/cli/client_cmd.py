"""`send`, `inbox`, `status`: a small client of the local API for people and scripts."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ..startup.config import load_config
from .common import print_json

TOKEN_ENV = "CUSTOMS_GATEWAY_TOKEN"  # noqa: S105 - the variable name, not a token


class ClientError(Exception):
    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(problem.get("detail", ""))
        self.status = status
        self.problem = problem


def base_url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    if args.config and Path(args.config).exists():
        cfg = load_config(args.config)
        return f"http://{cfg.local_api.host}:{cfg.local_api.port}"
    return "http://127.0.0.1:8080"


def bearer_token(args: argparse.Namespace) -> str:
    if args.token_file:
        return Path(args.token_file).read_text(encoding="utf-8").strip()
    tok = os.environ.get(TOKEN_ENV)
    if not tok:
        raise SystemExit(f"customs-gateway: set {TOKEN_ENV} or pass --token-file")
    return tok


def call(
    base: str,
    token: str,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60,
) -> Any:
    """One local API call; the answer parsed as JSON. Raises ClientError with the problem."""
    return json.loads(fetch(base, token, method, path, body, headers, timeout) or b"null")


def fetch(
    base: str,
    token: str,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60,
) -> bytes:
    """One local API call; the answer's bytes. Raises ClientError with the problem."""
    data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
    req = urllib.request.Request(base + path, data=data, method=method)  # noqa: S310 - URL from operator config
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            return bytes(resp.read())
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            problem = json.loads(raw)
        except ValueError:
            problem = {"detail": raw.decode(errors="replace")[:500]}
        raise ClientError(e.code, problem) from e
    except urllib.error.URLError as e:  # no answer at all: say where, not "<urlopen error …>"
        reason = e.reason.strerror if isinstance(e.reason, OSError) and e.reason.strerror else e.reason
        raise OSError(f"cannot reach the gateway's local API at {base}: {reason}") from e


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="local API base URL (default: from --config, else http://127.0.0.1:8080)")
    p.add_argument(
        "--config",
        default=os.environ.get("CUSTOMS_GATEWAY_CONFIG"),
        help="gateway config to read the URL from",
    )
    p.add_argument("--token-file", help=f"file with the bearer token (default: env {TOKEN_ENV})")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = sub.add_parser("send", help="submit a message through the local API")
    _common(s)
    s.add_argument(
        "--type",
        required=True,
        help="seizure-share | port-visit-invitation | port-visit-reply | seminar-notice",
    )
    s.add_argument("--to", required=True, help="peer identity, e.g. CN-GACC")
    s.add_argument("--body", required=True, help="JSON file with the message body ('-' for stdin)")
    s.add_argument("--idempotency-key", help="retry-safe key; the same key and body return the same message")
    s.add_argument("--expires-at", help="RFC 3339 UTC time after which an undelivered message expires")
    s.add_argument("--wait", type=float, default=0, help="seconds to wait for delivery before returning")
    s.set_defaults(func=run_send)

    i = sub.add_parser("inbox", help="read verified messages received from the peer")
    _common(i)
    i.add_argument("--after", type=int, default=0, help="cursor: only messages after it")
    i.add_argument("--wait", type=float, default=0, help="long-poll up to this many seconds")
    i.add_argument("--limit", type=int, default=100)
    i.add_argument("--ack", choices=("processed", "rejected"), help="acknowledge every message shown")
    i.set_defaults(func=run_inbox)

    st = sub.add_parser("status", help="status and history of one submitted message")
    _common(st)
    st.add_argument("id")
    st.set_defaults(func=run_status)


def _fail(e: ClientError) -> int:
    p = e.problem
    where = f" [{p['field']}]" if p.get("field") else ""
    print(f"customs-gateway: HTTP {e.status} {p.get('code', '')}{where}: {p.get('detail', '')}", file=sys.stderr)
    return 3


def run_send(args: argparse.Namespace) -> int:
    try:
        raw = sys.stdin.read() if args.body == "-" else Path(args.body).read_text(encoding="utf-8")
        body = json.loads(raw)
    except UnicodeDecodeError:
        print("customs-gateway: --body is not UTF-8 text", file=sys.stderr)
        return 2
    except (ValueError, RecursionError) as e:
        why = "it is nested too deeply" if isinstance(e, RecursionError) else str(e)
        print(f"customs-gateway: --body is not JSON: {why}", file=sys.stderr)
        return 2
    req: dict[str, Any] = {"type": args.type, "to": args.to, "body": body}
    if args.expires_at:
        req["expires_at"] = args.expires_at
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
    base, token = base_url(args), bearer_token(args)
    try:
        res = call(base, token, "POST", "/v1/messages", req, headers)
        deadline = time.monotonic() + args.wait
        while args.wait and time.monotonic() < deadline:
            res = call(base, token, "GET", f"/v1/messages/{res['id']}")
            if res["status"] in ("delivered", "acknowledged", "refused", "expired"):
                break
            time.sleep(0.2)
    except ClientError as e:
        return _fail(e)
    if args.json:
        print_json(res)
    else:
        print(f"{res['id']} {res['status']}")
    return 0


def run_inbox(args: argparse.Namespace) -> int:
    base, token = base_url(args), bearer_token(args)
    try:
        res = call(
            base,
            token,
            "GET",
            f"/v1/inbox?after={args.after}&wait={args.wait}&limit={args.limit}",
            timeout=args.wait + 30,
        )
        if args.ack:
            for m in res["messages"]:
                if m["ack_status"] is None:
                    call(base, token, "POST", f"/v1/inbox/{m['id']}/ack", {"status": args.ack})
    except ClientError as e:
        return _fail(e)
    if args.json:
        print_json(res)
    else:
        for m in res["messages"]:
            print(f"{m['cursor']:>6}  {m['received_at']}  {m['from']:<8} {m['type']:<22} {m['id']}")
        print(f"next cursor: {res['next_cursor']}", file=sys.stderr)
    return 0


def run_status(args: argparse.Namespace) -> int:
    try:
        res = call(base_url(args), bearer_token(args), "GET", f"/v1/messages/{args.id}")
    except ClientError as e:
        return _fail(e)
    if args.json:
        print_json(res)
        return 0
    table = Table(title=f"{res['type']} {res['id']} to {res['to']} (seq {res['seq']})")
    table.add_column("at")
    table.add_column("status")
    table.add_column("detail")
    for h in res["history"]:
        table.add_row(h["at"], h["status"], h["detail"])
    out = Console(width=None if sys.stdout.isatty() else 160)
    out.print(table)
    out.print(f"now: {res['status']} after {res['attempts']} attempt(s)", highlight=False)
    if res.get("receipt"):
        out.print(f"receipt signed by key {res['receipt']['kid']}", highlight=False)
    if res.get("last_error") and res["status"] in ("queued", "retrying", "refused"):
        out.print(f"last error: {res['last_error']}", highlight=False)
    return 0


def admin_post(args: argparse.Namespace, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """POST to the running gateway's admin API; None (the problem printed in one line) on failure."""
    try:
        res: dict[str, Any] = call(base_url(args), bearer_token(args), "POST", path, body)
    except ClientError as e:
        _fail(e)  # the one error line every client verb prints
        return None
    return res
