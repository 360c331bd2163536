"""Search by business reference (issue 16): a case reference, an invitation id (which its replies
quote), a seminar title find their messages on both sides and in both directions, indexed as
keyed tags the database never holds in clear."""

from __future__ import annotations

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
