"""Bodies of gateway-to-gateway control messages (`ack`, `legal-hold`; key announcements in
`core.bundle`), and the local requests that make them."""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec

from .schemas import check_struct

_HEX64: Final = r"^[0-9a-f]{64}$"
_UUID: Final = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


class AckBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A business acknowledgement of one received message."""

    message_id: Annotated[str, msgspec.Meta(pattern=_UUID)]
    document_sha256: Annotated[str, msgspec.Meta(pattern=_HEX64)]
    status: Literal["processed", "rejected"]
    reason: Annotated[str, msgspec.Meta(max_length=2000)] | None = None


class AckRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """What a back-end posts to /v1/inbox/{id}/ack."""

    status: Literal["processed", "rejected"]
    reason: Annotated[str, msgspec.Meta(max_length=2000)] | None = None


_REASON = Annotated[str, msgspec.Meta(min_length=1, max_length=2000, pattern=r"\S")]


class LegalHoldBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A signed notice: the sender placed (or released) a legal hold on a message the two
    gateways exchanged, keeping its copy past the retention date (DESIGN §12)."""

    message_id: Annotated[str, msgspec.Meta(pattern=_UUID)]
    action: Literal["placed", "released"]
    reason: Annotated[str, msgspec.Meta(max_length=2000)]


class HoldRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """What an administrator posts to /v1/admin/holds."""

    message_id: Annotated[str, msgspec.Meta(pattern=_UUID)]
    reason: _REASON


class ReleaseRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """What an administrator posts to /v1/admin/holds/{message_id}/release."""

    reason: _REASON | None = None


def decode_struct(cls: type[Any], data: bytes | dict[str, Any], *, where: str = "$") -> Any:
    """Decode JSON bytes or a dict into a Struct; any failure is a SchemaError naming the field,
    with the same codes as message bodies (`core.schemas.check_struct`)."""
    return check_struct(cls, data, where=where)
