"""Field formats of message bodies: ISO/UN code lists, one predicate per format, the field types.

Every predicate is pure and answers `True` for a valid value. Patterns are written once and used
both by the predicates (with `fullmatch`, so a trailing newline never slips through) and in the
published JSON Schema. The field types at the end carry the predicates into the Structs of
`core.schemas` as `Check`s, each with its refusal code. Country, currency and language codes come
from pycountry; the UN/ECE Rec 20 units and the other short lists here are snapshots.
"""

from __future__ import annotations

import binascii
import datetime as dt
import functools
import gettext
import re
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from operator import mul
from typing import Annotated, Any, Literal, get_args

import msgspec
import pycountry
import pycountry.db
from msgspec import Meta

# ISO 3166-1, ISO 4217 and ISO 639 come from pycountry (Debian's iso-codes data, maintained with
# the standards); the sets are built once, at import, so the predicates stay pure and fast. They
# are read from pycountry's data files with only the code fields decoded: pycountry's own objects
# for the 7,900 ISO 639-3 languages would stay in memory for good (7.6 MiB in every gateway
# process and crypto worker, against 0.9 this way; docs/performance.md, session 13).


class _Codes(msgspec.Struct):
    alpha_2: str | None = None
    alpha_3: str | None = None


def _codes(db: pycountry.db.Database[Any], field: Literal["alpha_2", "alpha_3"]) -> frozenset[str]:
    """The `field` codes of a pycountry database, without loading the database itself."""
    with open(db.filename, "rb") as f:
        entries = msgspec.json.decode(f.read(), type=dict[str, list[_Codes]])[str(db.root_key)]
    return frozenset(code for e in entries if (code := getattr(e, field)) is not None)


# ISO 3166-1 alpha-2: the officially assigned codes (user-assigned codes such as XK are not in it).
COUNTRIES: frozenset[str] = _codes(pycountry.countries, "alpha_2")
# ISO 4217 codes that are not money: precious metals, bond-market units, the SDR, the testing code
# and "no currency". A declared customs value is always in money.
_NOT_MONEY: frozenset[str] = frozenset(
    {"XAD", "XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XDR", "XPD", "XPT", "XSU", "XTS", "XUA", "XXX"}
)
CURRENCIES: frozenset[str] = _codes(pycountry.currencies, "alpha_3") - _NOT_MONEY
# ISO 639-1 two-letter codes (the withdrawn `sh` left out).
LANGUAGES: frozenset[str] = _codes(pycountry.languages, "alpha_2") - {"sh"}


@functools.cache
def country_name(code: str, language: str = "en") -> str | None:
    """The name of an ISO 3166-1 country in English (`en`) or Chinese (`zh`), for people (error
    messages, the console); None for an unknown code."""
    country = pycountry.countries.get(alpha_2=code)
    if country is None:
        return None
    name = str(country.name)
    if language == "en":
        return name
    try:
        zh = gettext.translation("iso3166-1", pycountry.LOCALES_DIR, languages=["zh_CN"])
    except OSError:
        return name
    return zh.gettext(name)


# UN/ECE Recommendation 20 units seen on seizure records (counts, mass, volume, length, area) plus
# the package codes CT/BX/PK that agencies report as units of quantity.
Unit = Literal[
    "PCE", "H87", "C62", "NAR", "PR", "SET", "DZN",
    "GRM", "KGM", "TNE", "MLT", "LTR", "MTQ", "MTR", "MTK",
    "CT", "BX", "PK",
]  # fmt: skip
UNITS: tuple[str, ...] = get_args(Unit)

