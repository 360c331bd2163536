"""Disposal at `retain_until` and legal holds (DESIGN §12, issue 18), on a pair whose shared clock
the test moves: both sides dispose of a message's document, body and files at its date (the
row, digests, receipts and audit entries stay; one `disposed` entry per message; the day key is
destroyed); a legal hold keeps a message past its date until released, the peer is told by a
signed notice, and every bad request is refused with nothing changed."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any

from customs_gateway.core.clock import JumpClock
from customs_gateway.core.encoding import unb64url

from .conftest import CN, US, Pair, sample

NEEDLE = "DISPOSAL-NEEDLE-7f3a"


def _body(i: int) -> dict[str, Any]:
    body = sample("seizure-share")
    body["case_reference"] = f"CBP-DISP-{i:04d}"
    body["notes"] = f"{NEEDLE} {i}"
    return body


async def _share(pair: Pair, clock: JumpClock, i: int, days: int) -> str:
    """US shares a seizure with CN, retained `days` days from today; returns its id once delivered."""
    until = (clock.now().date() + dt.timedelta(days=days)).isoformat()
    status, res, _ = await pair.apis[US].call(
        "POST",
        "/v1/messages",
        json_body={"type": "seizure-share", "to": CN, "body": _body(i), "handling": {"retain_until": until}},
    )
    assert status == 202, res
    await pair.apis[US].wait_status(res["id"], {"delivered"})
    return str(res["id"])


async def _entries(pair: Pair, side: str) -> list[dict[str, Any]]:
    status, res, _ = await pair.apis[side].call("GET", "/v1/audit/entries?limit=1000", role="auditor")
    assert status == 200, res
    return [e["entry"] for e in res["entries"]]


async def _inbox(pair: Pair, mid: str) -> dict[str, Any]:
    status, res, _ = await pair.apis[CN].call("GET", f"/v1/inbox/{mid}")
    assert status == 200, res
    return dict(res)


async def _message(pair: Pair, mid: str) -> dict[str, Any]:
    status, res, _ = await pair.apis[US].call("GET", f"/v1/messages/{mid}")
    assert status == 200, res
    return dict(res)


def _days_dir(pair: Pair, side: str) -> Path:
    return Path(pair.gw(side).day_keys.directory)


async def test_both_sides_dispose_of_a_message_at_its_date(jump_pair: tuple[Pair, JumpClock]) -> None:
    pair, clock = jump_pair
    soon = await _share(pair, clock, 1, days=1)
    later = await _share(pair, clock, 2, days=30)
    day = (await _message(pair, soon))["retain_until"]
    digest = (await _message(pair, soon))["document_sha256"]
    for side in (US, CN):  # nothing is due yet
        run = await pair.gw(side).disposal.run_once()
        assert run.disposed == [] and run.days_destroyed == []
    clock.jump(dt.timedelta(days=2))
    for side in (US, CN):
        run = await pair.gw(side).disposal.run_once()
        assert run.disposed == [soon], side
        assert [d.isoformat() for d in run.days_destroyed] == [day], side
        assert (_days_dir(pair, side) / f"{day}.destroyed").exists()
        assert not (_days_dir(pair, side) / f"{day}.key").exists()
        again = await pair.gw(side).disposal.run_once()  # idempotent
        assert again.disposed == [] and again.days_destroyed == []

    sent = await _message(pair, soon)
    assert sent["disposed_at"] is not None and sent["handling"] is None
    assert sent["document_sha256"] == digest and sent["receipt"] is not None and sent["status"] == "delivered"
    got = await _inbox(pair, soon)
    assert got["body"] is None and got["disposed_at"] is not None and got["document_sha256"] == digest
    assert (await _inbox(pair, later))["body"]["notes"] == f"{NEEDLE} 2"  # a later day is untouched
    assert (await _message(pair, later))["disposed_at"] is None
    # The inbox listing shows it without a body; asking consent about it is refused.
    status, res, _ = await pair.apis[CN].call("POST", f"/v1/inbox/{soon}/consent-requests", json_body={})
    assert status == 409 and res["code"] == "inbox.disposed", res

    for side, direction in ((US, "outbound"), (CN, "inbound")):
        entries = await _entries(pair, side)
        disposed = [e for e in entries if e["kind"] == "disposed"]
        assert [(e["message_id"], e["detail"]["direction"], e["digests"]["document"]) for e in disposed] == [
            (soon, direction, digest)
        ]
        assert [e["detail"]["day"] for e in entries if e["kind"] == "day_key_destroyed"] == [day]

    # The SQLite files hold no trace of the body any more: it was sealed, and now it is blank.
    cfg = pair.lp.configs[CN]
    conn = sqlite3.connect(cfg.path(cfg.store.path))
    try:
        (body,) = conn.execute("SELECT body FROM inbox WHERE id=?", (soon,)).fetchone()
        assert bytes(body) == b""
    finally:
        conn.close()


async def test_a_message_still_being_delivered_is_not_disposed(jump_pair: tuple[Pair, JumpClock]) -> None:
    pair, clock = jump_pair
    await pair.lp.stop(CN)  # the peer is away: the message stays queued
    until = (clock.now().date() + dt.timedelta(days=1)).isoformat()
    status, res, _ = await pair.apis[US].call(
        "POST",
        "/v1/messages",
        json_body={"type": "seizure-share", "to": CN, "body": _body(3), "handling": {"retain_until": until}},
    )
    assert status == 202, res
    clock.jump(dt.timedelta(days=2))
    run = await pair.gw(US).disposal.run_once()
    assert run.disposed == [] and run.days_destroyed == []  # its day key stays while it is pending
    assert (_days_dir(pair, US) / f"{until}.key").exists()
    assert (await _message(pair, res["id"]))["disposed_at"] is None


async def test_a_legal_hold_keeps_a_message_until_released(jump_pair: tuple[Pair, JumpClock]) -> None:
    pair, clock = jump_pair
    held = await _share(pair, clock, 4, days=1)
    free = await _share(pair, clock, 5, days=1)
    day = (await _message(pair, held))["retain_until"]
    status, hold, _ = await pair.apis[CN].call(
        "POST", "/v1/admin/holds", role="admin", json_body={"message_id": held, "reason": "Guangzhou IP Court 2026-17"}
    )
    assert status == 201, hold
    assert hold["origin"] == "ours" and hold["direction"] == "inbound" and hold["active"] is True
    assert hold["notice_id"]
    # The provider sees the hold from the signed notice.
    told = await _told(pair, held, active=True)
    assert [(h["origin"], h["reason"], h["active"]) for h in told] == [("peer", "Guangzhou IP Court 2026-17", True)]

    clock.jump(dt.timedelta(days=2))
    run = await pair.gw(CN).disposal.run_once()
    assert run.disposed == [free]
    assert [d.isoformat() for d in run.days_destroyed] == [day]  # the day key goes on time all the same
    kept = await _inbox(pair, held)
    assert kept["disposed_at"] is None and kept["body"]["notes"] == f"{NEEDLE} 4"
    assert [h["origin"] for h in kept["legal_holds"]] == ["ours"]
    hold_keys = list((_days_dir(pair, CN).parent / "holds").iterdir())
    assert len(hold_keys) == 1

    status, released, _ = await pair.apis[CN].call(
        "POST", f"/v1/admin/holds/{held}/release", role="admin", json_body={"reason": "judgment final"}
    )
    assert status == 200 and released["active"] is False and released["release_reason"] == "judgment final"
    told = await _told(pair, held, active=False)
    assert told[0]["release_reason"] == "judgment final"
    run = await pair.gw(CN).disposal.run_once()
    assert run.disposed == [held]
    assert list((_days_dir(pair, CN).parent / "holds").iterdir()) == []  # its hold key is destroyed too
    assert (await _inbox(pair, held))["body"] is None
    kinds = [e["kind"] for e in await _entries(pair, CN)]
    assert kinds.count("hold_placed") == 1 and kinds.count("hold_released") == 1
    status, listed, _ = await pair.apis[CN].call("GET", "/v1/admin/holds", role="admin")
    assert status == 200 and [h["active"] for h in listed["holds"]] == [False]


async def _told(pair: Pair, mid: str, *, active: bool) -> list[dict[str, Any]]:
    """US's view of the holds CN told it about on `mid`, once the notice has arrived."""
    for _ in range(400):
        holds = (await _message(pair, mid))["legal_holds"]
        if holds and holds[-1]["active"] is active:
            return list(holds)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no legal-hold notice about {mid} arrived")


