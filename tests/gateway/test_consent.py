"""Consent for onward use (DESIGN §12, issue 17): the receiver of a message asks its provider for
consent to pass it on or use it as evidence (`POST /v1/inbox/{id}/consent-requests`), the provider
decides (`POST /v1/messages/{id}/consent-requests/{request_id}/decision`); both gateways record the
request and the decision (and audit them), and the receiver's inbox item shows its current
permissions, changed only by the provider's signed decision."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from customs_gateway.core.clock import JumpClock

from .conftest import CN, MODULE_LOOP, US, Pair

AUTHORITY = "Ministry of Public Security, Economic Crime Investigation Department / 公安部经济犯罪侦查局"
ASK = {"use": "onward_transfer", "authority": AUTHORITY, "reason": "Joint investigation of the shipper / 联合调查"}


async def _shared(pair: Pair) -> str:
    """US shares a seizure with CN (default terms: onward transfer and evidence with consent)."""
    status, res = await pair.apis[US].submit("seizure-share")
    assert status == 202, res
    await pair.apis[US].wait_status(res["id"], {"delivered"})
    return str(res["id"])


async def _ask(pair: Pair, message_id: str, body: dict[str, Any], **kw: Any) -> tuple[int, Any]:
    status, res, _ = await pair.apis[CN].call("POST", f"/v1/inbox/{message_id}/consent-requests", json_body=body, **kw)
    return status, res


async def _decide(pair: Pair, message_id: str, request_id: str, body: dict[str, Any]) -> tuple[int, Any]:
    status, res, _ = await pair.apis[US].call(
        "POST", f"/v1/messages/{message_id}/consent-requests/{request_id}/decision", json_body=body
    )
    return status, res


async def _item(pair: Pair, message_id: str) -> dict[str, Any]:
    status, res, _ = await pair.apis[CN].call("GET", f"/v1/inbox/{message_id}")
    assert status == 200, res
    return dict(res)


async def _audit(pair: Pair, side: str) -> list[dict[str, Any]]:
    status, res, _ = await pair.apis[side].call("GET", "/v1/audit/entries?limit=1000", role="auditor")
    assert status == 200, res
    return [e["entry"] for e in res["entries"]]


async def test_a_request_and_a_decision_change_the_permissions_on_both_sides(pair: Pair) -> None:
    share = await _shared(pair)
    item = await _item(pair, share)
    assert item["permissions"] == {
        "onward_transfer": {"terms": "with-consent", "granted": []},
        "evidentiary_use": {"terms": "with-consent", "granted": []},
        "conditions": None,
    }
    assert item["consent_requests"] == []
    assert item["body"]["case_reference"]

    status, req = await _ask(pair, share, ASK, headers={"Idempotency-Key": "ask-1"})
    assert status == 202, req
    assert req["handling"]["purpose"] == "coordination"
    status, again = await _ask(pair, share, ASK, headers={"Idempotency-Key": "ask-1"})
    assert (status, again["id"]) == (202, req["id"])  # idempotent like any submission
    await pair.apis[CN].wait_status(req["id"], {"delivered"})
    pending = {
        "request_id": req["id"],
        "use": "onward_transfer",
        "party": AUTHORITY,
        "reason": ASK["reason"],
        "status": "pending",
    }
    item = await _item(pair, share)
    assert [{k: r[k] for k in pending} for r in item["consent_requests"]] == [pending]
    status, ours, _ = await pair.apis[US].call("GET", f"/v1/messages/{share}")
    assert [{k: r[k] for k in pending} for r in ours["consent_requests"]] == [pending]

    until = (pair.gw(US).clock.now().date() + dt.timedelta(days=30)).isoformat()
    decision = {
        "decision": "granted_with_conditions",
        "conditions": "Only for case 2026-17 / 仅限本案",
        "valid_until": until,
    }
    status, dec = await _decide(pair, share, req["id"], decision)
    assert status == 202, dec
    await pair.apis[US].wait_status(dec["id"], {"delivered"})
    item = await _item(pair, share)
    assert item["permissions"]["onward_transfer"] == {
        "terms": "with-consent",
        "granted": [
            {
                "party": AUTHORITY,
                "request_id": req["id"],
                "decision_id": dec["id"],
                "conditions": decision["conditions"],
                "valid_until": until,
            }
        ],
    }
    assert item["permissions"]["evidentiary_use"]["granted"] == []
    (rec,) = item["consent_requests"]
    assert (rec["status"], rec["decision_id"], rec["conditions"]) == (
        "granted_with_conditions",
        dec["id"],
        decision["conditions"],
    )
    status, ours, _ = await pair.apis[US].call("GET", f"/v1/messages/{share}")
    assert ours["consent_requests"][0]["status"] == "granted_with_conditions"
    # The inbox page carries the same permissions.
    status, page, _ = await pair.apis[CN].call("GET", "/v1/inbox?after=0&wait=0")
    (listed,) = [m for m in page["messages"] if m["id"] == share]
    assert listed["permissions"] == item["permissions"]

    # Both sides audit the request and the decision, naming what they are about.
    for side in (US, CN):
        details = [e.get("detail", {}) for e in await _audit(pair, side)]
        assert {"type": "consent-request", "about": share, "use": "onward_transfer"}.items() <= next(
            d for d in details if d.get("type") == "consent-request"
        ).items(), details
        assert {
            "type": "consent-decision",
            "decides": req["id"],
            "decision": "granted_with_conditions",
        }.items() <= next(d for d in details if d.get("type") == "consent-decision").items(), details

    # A later decision on the same request replaces the earlier one (consent withdrawn).
    status, dec2 = await _decide(pair, share, req["id"], {"decision": "refused", "reason": "Case closed"})
    assert status == 202, dec2
    await pair.apis[US].wait_status(dec2["id"], {"delivered"})
    item = await _item(pair, share)
    assert item["permissions"]["onward_transfer"]["granted"] == []
    assert item["consent_requests"][0]["status"] == "refused"


@MODULE_LOOP
async def test_requests_and_decisions_refused_with_a_clear_4xx(module_pair: Pair) -> None:
    pair = module_pair
    share = await _shared(pair)
    gw_cn, gw_us = pair.gw(CN), pair.gw(US)
    sizes = (await gw_cn.store.audit_size(), await gw_us.store.audit_size())
    unknown = "01950000-0000-7000-8000-00000000beef"
    cases = [
        (await _ask(pair, unknown, ASK), 404, "inbox.not_found", "id"),
        (await _ask(pair, "not-an-id", ASK), 422, "schema.uuid", "id"),
        (await _ask(pair, share, {**ASK, "use": "sale"}), 422, "schema.enum", "$.use"),
        (await _ask(pair, share, {"use": "onward_transfer", "reason": "x"}), 422, "schema.required", "$.authority"),
        (await _ask(pair, share, {**ASK, "proceeding": "Case 1"}), 422, "schema.forbidden_field", "$.proceeding"),
        (await _ask(pair, share, {**ASK, "colour": 1}), 422, "schema.unknown_field", None),
        (
            await _ask(pair, share, {**ASK, "handling": {"purpose": "tax"}}),
            422,
            "handling.purpose",
            "$.handling.purpose",
        ),
        (await _decide(pair, share, unknown, {"decision": "granted"}), 404, "consent.not_found", "request_id"),
        (await _decide(pair, unknown, unknown, {"decision": "granted"}), 404, "consent.not_found", "request_id"),
    ]
    for (status, prob), want_status, code, field in cases:
        assert (status, prob["code"]) == (want_status, code), prob
        if field is not None:
            assert prob["field"] == field, prob
    assert (await gw_cn.store.audit_size(), await gw_us.store.audit_size()) == sizes  # nothing written
    # A request CN sent about US's message: a decision must name that message, and only US decides.
    status, req = await _ask(pair, share, ASK)
    assert status == 202, req
    await pair.apis[CN].wait_status(req["id"], {"delivered"})
    _, other = await pair.apis[US].submit("seminar-notice")
    status, prob = await _decide(pair, other["id"], req["id"], {"decision": "granted"})
    assert (status, prob["code"]) == (404, "consent.not_found"), prob
    status, prob = await _decide(pair, share, req["id"], {"decision": "granted", "conditions": "x"})
    assert (status, prob["code"], prob["field"]) == (422, "schema.forbidden_field", "$.conditions"), prob
    status, prob = await _decide(pair, share, req["id"], {"decision": "perhaps"})
    assert (status, prob["code"], prob["field"]) == (422, "schema.enum", "$.decision"), prob
    # CN (the requester) cannot decide on its own request: it holds no such message to decide on.
    status, prob, _ = await pair.apis[CN].call(
        "POST", f"/v1/messages/{req['id']}/consent-requests/{req['id']}/decision", json_body={"decision": "granted"}
    )
    assert (status, prob["code"]) == (404, "consent.not_found"), prob
    # Nor through the plain submit: a decision must name a request the peer sent it.
    own = {"request_id": req["id"], "decision": "granted"}
    status, prob, _ = await pair.apis[CN].call(
        "POST", "/v1/messages", json_body={"type": "consent-decision", "to": US, "body": own}
    )
    assert (status, prob["code"], prob["field"]) == (422, "schema.reference", "$.body.request_id"), prob
    assert (await gw_cn.store.consent(req["id"])).decision is None  # type: ignore[union-attr]
    assert await gw_us.store.audit_size() > sizes[1]  # the request was received (and nothing else written):
    assert [e for e in await _audit(pair, US) if e.get("detail", {}).get("type") == "consent-decision"] == []


async def test_a_grant_ends_at_its_date(jump_pair: tuple[Pair, JumpClock]) -> None:
    pair, clock = jump_pair
    share = await _shared(pair)
    status, req = await _ask(
        pair, share, {"use": "evidentiary_use", "proceeding": "Guangzhou IP Court 2026-17", "reason": "Trial"}
    )
    assert status == 202, req
    await pair.apis[CN].wait_status(req["id"], {"delivered"})
    until = clock.now().date() + dt.timedelta(days=10)
    status, dec = await _decide(pair, share, req["id"], {"decision": "granted", "valid_until": until.isoformat()})
    assert status == 202, dec
    await pair.apis[US].wait_status(dec["id"], {"delivered"})
    item = await _item(pair, share)
    assert [g["party"] for g in item["permissions"]["evidentiary_use"]["granted"]] == ["Guangzhou IP Court 2026-17"]
    clock.jump(dt.timedelta(days=11))
    item = await _item(pair, share)
    assert item["permissions"]["evidentiary_use"]["granted"] == []
    assert item["consent_requests"][0]["status"] == "expired"


@pytest.mark.parametrize("decision", ["granted", "refused"])
def test_status_of_a_record(decision: str) -> None:
    from customs_gateway.core.consent import ConsentRecord, status_of

    day = dt.date(2026, 12, 1)
    rec = ConsentRecord("r", "m", "requester", "onward_transfer", "x", "y", dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
    assert status_of(rec, day) == "pending"
    done = ConsentRecord(**{**rec.__dict__, "decision": decision, "decision_id": "d", "valid_until": day})
    assert status_of(done, day) == decision
    assert status_of(done, day + dt.timedelta(days=1)) == ("expired" if decision == "granted" else "refused")