# Attachment media types a training package needs: the file extensions that may carry each one and
# the leading bytes its content must start with, so a renamed executable is not passed on as a PDF.
# text/plain has no signature; it must be UTF-8 instead.
MEDIA_TYPES: dict[str, tuple[tuple[str, ...], tuple[bytes, ...]]] = {
    "application/pdf": ((".pdf",), (b"%PDF-",)),
    "text/plain": ((".txt",), ()),
    "image/png": ((".png",), (b"\x89PNG\r\n\x1a\n",)),
    "image/jpeg": ((".jpg", ".jpeg"), (b"\xff\xd8\xff",)),
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ((".docx",), (b"PK\x03\x04",)),
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": (
        (".pptx",),
        (b"PK\x03\x04",),
    ),
}

UNLOCODE_PATTERN = "^[A-Z]{2}[A-Z2-9]{3}$"
HS_CODE_PATTERN = "^[0-9]{4}(\\.?[0-9]{2}){1,3}$"
CONTAINER_PATTERN = "^[A-Z]{3}[UJZ][0-9]{7}$"
DECIMAL_PATTERN = "^(0|[1-9][0-9]{0,14})(\\.[0-9]{1,6})?$"
UUID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
EMAIL_PATTERN = "^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$"
PHONE_PATTERN = "^\\+?[0-9( ][0-9 ()-]{3,30}[0-9]$"
HTTPS_PATTERN = "^https://[^\\s/?#@]+([/?#]\\S*)?$"
# No path separators, no Windows-reserved characters, no leading dot (hidden files, `..`).
FILENAME_PATTERN = '^[^./\\\\:*?"<>|\\x00-\\x1f\\x7f][^/\\\\:*?"<>|\\x00-\\x1f\\x7f]*$'
BASE64_PATTERN = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"

_UNLOCODE_RE = re.compile(UNLOCODE_PATTERN)
_HS_CODE_RE = re.compile(HS_CODE_PATTERN)
_CONTAINER_RE = re.compile(CONTAINER_PATTERN)
_DECIMAL_RE = re.compile(DECIMAL_PATTERN)
_UUID_RE = re.compile(UUID_PATTERN)
_EMAIL_RE = re.compile(EMAIL_PATTERN)
_PHONE_RE = re.compile(PHONE_PATTERN)
_HTTPS_RE = re.compile(HTTPS_PATTERN)
_FILENAME_RE = re.compile(FILENAME_PATTERN)
# C0/C1 controls, lone surrogates (unencodable as UTF-8), non-characters, and the bidi embedding /
# override / isolate controls that make text display differently from what it is (CVE-2021-42574).
_BAD_IN_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff\ufffe\uffff]")
_BAD_IN_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff\ufffe\uffff]")

# ISO 6346 letter values: A=10 upwards, skipping the multiples of 11 (11, 22, 33).
_ISO6346_VALUES: dict[str, int] = {
    "A": 10, "B": 12, "C": 13, "D": 14, "E": 15, "F": 16, "G": 17, "H": 18, "I": 19, "J": 20, "K": 21, "L": 23,
    "M": 24, "N": 25, "O": 26, "P": 27, "Q": 28, "R": 29, "S": 30, "T": 31, "U": 32, "V": 34, "W": 35, "X": 36,
    "Y": 37, "Z": 38,
}  # fmt: skip
# The same values with the digits, and the weights 2**position, for the check digit in one C pass.
_ISO6346_CHAR_VALUES: dict[str, int] = {**_ISO6346_VALUES, **{str(d): d for d in range(10)}}
_ISO6346_WEIGHTS = tuple(1 << i for i in range(10))
_NONZERO_DIGIT_RE = re.compile("[1-9]")
_AUTHORITY_RE = re.compile(r"(?P<host>[^:\[\]]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?")


def is_text(value: str, *, multiline: bool) -> bool:
    """No control or invalid characters; multi-line text may also hold \\n and \\t."""
    # Every character either pattern refuses is unprintable to str.isprintable (Unicode categories
    # Cc, Cf, Cs and Cn), so a printable string, the usual case, needs no regex pass.
    return value.isprintable() or (_BAD_IN_TEXT if multiline else _BAD_IN_LINE).search(value) is None