async def test_bad_hold_requests_change_nothing(jump_pair: tuple[Pair, JumpClock]) -> None:
    pair, clock = jump_pair
    mid = await _share(pair, clock, 6, days=1)
    api = pair.apis[CN]

    async def place(body: Any) -> tuple[int, Any]:
        status, res, _ = await api.call("POST", "/v1/admin/holds", role="admin", json_body=body)
        return status, res

    for body, code, field in (
        ({"message_id": mid}, "schema.required", "$.reason"),
        ({"message_id": mid, "reason": ""}, "schema.length", "$.reason"),
        ({"message_id": mid, "reason": "   "}, "schema.pattern", "$.reason"),
        ({"message_id": "not-an-id", "reason": "x"}, "schema.pattern", "$.message_id"),
        ({"message_id": mid, "reason": "x", "extra": 1}, "schema.unknown_field", "$.extra"),
    ):
        status, res = await place(body)
        assert status == 422 and res["code"] == code and res["field"] == field, (body, res)
    status, res = await place({"message_id": "01950000-0000-7000-8000-000000000000", "reason": "x"})
    assert status == 404 and res["code"] == "hold.not_found", res
    status, res, _ = await api.call("POST", f"/v1/admin/holds/{mid}/release", role="admin", json_body={})
    assert status == 404 and res["code"] == "hold.not_found", res
    status, res, _ = await api.call("POST", "/v1/admin/holds/nope/release", role="admin", json_body={})
    assert status == 422 and res["field"] == "id", res
    status, res = await place({"message_id": mid, "reason": "x"})
    assert status == 201, res
    status, res = await place({"message_id": mid, "reason": "again"})
    assert status == 409 and res["code"] == "hold.exists", res
    status, res, _ = await api.call("POST", "/v1/admin/holds", json_body={"message_id": mid, "reason": "x"})
    assert status == 403, res  # agency role
    # A disposed message cannot be held.
    status, _, _ = await api.call("POST", f"/v1/admin/holds/{mid}/release", role="admin", json_body={})
    assert status == 200
    clock.jump(dt.timedelta(days=2))
    assert (await pair.gw(CN).disposal.run_once()).disposed == [mid]
    status, res = await place({"message_id": mid, "reason": "too late"})
    assert status == 409 and res["code"] == "hold.disposed", res
    status, listed, _ = await api.call("GET", "/v1/admin/holds?active=true", role="admin")
    assert status == 200 and listed["holds"] == []
    status, res, _ = await api.call("GET", "/v1/admin/holds?active=maybe", role="admin")
    assert status == 422 and res["field"] == "active"


