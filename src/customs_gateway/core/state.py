"""The life of an outbound message: queued → sent → delivered → acknowledged, or refused / expired.

One table of allowed transitions; the store asks `next_status` before every status write so no
edge can invent a transition (e.g. a late receipt never turns `acknowledged` back into `delivered`).
"""

from __future__ import annotations

from typing import Final

from .errors import Conflict

STATUSES: Final = ("queued", "sent", "delivered", "acknowledged", "refused", "expired")
TERMINAL: Final = frozenset({"acknowledged", "refused", "expired"})
PENDING: Final = frozenset({"queued", "sent"})

# event -> {from_status: to_status}
_TRANSITIONS: Final[dict[str, dict[str, str]]] = {
    "attempt": {"queued": "sent", "sent": "sent"},
    "receipt": {
        "queued": "delivered",
        "sent": "delivered",
        "delivered": "delivered",
        "acknowledged": "acknowledged",
    },
    "ack": {"queued": "acknowledged", "sent": "acknowledged", "delivered": "acknowledged"},
    "refusal": {"queued": "refused", "sent": "refused"},
    "expire": {"queued": "expired", "sent": "expired"},
}


def next_status(current: str, event: str) -> str:
    """The status after `event`; raises Conflict (code `state.transition`) if not allowed."""
    table = _TRANSITIONS.get(event)
    if table is None:
        raise ValueError(f"unknown event {event!r}")
    nxt = table.get(current)
    if nxt is None:
        raise Conflict(f"a message that is {current} cannot take a {event}", code="state.transition")
    return nxt
