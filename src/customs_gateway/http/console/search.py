"""The console's message and inbox search (DESIGN §14): the query a person fills in (direction,
case reference, type, status, a range of UTC dates), read from the URL and checked, and one page of
its results from the same store calls as the JSON API's list.

Handling terms (DESIGN §12) narrow it further: a purpose and a confidentiality level from the
agreement profile, matched against the terms signed in each document (read page by page, as the
date range is on the inbox: a page may end early and offer the next).

Dates are whole UTC days, both ends included: `since` 2026-12-01 and `until` 2026-12-03 find what
was created (sent messages) or received (the inbox) from 2026-12-01T00:00Z to before 2026-12-04T00:00Z.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Final
from urllib.parse import urlencode

from multidict import MultiMapping

from ...core import reference
from ...core.encoding import json_object
from ...core.envelope import BUSINESS_TYPES, SignedDocument
from ...core.errors import SchemaError
from ...core.profile import Profile
from ...core.state import STATUSES
from ...service.gateway import Gateway
from ...store.base import MessageFilter

PAGE_SIZE: Final = 50
#: Pages read at most to fill one page when `since` (inbox) or handling terms leave rows out:
#: past this, the page ends early and offers the next.
MAX_INBOX_PAGES: Final = 20
_DAY: Final = dt.timedelta(days=1)


def _date(q: MultiMapping[str], name: str) -> dt.date | None:
    """The date in query parameter `name` (YYYY-MM-DD, as a date field sends it), or None when empty."""
    raw = q.get(name) or ""
    if not raw:
        return None
    try:
        if len(raw) == 10:
            return dt.date.fromisoformat(raw)
    except ValueError:
        pass
    raise SchemaError(f"{name} must be a date, YYYY-MM-DD (e.g. 2026-12-03)", code="schema.date", field=name)


@dataclasses.dataclass(frozen=True)
class Search:
    """One search as the form and the URL carry it; `from_query` refuses what the store cannot answer."""

    direction: str = "outbound"
    reference: str = ""
    type: str | None = None
    status: str | None = None
    since: dt.date | None = None
    until: dt.date | None = None
    cursor: str | None = None
    purpose: str | None = None
    level: str | None = None

    @classmethod
    def from_query(cls, q: MultiMapping[str], profile: Profile | None = None) -> Search:
        """Raises SchemaError (an error page) for a value outside the form's choices."""
        direction = q.get("direction") or "outbound"
        if direction not in ("outbound", "inbound"):
            raise SchemaError("direction must be outbound or inbound", code="schema.enum", field="direction")
        status, mtype = q.get("status") or None, q.get("type") or None
        if status is not None and status not in STATUSES:
            raise SchemaError(f"status must be one of {', '.join(STATUSES)}", code="schema.enum", field="status")
        if mtype is not None and mtype not in BUSINESS_TYPES:
            raise SchemaError(f"type must be one of {', '.join(BUSINESS_TYPES)}", code="schema.enum", field="type")
        since, until = _date(q, "since"), _date(q, "until")
        if since is not None and until is not None and until < since:
            raise SchemaError("until must not be before since", code="schema.range", field="until")
        cursor = q.get("cursor") or None
        if cursor is not None and direction == "inbound" and not cursor.isdigit():
            raise SchemaError("cursor must be the next page's cursor", code="schema.cursor", field="cursor")
        purpose, level = q.get("purpose") or None, q.get("level") or None
        if profile is not None and purpose is not None and profile.purpose(purpose) is None:
            raise SchemaError("purpose must be one of the agreement profile's", code="schema.enum", field="purpose")
        if profile is not None and level is not None and profile.level(level) is None:
            raise SchemaError(
                "level must be one of the profile's confidentiality levels", code="schema.enum", field="level"
            )
        return cls(direction, q.get("reference") or "", mtype, status, since, until, cursor, purpose, level)

    def terms_match(self, document: bytes, disposed: bool = False) -> bool:
        """Whether a stored document's handling terms pass the purpose and level asked for (a
        disposed message has none left to match)."""
        if self.purpose is None and self.level is None:
            return True
        if disposed:
            return False
        found = json_object(document).get("handling")
        if not isinstance(found, dict):
            return False
        level = (
            found.get("confidentiality", {}).get("level") if isinstance(found.get("confidentiality"), dict) else None
        )
        return (self.purpose is None or found.get("purpose") == self.purpose) and (
            self.level is None or level == self.level
        )

    @property
    def start(self) -> dt.datetime | None:
        """The first instant the range admits (midnight UTC of `since`)."""
        return None if self.since is None else dt.datetime.combine(self.since, dt.time(), dt.timezone.utc)

    @property
    def end(self) -> dt.datetime | None:
        """The first instant past the range (midnight UTC after `until`)."""
        return None if self.until is None else dt.datetime.combine(self.until, dt.time(), dt.timezone.utc) + _DAY

    def form(self) -> dict[str, str]:
        """The form's fields as filled in (what the page shows, and what the next page's link repeats)."""
        return {
            "direction": self.direction,
            "reference": self.reference,
            "type": self.type or "",
            "status": self.status or "",
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
            "purpose": self.purpose or "",
            "level": self.level or "",
        }

    def next_url(self, cursor: str) -> str:
        return "/console/messages?" + urlencode({**self.form(), "cursor": cursor})


async def results(gw: Gateway, s: Search) -> tuple[list[dict[str, Any]], str | None]:
    """One page of `s`: rows (id, type, status, at) and the cursor of the next page, if any."""
    tag = reference.query_tag(gw.index_key, s.reference) if s.reference else None
    start, end = s.start, s.end
    if s.direction == "inbound":
        rows: list[dict[str, Any]] = []
        cursor = int(s.cursor) if s.cursor else 0
        types = (s.type,) if s.type else BUSINESS_TYPES
        for _ in range(MAX_INBOX_PAGES):
            want = PAGE_SIZE - len(rows)
            items = await gw.store.inbox_after(cursor, want, types, tag)
            for i in items:
                if end is not None and i.received_at >= end:
                    return rows, None  # the inbox is in arrival order: nothing later is in range
                if (start is None or i.received_at >= start) and s.terms_match(i.body, i.disposed_at is not None):
                    status = i.ack_status or "unacknowledged"
                    rows.append({"id": i.id, "type": i.type, "status": status, "at": i.received_at})
            if len(items) < want:
                return rows, None  # the inbox has no more
            cursor = items[-1].cursor
            if len(rows) == PAGE_SIZE:
                break
        return rows, str(cursor)
    out: list[dict[str, Any]] = []
    filt, after = MessageFilter(s.status, s.type, start, reference=tag), s.cursor
    for _ in range(MAX_INBOX_PAGES):
        want = PAGE_SIZE - len(out)
        msgs = await gw.store.list_messages(filt, after, want)
        for m in msgs:
            if end is not None and m.created_at >= end:
                return out, None  # ids are time-ordered (UUIDv7): nothing later is in range
            if s.terms_match(
                b"" if m.disposed_at else SignedDocument.from_bytes(m.signed_document).document_bytes,
                m.disposed_at is not None,
            ):
                out.append({"id": m.id, "type": m.type, "status": m.status, "at": m.created_at})
        if len(msgs) < want:
            return out, None
        after = msgs[-1].id
        if len(out) == PAGE_SIZE:
            break
    return out, after