def is_unlocode(code: str) -> bool:
    """UN/LOCODE in compact form (`CNSHA`): an ISO 3166 country plus three characters A-Z, 2-9."""
    return _UNLOCODE_RE.fullmatch(code) is not None and code[:2] in COUNTRIES


def is_hs_code(code: str) -> bool:
    """HS code of 6, 8 or 10 digits, dots allowed between groups (`6403.99`, `6403.99.6075`).

    Chapter 77 is reserved in the Harmonized System and chapter 00 does not exist.
    """
    return _HS_CODE_RE.fullmatch(code) is not None and code[:2] not in ("00", "77")


def is_container_format(number: str) -> bool:
    """ISO 6346 shape: owner code (3 letters), category U/J/Z, 6-digit serial, check digit."""
    return _CONTAINER_RE.fullmatch(number) is not None


def container_check_digit(first10: str) -> int:
    """The ISO 6346 check digit of the first ten characters (owner, category, serial) of a number.

    Each character's value is weighted by 2**position; the sum mod 11 mod 10 is the check digit.
    Call it only on text `is_container_format` accepted.
    """
    total: int
    if len(first10) == 10:
        try:  # table lookups and weights in C, for the shape is_container_format accepts
            total = sum(map(mul, map(_ISO6346_CHAR_VALUES.__getitem__, first10), _ISO6346_WEIGHTS))
            return total % 11 % 10
        except KeyError:  # anything else: the general rule below, with its own errors
            pass
    total = sum((_ISO6346_VALUES[ch] if ch.isalpha() else int(ch)) << i for i, ch in enumerate(first10))
    return total % 11 % 10


def is_container_check_digit_valid(number: str) -> bool:
    """A well-formed container number carries the right check digit."""
    return container_check_digit(number[:10]) == int(number[10])


def is_decimal(value: str) -> bool:
    """A plain unsigned decimal: up to 15 integer digits, up to 6 decimals, no exponent or sign."""
    return _DECIMAL_RE.fullmatch(value) is not None


def is_nonzero_decimal(value: str) -> bool:
    """Greater than zero, for a value `is_decimal` accepted (unsigned, so any non-zero digit)."""
    return _NONZERO_DIGIT_RE.search(value) is not None


def is_uuid(value: str) -> bool:
    """The canonical (lower-case, hyphenated) text form of a UUID, as message ids are written."""
    return _UUID_RE.fullmatch(value) is not None


def is_email(value: str) -> bool:
    """Basic `local@domain.tld` shape; deliverability is not our concern."""
    return _EMAIL_RE.fullmatch(value) is not None


def is_phone(value: str) -> bool:
    """Digits with an optional leading + and the usual separators (space, parentheses, hyphen)."""
    return _PHONE_RE.fullmatch(value) is not None


def is_https_url(value: str) -> bool:
    """An https:// URL with a host, an optional valid port and no credentials in it."""
    if _HTTPS_RE.fullmatch(value) is None:
        return False
    authority = re.split(r"[/?#]", value[len("https://") :], maxsplit=1)[0]
    match = _AUTHORITY_RE.fullmatch(authority)
    if match is None:
        return False
    port = match.group("port")
    return port is None or 0 < int(port) < 65536


def is_filename(value: str) -> bool:
    """A plain file name: no path, no leading dot, no trailing dot or space."""
    return _FILENAME_RE.fullmatch(value) is not None and not value.endswith((" ", "."))


def is_base64(value: str) -> bool:
    """Standard base64 with padding and canonical trailing bits (RFC 4648 §4)."""
    # Strict decoding refuses what BASE64_PATTERN refuses (alphabet, padding, length) in one C pass;
    # re-encoding then refuses non-zero trailing bits. Together: exactly the texts b64encode writes.
    try:
        data = binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):  # ValueError: a non-ASCII str
        return False
    return binascii.b2a_base64(data, newline=False) == value.encode("ascii")


