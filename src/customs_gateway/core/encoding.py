"""Byte-level encodings shared by every wire construction: base64url, JSON bytes, timestamps.

Signed bytes are produced once by `json_bytes` and then carried as bytes; nothing is ever
re-serialised before verification.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from typing import Any

import msgspec
import pybase64

from .errors import DecodeError

_TS_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", re.ASCII)

_json_encoder = msgspec.json.Encoder(order="sorted")
_json_decoder = msgspec.json.Decoder()


#: Below these sizes the standard library's base64 is quicker than pybase64 (whose call and
#: keyword arguments cost more than its SIMD saves on a signature or a hash); above, pybase64.
_SIMD_ENCODE_FROM = 192  # bytes
_SIMD_DECODE_FROM = 384  # characters (about 340 measured even)


def b64url(data: bytes) -> str:
    """Unpadded base64url (RFC 4648 §5)."""
    if len(data) < _SIMD_ENCODE_FROM:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
    return pybase64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_TO_STANDARD = bytes.maketrans(b"-_+/=", b"+/!!!")  # '+', '/' and '=' become invalid on purpose
_PAD = (b"", b"", b"==", b"=")  # by len % 4 (1 is refused before)
_VALUE = {c: i for i, c in enumerate(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")}


def unb64url(text: str | bytes, *, field: str = "value") -> bytes:
    """Strict, canonical, unpadded base64url decode; raises DecodeError naming `field`.

    On the receive path for every envelope (about 7 KB of base64url each), so no regex pass and
    no re-encoding check. Short texts: binascii's strict decoder, the url alphabet mapped to the
    standard one and '+', '/' and '=' to an invalid byte. Long ones: pybase64's SIMD decoder
    (10-14x binascii's on 1-4 KB) with `validate`, which refuses anything outside the alphabet
    except that with `altchars` it also takes the standard '+' and '/', so those (and '=', which
    we add ourselves) are looked for first, a memchr each. The unused low bits of the last
    character are checked directly (else two texts would decode alike).
    """
    if isinstance(text, str):
        try:
            raw = text.encode("ascii")
        except UnicodeEncodeError as e:
            raise DecodeError(f"{field} is not unpadded base64url", field=field, code="decode.base64") from e
    elif isinstance(text, bytes):
        raw = text
    else:
        raise DecodeError(f"{field} must be a base64url string", field=field, code="decode.base64")
    rem = len(raw) % 4
    try:
        if rem == 1:
            raise ValueError("length")
        if len(raw) < _SIMD_DECODE_FROM:
            out = binascii.a2b_base64(raw.translate(_TO_STANDARD) + _PAD[rem], strict_mode=True)
        elif b"+" in raw or b"/" in raw or b"=" in raw:
            raise ValueError("not the base64url alphabet")
        else:
            out = pybase64.b64decode(raw + _PAD[rem], altchars=b"-_", validate=True)
        if rem and _VALUE[raw[-1]] & (0x0F if rem == 2 else 0x03):
            raise ValueError("non-canonical")
    except (binascii.Error, ValueError, KeyError) as e:
        raise DecodeError(f"{field} is not unpadded base64url", field=field, code="decode.base64") from e
    return out


def json_bytes(obj: Any) -> bytes:
    """Deterministic compact JSON (sorted keys, UTF-8) for bytes that will be signed."""
    return _json_encoder.encode(obj)


def is_version(value: object, expected: int = 1) -> bool:
    """Whether a parsed `v` field is exactly the integer `expected`: not `true`, not `1.0`, not `"1"`
    (in Python `True == 1 == 1.0`, so a plain comparison would accept all three)."""
    return type(value) is int and value == expected


def json_object(data: bytes, *, field: str = "document") -> dict[str, Any]:
    """Parse bytes that must be one JSON object; raises DecodeError otherwise."""
    try:
        obj = _json_decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise DecodeError(f"{field} is not valid JSON: {e}", field=field, code="decode.json") from e
    except RecursionError as e:  # hostile nesting depth
        raise DecodeError(f"{field} is nested too deeply", field=field, code="decode.json") from e
    if not isinstance(obj, dict):
        raise DecodeError(f"{field} must be a JSON object", field=field, code="decode.json")
    return obj


_UTC = dt.timezone.utc
_FROM_ISO = dt.datetime.fromisoformat


def format_ts(when: dt.datetime) -> str:
    """RFC 3339 UTC timestamp with millisecond precision, e.g. 2026-11-24T10:00:00.000Z.

    Aware datetimes in other zones are converted to UTC; microseconds are truncated to
    milliseconds; a naive datetime is a ValueError. %-formatting of the fields is ~3x faster
    than strftime (and pads years below 1000 to four digits, which glibc's %Y does not).
    """
    tz = when.tzinfo
    if tz is not _UTC:
        if tz is None:
            raise ValueError("naive datetime")
        when = when.astimezone(_UTC)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (  # noqa: UP031 (faster than f-string format specs)
        when.year,
        when.month,
        when.day,
        when.hour,
        when.minute,
        when.second,
        when.microsecond // 1000,
    )


def parse_ts(text: object, *, field: str = "timestamp") -> dt.datetime:
    """Parse the exact timestamp form `format_ts` writes; raises DecodeError otherwise."""
    if not isinstance(text, str) or not _TS_RE.fullmatch(text):
        raise DecodeError(
            f"{field} must be an RFC 3339 UTC timestamp like 2026-11-24T10:00:00.000Z",
            field=field,
            code="decode.timestamp",
        )
    # The regex fixed the shape (ASCII digits, 'Z'), so fromisoformat (one C call, ~5x faster than
    # slicing into datetime()) only checks the ranges; for the 'Z' it sets tzinfo=dt.timezone.utc.
    try:
        when = _FROM_ISO(text)
    except ValueError as e:
        raise DecodeError(f"{field} is not a valid date/time", field=field, code="decode.timestamp") from e
    if when.hour == 0 and text[11] == "2":  # newer Pythons read T24:00:00 as the next midnight: refuse
        raise DecodeError(f"{field} is not a valid date/time", field=field, code="decode.timestamp")
    return when
