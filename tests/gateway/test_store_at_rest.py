"""Sealed columns (`store.sealed`, issue 18) on both backends: what a store writes is sealed under
the row's day key, what it gives back is plain; a sealed value moved to another row, column or
day, or cut short, does not open; a destroyed day stays unreadable; rows stored in clear before
sealing are found and sealed by the backfill's two calls."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import pytest

from customs_gateway.cli.retention_cmd import retention_days
from customs_gateway.core import atrest
from customs_gateway.core.storekey import StoreKey
from customs_gateway.startup.daykeys import DayKeys
from customs_gateway.store.base import Store
from customs_gateway.store.sealed import CONTROL_RETENTION_DAYS, SealedColumns, context, retention_day
from tests.postgres.records import CN, T0, arrival, delivered, entry, new_message, retry

from .store_fixtures import Raw, _keys

RETAIN = dt.date(2031, 3, 1)


def test_context_is_the_vectors_row_and_column_layout() -> None:
    vectors = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "atrest.json").read_text(encoding="utf-8"))
    tc = next(t for t in vectors["tests"] if t["result"] == "valid")
    ctx = bytes.fromhex(tc["context_hex"])
    column, _, mid = ctx.partition(b"\x00")
    assert context(column.decode(), mid.decode()) == ctx


def test_control_messages_are_kept_a_year_and_a_day() -> None:
    assert retention_day(RETAIN, T0) == RETAIN
    assert retention_day(None, T0) == T0.date() + dt.timedelta(days=CONTROL_RETENTION_DAYS)


async def test_writes_are_sealed_and_reads_are_plain(stores: tuple[Store, Raw, DayKeys]) -> None:
    store, raw, keys = stores
    store.seal_at_rest(SealedColumns(keys))
    msg = dataclasses.replace(new_message(CN), retain_until=RETAIN)
    out, created = await store.submit(msg, entry("submitted", msg.id))
    assert created and out.signed_document == msg.signed_document and out.retain_until == RETAIN
    again = dataclasses.replace(new_message(CN, key="k"), retain_until=RETAIN)
    await store.submit(again, entry("submitted", again.id))
    replay, created = await store.submit(dataclasses.replace(again, id="m-other"), entry())
    assert not created and replay.signed_document == again.signed_document
    later = T0 + dt.timedelta(minutes=1)
    await store.record_outcomes([dataclasses.replace(retry(msg.id, T0, later), retain_until=RETAIN)])
    got = await store.get_message(msg.id)
    assert got is not None and got.signed_document == msg.signed_document
    assert got.ciphertext == b"ct " + msg.id.encode() and got.retain_until == RETAIN
    assert [m.signed_document for m in await store.pending(CN)][:1] == [msg.signed_document]
    assert (await store.due(CN, later, 10))[0].ciphertext == got.ciphertext

    inbound = dataclasses.replace(arrival(1), retain_until=RETAIN)
    await store.accept_incoming([inbound])
    item = await store.inbox_item(inbound.id)
    assert item is not None and item.body == inbound.body
    assert [i.body for i in await store.inbox_after(0, 10, ("seizure-share",))] == [inbound.body]
    ack = new_message(CN, msg_type="ack", token=None)  # a control message: the control rule's day
    acked = await store.acknowledge_inbox(inbound.id, "processed", ack, entry("acknowledged", inbound.id))
    assert acked.signed_document == ack.signed_document
    assert acked.retain_until == retention_day(None, ack.created_at)
    await store.record_outcomes([delivered(msg.id)])
    ev = {e.message_id: e for e in await store.evidence([msg.id, inbound.id])}
    assert ev[msg.id].signed_document == msg.signed_document
    assert ev[inbound.id].signed_document == inbound.signed_document

    # What the database holds: sealed values under the row's day, never the plain bytes.
    for table, column, mid, plain in (
        ("messages", "signed_document", msg.id, msg.signed_document),
        ("messages", "signed_document", ack.id, ack.signed_document),
        ("inbox", "signed_document", inbound.id, inbound.signed_document),
        ("inbox", "body", inbound.id, inbound.body),
    ):
        [(blob, day)] = await raw(f"SELECT {column}, retain_until FROM {table} WHERE id='{mid}'")
        blob = bytes(blob)
        assert plain not in blob and atrest.sealed_day(blob) == (day if isinstance(day, dt.date) else _d(day))
        assert keys.open(context(f"{table}.{column}", mid), blob) == plain
    [(ct,)] = await raw(f"SELECT ciphertext FROM messages WHERE id='{again.id}'")
    assert ct is None


def _d(v: str) -> dt.date:
    return dt.date.fromisoformat(v)


async def test_a_sealed_value_opens_only_in_its_row_column_and_day(tmp_path: Path) -> None:
    keys = _keys(tmp_path)
    blob = keys.seal(RETAIN, context("inbox.body", "m-1"), b"needle")
    assert keys.open(context("inbox.body", "m-1"), blob) == b"needle"
    for ctx in (context("inbox.body", "m-2"), context("inbox.signed_document", "m-1")):
        with pytest.raises(atrest.AtRestError) as err:
            keys.open(ctx, blob)
        assert err.value.code == "atrest.auth_failed"
    other_day = RETAIN + dt.timedelta(days=1)
    keys.key_for(other_day)
    moved = blob[:1] + atrest.day_number(other_day).to_bytes(4, "big") + blob[5:]
    with pytest.raises(atrest.AtRestError) as err:
        keys.open(context("inbox.body", "m-1"), moved)
    assert err.value.code == "atrest.auth_failed"
    for cut in (blob[:-1], blob[: atrest.HEADER_BYTES + 3]):
        with pytest.raises(atrest.AtRestError):
            keys.open(context("inbox.body", "m-1"), cut)
    assert keys.destroy(RETAIN)
    with pytest.raises(atrest.Disposed):
        keys.open(context("inbox.body", "m-1"), blob)
    with pytest.raises(atrest.Disposed):
        keys.seal(RETAIN, context("inbox.body", "m-3"), b"late")


async def test_a_store_under_another_store_key_does_not_open_the_rows(stores: tuple[Store, Raw, DayKeys]) -> None:
    store, _, keys = stores
    store.seal_at_rest(SealedColumns(keys))
    msg = dataclasses.replace(new_message(CN), retain_until=RETAIN)
    await store.submit(msg, entry("submitted", msg.id))
    stranger = DayKeys(keys.directory, StoreKey(bytes(32)))
    store.seal_at_rest(SealedColumns(stranger))
    with pytest.raises(atrest.AtRestError) as err:
        await store.get_message(msg.id)
    assert err.value.code == "atrest.auth_failed"


async def test_rows_in_clear_are_sealed_by_the_backfill_calls(stores: tuple[Store, Raw, DayKeys]) -> None:
    store, raw, keys = stores
    old = [new_message(CN) for _ in range(3)]
    for m in old:  # written before sealing: in clear, no retain_until
        await store.submit(m, entry("submitted", m.id))
    await store.record_outcomes([retry(old[0].id, T0, T0 + dt.timedelta(minutes=1))])
    inbound = arrival(1)
    await store.accept_incoming([inbound])
    sealed = SealedColumns(keys)
    store.seal_at_rest(sealed)
    assert (await store.get_message(old[0].id)) is not None  # a row in clear still reads
    page = await store.rows_in_clear("messages", 2)
    assert [r.id for r in page] == [m.id for m in old[:2]] and page[0].body is None
    assert await store.seal_rows([sealed.clear_row(r, RETAIN) for r in page]) == 2
    assert await store.seal_rows([sealed.clear_row(r, RETAIN) for r in page]) == 0  # once only
    rest = await store.rows_in_clear("messages", 10)
    assert [r.id for r in rest] == [old[2].id]
    await store.seal_rows([sealed.clear_row(r, None) for r in rest])
    [item] = await store.rows_in_clear("inbox", 10)
    assert item.body == inbound.body
    await store.seal_rows([sealed.clear_row(item, RETAIN)])
    assert await store.rows_in_clear("messages", 10) == [] and await store.rows_in_clear("inbox", 10) == []
    first = await store.get_message(old[0].id)
    assert first is not None and first.signed_document == old[0].signed_document and first.ciphertext is None
    third = await store.get_message(old[2].id)
    assert third is not None and third.retain_until == retention_day(None, T0)
    got = await store.inbox_item(inbound.id)
    assert got is not None and got.body == inbound.body
    blobs = await raw("SELECT signed_document FROM messages UNION ALL SELECT body FROM inbox")
    assert all(b"document" not in bytes(b) and b'"n"' not in bytes(b) for (b,) in blobs)


async def test_a_retry_of_a_message_still_in_clear_keeps_no_ciphertext(stores: tuple[Store, Raw, DayKeys]) -> None:
    store, raw, keys = stores
    msg = new_message(CN)
    await store.submit(msg, entry("submitted", msg.id))
    store.seal_at_rest(SealedColumns(keys))
    await store.record_outcomes([retry(msg.id, T0, T0 + dt.timedelta(minutes=1))])  # no retain_until
    [(ct, kid)] = await raw(f"SELECT ciphertext, enc_kid FROM messages WHERE id='{msg.id}'")
    assert (ct, kid) == (None, None)


async def test_retention_counts_per_day(stores: tuple[Store, Raw, DayKeys]) -> None:
    store, _, keys = stores
    clear = new_message(CN)
    await store.submit(clear, entry("submitted", clear.id))  # before sealing: in clear
    store.seal_at_rest(SealedColumns(keys))
    for m in (new_message(CN), new_message(CN)):
        await store.submit(dataclasses.replace(m, retain_until=RETAIN), entry("submitted", m.id))
    await store.accept_incoming([dataclasses.replace(arrival(1), retain_until=RETAIN)])
    await store.accept_incoming([arrival(2)])  # a control rule day
    counts = sorted(await store.retention_counts(), key=lambda c: (c[0] is not None, c[0] or dt.date.min))
    assert counts == [(None, 1, 0), (retention_day(None, T0), 0, 1), (RETAIN, 2, 1)]


def test_retention_status_lists_days_and_what_is_due(tmp_path: Path) -> None:
    days = tmp_path / "days"
    days.mkdir()
    (days / "2031-03-01.key").write_bytes(b"")
    (days / "2026-01-02.destroyed").write_bytes(b"")
    counts = [(dt.date(2031, 3, 1), 2, 1), (None, 1, 0), (dt.date(2026, 1, 2), 0, 0), (dt.date(2026, 1, 3), 1, 0)]
    got = retention_days(counts, days, dt.date(2026, 12, 4))
    assert [(d.day, d.key, d.due) for d in got] == [
        (None, "none", False),
        (dt.date(2026, 1, 2), "destroyed", True),
        (dt.date(2026, 1, 3), "missing", True),
        (dt.date(2031, 3, 1), "present", False),
    ]