def base64_decoded_size(value: str) -> int:
    """Decoded size of padded base64 text, computed without decoding it."""
    return len(value) // 4 * 3 - value[-2:].count("=")


def is_time_zone(name: str) -> bool:
    """An IANA time zone name known to this system's tz database."""
    # Membership first: ZoneInfo() would otherwise try arbitrary keys against the file system.
    return name in _time_zones()


@functools.cache
def _time_zones() -> frozenset[str]:
    # `localtime` names this machine's zone, not an IANA one; `Factory` means "no zone configured".
    return frozenset(zoneinfo.available_timezones()) - {"localtime", "Factory", "posixrules"}


# Field types. Every string is bounded: msgspec enforces the Meta bounds, and the Struct base in
# `core.schemas` applies each type's Checks in order, reporting the field's JSON path.
MAX_CODE = 64  # identifiers with their own format: codes, ids, media types
MAX_REFERENCE = 64
MAX_LINE = 200
MAX_ADDRESS = 500
MAX_DESCRIPTION = 1000
MAX_REASON = 2000
MAX_NOTES = 8000
MAX_EMAIL = 254
MAX_PHONE = 32
MAX_URL = 2048
MAX_TIME_ZONE = 64
MAX_FILENAME = 255
MAX_DELEGATION = 50
MAX_SEATS = 10_000
MAX_ATTACHMENTS_BYTES = 4 * 1024 * 1024  # decoded bytes, all attachments of one notice together


@dataclass(frozen=True)
class Check:
    """A format rule carried in a field's type: refuse with `code` unless `accepts(value)`."""

    code: str
    accepts: Callable[[str], bool]
    detail: str


MULTILINE = "multiline"  # type marker: this string may hold \n and \t; all others are one line


def _hint(**extra: object) -> Meta:
    return Meta(extra_json_schema=dict(extra))


def _fits_attachment_bound(value: str) -> bool:
    return base64_decoded_size(value) <= MAX_ATTACHMENTS_BYTES