async def test_retention_status_and_metrics(jump_pair: tuple[Pair, JumpClock]) -> None:
    pair, clock = jump_pair
    a = await _share(pair, clock, 7, days=1)
    await _share(pair, clock, 8, days=1)
    status, _, _ = await pair.apis[CN].call(
        "POST", "/v1/admin/holds", role="admin", json_body={"message_id": a, "reason": "r"}
    )
    assert status == 201
    clock.jump(dt.timedelta(days=2))
    status, st, _ = await pair.apis[CN].call("GET", "/v1/admin/retention", role="admin")
    assert status == 200 and (st["due"], st["disposed"], st["held"]) == (1, 0, 1), st
    status, st, _ = await pair.apis[CN].call("POST", "/v1/admin/retention/run", role="admin")
    assert status == 200 and (st["due"], st["disposed"], st["held"]) == (0, 1, 1), st
    assert st["last_round"]["disposed"] == 1
    async with pair.apis[CN].session.get(pair.apis[CN].url + "/metrics") as r:
        text = await r.text()
    lines = {
        ln.split(" ")[0]: float(ln.split(" ")[1])
        for ln in text.splitlines()
        if ln.startswith("customs_gateway_retention")
    }
    assert lines["customs_gateway_retention_disposed_messages"] == 1
    assert lines["customs_gateway_retention_held_messages"] == 1
    assert lines["customs_gateway_retention_due_messages"] == 0
    assert lines["customs_gateway_retention_oldest_held_overdue_seconds"] > 0
    assert json.dumps(st)  # plain JSON


