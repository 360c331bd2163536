"""Console sessions (DESIGN §14): a random id in a cookie, the signed-in token's id and role, a
CSRF token per session, and an idle timeout judged on the gateway's injected clock.

Sessions live in this process's memory: a restart signs everyone out, which is the safe failure.
The bearer secret is checked once at sign-in and never kept; each request re-reads the token so a
revoked or expired token ends its sessions at once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hmac
import secrets
from typing import Final

from ...core.clock import Clock

COOKIE: Final = "console_session"
COOKIE_PATH: Final = "/console/"
MAX_SESSIONS: Final = 10_000  # the oldest are dropped beyond this: memory stays bounded


class CsrfRefused(Exception):
    """A form came without the session's CSRF token, or with another one."""


@dataclasses.dataclass
class Session:
    """One browser's session; `token_id` and `role` are None before sign-in."""

    id: str
    csrf: str
    last_seen: dt.datetime
    token_id: str | None = None
    role: str | None = None

    @property
    def actor(self) -> str:
        """The audit actor, the same string the JSON API records for this token."""
        return f"token:{self.token_id}"

    def check_csrf(self, presented: str | None) -> None:
        """Raises CsrfRefused unless `presented` is this session's CSRF token (constant time)."""
        if not presented or not hmac.compare_digest(presented.encode(), self.csrf.encode()):
            raise CsrfRefused


class SessionStore:
    """The live sessions of one gateway process, idle ones forgotten after `idle`
    (`console.idle_timeout_seconds` of the configuration)."""

    def __init__(self, clock: Clock, idle: dt.timedelta) -> None:
        self.clock, self.idle = clock, idle
        self._sessions: dict[str, Session] = {}

    def new(self, token_id: str | None = None, role: str | None = None) -> Session:
        """A fresh session with a fresh id and CSRF token (a sign-in always gets a new id)."""
        while len(self._sessions) >= MAX_SESSIONS:
            self._sessions.pop(next(iter(self._sessions)))
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), self.clock.now(), token_id, role)
        self._sessions[s.id] = s
        return s

    def get(self, sid: str | None) -> Session | None:
        """The live session `sid` names, touched; None for an unknown or idle one (then forgotten)."""
        s = self._sessions.get(sid) if sid else None
        if s is None:
            return None
        now = self.clock.now()
        if now - s.last_seen >= self.idle:
            self.end(s.id)
            return None
        s.last_seen = now
        return s

    def end(self, sid: str) -> None:
        self._sessions.pop(sid, None)
