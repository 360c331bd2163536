"""Consent for onward use (DESIGN §12): what a received message may be used for, and how that
changes.

The agreements let the receiver pass shared information to another authority, or use it as
evidence in a proceeding, only with the providing administration's express consent. A message's
handling terms say where it starts (`onward_transfer` / `evidentiary_use`: prohibited, with
consent, permitted); the receiver asks with a `consent-request` (naming the message, the use, and
the authority or proceeding) and the provider answers with a `consent-decision` (naming the
request). Both gateways record each request and decision (`ConsentEvent`, applied by the store in
the transaction that stores the message) so the receiver's inbox item shows its current
permissions (`permissions`). A permission changes only through a decision the provider signed: the
receiver's own store records a decision only when it arrives from the peer, for a request it sent
(`core.threads` checks that on both sides).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from .handling import HandlingTerms

__all__ = [
    "USES",
    "ConsentEvent",
    "ConsentRecord",
    "Grant",
    "UsePermission",
    "audit_detail",
    "event_of",
    "permissions",
    "role_of",
    "status_of",
]

Use = Literal["onward_transfer", "evidentiary_use"]
USES: Final[tuple[Use, ...]] = ("onward_transfer", "evidentiary_use")


@dataclass(frozen=True)
class ConsentEvent:
    """What one consent-request or consent-decision document records (sender and receiver alike)."""

    kind: Literal["request", "decision"]
    request_id: str
    at: dt.datetime
    # A request: the message it asks about, the use, the authority or proceeding, why.
    message_id: str | None = None
    use: str | None = None
    party: str | None = None
    reason: str | None = None
    # A decision: its own id, what was decided, on which conditions, until when, why.
    decision_id: str | None = None
    decision: str | None = None
    conditions: str | None = None
    valid_until: dt.date | None = None


def role_of(ev: ConsentEvent, *, outgoing: bool) -> str:
    """Which side of the exchange the record an event touches belongs to: a request we send, or a
    decision we receive, is ours as `requester`; a request we receive, or a decision we send, ours
    as `provider`. A decision updates only the record of that role, so a decision can change our
    permissions only when it arrives from the peer (the provider)."""
    return "requester" if (ev.kind == "request") == outgoing else "provider"


def audit_detail(ev: ConsentEvent) -> dict[str, Any]:
    """What the `submitted` / `received` audit entry of a consent document adds to its detail."""
    if ev.kind == "request":
        return {"about": ev.message_id, "use": ev.use}
    return {"decides": ev.request_id, "decision": ev.decision}


def event_of(msg_type: str, message_id: str, body: Mapping[str, Any], at: dt.datetime) -> ConsentEvent | None:
    """The consent event a (validated) business document records, None for other types."""
    if msg_type == "consent-request":
        use = str(body["use"])
        return ConsentEvent(
            "request",
            message_id,
            at,
            message_id=str(body["message_id"]),
            use=use,
            party=str(body["authority" if use == "onward_transfer" else "proceeding"]),
            reason=str(body["reason"]),
        )
    if msg_type == "consent-decision":
        until = body.get("valid_until")
        return ConsentEvent(
            "decision",
            str(body["request_id"]),
            at,
            decision_id=message_id,
            decision=str(body["decision"]),
            conditions=body.get("conditions"),
            reason=body.get("reason"),
            valid_until=dt.date.fromisoformat(until) if isinstance(until, str) else until,
        )
    return None


@dataclass(frozen=True)
class ConsentRecord:
    """One consent request and its latest decision, as a store keeps it."""

    request_id: str
    message_id: str
    role: str  # "requester": we asked about a message we received; "provider": we were asked
    use: str
    party: str
    reason: str
    requested_at: dt.datetime
    decision_id: str | None = None
    decision: str | None = None
    conditions: str | None = None
    decision_reason: str | None = None
    valid_until: dt.date | None = None
    decided_at: dt.datetime | None = None


def status_of(rec: ConsentRecord, today: dt.date) -> str:
    """pending, refused, granted, granted_with_conditions, or expired (a grant past its date)."""
    if rec.decision is None:
        return "pending"
    if rec.decision != "refused" and rec.valid_until is not None and rec.valid_until < today:
        return "expired"
    return rec.decision


@dataclass(frozen=True)
class Grant:
    """Consent in force for one use: to whom (or in which proceeding), on what conditions."""

    party: str
    request_id: str
    decision_id: str
    conditions: str | None
    valid_until: dt.date | None


@dataclass(frozen=True)
class UsePermission:
    """One use of a received message: what its terms say, and the consent in force."""

    terms: str  # prohibited | with-consent | permitted
    granted: tuple[Grant, ...]


def permissions(
    terms: HandlingTerms | None, records: Iterable[ConsentRecord], today: dt.date
) -> dict[str, UsePermission]:
    """The current permissions of a received message per use: its terms (`with-consent` for a
    message from before handling terms, the agreements' rule) and the grants in force today."""
    recs = list(records)
    out: dict[str, UsePermission] = {}
    for use in USES:
        grants = tuple(
            Grant(r.party, r.request_id, r.decision_id or "", r.conditions, r.valid_until)
            for r in recs
            if r.use == use and status_of(r, today) in ("granted", "granted_with_conditions")
        )
        out[use] = UsePermission(getattr(terms, use) if terms is not None else "with-consent", grants)
    return out
