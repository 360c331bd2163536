"""The life of an outbound message: queued → sent → delivered → acknowledged, or refused / expired.

One table of allowed transitions; the store asks `next_status` before every status write so no
edge can invent a transition (e.g. a late receipt never turns `acknowledged` back into `delivered`).
"""

from __future__ import annotations

import collections
import datetime as dt
from typing import Final

from .errors import Conflict

#: `retrying`: at least one attempt reached no acceptance (peer down, refused retryably, an
#: unverifiable answer); the message waits for `next_attempt_at`. A message the peer accepted is
#: `delivered` at once (the receipt comes back in the same answer), so nothing is ever "sent" and
#: in limbo (decision 0007).
STATUSES: Final = ("queued", "retrying", "delivered", "acknowledged", "refused", "expired")
TERMINAL: Final = frozenset({"acknowledged", "refused", "expired"})
PENDING: Final = frozenset({"queued", "retrying"})
#: SQL for "still to be delivered", shared by both stores and their partial indexes.
PENDING_SQL: Final = "status IN ('queued','retrying')"

# event -> {from_status: to_status}
_TRANSITIONS: Final[dict[str, dict[str, str]]] = {
    "attempt": {"queued": "retrying", "retrying": "retrying"},
    "receipt": {
        "queued": "delivered",
        "retrying": "delivered",
        "delivered": "delivered",
        "acknowledged": "acknowledged",
    },
    "ack": {"delivered": "acknowledged"},  # only what a stored receipt shows delivered (check_ack)
    "refusal": {"queued": "refused", "retrying": "refused"},
    "expire": {"queued": "expired", "retrying": "expired"},
}


def check_ack(current: str | None, delivered_sha256: bytes | None, acked_sha256: str) -> None:
    """Whether a business ack from the peer may move our message (DESIGN §10): only a message a
    stored receipt shows `delivered`, and only when the ack names the document delivered.
    `current` is None for a message we never sent to that peer. Raises Conflict with the code
    the signed refusal carries (`ack.not_yet_delivered` is retryable: our receipt may be on its way)."""
    if current is None:
        raise Conflict("ack for a message this gateway never sent to the peer", code="ack.unknown_message")
    if current in PENDING:
        raise Conflict(
            f"ack for a message that is {current}: no receipt for it is stored yet", code="ack.not_yet_delivered"
        )
    if current != "delivered":
        raise Conflict(f"ack for a message that is {current}", code="ack.wrong_state")
    if delivered_sha256 is None or delivered_sha256.hex() != acked_sha256:
        raise Conflict("ack names another document than the one delivered", code="ack.digest_mismatch")


def next_status(current: str, event: str) -> str:
    """The status after `event`; raises Conflict (code `state.transition`) if not allowed."""
    table = _TRANSITIONS.get(event)
    if table is None:
        raise ValueError(f"unknown event {event!r}")
    nxt = table.get(current)
    if nxt is None:
        raise Conflict(f"a message that is {current} cannot take a {event}", code="state.transition")
    return nxt


class PeerLink:
    """Whether the peer has been taking our deliveries: when it last answered (any verified
    answer counts) and since when every attempt has failed. Times are injected."""

    def __init__(self) -> None:
        self.last_contact_at: dt.datetime | None = None
        self.failing_since: dt.datetime | None = None
        self.last_failure: str | None = None

    def answered(self, at: dt.datetime) -> None:
        self.last_contact_at, self.failing_since, self.last_failure = at, None, None

    def failed(self, at: dt.datetime, why: str) -> None:
        if self.failing_since is None:
            self.failing_since = at
        self.last_failure = why

    def unreachable_for(self, now: dt.datetime) -> float:
        """Seconds every attempt has failed for (0 while the peer answers)."""
        return 0.0 if self.failing_since is None else max(0.0, (now - self.failing_since).total_seconds())


class RecentCounts:
    """Events counted per minute over the last hour, per kind (delivered, refused), with the time
    of the last one: what the console's link page shows. This process's view, from `since` on (a
    restart starts it afresh; the store and the metrics keep the totals). Times are injected."""

    WINDOW_MINUTES = 60

    def __init__(self, since: dt.datetime) -> None:
        self.since = since
        self._minutes: dict[str, collections.deque[list[int]]] = {}
        self.last: dict[str, dt.datetime] = {}

    def add(self, kind: str, at: dt.datetime, n: int = 1) -> None:
        minute = int(at.timestamp() // 60)
        buckets = self._minutes.setdefault(kind, collections.deque())
        if buckets and buckets[-1][0] == minute:
            buckets[-1][1] += n
        else:
            buckets.append([minute, n])
        while buckets and buckets[0][0] <= minute - self.WINDOW_MINUTES:
            buckets.popleft()
        if kind not in self.last or at > self.last[kind]:
            self.last[kind] = at

    def last_hour(self, kind: str, now: dt.datetime) -> int:
        """How many `kind` events in the 60 minutes up to `now`."""
        minute = int(now.timestamp() // 60)
        return sum(n for m, n in self._minutes.get(kind, ()) if minute - self.WINDOW_MINUTES < m <= minute)
