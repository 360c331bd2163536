"""Handling terms (DESIGN §12, issue 17): every business document carries them, signed with it.
The sender completes what a back-end leaves out from the agreement profile's defaults, shows the
terms it applied, and refuses terms that break the profile (422 naming the field and the rule,
nothing written); a receiver checks them against its own profile and refuses a document that
breaks it, or carries none, with a signed refusal (`handling.*`), and nothing reaches its inbox."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from typing import Any

import msgspec
import pytest

from customs_gateway.core import handling
from customs_gateway.core.audit import AuditEntry
from customs_gateway.core.bundle import PeerKeys
from customs_gateway.core.envelope import Document, SignedDocument
from customs_gateway.core.profile import load_profile
from customs_gateway.core.receipt import Statement, verify_refusal
from customs_gateway.startup.agreement import builtin_profile

from .conftest import CN, MODULE_LOOP, US, Pair, sample

AGREEMENT = "us-cn-cmaa-1999"


async def _submit(pair: Pair, side: str, msg_type: str, **extra: Any) -> tuple[int, Any]:
    api = pair.apis[side]
    body = extra.pop("body", None) or sample(msg_type)
    status, res, _ = await api.call(
        "POST", "/v1/messages", json_body={"type": msg_type, "to": api.peer, "body": body, **extra}
    )
    return status, res


async def test_defaults_complete_the_terms_and_every_view_shows_them(pair: Pair) -> None:
    us, cn = pair.apis[US], pair.apis[CN]
    today = pair.gw(US).clock.now().date()
    status, res = await _submit(pair, US, "seizure-share")
    assert status == 202, res
    terms = res["handling"]
    assert terms == {
        "legal_basis": {"agreement": AGREEMENT},
        "purpose": "ipr-enforcement",
        "confidentiality": {
            "level": "law-enforcement-sensitive",
            "reason": builtin_profile().rules("seizure-share").defaults.confidentiality_reason,
        },
        "onward_transfer": "with-consent",
        "evidentiary_use": "with-consent",
        "personal_data": True,
        "retain_until": (today + dt.timedelta(days=1825)).isoformat(),
    }
    # Signed with the document, shown on the message, and on the receiver's inbox item.
    m = await us.wait_status(res["id"], {"delivered"})
    assert m["handling"] == terms
    stored = await pair.gw(US).store.get_message(res["id"])
    assert stored is not None
    assert Document.from_bytes(SignedDocument.from_bytes(stored.signed_document).document_bytes).handling == terms
    status, page, _ = await cn.call("GET", "/v1/inbox?after=0&wait=0")
    assert status == 200, page
    (item,) = [i for i in page["messages"] if i["id"] == res["id"]]
    assert item["handling"] == terms
    status, listed, _ = await cn.call("GET", "/v1/messages?direction=inbound")
    assert [i["handling"] for i in listed["messages"] if i["id"] == res["id"]] == [terms]
    # An idempotent replay answers the same terms.
    key = {"Idempotency-Key": "handling-1"}
    _, first, _ = await us.call(
        "POST",
        "/v1/messages",
        json_body={"type": "seminar-notice", "to": CN, "body": sample("seminar-notice")},
        headers=key,
    )
    _, again, _ = await us.call(
        "POST",
        "/v1/messages",
        json_body={"type": "seminar-notice", "to": CN, "body": sample("seminar-notice")},
        headers=key,
    )
    assert first == again and first["handling"]["purpose"] == "training"


async def test_terms_a_back_end_gives_are_kept_and_only_the_rest_defaulted(pair: Pair) -> None:
    today = pair.gw(US).clock.now().date()
    given = {
        "legal_basis": {"agreement": AGREEMENT, "article": "12", "request_ref": "GACC-REQ-2026-17"},
        "purpose": "investigation",
        "confidentiality": {"level": "confidential", "reason": "Ongoing investigation / 正在调查"},
        "onward_transfer": "prohibited",
        "retain_until": (today + dt.timedelta(days=90)).isoformat(),
        "conditions": "Not to be shared with the right holder.\n不得与权利人共享。",
    }
    status, res = await _submit(pair, US, "seizure-share", handling=given)
    assert status == 202, res
    assert res["handling"] == {**given, "evidentiary_use": "with-consent", "personal_data": True}
    m = await pair.apis[US].wait_status(res["id"], {"delivered"})
    item = await pair.gw(CN).store.inbox_item(res["id"])
    assert item is not None and m["handling"] == res["handling"]


REFUSED = [
    ({"purpose": "tax-collection"}, "handling.purpose", "$.handling.purpose"),
    ({"retain_until": "2099-01-01"}, "handling.retention", "$.handling.retain_until"),
    ({"retain_until": "2020-01-01"}, "handling.retention", "$.handling.retain_until"),
    ({"evidentiary_use": "permitted"}, "handling.evidentiary_use", "$.handling.evidentiary_use"),
    ({"onward_transfer": "permitted"}, "handling.onward_transfer", "$.handling.onward_transfer"),
    ({"confidentiality": {"level": "confidential"}}, "handling.confidentiality", "$.handling.confidentiality.reason"),
    ({"confidentiality": {"level": "top-secret", "reason": "x"}}, "handling.confidentiality", None),
    ({"legal_basis": {"agreement": "another-treaty"}}, "handling.agreement", "$.handling.legal_basis.agreement"),
    ({"purpose": 5}, "schema.type", "$.handling.purpose"),
    ({"onward_transfer": "maybe"}, "schema.enum", "$.handling.onward_transfer"),
    ({"retain_until": "next year"}, None, "$.handling.retain_until"),
    ({"colour": "red"}, "schema.unknown_field", None),
    ({"personal_data": "yes"}, "schema.type", "$.handling.personal_data"),
]


@MODULE_LOOP
@pytest.mark.parametrize(("given", "code", "field"), REFUSED)
async def test_the_sender_refuses_terms_outside_the_profile(
    module_pair: Pair, given: dict[str, Any], code: str | None, field: str | None
) -> None:
    gw = module_pair.gw(US)
    before = await gw.store.audit_size()
    status, prob = await _submit(module_pair, US, "seizure-share", handling=given)
    assert status == 422, prob
    if code is not None:
        assert prob["code"] == code, prob
    else:
        assert prob["code"].startswith("schema."), prob
    if field is not None:
        assert prob["field"] == field, prob
    else:
        assert prob["field"].startswith("$.handling"), prob
    assert await gw.store.audit_size() == before  # nothing written


@MODULE_LOOP
async def test_handling_must_be_an_object_and_every_problem_is_listed(module_pair: Pair) -> None:
    status, prob = await _submit(module_pair, US, "seizure-share", handling="default")
    assert (status, prob["code"], prob["field"]) == (422, "schema.type", "$.handling"), prob
    status, prob = await _submit(
        module_pair, US, "seizure-share", handling={"purpose": "tax", "evidentiary_use": "permitted"}
    )
    assert status == 422
    assert {(e["code"], e["field"]) for e in prob["errors"]} == {
        ("handling.purpose", "$.handling.purpose"),
        ("handling.evidentiary_use", "$.handling.evidentiary_use"),
    }


async def _refusal(pair: Pair, message_id: str) -> Any:
    m = await pair.apis[US].wait_status(message_id, {"refused"})
    return verify_refusal(
        Statement.from_dict("refusal", m["refusal"]),
        message_id=message_id,
        sender=US,
        receiver=CN,
        key_for=PeerKeys(pair.lp.identity(CN).bundle.bundle).verify_key,
    )


async def test_the_receiver_refuses_terms_outside_its_profile_with_a_signed_refusal(pair: Pair) -> None:
    gw = pair.gw(US)
    now = gw.clock.now()
    later = now + dt.timedelta(hours=1)
    wire = handling.default_wire("seizure-share", gw.profile, now.date())
    # Terms the sender's checks would refuse, forged past them (as a faulty or hostile sender might).
    bad = gw._new_message(
        "seizure-share",
        sample("seizure-share"),
        now,
        later,
        None,
        terms=handling.from_wire({**wire, "evidentiary_use": "permitted"}),
    )
    ok = gw._new_message("seizure-share", sample("seizure-share"), now, later, None)
    doc = Document.from_bytes(SignedDocument.from_bytes(ok.signed_document).document_bytes)
    bare = SignedDocument.create(dataclasses.replace(doc, handling=None), gw.identity.active_signing_key(now))
    missing = dataclasses.replace(ok, signed_document=bare.raw, document_sha256=bare.digest)
    for msg in (bad, missing):
        await gw.store.submit(msg, AuditEntry(at=now, kind="submitted", actor="test", message_id=msg.id))
    gw.outbox_changed.set()
    for msg, code in ((bad, "handling.evidentiary_use"), (missing, "handling.missing")):
        refusal = await _refusal(pair, msg.id)
        assert refusal.code == code and not refusal.retryable, refusal
        assert await pair.gw(CN).store.inbox_item(msg.id) is None


async def test_a_receiver_with_another_profile_refuses_what_it_does_not_allow(pair: Pair) -> None:
    """Both sides must load the same profile: where CN's differs (no `risk-targeting` purpose), a
    US document for that purpose is refused by CN, signed, naming the rule."""
    text = (builtin_profile().data.decode()).replace('id = "risk-targeting"', 'id = "risk-assessment"')
    pair.gw(CN).profile = load_profile(text.encode())
    status, res = await _submit(pair, US, "seizure-share", handling={"purpose": "risk-targeting"})
    assert status == 202, res
    refusal = await _refusal(pair, res["id"])
    assert refusal.code == "handling.purpose", refusal


async def _profile_status(pair: Pair, side: str) -> dict[str, Any]:
    status, ready, _ = await pair.apis[side].call("GET", "/readyz", role=None)
    assert status == 200, ready
    _, peers, _ = await pair.apis[side].call("GET", "/v1/admin/peers", role="admin")
    assert peers["peers"][0]["agreement_profile"] == ready["agreement_profile"]
    return dict(ready["agreement_profile"])


async def test_a_changed_profile_is_announced_and_the_difference_reported(pair: Pair) -> None:
    """The profile's SHA-256 is in each key bundle: a gateway whose profile file changed announces
    the next bundle at start (signed, audit-logged), and both sides then report the difference."""
    builtin = builtin_profile()
    for side in (US, CN):
        assert await _profile_status(pair, side) == {
            "agreement": AGREEMENT,
            "sha256": builtin.sha256,
            "peer_sha256": builtin.sha256,
            "status": "same",
        }
    changed = builtin.data.replace(b'id = "risk-targeting"', b'id = "risk-assessment"')
    path = pair.lp.homes[US].dir / "agreement-profile.toml"
    path.write_bytes(changed)
    new_sha = load_profile(changed).sha256
    serial = pair.gw(US).identity.bundle.bundle.serial
    await pair.lp.stop(US)
    pair.lp.configs[US] = msgspec.structs.replace(pair.lp.configs[US], agreement_profile=str(path))
    await pair.lp.start(US)
    us = pair.gw(US)
    assert us.profile.sha256 == new_sha
    assert (us.identity.bundle.bundle.serial, us.identity.bundle.bundle.agreement_profile) == (serial + 1, new_sha)
    _, listed, _ = await pair.apis[US].call("GET", "/v1/audit/entries?limit=1000", role="auditor")
    announced = [e["entry"] for e in listed["entries"] if e["entry"].get("detail", {}).get("event") == "profile"]
    assert len(announced) == 1 and announced[0]["kind"] == "key_rotated", announced
    # The announcement reaches CN, which now trusts the new bundle and reports the difference.
    for _ in range(200):
        if pair.gw(CN).peer.bundle.agreement_profile == new_sha:
            break
        await asyncio.sleep(0.05)
    assert await _profile_status(pair, CN) == {
        "agreement": AGREEMENT,
        "sha256": builtin.sha256,
        "peer_sha256": new_sha,
        "status": "differs",
    }
    assert (await _profile_status(pair, US))["status"] == "differs"
    # Restarting with the same file announces nothing more.
    await pair.lp.stop(US)
    await pair.lp.start(US)
    assert pair.gw(US).identity.bundle.bundle.serial == serial + 1


def test_a_bundle_states_its_profile_as_sha256_hex() -> None:
    from customs_gateway.core.bundle import KeyBundle
    from customs_gateway.core.errors import DecodeError
    from customs_gateway.startup.agreement import example_dir

    raw = (example_dir() / "US-CBP" / "keys" / "bundle.json").read_bytes()
    from customs_gateway.core.bundle import SignedBundle

    bundle = SignedBundle.from_bytes(raw).bundle
    assert bundle.agreement_profile == builtin_profile().sha256
    for bad in ("ABC", 5, "0" * 63, "G" * 64):
        d = msgspec.json.decode(bundle.to_bytes())
        d["agreement_profile"] = bad
        with pytest.raises(DecodeError) as e:
            KeyBundle.from_bytes(msgspec.json.encode(d))
        assert e.value.field == "bundle.agreement_profile"
    d = msgspec.json.decode(bundle.to_bytes())
    del d["agreement_profile"]
    assert KeyBundle.from_bytes(msgspec.json.encode(d)).agreement_profile is None  # bundles from before profiles