async def _training(pair: Pair, clock: JumpClock) -> tuple[str, str]:
    """US sends a training material with one file, retained until tomorrow: (message id, file id)."""
    until = (clock.now().date() + dt.timedelta(days=1)).isoformat()
    body = await pair.apis[US].with_files("training-material")
    status, res, _ = await pair.apis[US].call(
        "POST",
        "/v1/messages",
        json_body={"type": "training-material", "to": CN, "body": body, "handling": {"retain_until": until}},
    )
    assert status == 202, res
    await pair.apis[US].wait_status(res["id"], {"delivered"})
    return str(res["id"]), str(body["files"][0]["file_id"])


async def _download(pair: Pair, side: str, path: str) -> tuple[int, bytes]:
    api = pair.apis[side]
    async with api.session.get(api.url + path, headers={"Authorization": f"Bearer {api.tokens['agency']}"}) as r:
        return r.status, await r.read()


async def test_files_are_disposed_of_with_their_message_unless_held(jump_pair: tuple[Pair, JumpClock]) -> None:
    pair, clock = jump_pair
    gone, gone_file = await _training(pair, clock)
    held, held_file = await _training(pair, clock)
    sent_dir, got_dir = pair.gw(US).files.directory, pair.gw(CN).peer_files.directory
    assert (sent_dir / f"{gone_file}.data").exists() and (got_dir / f"{gone_file}.data").exists()
    status, _, _ = await pair.apis[US].call(
        "POST", "/v1/admin/holds", role="admin", json_body={"message_id": held, "reason": "the sender keeps its copy"}
    )
    assert status == 201
    before = {side: await _download(pair, side, p) for side, p in ((US, f"/v1/messages/{held}/files/{held_file}"),)}
    assert before[US][0] == 200
    clock.jump(dt.timedelta(days=2))
    us_run, cn_run = await pair.gw(US).disposal.run_once(), await pair.gw(CN).disposal.run_once()
    assert us_run.disposed == [gone] and us_run.files == 1 and us_run.days_destroyed
    assert sorted(cn_run.disposed) == sorted([gone, held]) and cn_run.files == 2  # the hold is US's own
    for path in (sent_dir / f"{gone_file}.data", sent_dir / f"{gone_file}.json", got_dir / f"{gone_file}.data"):
        assert not path.exists(), path
    assert (await _download(pair, US, f"/v1/messages/{gone}/files/{gone_file}"))[0] == 410
    assert (await _download(pair, CN, f"/v1/inbox/{gone}/files/{gone_file}"))[0] == 410
    # US's held copy: its document and its file outlive the day key (both under the hold's key).
    assert await _download(pair, US, f"/v1/messages/{held}/files/{held_file}") == before[US]


async def test_a_document_whose_retention_date_passed_on_the_way_is_refused(
    jump_pair: tuple[Pair, JumpClock],
) -> None:
    """A receiver never stores a document it would have to dispose of on arrival (its day key may
    be gone): the sender gets a signed refusal `handling.retention`; nothing enters the inbox."""
    pair, clock = jump_pair
    await pair.lp.stop(CN)
    until = (clock.now().date() + dt.timedelta(days=1)).isoformat()
    status, res, _ = await pair.apis[US].call(
        "POST",
        "/v1/messages",
        json_body={"type": "seizure-share", "to": CN, "body": _body(9), "handling": {"retain_until": until}},
    )
    assert status == 202, res
    clock.jump(dt.timedelta(days=2))
    await pair.lp.start(CN, clock=clock)
    m = await pair.apis[US].wait_status(res["id"], {"refused", "delivered"}, timeout=60)
    refusal = json.loads(unb64url(m["refusal"]["refusal"], field="refusal"))
    assert m["status"] == "refused" and refusal["code"] == "handling.retention", m
    assert await pair.gw(CN).store.inbox_item(res["id"]) is None
