"""Handling terms: defaults from the profile, one refusal per rule, a strict wire form."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from customs_gateway.core.envelope import BUSINESS_TYPES
from customs_gateway.core.errors import SchemaError
from customs_gateway.core.handling import (
    Confidentiality,
    HandlingTerms,
    apply_defaults,
    check_terms,
    from_wire,
    to_wire,
)
from customs_gateway.core.profile import PROFILE_TYPES, load_profile
from customs_gateway.core.refusals import REFUSALS

PROFILE = load_profile((Path(__file__).resolve().parents[2] / "keys-example" / "agreement-profile.toml").read_bytes())
TODAY = dt.date(2026, 12, 4)


def defaults(msg_type: str = "seizure-share", **changes: Any) -> HandlingTerms:
    return msgspec.structs.replace(apply_defaults(None, msg_type, PROFILE, TODAY), **changes)


def refusal(terms: HandlingTerms, msg_type: str = "seizure-share") -> SchemaError:
    with pytest.raises(SchemaError) as e:
        check_terms(terms, msg_type, PROFILE, TODAY)
    assert e.value.code in REFUSALS and not e.value.retryable
    return e.value


@pytest.mark.parametrize("msg_type", PROFILE_TYPES)
def test_the_defaults_of_every_type_keep_to_the_profile(msg_type: str) -> None:
    terms = apply_defaults(None, msg_type, PROFILE, TODAY)
    check_terms(terms, msg_type, PROFILE, TODAY)
    rules = PROFILE.types[msg_type]
    assert terms.retain_until == TODAY + dt.timedelta(days=rules.defaults.retention_days)
    assert terms.legal_basis.agreement == "us-cn-cmaa-1999"
    assert (terms.onward_transfer, terms.evidentiary_use) == ("with-consent", "with-consent")


def test_given_fields_win_over_defaults() -> None:
    terms = apply_defaults(
        {
            "legal_basis": {"article": "12", "request_ref": "CBP-2026-0042"},
            "confidentiality": {"reason": "an open investigation"},
            "purpose": "investigation",
            "evidentiary_use": "prohibited",
            "conditions": "Not to be shown to the importer.\nDelete the photos after the hearing.",
        },
        "seizure-share",
        PROFILE,
        TODAY,
    )
    check_terms(terms, "seizure-share", PROFILE, TODAY)
    assert terms.legal_basis.article == "12" and terms.legal_basis.agreement == PROFILE.agreement.id
    assert terms.confidentiality.level == "law-enforcement-sensitive"
    assert terms.confidentiality.reason == "an open investigation"
    assert (terms.purpose, terms.evidentiary_use) == ("investigation", "prohibited")


def test_a_chosen_level_states_its_own_reason() -> None:
    terms = apply_defaults({"confidentiality": {"level": "confidential"}}, "seizure-share", PROFILE, TODAY)
    assert terms.confidentiality.reason is None
    assert refusal(terms).field == "$.handling.confidentiality.reason"


def test_handling_purpose() -> None:
    err = refusal(defaults(purpose="sightseeing"))
    assert (err.code, err.field) == ("handling.purpose", "$.handling.purpose")


def test_handling_retention_beyond_the_maximum() -> None:
    err = refusal(defaults("seminar-notice", retain_until=TODAY + dt.timedelta(days=366)), "seminar-notice")
    assert (err.code, err.field) == ("handling.retention", "$.handling.retain_until")
    check_terms(
        defaults("seminar-notice", retain_until=TODAY + dt.timedelta(days=365)), "seminar-notice", PROFILE, TODAY
    )


def test_handling_retention_not_after_today() -> None:
    assert refusal(defaults(retain_until=TODAY)).code == "handling.retention"
    assert refusal(defaults(retain_until=TODAY - dt.timedelta(days=1))).code == "handling.retention"


def test_handling_onward_transfer() -> None:
    err = refusal(defaults(onward_transfer="permitted"))
    assert (err.code, err.field) == ("handling.onward_transfer", "$.handling.onward_transfer")


def test_handling_evidentiary_use() -> None:
    err = refusal(defaults("information-request", evidentiary_use="permitted"), "information-request")
    assert (err.code, err.field) == ("handling.evidentiary_use", "$.handling.evidentiary_use")
    check_terms(defaults("joint-operation", evidentiary_use="permitted"), "joint-operation", PROFILE, TODAY)


def test_handling_confidentiality_unknown_level() -> None:
    err = refusal(defaults(confidentiality=Confidentiality(level="top-secret", reason="x")))
    assert (err.code, err.field) == ("handling.confidentiality", "$.handling.confidentiality.level")


def test_handling_confidentiality_reason_missing() -> None:
    terms = defaults("port-visit-invitation", confidentiality=Confidentiality(level="confidential"))
    err = refusal(terms, "port-visit-invitation")
    assert (err.code, err.field) == ("handling.confidentiality", "$.handling.confidentiality.reason")


def test_handling_agreement() -> None:
    terms = from_wire(_wire(legal_basis={"agreement": "us-eu-cmaa-1997"}))
    err = refusal(terms)
    assert (err.code, err.field) == ("handling.agreement", "$.handling.legal_basis.agreement")


def test_every_problem_is_listed() -> None:
    err = refusal(defaults(purpose="x", onward_transfer="permitted", evidentiary_use="permitted", retain_until=TODAY))
    assert [e["code"] for e in err.errors] == [
        "handling.purpose",
        "handling.onward_transfer",
        "handling.evidentiary_use",
        "handling.retention",
    ]
    assert err.code == "handling.purpose"


def test_wire_form_round_trips_and_omits_absent_optionals() -> None:
    terms = defaults()
    wire = to_wire(terms)
    assert wire["retain_until"] == (TODAY + dt.timedelta(days=1825)).isoformat()
    assert wire["legal_basis"] == {"agreement": "us-cn-cmaa-1999"} and "conditions" not in wire
    assert from_wire(wire) == terms
    assert msgspec.json.decode(msgspec.json.encode(wire)) == wire


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"purpose": 7}, "schema.type", "$.handling.purpose"),
        ({"retain_until": "04/12/2027"}, None, "$.handling.retain_until"),
        ({"onward_transfer": "maybe"}, "schema.enum", "$.handling.onward_transfer"),
        ({"extra": 1}, "schema.unknown_field", "$.handling.extra"),
        ({"conditions": "a\x00b"}, "schema.text", "$.handling.conditions"),
        ({"conditions": "x" * 4001}, None, "$.handling.conditions"),
        ({"legal_basis": {"agreement": "us-cn-cmaa-1999", "article": "\u202e12"}}, "schema.text", None),
    ],
)
def test_from_wire_is_strict(change: dict[str, Any], code: str | None, field: str | None) -> None:
    with pytest.raises(SchemaError) as e:
        from_wire(_wire(**change))
    assert code is None or e.value.code == code
    assert field is None or e.value.field == field


def test_a_missing_field_is_named() -> None:
    wire = _wire()
    del wire["personal_data"]
    with pytest.raises(SchemaError) as e:
        from_wire(wire)
    assert (e.value.code, e.value.field) == ("schema.required", "$.handling.personal_data")


def _wire(**changes: Any) -> dict[str, Any]:
    return {**to_wire(defaults()), **changes}


_VALID: dict[str, st.SearchStrategy[Any]] = {
    "purpose": st.sampled_from([p.id for p in PROFILE.purposes]),
    "personal_data": st.booleans(),
    "conditions": st.text(st.characters(categories=("L", "N", "Zs")), min_size=1, max_size=50),
    "legal_basis": st.fixed_dictionaries(
        {}, optional={"article": st.sampled_from(["12", "13"]), "request_ref": st.just("GACC-REQ-1")}
    ),
    "confidentiality": st.one_of(
        st.just({"level": "unrestricted"}),
        st.fixed_dictionaries(
            {"level": st.sampled_from(["law-enforcement-sensitive", "confidential"]), "reason": st.just("Art. 13")}
        ),
        st.fixed_dictionaries({"reason": st.just("asked by the provider")}),
    ),
}


@st.composite
def valid_partials(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    msg_type = draw(st.sampled_from(PROFILE_TYPES))
    rules = PROFILE.types[msg_type]
    fields = {
        **_VALID,
        "onward_transfer": st.sampled_from(rules.onward_transfer),
        "evidentiary_use": st.sampled_from(rules.evidentiary_use),
        "retain_until": st.integers(1, rules.max_retention_days).map(
            lambda n: (TODAY + dt.timedelta(days=n)).isoformat()
        ),
    }
    chosen = draw(st.sets(st.sampled_from(sorted(fields))))
    return msg_type, {name: draw(fields[name]) for name in sorted(chosen)}


@given(valid_partials())
def test_defaults_complete_any_valid_subset_into_accepted_terms(case: tuple[str, dict[str, Any]]) -> None:
    msg_type, partial = case
    terms = apply_defaults(partial, msg_type, PROFILE, TODAY)
    check_terms(terms, msg_type, PROFILE, TODAY)
    assert from_wire(to_wire(terms)) == terms


def test_types_are_all_covered() -> None:
    assert set(BUSINESS_TYPES) <= set(PROFILE.types)
