"""The agreements' own message types (issue 17): joint-operation and information-request, each
rule refused with its code and the field's path, and the samples with Chinese text accepted."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from customs_gateway.core import reference, threads
from customs_gateway.core.errors import SchemaError
from customs_gateway.core.schemas import InformationRequest, JointOperation, validate_body

SAMPLES = Path(__file__).resolve().parents[2] / "keys-example" / "messages"


def sample(msg_type: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((SAMPLES / f"{msg_type}.json").read_text(encoding="utf-8"))
    return body


def refused(msg_type: str, body: dict[str, Any]) -> SchemaError:
    with pytest.raises(SchemaError) as e:
        validate_body(msg_type, body)
    return e.value


def test_samples_hold_chinese_text_and_validate() -> None:
    op = validate_body("joint-operation", sample("joint-operation"))
    assert isinstance(op, JointOperation) and "联合行动" in op.operation_name
    req = validate_body("information-request", sample("information-request"))
    assert isinstance(req, InformationRequest) and "发货人" in req.subject


def test_an_operation_from_proposal_to_outcome() -> None:
    body = sample("joint-operation")
    for phase in ("proposal", "plan"):
        assert validate_body("joint-operation", {**body, "phase": phase})
    results = {"shipments_inspected": 1240, "shipments_seized": 37, "items_seized": 52000, "arrests": 4, "leads": 11}
    for phase in ("update", "outcome"):
        assert validate_body("joint-operation", {**body, "phase": phase, "results": results})
    assert validate_body("joint-operation", {**body, "phase": "update"})  # figures may come later


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"phase": "outcome"}, "schema.required", "$.results"),
        (
            {"phase": "plan", "results": {"shipments_inspected": 1, "shipments_seized": 0}},
            "schema.forbidden_field",
            "$.results",
        ),
        (
            {"phase": "outcome", "results": {"shipments_inspected": 3, "shipments_seized": 4}},
            "schema.range",
            "$.results.shipments_seized",
        ),
        (
            {"phase": "outcome", "results": {"shipments_inspected": -1, "shipments_seized": 0}},
            "schema.range",
            "$.results.shipments_inspected",
        ),
        ({"phase": "done"}, "schema.enum", "$.phase"),
        ({"ports": ["SHANGHAI"]}, "schema.unlocode", "$.ports[0]"),
        ({"ports": []}, "schema.length", "$.ports"),
        (
            {"period": {"start": "2027-05-01", "end": "2027-04-30", "time_zone": "Asia/Shanghai"}},
            "schema.date_order",
            "$.period.end",
        ),
        (
            {"period": {"start": "2027-03-01", "end": "2027-04-30", "time_zone": "Mars/Olympus"}},
            "schema.timezone",
            "$.period.time_zone",
        ),
        ({"participating_offices": []}, "schema.length", "$.participating_offices"),
    ],
)
def test_joint_operation_rules(change: dict[str, Any], code: str, field: str) -> None:
    err = refused("joint-operation", {**sample("joint-operation"), **change})
    assert (err.code, err.field) == (code, field), err.detail


def test_joint_operation_commodity_rules() -> None:
    body = sample("joint-operation")
    bad = copy.deepcopy(body)
    bad["target_commodities"][1]["hs_codes"] = ["33"]
    err = refused("joint-operation", bad)
    assert (err.code, err.field) == ("schema.hs_code", "$.target_commodities[1].hs_codes[0]")
    bad = copy.deepcopy(body)
    del bad["target_commodities"][0]["health_safety_risk"]
    err = refused("joint-operation", bad)
    assert (err.code, err.field) == ("schema.required", "$.target_commodities[0].health_safety_risk")
    bad = copy.deepcopy(body)
    bad["participating_offices"][0]["country"] = "XX"
    err = refused("joint-operation", bad)
    assert (err.code, err.field) == ("schema.country", "$.participating_offices[0].country")


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"questions": []}, "schema.length", "$.questions"),
        ({"requested_items": ["everything"]}, "schema.enum", "$.requested_items[0]"),
        ({"urgency": "asap"}, "schema.enum", "$.urgency"),
        ({"reply_by": "15/01/2027"}, "schema.date", "$.reply_by"),
        ({"case_reference": ""}, "schema.length", "$.case_reference"),
        ({"subject": "two\nlines"}, "schema.text", "$.subject"),
        ({"extra": 1}, "schema.unknown_field", "$.extra"),
    ],
)
def test_information_request_rules(change: dict[str, Any], code: str, field: str) -> None:
    err = refused("information-request", {**sample("information-request"), **change})
    assert (err.code, err.field) == (code, field), err.detail


def test_both_are_found_by_reference() -> None:
    op = sample("joint-operation")
    assert reference.references("joint-operation", "m", op) == (reference.normalize(op["operation_name"]),)
    req = sample("information-request")
    assert reference.references("information-request", "m", req) == ("cbp-2026-lgb-004711",)


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"use": "onward_transfer"}, "schema.required", "$.authority"),
        ({"authority": "FBI"}, "schema.forbidden_field", "$.authority"),
        ({"use": "publication"}, "schema.enum", "$.use"),
        ({"message_id": "not-an-id"}, "schema.uuid", "$.message_id"),
        ({"reason": ""}, "schema.length", "$.reason"),
    ],
)
def test_consent_request_rules(change: dict[str, Any], code: str, field: str) -> None:
    err = refused("consent-request", {**sample("consent-request"), **change})
    assert (err.code, err.field) == (code, field), err.detail


def test_consent_request_for_onward_transfer_names_the_authority() -> None:
    body = {**sample("consent-request"), "use": "onward_transfer", "authority": "HSI Los Angeles"}
    del body["proceeding"]
    assert validate_body("consent-request", body)


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"decision": "granted_with_conditions", "conditions": None}, "schema.required", "$.conditions"),
        ({"decision": "granted"}, "schema.forbidden_field", "$.conditions"),
        ({"decision": "refused", "conditions": None}, "schema.forbidden_field", "$.valid_until"),
        ({"decision": "maybe"}, "schema.enum", "$.decision"),
        ({"request_id": 7}, "schema.type", "$.request_id"),
    ],
)
def test_consent_decision_rules(change: dict[str, Any], code: str, field: str) -> None:
    body = {k: v for k, v in {**sample("consent-decision"), **change}.items() if v is not None}
    err = refused("consent-decision", body)
    assert (err.code, err.field) == (code, field), err.detail


def test_what_each_type_names_and_answers_by_default() -> None:
    req, dec = sample("consent-request"), sample("consent-decision")
    assert threads.named("consent-request", req) == (("message_id", req["message_id"]),)
    assert threads.default_reply_to("consent-decision", dec) == dec["request_id"]
    assert threads.default_reply_to("seizure-share", sample("seizure-share")) is None
    pairs = threads.named("consent-decision", dec)
    assert threads.first_unknown("consent-decision", pairs, {dec["request_id"]: "consent-request"}, "x") is None
    field, detail = threads.first_unknown("consent-decision", pairs, {dec["request_id"]: "seizure-share"}, "x") or (
        "",
        "",
    )
    assert field == "request_id" and "consent request" in detail
    assert "consent-request" not in threads.CONSENTABLE_TYPES and "seizure-share" in threads.CONSENTABLE_TYPES
