"""Business references: how back-ends and officers find a message again without its body.

A message is looked up by what people quote: the case reference of a seizure, the id of a port-visit
invitation (which its replies name), the title of a seminar. The gateway indexes those values
without keeping them in clear: each is normalised (Unicode NFKC, case folded, runs of white space
made one space, trimmed) and stored as a keyed tag, HMAC-SHA256 under the gateway's reference-index
key (a subkey of its store key, `core.storekey`), truncated to 128 bits. A search computes the tag
of the value asked for and matches tags; someone holding the database alone learns only which
messages share a reference, not what it is, and cannot test guesses without the key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Mapping
from typing import Any, Final

from .errors import SchemaError

#: The store key's label for the reference-index key (`StoreKey.derive`).
INDEX_KEY_LABEL: Final = "customs-gateway/v1 reference index"
TAG_BYTES: Final = 16
MAX_REFERENCE_LENGTH: Final = 200

#: Body fields whose values are references, per message type.
REFERENCE_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    "seizure-share": ("case_reference",),
    "port-visit-reply": ("invitation_id",),
    "seminar-notice": ("title",),
    "joint-operation": ("operation_name",),
    "information-request": ("case_reference",),
    "consent-request": ("message_id",),  # the message asked about finds its consent requests
    "consent-decision": ("request_id",),
}
#: Types whose own message id is a reference others quote (a reply names the invitation's id).
SELF_REFERENCED: Final = frozenset({"port-visit-invitation"})

_SPACE = re.compile(r"\s+")


def normalize(value: str) -> str:
    """The form that is tagged: NFKC, case folded, white space collapsed and trimmed (so
    `CBP-2026-0042`, `cbp-2026-0042` and full-width `ＣＢＰ-2026-0042` find the same messages)."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", value).casefold()).strip()


def references(msg_type: str, message_id: str, body: Mapping[str, Any]) -> tuple[str, ...]:
    """The references a message of `msg_type` carries (normalised, distinct, in field order)."""
    found = [message_id] if msg_type in SELF_REFERENCED else []
    for name in REFERENCE_FIELDS.get(msg_type, ()):
        value = body.get(name)
        if isinstance(value, str):
            found.append(value)
    return tuple(dict.fromkeys(n for n in map(normalize, found) if n))


def tag(index_key: bytes, value: str) -> bytes:
    """The stored tag of one (already normalised or raw) reference."""
    return hmac.new(index_key, normalize(value).encode("utf-8"), hashlib.sha256).digest()[:TAG_BYTES]


def tags(index_key: bytes, msg_type: str, message_id: str, body: Mapping[str, Any]) -> tuple[bytes, ...]:
    """The tags to index a message under."""
    return tuple(tag(index_key, r) for r in references(msg_type, message_id, body))


def query_tag(index_key: bytes, value: str, field: str = "reference") -> bytes:
    """The tag to search for; SchemaError (`schema.length`) for an empty or overlong value."""
    if not normalize(value) or len(value) > MAX_REFERENCE_LENGTH:
        raise SchemaError(
            f"{field} must be 1 to {MAX_REFERENCE_LENGTH} characters, not only white space",
            code="schema.length",
            field=field,
        )
    return tag(index_key, value)
