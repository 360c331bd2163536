"""The agreements' own message types (issue 17): joint-operation and information-request, each
rule refused with its code and the field's path, and the samples with Chinese text accepted."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from customs_gateway.core import reference
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
