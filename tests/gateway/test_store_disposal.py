"""Disposal and legal holds in both stores (`store.retention`, issue 18): what is due, what
disposal blanks and keeps, the day a key may go, a hold that re-seals a row under its own key
(so the day key can go on time), and the totals the metrics show."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from customs_gateway.core import atrest
from customs_gateway.core.audit import AuditEntry
from customs_gateway.core.errors import Conflict, NotFound
from customs_gateway.service.disposal import disposed_entry
from customs_gateway.startup.daykeys import DayKeys
from customs_gateway.store.base import Hold, HoldNotice, Incoming, Store
from customs_gateway.store.sealed import SealedColumns, context
from tests.postgres.records import CN, T0, arrival, delivered, entry, new_message

from .store_fixtures import Raw
from .test_store_at_rest import RETAIN

AFTER = RETAIN + dt.timedelta(days=1)
AT = dt.datetime.combine(AFTER, dt.time(1), dt.timezone.utc)


async def _sent_and_received(store: Store) -> tuple[str, str, str]:
    """One delivered outbound message, one still queued, one received; all retained until RETAIN."""
    sent = dataclasses.replace(new_message(CN), retain_until=RETAIN)
    await store.submit(sent, entry("submitted", sent.id))
    await store.record_outcomes([delivered(sent.id)])
    queued = dataclasses.replace(new_message(CN), retain_until=RETAIN)
    await store.submit(queued, entry("submitted", queued.id))
    got = dataclasses.replace(arrival(1), retain_until=RETAIN)
    await store.accept_incoming([got])
    return sent.id, queued.id, got.id


async def test_disposal_blanks_the_sealed_values_and_keeps_the_row(stores: tuple[Store, Raw, DayKeys]) -> None:
    store, raw, keys = stores
    store.seal_at_rest(SealedColumns(keys))
    sent, _queued, got = await _sent_and_received(store)
    assert await store.due_for_disposal(RETAIN, 10) == []  # due only once the day has passed
    due = await store.due_for_disposal(AFTER, 10)
    assert [(r.direction, r.id) for r in due] == [("outbound", sent), ("inbound", got)]  # not the queued one
    assert all((r.signed_document and b"document" in r.signed_document) or r.signed_document for r in due)
    assert (await store.retention_totals(AFTER)).due == 3
    assert await store.live_days(AFTER) == {RETAIN}
    size = await store.audit_size()
    done = await store.dispose(due, AT, {r.id: disposed_entry(r, AT) for r in due})
    assert sorted(done) == sorted([sent, got])
    assert await store.audit_size() == size + 2
    assert await store.dispose(due, AT, {r.id: disposed_entry(r, AT) for r in due}) == []  # once only
    m = await store.get_message(sent)
    assert m is not None and m.disposed_at is not None and m.signed_document == b"" and m.receipt is not None
    it = await store.inbox_item(got)
    assert it is not None and it.disposed_at is not None and it.body == b""
    ev = {e.message_id: e for e in await store.evidence([sent, got])}
    assert ev[sent].disposed_at is not None and ev[sent].signed_document == b"" and ev[sent].type == "seizure-share"
    assert ev[got].document_sha256 and ev[got].created_at is not None
    [(doc, body)] = await raw(f"SELECT signed_document, body FROM inbox WHERE id='{got}'")
    assert bytes(doc) == b"" and bytes(body) == b""
    assert await store.live_days(AFTER) == {RETAIN}  # the queued message still needs the key
    totals = await store.retention_totals(AFTER)
    assert (totals.due, totals.disposed, totals.held, totals.oldest_held) == (1, 2, 0, None)


async def test_a_hold_reseals_the_row_under_its_own_key(stores: tuple[Store, Raw, DayKeys]) -> None:
    store, raw, keys = stores
    store.seal_at_rest(SealedColumns(keys))
    sent, _, got = await _sent_and_received(store)
    hold_id = keys.new_hold()
    audit = AuditEntry(at=T0, kind="hold_placed", actor="token:t", message_id=got)
    placed = await store.place_hold(Hold(got, "ours", "outbound", "court", "token:t", T0, hold_id), audit)
    assert placed.direction == "inbound" and placed.active
    [(blob,)] = await raw(f"SELECT body FROM inbox WHERE id='{got}'")
    assert atrest.sealed_ref(bytes(blob)) == hold_id
    with pytest.raises(Conflict) as e:
        await store.place_hold(Hold(got, "ours", "inbound", "again", "token:t", T0, keys.new_hold()), audit)
    assert e.value.code == "hold.exists"
    with pytest.raises(NotFound):
        await store.place_hold(Hold("nope", "ours", "inbound", "x", "token:t", T0, hold_id), audit)
    due = await store.due_for_disposal(AFTER, 10)
    assert [r.id for r in due] == [sent]  # the held one is not due
    assert (await store.retention_totals(AFTER)).held == 1
    assert (await store.retention_totals(AFTER)).oldest_held == RETAIN
    await store.dispose(due, AT, {r.id: disposed_entry(r, AT) for r in due})
    # Only the queued message still needs the day key: the held one is under its hold key.
    keys.destroy(RETAIN)
    item = await store.inbox_item(got)
    assert item is not None and item.body == arrival(1).body
    released = await store.release_hold(got, AT, "token:t", None, AuditEntry(at=AT, kind="hold_released", actor="x"))
    assert not released.active
    with pytest.raises(NotFound):
        await store.release_hold(got, AT, "token:t", None, AuditEntry(at=AT, kind="hold_released", actor="x"))
    [again] = await store.due_for_disposal(AFTER, 10)
    assert again.id == got and again.hold_id == hold_id and again.signed_document is not None
    assert await store.dispose([again], AT, {got: disposed_entry(again, AT)}) == [got]
    with pytest.raises(Conflict) as e:
        await store.place_hold(Hold(got, "ours", "inbound", "late", "token:t", AT, keys.new_hold()), audit)
    assert e.value.code == "hold.disposed"
    holds = await store.holds_for([got])
    assert [h.origin for h in holds[got]] == ["ours"]
    assert [h.message_id for h in await store.list_holds(False, 10)] == [got]
    assert await store.list_holds(True, 10) == []
    assert context  # the context layout is the vectors' (test_store_at_rest)


async def test_a_peer_hold_notice_must_name_a_message_exchanged_with_it(stores: tuple[Store, Raw, DayKeys]) -> None:
    """A `legal-hold` notice is recorded as the peer's hold only for a message the two exchanged;
    one naming anything else is refused (`schema.reference`) with nothing written."""
    store, _, keys = stores
    store.seal_at_rest(SealedColumns(keys))
    sent, _, got = await _sent_and_received(store)  # `sent` went to CN; `got` came from US

    def notice(seq: int, about: str, action: str = "placed") -> Incoming:
        n = arrival(seq, msg_type="legal-hold")
        return dataclasses.replace(n, hold_notice=HoldNotice(about, action, "court order", T0, n.id))

    for about in ("no-such-message", sent):  # unknown; exchanged with CN, not with the sender US
        bad = notice(5, about)
        [res] = await store.accept_incoming([bad])
        assert (res.status, res.code, res.field) == ("refused", "schema.reference", "body.message_id")
        assert await store.inbox_item(bad.id) is None and await store.holds_for([about]) == {}
    [res] = await store.accept_incoming([notice(6, got)])
    assert res.status == "accepted"
    [hold] = (await store.holds_for([got]))[got]
    assert (hold.origin, hold.direction, hold.reason, hold.placed_by, hold.active) == (
        "peer",
        "inbound",
        "court order",
        "peer:US-CBP",
        True,
    )
    [res] = await store.accept_incoming([notice(7, got, "released")])
    assert res.status == "accepted" and not (await store.holds_for([got]))[got][0].active
