"""No body in clear at rest (DESIGN §12 "At rest", issue 18): a running pair exchanges documents
carrying a distinctive needle both ways, answers them with an ack that repeats it, and then
neither side's database — SQLite file and WAL as they are on disk, or every row of every
PostgreSQL table — nor anything logged holds the needle, in clear or in base64 (signed documents
carry the document base64url-encoded). The back-ends still read it through the API."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from customs_gateway.cli.main import main
from customs_gateway.core.envelope import BUSINESS_TYPES
from customs_gateway.service.gateway import SEAL_BACKFILL, Gateway
from customs_gateway.store.base import MessageFilter
from customs_gateway.store.sqlite import SQLiteStore

from .conftest import CN, US, Pair, sample

NEEDLE = b"NEEDLE-q7Zx41-at-rest"


def forms(s: bytes) -> list[bytes]:
    """`s` as it may appear in stored bytes: itself, and its base64url text at each alignment."""
    out = [s]
    for pad in range(3):
        enc = base64.urlsafe_b64encode(b"\0" * pad + s).rstrip(b"=")
        out.append(enc[math.ceil(4 * pad / 3) + 1 : (4 * (pad + len(s))) // 3 - 1])
    return out


async def stored_bytes(gw: Gateway) -> bytes:
    """Everything one gateway's store holds: its SQLite files as on disk (main file and WAL), or
    the text and bytes of every row of every table of its PostgreSQL schema."""
    cfg = gw.config
    if cfg.store.backend == "sqlite":
        db = Path(cfg.path(cfg.store.path))
        files = [db, db.with_name(db.name + "-wal")]
        assert files[1].exists()  # a running gateway's WAL, not yet checkpointed away
        return b"".join(f.read_bytes() for f in files if f.exists())
    conn = await asyncpg.connect(cfg.store.dsn)
    try:
        tables = await conn.fetch(
            "SELECT quote_ident(table_name) FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        )
        parts: list[bytes] = []
        for (table,) in tables:
            for row in await conn.fetch(f"SELECT * FROM {table}"):
                parts.extend(v if isinstance(v, bytes) else str(v).encode() for v in row.values())
        return b"\n".join(parts)
    finally:
        await conn.close()


async def test_no_body_is_stored_or_logged_in_clear(pair: Pair) -> None:
    with capture_logs() as logs:
        sent: dict[str, str] = {}
        for sender in (US, CN):
            api = pair.apis[sender]
            body: dict[str, Any] = dict(sample("seizure-share"), notes=f"{sender} {NEEDLE.decode()}")
            status, res = await api.submit("seizure-share", body=body)
            assert status == 202, res
            sent[sender] = res["id"]
        for sender, mid in sent.items():
            await pair.apis[sender].wait_status(mid, {"delivered"})
        for receiver, sender in ((CN, US), (US, CN)):
            api = pair.apis[receiver]
            status, inbox, _ = await api.call("GET", "/v1/inbox")
            assert status == 200
            [got] = [m for m in inbox["messages"] if m["id"] == sent[sender]]
            assert NEEDLE.decode() in got["body"]["notes"]  # readers see the plain body
            status, res, _ = await api.call(
                "POST",
                f"/v1/inbox/{sent[sender]}/ack",
                json_body={"status": "rejected", "reason": f"re {NEEDLE.decode()}"},
            )
            assert status in (200, 202), res
        for sender, mid in sent.items():
            await pair.apis[sender].wait_status(mid, {"acknowledged"})
        status, exported, _ = await pair.apis[US].call("GET", f"/v1/messages/{sent[US]}", role="agency")
        assert status == 200 and exported["ack"]["reason"] == f"re {NEEDLE.decode()}"  # opened for readers
        # Consent: the request's authority and reason, the decision's conditions and reason are
        # message text too, kept in both sides' consents tables (sealed there as well).
        needle = NEEDLE.decode()
        status, req, _ = await pair.apis[CN].call(
            "POST",
            f"/v1/inbox/{sent[US]}/consent-requests",
            json_body={"use": "onward_transfer", "authority": f"Authority {needle}", "reason": f"Why {needle}"},
        )
        assert status == 202, req
        await pair.apis[CN].wait_status(req["id"], {"delivered"})
        status, dec, _ = await pair.apis[US].call(
            "POST",
            f"/v1/messages/{sent[US]}/consent-requests/{req['id']}/decision",
            json_body={"decision": "granted_with_conditions", "conditions": f"If {needle}", "reason": f"As {needle}"},
        )
        assert status == 202, dec
        await pair.apis[US].wait_status(dec["id"], {"delivered"})
        status, item, _ = await pair.apis[CN].call("GET", f"/v1/inbox/{sent[US]}")
        assert status == 200
        [grant] = item["permissions"]["onward_transfer"]["granted"]
        assert grant["party"] == f"Authority {needle}" and grant["conditions"] == f"If {needle}"  # opened
        assert item["consent_requests"][0]["reason"] == f"Why {needle}"
        assert item["consent_requests"][0]["decision_reason"] == f"As {needle}"

    for name in (US, CN):
        held = await stored_bytes(pair.gw(name))
        assert sent[US].encode() in held and sent[CN].encode() in held  # the scan sees what is in clear
        for form in forms(NEEDLE):
            assert form not in held, f"{name} stores {form!r} in clear"
    logged = repr(logs).encode()
    assert logs and all(form not in logged for form in forms(NEEDLE))


async def _unseal_all(gw: Gateway) -> int:
    """Put every message and inbox row back in clear, as a version before sealing stored them."""
    store = gw.store
    out = [
        (m.id, m.signed_document)
        for m in await store.pending(gw.peer.identity) + await store.list_messages(MessageFilter(), None, 1000)
    ]
    items = [(i.id, i.body) for i in await store.inbox_after(0, 1000, BUSINESS_TYPES)]
    docs = {e.message_id: e.signed_document for e in await store.evidence([i for i, _ in items])}
    msg_sql = "UPDATE messages SET signed_document={}, retain_until=NULL WHERE id={}"
    in_sql = "UPDATE inbox SET signed_document={}, body={}, retain_until=NULL WHERE id={}"
    if isinstance(store, SQLiteStore):

        def job(c: Any) -> None:
            c.executemany(msg_sql.format("?", "?"), [(d, i) for i, d in out])
            c.executemany(in_sql.format("?", "?", "?"), [(docs[i], b, i) for i, b in items])

        await store._write(job)
    else:
        async with store._tx() as tx:
            await tx.conn.executemany(msg_sql.format("$1", "$2"), [(d, i) for i, d in out])
            await tx.conn.executemany(in_sql.format("$1", "$2", "$3"), [(docs[i], b, i) for i, b in items])
    await store.set_meta(SEAL_BACKFILL, "")
    return len(out) + len(items)


async def test_rows_stored_in_clear_are_sealed_by_the_backfill(pair: Pair) -> None:
    us, cn = pair.apis[US], pair.apis[CN]
    body: dict[str, Any] = dict(sample("seizure-share"), notes=f"old {NEEDLE.decode()}")
    _, old = await us.submit("seizure-share", body=body)
    await us.wait_status(old["id"], {"delivered"})
    for side in (US, CN):
        assert await _unseal_all(pair.gw(side)) >= 1
        held = await stored_bytes(pair.gw(side))
        assert any(form in held for form in forms(NEEDLE))  # in clear, as before the upgrade
    status, page, _ = await cn.call("GET", "/v1/inbox")  # rows in clear still read
    assert status == 200 and NEEDLE.decode() in page["messages"][-1]["body"]["notes"]
    for side in (US, CN):
        assert await pair.gw(side).backfill_sealing(page=1) >= 1
        assert await pair.gw(side).store.get_meta(SEAL_BACKFILL) is None
        assert await pair.gw(side).backfill_sealing() == 0  # no mark: nothing to do
        held = await stored_bytes(pair.gw(side))  # SQLite: the WAL's clear frames are gone too
        assert all(form not in held for form in forms(NEEDLE))
    status, page, _ = await cn.call("GET", "/v1/inbox")
    assert status == 200 and NEEDLE.decode() in page["messages"][-1]["body"]["notes"]
    status, msg, _ = await us.call("GET", f"/v1/messages/{old['id']}")
    assert status == 200 and msg["status"] == "delivered"


async def test_retention_status_cli(pair: Pair, capsys: pytest.CaptureFixture[str]) -> None:
    _, res = await pair.apis[US].submit("seizure-share")
    await pair.apis[US].wait_status(res["id"], {"delivered"})
    config = str(pair.lp.homes[US].config_path)
    code = await asyncio.to_thread(main, ["retention", "status", "--config", config, "--json"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()  # the gateways' own log lines share stdout here
    start = lines.index("{")
    out = json.loads("\n".join(lines[start : lines.index("}", start) + 1]))
    [day] = [d for d in out["days"] if d["messages"] >= 1 and d["key"] == "present"]
    assert day["due"] is False and dt.date.fromisoformat(day["day"]) > dt.date.fromisoformat(out["today"])
    assert (out["due"], out["disposed"], out["held"], out["oldest_held"]) == (0, 0, 0, None)
    code = await asyncio.to_thread(main, ["retention", "status", "--config", config, "--due"])
    text = capsys.readouterr().out
    assert code == 0 and "0 day(s) due for disposal" in text
    assert "messages due 0, disposed of 0, under legal hold 0" in text
