"""Search by business reference (issue 16): a case reference, an invitation id (which its replies
quote), a seminar title find their messages on both sides and in both directions, indexed as
keyed tags the database never holds in clear."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

from customs_gateway.store.postgres import PostgresStore
from customs_gateway.store.sqlite import SQLiteStore

from .conftest import CN, US, Pair, sample


def _ids(page: dict[str, Any]) -> list[str]:
    return [m["id"] for m in page["messages"]]


async def _refs_rows(store: Any) -> list[tuple[bytes, str, str]]:
    sql = "SELECT tag, direction, message_id FROM refs"
    if isinstance(store, SQLiteStore):
        rows = await store._read(lambda c: c.execute(sql).fetchall())
    else:
        assert isinstance(store, PostgresStore)
        async with store._read() as c:
            rows = await c.fetch(sql)
    return [(bytes(r[0]), str(r[1]), str(r[2])) for r in rows]


async def test_reference_finds_messages_on_both_sides(pair: Pair) -> None:
    us, cn = pair.apis[US], pair.apis[CN]
    first, second = sample("seizure-share"), sample("seizure-share")
    first["case_reference"] = "CBP-2026-0042"
    second["case_reference"] = "CBP-2026-0099"
    ids = {}
    for name, body in (("first", first), ("second", second)):
        status, res = await us.submit("seizure-share", body=body)
        assert status == 202, res
        ids[name] = res["id"]
    status, inv = await us.submit("port-visit-invitation")
    assert status == 202, inv
    seminar = sample("seminar-notice")
    seminar["title"] = "IPR Enforcement Seminar 知识产权 2027"
    status, sem = await us.submit("seminar-notice", body=seminar)
    assert status == 202, sem
    for mid in (*ids.values(), inv["id"], sem["id"]):
        await us.wait_status(mid, {"delivered"})
    reply = sample("port-visit-reply")
    reply["invitation_id"] = inv["id"]
    status, rep = await cn.submit("port-visit-reply", body=reply)
    assert status == 202, rep
    await cn.wait_status(rep["id"], {"delivered"})

    # Outbound on the sender, exact and in other spellings (case, full-width, spaces).
    for spelled in ("CBP-2026-0042", "cbp-2026-0042", "  ＣＢＰ-2026-0042 ", "Cbp-2026-0042"):
        status, page, _ = await us.call("GET", f"/v1/messages?reference={quote(spelled)}")
        assert status == 200 and _ids(page) == [ids["first"]], (spelled, page)
    # Inbound on the receiver: the inbox and the inbound listing.
    status, page, _ = await cn.call("GET", "/v1/inbox?reference=CBP-2026-0099")
    assert status == 200 and _ids(page) == [ids["second"]], page
    assert "body" in page["messages"][0]
    status, page, _ = await cn.call("GET", "/v1/messages?direction=inbound&reference=cbp-2026-0099")
    assert status == 200 and _ids(page) == [ids["second"]], page
    # An invitation's id finds the invitation and, on each side, the reply that quotes it.
    status, page, _ = await us.call("GET", f"/v1/messages?reference={inv['id']}")
    assert status == 200 and _ids(page) == [inv["id"]]
    status, page, _ = await us.call("GET", f"/v1/inbox?reference={inv['id']}")
    assert status == 200 and _ids(page) == [rep["id"]]
    status, page, _ = await cn.call("GET", f"/v1/messages?reference={inv['id']}")
    assert status == 200 and _ids(page) == [rep["id"]]
    status, page, _ = await cn.call("GET", f"/v1/inbox?reference={inv['id']}")
    assert status == 200 and _ids(page) == [inv["id"]]
    # A seminar by its title, Chinese included; other filters still apply beside it.
    status, page, _ = await cn.call("GET", f"/v1/inbox?reference={quote('ipr enforcement seminar 知识产权 2027')}")
    assert status == 200 and _ids(page) == [sem["id"]]
    status, page, _ = await us.call("GET", "/v1/messages?reference=CBP-2026-0042&type=seminar-notice")
    assert status == 200 and _ids(page) == []
    # Nothing found is an empty page, not an error; a reference is not a substring search.
    for miss in ("CBP-2026-004", "CBP-2026-0043"):
        status, page, _ = await us.call("GET", f"/v1/messages?reference={miss}")
        assert status == 200 and page == {"messages": [], "next_cursor": None}, miss

    # The index holds keyed tags only: no reference in clear, and each gateway's tags differ.
    us_rows, cn_rows = await _refs_rows(pair.gw(US).store), await _refs_rows(pair.gw(CN).store)
    for rows in (us_rows, cn_rows):
        assert rows and all(len(tag) == 16 for tag, _, _ in rows)
        assert not any(b"CBP-2026" in tag or b"cbp-2026" in tag for tag, _, _ in rows)
    us_out = {tag for tag, d, mid in us_rows if d == "out" and mid == ids["first"]}
    cn_in = {tag for tag, d, mid in cn_rows if d == "in" and mid == ids["first"]}
    assert len(us_out) == len(cn_in) == 1 and us_out != cn_in


async def test_a_bad_reference_is_a_clear_422(pair: Pair) -> None:
    us = pair.apis[US]
    for path in ("/v1/messages", "/v1/inbox", "/v1/messages?direction=inbound"):
        sep = "&" if "?" in path else "?"
        for bad in ("", "%20%20", "x" * 201):
            status, prob, headers = await us.call("GET", f"{path}{sep}reference={bad}")
            assert status == 422, (path, bad, prob)
            assert headers["Content-Type"].startswith("application/problem+json")
            assert prob["code"] == "schema.length" and prob["field"] == "reference", prob


async def test_messages_stored_before_the_index_are_indexed_at_the_next_start(pair: Pair) -> None:
    """An upgraded store (the migration marks it when it holds messages) is indexed by the running
    gateway, which holds the key; the work resumes where it stopped."""
    us, cn = pair.apis[US], pair.apis[CN]
    body = sample("seizure-share")
    body["case_reference"] = "CBP-2025-OLD-0001"
    _, old = await us.submit("seizure-share", body=body)
    await us.wait_status(old["id"], {"delivered"})
    for side in (US, CN):  # as if stored before the index existed
        store = pair.gw(side).store
        rows = await _refs_rows(store)
        assert rows
        await _clear_refs(store)
        await store.set_meta("refs_backfill", "")
    status, page, _ = await us.call("GET", "/v1/messages?reference=CBP-2025-OLD-0001")
    assert status == 200 and page["messages"] == []
    for side in (US, CN):
        assert await pair.gw(side).backfill_references(page=1) >= 1
        assert await pair.gw(side).store.get_meta("refs_backfill") is None
    status, page, _ = await us.call("GET", "/v1/messages?reference=CBP-2025-OLD-0001")
    assert status == 200 and _ids(page) == [old["id"]]
    status, page, _ = await cn.call("GET", "/v1/inbox?reference=cbp-2025-old-0001")
    assert status == 200 and _ids(page) == [old["id"]]
    # Resumed inbound only: what was indexed stays, nothing is indexed twice, the mark goes.
    before = await _refs_rows(pair.gw(CN).store)
    await pair.gw(CN).store.set_meta("refs_backfill", "in:0")
    assert await pair.gw(CN).backfill_references() >= 1
    assert sorted(await _refs_rows(pair.gw(CN).store)) == sorted(before)
    assert await pair.gw(US).backfill_references() == 0  # no mark: nothing to do


async def _clear_refs(store: Any) -> None:
    if isinstance(store, SQLiteStore):
        await store._write(lambda c: c.execute("DELETE FROM refs"))
    else:
        async with store._tx() as tx:
            await tx.conn.execute("DELETE FROM refs")


def test_the_migration_marks_a_store_that_already_holds_messages(tmp_path: Path, monkeypatch: Any) -> None:
    from customs_gateway.store import sqlite as sqlite_store
    from customs_gateway.store.migrations import SQLITE_MIGRATIONS

    for holds_one in (False, True):
        db = tmp_path / f"{holds_one}.db"
        conn = sqlite3.connect(db, isolation_level=None)
        monkeypatch.setattr(sqlite_store, "SQLITE_MIGRATIONS", [m for m in SQLITE_MIGRATIONS if m[0] <= 7])
        sqlite_store._migrate(conn)
        if holds_one:
            conn.execute(
                "INSERT INTO inbox(sender, id, seq, type, created_at, received_at, document_sha256, signed_document,"
                " body, receipt) VALUES ('US-CBP', 'm1', 1, 'seizure-share', 't', 't', x'00', x'00', x'00', x'00')"
            )
        monkeypatch.setattr(sqlite_store, "SQLITE_MIGRATIONS", SQLITE_MIGRATIONS)
        sqlite_store._migrate(conn)
        mark = conn.execute("SELECT value FROM store_meta WHERE key='refs_backfill'").fetchone()
        assert (mark is not None) == holds_one
        conn.close()


async def test_a_start_indexes_a_marked_store_by_itself(pair: Pair) -> None:
    import asyncio

    us = pair.apis[US]
    _, old = await us.submit("seizure-share")
    await us.wait_status(old["id"], {"delivered"})
    await _clear_refs(pair.gw(US).store)
    await pair.gw(US).store.set_meta("refs_backfill", "")
    await pair.lp.stop(US)
    await pair.lp.start(US)
    for _ in range(200):
        if await pair.gw(US).store.get_meta("refs_backfill") is None:
            break
        await asyncio.sleep(0.02)
    status, page, _ = await us.call("GET", f"/v1/messages?reference={quote(sample('seizure-share')['case_reference'])}")
    assert status == 200 and old["id"] in _ids(page)
