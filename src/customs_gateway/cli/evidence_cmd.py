"""`audit evidence MESSAGE_ID --out FILE`, and `audit verify` of an evidence file.

The evidence file is built by the running gateway (`GET /v1/audit/evidence/{id}`, auditor
token): it needs the peer's part, fetched over mutual TLS. This command saves it (mode 0600:
it holds the message's document) and verifies it at once, offline, as `audit verify` would.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from ..core.audit_bundle import BundleError
from ..core.evidence import FORMAT as EVIDENCE_FORMAT
from ..core.evidence import EvidenceReport, verify_evidence
from .client_cmd import TOKEN_ENV, ClientError, base_url, bearer_token, fetch
from .common import console, print_json, result_console

EXIT_VERIFIED, EXIT_FAILED = 0, 1


def add_parser(asub: Any) -> None:
    ev = asub.add_parser(
        "evidence",
        help="save and verify the evidence for one message (both logs, proven and cosigned)",
        description="Ask the running gateway for the evidence of one message it sent or received, save it "
        "(mode 0600) and verify it offline. Needs an auditor token.",
    )
    ev.add_argument("message_id", metavar="MESSAGE_ID", help="id of a business message this gateway sent or received")
    ev.add_argument("--out", type=Path, required=True, metavar="FILE", help="evidence file to write (JSON Lines)")
    ev.add_argument(
        "--url", metavar="URL", help="local API base URL (default: from --config, else http://127.0.0.1:8080)"
    )
    ev.add_argument(
        "--config",
        default=os.environ.get("CUSTOMS_GATEWAY_CONFIG"),
        metavar="PATH",
        help="read the URL from this config",
    )
    ev.add_argument("--token-file", metavar="PATH", help=f"file with an auditor token (default: ${TOKEN_ENV})")
    add_trust_args(ev)
    ev.add_argument("--json", action="store_true", help="print the report (or the failure) as JSON")
    ev.set_defaults(func=run_evidence)


def add_trust_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trust",
        type=Path,
        metavar="FILE",
        help="trust anchors: one line per identity, `IDENTITY FINGERPRINT` (as `keys export` prints it)",
    )
    p.add_argument(
        "--allow-uncosigned",
        action="store_true",
        help="accept a log part whose checkpoint the other side has not cosigned (the report says so)",
    )


def read_trust(path: Path | None) -> dict[str, str] | None:
    """Trust anchors from a file: `IDENTITY FINGERPRINT` per line (`#` comments), or a JSON object."""
    if path is None:
        return None
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except RecursionError:
            raise ValueError("the JSON trust file is nested too deeply") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ValueError("a JSON trust file maps each identity to its fingerprint")
        return {str(k): v for k, v in data.items()}
    out: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        identity, _, fingerprint = line.partition(" ")
        if not fingerprint.strip():
            raise ValueError(f"line {n}: expected IDENTITY FINGERPRINT")
        out[identity] = fingerprint.strip()
    return out


def is_evidence_file(path: Path) -> bool:
    """Whether the file's first line is an evidence header (else it is taken for an export)."""
    with path.open("rb") as f:
        first = f.readline(4096)
    try:
        head = json.loads(first)
    except (ValueError, RecursionError):  # RecursionError: a first line nested thousands deep
        return False
    return isinstance(head, dict) and head.get("format") == EVIDENCE_FORMAT


def verify_file(path: Path, *, trust: dict[str, str] | None, allow_uncosigned: bool, as_json: bool) -> int:
    try:
        with path.open("rb") as f:
            report = verify_evidence(_lines(f), trust=trust, allow_uncosigned=allow_uncosigned)
    except BundleError as e:
        print_failure(path, e, as_json=as_json)
        return EXIT_FAILED
    print_report(path, report, as_json=as_json)
    return EXIT_VERIFIED


def _lines(f: Iterable[bytes]) -> Iterable[bytes]:
    yield from f


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically, readable by its owner only (0600 from the start)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def run_evidence(args: argparse.Namespace) -> int:
    try:
        trust = read_trust(args.trust)
    except (OSError, ValueError) as e:
        print(f"customs-gateway: --trust {args.trust}: {e}", file=sys.stderr)
        return 2
    try:
        path = f"/v1/audit/evidence/{urllib.parse.quote(args.message_id, safe='')}"
        data = fetch(base_url(args), bearer_token(args), "GET", path, timeout=120)
    except ClientError as e:
        p = e.problem
        where = f" [{p['field']}]" if p.get("field") else ""
        print(f"customs-gateway: HTTP {e.status} {p.get('code', '')}{where}: {p.get('detail', '')}", file=sys.stderr)
        return 3
    except (urllib.error.URLError, OSError) as e:
        print(f"customs-gateway: cannot reach the gateway: {getattr(e, 'reason', e)}", file=sys.stderr)
        return 3
    write_private(args.out, data)
    return verify_file(args.out, trust=trust, allow_uncosigned=args.allow_uncosigned, as_json=args.json)


def print_failure(path: Path, e: BundleError, *, as_json: bool) -> None:
    if as_json:
        print_json({"verified": False, "file": str(path), **e.diagnostics()})
        return
    console().print(
        f"[bold red]NOT VERIFIED[/] {escape(str(path))}: line {e.line}: {escape(e.detail)} {escape(f'[{e.code}]')}"
    )


def print_report(path: Path, r: EvidenceReport, *, as_json: bool) -> None:
    if as_json:
        print_json({"verified": True, "file": str(path), **r.to_dict()})
        return
    out = result_console()
    table = Table(title=f"[green]VERIFIED[/] evidence {escape(str(path))}", show_header=False)
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold", max_width=100)
    rows = [
        ("message", f"{r.type} {r.message_id}"),
        ("from → to", f"{r.sender} → {r.receiver}"),
        ("created at", r.created_at),
        ("document SHA-256", r.document_sha256),
        ("document", r.document),
        ("receipt", f"received at {r.received_at}" if r.received_at else "none"),
        ("refusal", r.refusal_code or "none"),
        ("business ack", f"{r.ack_status} ({r.ack_id})" if r.ack_status else "none"),
    ]
    for lp in r.logs:
        cos = f"cosigned by {lp.cosigned_by} at {lp.cosigned_at}" if lp.cosigned_by else "NOT cosigned"
        rows.append((f"{lp.owner}'s log", f"checkpoint at size {lp.size}, {cos}"))
    rows += [("made by", f"{r.made_by} at {r.made_at}"), ("file SHA-256", r.sha256)]
    for what, value in rows:
        table.add_row(what, escape(value))
    out.print(table)
    entries = Table(title="log entries about the message (each proven into its log's checkpoint)")
    for col in ("log", "index", "at", "kind", "message"):
        entries.add_column(col)
    for e in r.entries:
        entries.add_row(e.owner, str(e.index), e.at, e.kind, e.message_id)
    out.print(entries)
    anchors = Table(
        title="trust anchors"
        + (
            " (from --trust)"
            if r.trusted_by_anchor_file
            else ": compare these with the fingerprints exchanged out of band"
        )
    )
    for col in ("identity", "serial", "fingerprint"):
        anchors.add_column(col, overflow="fold")
    for identity, serial, fp in r.anchors:
        anchors.add_row(identity, str(serial), fp)
    out.print(anchors)
    uncosigned = [lp.owner for lp in r.logs if lp.cosigned_by is None]
    if uncosigned:
        console().print(
            f"[bold yellow]--allow-uncosigned: NOT cosigned by the other side: {escape(', '.join(uncosigned))}'s log. "
            "Those entries rest on their owner's signature alone.[/]"
        )