Reference = Annotated[str, Meta(min_length=1, max_length=MAX_REFERENCE)]
Line = Annotated[str, Meta(min_length=1, max_length=MAX_LINE)]
Address = Annotated[str, Meta(min_length=1, max_length=MAX_ADDRESS), MULTILINE]
Description = Annotated[str, Meta(min_length=1, max_length=MAX_DESCRIPTION), MULTILINE]
Reason = Annotated[str, Meta(min_length=1, max_length=MAX_REASON), MULTILINE]
Notes = Annotated[str, Meta(max_length=MAX_NOTES, description="UTF-8 text; \\n and \\t allowed."), MULTILINE]
Timestamp = Annotated[dt.datetime, Meta(tz=True, description="RFC 3339 with offset (2026-12-08T09:00:00+08:00).")]
DelegationSize = Annotated[int, Meta(ge=1, le=MAX_DELEGATION)]
MAX_COUNT = 100_000_000
Count = Annotated[int, Meta(ge=0, le=MAX_COUNT, description="A whole number of things counted, 0 or more.")]
Seats = Annotated[int, Meta(ge=1, le=MAX_SEATS)]
UnitCode = Annotated[Unit, Meta(description="UN/ECE Recommendation 20 unit code.")]
Decimal = Annotated[
    str,
    Meta(max_length=MAX_CODE, description='Decimal string > 0, e.g. "12345.67".'),
    _hint(pattern=DECIMAL_PATTERN),
    Check("schema.decimal", is_decimal, 'must be a plain decimal string such as "1250.50"'),
    Check("schema.positive", is_nonzero_decimal, "must be greater than zero"),
]
Unlocode = Annotated[
    str,
    Meta(max_length=MAX_CODE, description="UN/LOCODE, compact form (CNSHA)."),
    _hint(pattern=UNLOCODE_PATTERN),
    Check("schema.unlocode", is_unlocode, "must be a UN/LOCODE: ISO 3166 country + 3 of A-Z, 2-9"),
]
Country = Annotated[
    str,
    Meta(max_length=MAX_CODE, description="ISO 3166-1 alpha-2."),
    _hint(enum=sorted(COUNTRIES)),
    Check("schema.country", COUNTRIES.__contains__, "must be an ISO 3166-1 alpha-2 country code"),
]
Currency = Annotated[
    str,
    Meta(max_length=MAX_CODE, description="ISO 4217 alpha-3."),
    _hint(enum=sorted(CURRENCIES)),
    Check("schema.currency", CURRENCIES.__contains__, "must be an ISO 4217 currency code in use"),
]
Language = Annotated[
    str,
    Meta(max_length=MAX_CODE, description="ISO 639-1."),
    _hint(enum=sorted(LANGUAGES)),
    Check("schema.language", LANGUAGES.__contains__, "must be an ISO 639-1 code such as en or zh"),
]
HsCode = Annotated[
    str,
    Meta(max_length=MAX_CODE, description="HS code: 6, 8 or 10 digits, dots allowed (6403.99)."),
    _hint(pattern=HS_CODE_PATTERN),
    Check("schema.hs_code", is_hs_code, "must be an HS code of 6, 8 or 10 digits (e.g. 6403.99)"),
]
ContainerNumber = Annotated[
    str,
    Meta(max_length=MAX_CODE, description="ISO 6346, compact, check digit verified (CSQU3054383)."),
    _hint(pattern=CONTAINER_PATTERN),
    Check("schema.container_format", is_container_format, "must be an ISO 6346 number like CSQU3054383"),
    Check("schema.container_check_digit", is_container_check_digit_valid, "ISO 6346 check digit is wrong"),
]
Email = Annotated[
    str,
    Meta(max_length=MAX_EMAIL),
    _hint(format="email", pattern=EMAIL_PATTERN),
    Check("schema.email", is_email, "must be an e-mail address like name@example.gov"),
]
Phone = Annotated[
    str,
    Meta(max_length=MAX_PHONE),
    _hint(pattern=PHONE_PATTERN),
    Check("schema.phone", is_phone, "must be a phone number like +86 21 6512 3456"),
]
MessageId = Annotated[
    str,
    Meta(max_length=MAX_CODE),
    _hint(format="uuid", pattern=UUID_PATTERN),
    Check("schema.uuid", is_uuid, "must be a lower-case hyphenated UUID (a message id)"),
]
TimeZone = Annotated[
    str,
    Meta(max_length=MAX_TIME_ZONE, description="IANA time zone (Asia/Shanghai)."),
    Check("schema.timezone", is_time_zone, "must be an IANA time zone such as Asia/Shanghai"),
]
HttpsUrl = Annotated[
    str,
    Meta(max_length=MAX_URL),
    _hint(format="uri", pattern=HTTPS_PATTERN),
    Check("schema.url", is_https_url, "must be an https:// URL without credentials"),
]
Filename = Annotated[
    str,
    Meta(min_length=1, max_length=MAX_FILENAME),
    _hint(pattern=FILENAME_PATTERN),
    Check("schema.filename", is_filename, "must be a plain file name (no path, no leading dot)"),
]
MediaType = Annotated[
    str,
    Meta(max_length=MAX_CODE),
    _hint(enum=sorted(MEDIA_TYPES)),
    Check("schema.media_type", MEDIA_TYPES.__contains__, "media type is not on the allowed list"),
]
Base64Content = Annotated[
    str,
    Meta(description="Standard base64 with padding (RFC 4648 §4)."),
    _hint(contentEncoding="base64", maxLength=(MAX_ATTACHMENTS_BYTES + 2) // 3 * 4),
    # Size first, so an oversized attachment is refused before anything decodes it.
    Check("schema.attachment_size", _fits_attachment_bound, f"larger than {MAX_ATTACHMENTS_BYTES} bytes"),
    Check("schema.base64", is_base64, "must be standard base64 with padding"),
]
