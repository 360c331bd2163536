"""Threads (DESIGN §12): which earlier messages a business document names, and who must know them.

Any business document may answer another with `in_reply_to`: a business message the two gateways
exchanged, either way. Some types also name a message in their body, and there the rule is
stricter, because the named message must be one the *receiver* sent: a port-visit reply names an
invitation, a consent request the message it asks about, a consent decision the request it
decides. The sender checks what it received (its inbox); the receiver checks what it sent (its
outbox); either refusal is `schema.reference` naming the field. A document that names a message
in its body and no `in_reply_to` answers that message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from .envelope import BUSINESS_TYPES

CONSENT_TYPES: Final = ("consent-request", "consent-decision")
#: Messages a consent request may ask about: any business message but the consent exchange itself.
CONSENTABLE_TYPES: Final = tuple(t for t in BUSINESS_TYPES if t not in CONSENT_TYPES)


@dataclass(frozen=True)
class Named:
    """A body field that names a message the receiver sent, of one of `types`."""

    field: str
    types: tuple[str, ...]
    what: str  # how a refusal calls it


NAMED: Final[Mapping[str, tuple[Named, ...]]] = {
    "port-visit-reply": (Named("invitation_id", ("port-visit-invitation",), "port-visit invitation"),),
    "consent-request": (Named("message_id", CONSENTABLE_TYPES, "message"),),
    "consent-decision": (Named("request_id", ("consent-request",), "consent request"),),
}


def named(msg_type: str, body: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The messages a (validated) body names: (field, message id) pairs."""
    return tuple((n.field, body[n.field]) for n in NAMED.get(msg_type, ()) if isinstance(body.get(n.field), str))


def default_reply_to(msg_type: str, body: Mapping[str, Any]) -> str | None:
    """What a document answers when it says nothing: the first message its body names."""
    found = named(msg_type, body)
    return found[0][1] if found else None


def first_unknown(
    msg_type: str, pairs: tuple[tuple[str, str], ...], type_of: Mapping[str, str | None], by: str
) -> tuple[str, str] | None:
    """(field, detail) of the first named message that is not one `by` sent with an allowed type,
    else None. `type_of` maps each named id to the type of the message `by` sent under that id
    (None: `by` sent no such message)."""
    rules = {n.field: n for n in NAMED.get(msg_type, ())}
    for field, message_id in pairs:
        rule = rules[field]
        if type_of.get(message_id) not in rule.types:
            return field, f"{field} {message_id} names no {rule.what} sent by {by}"
    return None
