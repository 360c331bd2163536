"""Batch submission (issue 21): `POST /v1/messages:batch` takes up to 500 messages, each with its
own idempotency key and its own result, commits the accepted ones in one transaction, and reports
each refusal per item (the field under `$.messages[i]`), never failing the whole batch for one."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import CN, MODULE_LOOP, US, Pair, sample


def _item(msg_type: str = "seizure-share", **extra: Any) -> dict[str, Any]:
    return {"type": msg_type, "to": CN, "body": sample(msg_type), **extra}


async def _batch(pair: Pair, items: Any, side: str = US) -> tuple[int, Any]:
    status, res, _ = await pair.apis[side].call("POST", "/v1/messages:batch", json_body=items)
    return status, res


async def test_a_batch_is_committed_in_order_and_delivered(pair: Pair) -> None:
    items = [_item(idempotency_key=f"k-{i}") for i in range(20)]
    items[7] = _item("seminar-notice", idempotency_key="k-7")
    status, res = await _batch(pair, {"messages": items})
    assert status == 200, res
    results = res["results"]
    assert [r["index"] for r in results] == list(range(20))
    assert {r["status"] for r in results} == {"accepted"}
    seqs = [r["seq"] for r in results]
    assert seqs == sorted(seqs) and len(set(seqs)) == 20  # in the order given
    assert results[7]["handling"]["purpose"] == "training"
    for r in results:
        await pair.apis[US].wait_status(r["id"], {"delivered"})
    inbox = [await pair.gw(CN).store.inbox_item(r["id"]) for r in results]
    assert all(i is not None for i in inbox)
    # The same keys again: every item is the message it made before.
    status, again = await _batch(pair, {"messages": items})
    assert status == 200
    assert [(r["status"], r["id"]) for r in again["results"]] == [("replayed", r["id"]) for r in results]


async def test_refusals_are_reported_per_item_and_the_rest_committed(pair: Pair) -> None:
    gw = pair.gw(US)
    _, first = await _batch(pair, {"messages": [_item(idempotency_key="same")]})
    good = _item()
    bad_body = _item(body={"case_reference": 5})
    bad_terms = _item(handling={"purpose": "tax-collection"})
    wrong_peer = {**_item(), "to": "XX-OTHER"}
    conflict = _item("seminar-notice", idempotency_key="same")  # the key was used for another request
    unknown_reply = _item(in_reply_to="01950000-0000-7000-8000-00000000beef")
    bad_key = _item(idempotency_key="")
    not_object = "a string"
    items = [good, bad_body, bad_terms, wrong_peer, conflict, unknown_reply, bad_key, not_object, good]
    before = await gw.store.audit_size()
    status, res = await _batch(pair, {"messages": items})
    assert status == 200, res
    got = [
        (r["status"], (r.get("problem") or {}).get("code"), (r.get("problem") or {}).get("field"))
        for r in res["results"]
    ]
    assert got == [
        ("accepted", None, None),
        ("refused", "schema.type", "$.messages[1].body.case_reference"),
        ("refused", "handling.purpose", "$.messages[2].handling.purpose"),
        ("refused", "schema.recipient", "$.messages[3].to"),
        ("refused", "idempotency.conflict", "$.messages[4].idempotency_key"),
        ("refused", "schema.reference", "$.messages[5].in_reply_to"),
        ("refused", "schema.length", "$.messages[6].idempotency_key"),
        ("refused", "schema.type", "$.messages[7]"),
        ("accepted", None, None),
    ], got
    assert first["results"][0]["status"] == "accepted"
    # Two messages committed (each with its `submitted` entry), nothing of the refused ones.
    assert await gw.store.audit_size() == before + 2
    for r in res["results"]:
        if r["status"] == "refused":
            assert set(r) == {"index", "status", "problem"}, r


@MODULE_LOOP
@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ([], "schema.json", "$"),
        ({}, "schema.required", "$.messages"),
        ({"messages": []}, "schema.length", "$.messages"),
        ({"messages": [_item()] * 501}, "schema.length", "$.messages"),
        ({"messages": [_item()], "extra": 1}, "schema.unknown_field", "$.extra"),
        ({"messages": "x"}, "schema.type", "$.messages"),
    ],
)
async def test_a_malformed_batch_is_one_422(module_pair: Pair, body: Any, code: str, field: str) -> None:
    gw = module_pair.gw(US)
    before = await gw.store.audit_size()
    status, prob = await _batch(module_pair, body)
    assert (status, prob["code"], prob["field"]) == (422, code, field), prob
    assert await gw.store.audit_size() == before
