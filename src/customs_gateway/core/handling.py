"""Handling terms (DESIGN §12): how a receiver may use, pass on and keep a business document, and
the one place that checks them against the agreement profile.

`apply_defaults` fills what a back-end leaves out from the profile's defaults for the type;
`check_terms` raises `SchemaError` with a `handling.*` code and the JSON path of the field
(`$.handling.purpose`), listing every problem in `errors`. `to_wire` / `from_wire` are the JSON form
(dates `YYYY-MM-DD`, absent optionals omitted); `from_wire` is strict (`schema.*` codes).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Final

import msgspec
from msgspec import Meta

from .errors import SchemaError
from .profile import Id, Permission, Profile
from .refdata import MULTILINE
from .schemas import MAX_ERRORS, _Body, check_struct

__all__ = [
    "WHERE",
    "Confidentiality",
    "HandlingTerms",
    "LegalBasis",
    "apply_defaults",
    "check_terms",
    "default_wire",
    "from_wire",
    "to_wire",
]

#: The JSON path of the terms inside a signed document.
WHERE: Final = "$.handling"


class LegalBasis(_Body, frozen=True, kw_only=True):
    agreement: Id
    article: Annotated[str, Meta(min_length=1, max_length=32)] | None = None
    request_ref: Annotated[str, Meta(min_length=1, max_length=128)] | None = None


class Confidentiality(_Body, frozen=True, kw_only=True):
    level: Id
    reason: Annotated[str, Meta(min_length=1, max_length=1000)] | None = None


class HandlingTerms(_Body, frozen=True, kw_only=True):
    """The terms signed with a business document."""

    legal_basis: LegalBasis
    purpose: Id
    confidentiality: Confidentiality
    onward_transfer: Permission
    evidentiary_use: Permission
    personal_data: bool
    retain_until: dt.date
    conditions: Annotated[str, Meta(min_length=1, max_length=4000), MULTILINE] | None = None


def apply_defaults(partial: dict[str, Any] | None, msg_type: str, profile: Profile, today: dt.date) -> HandlingTerms:
    """`partial` (wire form, any subset of fields) completed from the profile's defaults for
    `msg_type`; raises SchemaError (`schema.*`) if what was given is malformed. The result is not
    checked against the profile: call `check_terms`."""
    d = profile.rules(msg_type).defaults
    given = dict(partial or {})
    basis = given.get("legal_basis", {})
    level = given.get("confidentiality", {})
    # The default reason goes with the default level only: a chosen level states its own reason.
    default_level = {"level": d.confidentiality, "reason": d.confidentiality_reason}
    filled: dict[str, Any] = {
        "purpose": d.purpose,
        "onward_transfer": d.onward_transfer,
        "evidentiary_use": d.evidentiary_use,
        "personal_data": d.personal_data,
        "retain_until": (today + dt.timedelta(days=d.retention_days)).isoformat(),
        **given,
        "legal_basis": {"agreement": profile.agreement.id, **basis} if isinstance(basis, dict) else basis,
        "confidentiality": _without_none({**default_level, **level})
        if isinstance(level, dict) and "level" not in level
        else level,
    }
    return from_wire(filled)


def default_wire(msg_type: str, profile: Profile, today: dt.date) -> dict[str, Any]:
    """The wire form of the profile's default terms for `msg_type` (tools, drills and tests that
    build documents without the submit path)."""
    return to_wire(apply_defaults(None, msg_type, profile, today))


def _without_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def check_terms(terms: HandlingTerms, msg_type: str, profile: Profile, today: dt.date) -> None:
    """Raise SchemaError (`handling.*`, first problem; every one in `errors`) unless `terms` keep
    to the profile's rules for `msg_type` on `today`; ProfileError for a type the profile does not
    describe (check the type first)."""
    rules = profile.rules(msg_type)
    found: list[SchemaError] = []

    def refuse(code: str, field: str, detail: str) -> None:
        found.append(SchemaError(detail, code=code, field=f"{WHERE}.{field}"))

    if terms.legal_basis.agreement != profile.agreement.id:
        refuse("handling.agreement", "legal_basis.agreement", "not the agreement of the profile both gateways load")
    if profile.purpose(terms.purpose) is None:
        refuse("handling.purpose", "purpose", "not one of the agreement profile's purposes")
    level = profile.level(terms.confidentiality.level)
    if level is None:
        refuse("handling.confidentiality", "confidentiality.level", "not one of the profile's confidentiality levels")
    elif level.reason_required and terms.confidentiality.reason is None:
        refuse("handling.confidentiality", "confidentiality.reason", "this confidentiality level requires a reason")
    for field in ("onward_transfer", "evidentiary_use"):
        allowed: list[str] = getattr(rules, field)
        if getattr(terms, field) not in allowed:
            refuse(f"handling.{field}", field, f"the profile allows only {', '.join(allowed)} for this message type")
    if terms.retain_until <= today:
        refuse("handling.retention", "retain_until", "the retention date is not after today")
    elif terms.retain_until > today + dt.timedelta(days=rules.max_retention_days):
        refuse(
            "handling.retention",
            "retain_until",
            f"beyond the profile's maximum of {rules.max_retention_days} days for this message type",
        )
    if found:
        first = found[0]
        err = SchemaError(first.detail, code=first.code, field=first.field)
        err.errors = tuple({"field": e.field, "code": e.code, "detail": e.detail} for e in found[:MAX_ERRORS])
        raise err


def to_wire(terms: HandlingTerms) -> dict[str, Any]:
    """The JSON-ready form: dates as `YYYY-MM-DD`, absent optionals omitted."""
    out: dict[str, Any] = msgspec.to_builtins(terms)
    return out


def from_wire(d: dict[str, Any]) -> HandlingTerms:
    """Strictly decode the wire form; raises SchemaError (`schema.*`, paths under `$.handling`)."""
    terms: HandlingTerms = check_struct(HandlingTerms, d, where=WHERE)
    return terms
