"""Audit entries: the statement logged for every state change (G7), as exact bytes.

An entry names time, kind, message id, actor, peer, the digests that matter and the refusal code;
never a body. The entry bytes are the Merkle leaf, so an auditor can check them with public data.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Final

from .encoding import format_ts, is_version, json_bytes, json_object, parse_ts
from .errors import DecodeError
from .keys import SigningKey
from .schemas import refuse_duplicate_keys_in

KINDS: Final = frozenset(
    {
        "submitted",
        "sent",
        "delivered",
        "received",
        "duplicate",
        "acknowledged",
        "ack_received",
        "refused",
        "refusal_received",
        "expired",
        "key_announced",
        "key_rotated",
        "key_renewed",
        "recovered",
        "log_epoch",
        "peer_epoch",
        "key_revoked",
        "token_issued",
        "token_revoked",
        "checkpoint_cosigned",
        "fork_detected",
        "disposed",
        "day_key_destroyed",
        "hold_placed",
        "hold_released",
        "file_downloaded",
    }
)


@dataclass(frozen=True)
class AuditEntry:
    """One log entry. `digests` maps names (document, envelope, receipt…) to SHA-256 hex."""

    at: dt.datetime
    kind: str
    actor: str  # "token:<id>", "peer:<identity>", "system"
    message_id: str | None = None
    peer: str | None = None
    code: str | None = None
    digests: dict[str, str] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def submitted(
        cls, at: dt.datetime, actor: str, message_id: str, peer: str, document_sha256: bytes, detail: dict[str, Any]
    ) -> AuditEntry:
        """The `submitted` entry of a message we queue (a back-end's, an ack, a control notice):
        it names the signed document's digest."""
        return cls(at, "submitted", actor, message_id, peer, digests={"document": document_sha256.hex()}, detail=detail)

    def to_bytes(self) -> bytes:
        if self.kind not in KINDS:
            raise ValueError(f"unknown audit kind {self.kind!r}")
        d: dict[str, Any] = {"v": 1, "at": format_ts(self.at), "kind": self.kind, "actor": self.actor}
        for name in ("message_id", "peer", "code"):
            value = getattr(self, name)
            if value is not None:
                d[name] = value
        if self.digests:
            d["digests"] = self.digests
        if self.detail:
            d["detail"] = self.detail
        return json_bytes(d)

    @classmethod
    def from_bytes(cls, data: bytes) -> AuditEntry:
        d = json_object(data, field="entry")
        refuse_duplicate_keys_in(data, json_bytes(d), "entry")  # hashed into the log: one reading only
        if not is_version(d.get("v")) or d.get("kind") not in KINDS or not isinstance(d.get("actor"), str):
            raise DecodeError("audit entry has a bad version, kind or actor", field="entry")
        digests, detail = d.get("digests", {}), d.get("detail", {})
        if not isinstance(digests, dict) or not isinstance(detail, dict):
            raise DecodeError("audit entry digests/detail must be objects", field="entry")
        return cls(
            at=parse_ts(d.get("at"), field="entry.at"),
            kind=d["kind"],
            actor=d["actor"],
            message_id=d.get("message_id"),
            peer=d.get("peer"),
            code=d.get("code"),
            digests=digests,
            detail=detail,
        )


def in_time_order(
    entries: Iterable[AuditEntry], last: dt.datetime | None
) -> tuple[list[AuditEntry], dt.datetime | None]:
    """Entries as the log records them: audit time never runs backwards (DESIGN §11).

    An entry whose time (to the millisecond, as written) is before `last` is stamped with `last`
    and keeps its own clock reading in `detail.clock_at`, so a clock that jumped back is visible
    in the log instead of reordering it. Returns the entries and the new last time."""
    out: list[AuditEntry] = []
    for e in entries:
        at = e.at.replace(microsecond=e.at.microsecond // 1000 * 1000)  # as written: milliseconds
        if last is not None and at < last:
            out.append(replace(e, at=last, detail={**e.detail, "clock_at": format_ts(at)}))
            continue
        last = at
        out.append(e)
    return out, last


def log_origin(identity: str) -> str:
    """The checkpoint origin line (and signed-note key name) of one gateway's audit log."""
    return f"customs-gateway/{identity}/audit"


def witness_name(identity: str) -> str:
    """The cosigner name a gateway uses when it witnesses its peer's log."""
    return f"customs-gateway/{identity}/witness"


class NoteSigner:
    """Adapts a SigningKey to the signed-note `Signer` protocol (signed notes carry their own
    framing, so no domain prefix is added)."""

    def __init__(self, key: SigningKey) -> None:
        self._key = key

    @property
    def public_raw(self) -> bytes:
        return self._key.public_raw

    def sign(self, message: bytes) -> bytes:
        return self._key.sign_raw(message)
