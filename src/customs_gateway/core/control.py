"""Bodies of gateway-to-gateway control messages (`ack` for now; key announcements join later)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

import msgspec

from .errors import SchemaError

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


_FIELD_RE = re.compile(r" - at `(\$[^`]*)`$")


def decode_struct(cls: type[Any], data: bytes | dict[str, Any], *, where: str = "$") -> Any:
    """Decode JSON bytes or a dict into a Struct; any failure is a SchemaError naming the field."""
    try:
        if isinstance(data, bytes):
            return msgspec.json.decode(data, type=cls)
        return msgspec.convert(data, type=cls)
    except msgspec.ValidationError as e:
        msg = str(e)
        m = _FIELD_RE.search(msg)
        field = m.group(1) if m else where
        missing = re.search(r"missing required field `([^`]+)`", msg)
        if missing:
            field = f"{field}.{missing.group(1)}"
            raise SchemaError(msg, code="schema.required", field=field) from e
        raise SchemaError(msg, code="schema.invalid", field=field) from e
    except msgspec.DecodeError as e:
        raise SchemaError(f"not valid JSON: {e}", code="schema.json", field=where) from e
