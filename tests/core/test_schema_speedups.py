"""The faster schema checks decide exactly as the implementations they replaced (kept here as references)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from customs_gateway.core import refdata, schemas
from customs_gateway.core.errors import SchemaError

SAMPLES = Path(__file__).resolve().parents[2] / "keys-example" / "messages"

# --- the previous implementations ------------------------------------------------------------------

_REF_BAD_IN_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff\ufffe\uffff]")
_REF_BAD_IN_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff\ufffe\uffff]")
_REF_BASE64_RE = re.compile(refdata.BASE64_PATTERN)
_REF_ISO6346 = dict(
    zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ", [*range(10, 11), *range(12, 22), *range(23, 33), *range(34, 39)], strict=True)
)


def ref_is_text(value: str, *, multiline: bool) -> bool:
    return (_REF_BAD_IN_TEXT if multiline else _REF_BAD_IN_LINE).search(value) is None


def ref_is_nonzero_decimal(value: str) -> bool:
    return any(ch in value for ch in "123456789")


def ref_container_check_digit(first10: str) -> int:
    total = sum((_REF_ISO6346[ch] if ch.isalpha() else int(ch)) << i for i, ch in enumerate(first10))
    return total % 11 % 10


def ref_is_base64(value: str) -> bool:
    if _REF_BASE64_RE.fullmatch(value) is None:
        return False
    try:
        return base64.b64encode(base64.b64decode(value, validate=True)).decode("ascii") == value
    except (binascii.Error, ValueError):
        return False


class _RefPairs(list[tuple[str, Any]]):
    pass


def ref_duplicate_path(raw: bytes) -> str | None:
    """The old `_refuse_duplicate_keys`: the path of the first duplicate key, or None."""
    tree = json.loads(raw, object_pairs_hook=_RefPairs)

    def find(node: object, path: str) -> str | None:
        if isinstance(node, _RefPairs):
            seen: set[str] = set()
            for key, value in node:
                child = schemas._join(path, schemas._segment(key))
                if key in seen:
                    return child
                seen.add(key)
                if (found := find(value, child)) is not None:
                    return found
        elif isinstance(node, list):
            for i, value in enumerate(node):
                if (found := find(value, f"{path}[{i}]")) is not None:
                    return found
        return None

    found = find(tree, "$")
    return None if found is None else schemas._clean(found)


def _outcome(fn: Any, *args: Any, **kw: Any) -> tuple[str, object]:
    try:
        return "ok", fn(*args, **kw)
    except Exception as e:  # the same exception type counts as the same decision
        return "raised", type(e)


# --- strategies ------------------------------------------------------------------------------------

# Every code point class that matters: ASCII, controls, the bidi and non-characters, surrogates, CJK.
special = st.sampled_from(
    [*"\x00\x07\t\n\x0b\r\x1f \x7f\x80\x9f\xa0\xad", "\u2028", "\u202a", "\u202e", "\u2066", "\u2069", "\u3000",
     "\ud800", "\udfff", "\ufeff", "\ufffd", "\ufffe", "\uffff", "中", "\U0001f600", "\U000e0001", "\U0010ffff"]
)  # fmt: skip
any_char = st.characters(codec=None, exclude_categories=()) | special
texts = st.text(alphabet=any_char, max_size=40) | st.text(max_size=40)


def _near(sample: str, alphabet: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Strings one edit away from `sample`."""

    @st.composite
    def edit(draw: st.DrawFn) -> str:
        i = draw(st.integers(0, len(sample)))
        ch = draw(alphabet)
        return draw(st.sampled_from([sample[:i] + ch + sample[i:], sample[:i] + ch + sample[i + 1 :]]))

    return edit()


# --- text rule ---------------------------------------------------------------------------------------


def test_every_refused_character_is_unprintable() -> None:
    # What lets is_text (and _Body.__post_init__) skip the regex for a printable string.
    for cp in range(0x110000):
        ch = chr(cp)
        if _REF_BAD_IN_LINE.search(ch) or _REF_BAD_IN_TEXT.search(ch):
            assert not ch.isprintable(), hex(cp)


@settings(max_examples=1000)
@given(texts, st.booleans())
@example("plain ASCII", False)
@example("two\nlines\tand tab", True)
@example("two\nlines", False)
@example("中文 — English", False)
@example("evil\u202egnp.exe", False)
@example("\ud800", True)
@example("\u3000ideographic space", False)
def test_is_text_matches_reference(value: str, multiline: bool) -> None:
    assert refdata.is_text(value, multiline=multiline) == ref_is_text(value, multiline=multiline)


# --- decimals, container numbers, base64 ------------------------------------------------------------


@settings(max_examples=500)
@given(texts | st.text(alphabet="0123456789.", max_size=20))
def test_is_nonzero_decimal_matches_reference(value: str) -> None:
    assert refdata.is_nonzero_decimal(value) == ref_is_nonzero_decimal(value)


containers = st.from_regex(re.compile(refdata.CONTAINER_PATTERN.strip("^$")), fullmatch=True)


@settings(max_examples=1000)
@given(
    containers
    | containers.flatmap(lambda c: _near(c, any_char))
    | st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789é٣ ", max_size=12)
    | texts
)
@example("CSQU3054383")
@example("MSCU1000070")
@example("CSQU305438")
def test_container_checks_match_reference(value: str) -> None:
    # The two Checks run in this order on a field: the format, then the check digit.
    fmt = refdata.is_container_format(value)
    if fmt:
        new = refdata.is_container_check_digit_valid(value)
        assert new == (ref_container_check_digit(value[:10]) == int(value[10]))
    assert _outcome(refdata.container_check_digit, value[:10]) == _outcome(ref_container_check_digit, value[:10])


b64_texts = st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode("ascii"))
b64_alphabet = st.sampled_from([*"ABYZaz09+/=-_ \n", "é"])


@settings(max_examples=1000)
@given(b64_texts | b64_texts.flatmap(lambda t: _near(t, b64_alphabet)) | st.text(alphabet=b64_alphabet) | texts)
@example("")
@example("YWI")
@example("YWJ=")
@example("YQ==YQ==")
@example("Y===")
@example("YQ==\n")
def test_is_base64_matches_reference(value: str) -> None:
    assert refdata.is_base64(value) == ref_is_base64(value)


def test_attachment_data_is_the_decoded_content() -> None:
    notice = schemas.validate_body("seminar-notice", (SAMPLES / "seminar-notice.json").read_bytes())
    for att in notice.attachments:  # type: ignore[attr-defined]
        assert att.data() == base64.b64decode(att.content, validate=True)


# --- duplicate keys ----------------------------------------------------------------------------------

keys = st.sampled_from(["a", "b", "c", "x y", "中", "\u202e"])
json_trees = st.recursive(
    st.none() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.lists(st.tuples(keys, inner), max_size=4),
    max_leaves=15,
)


def _render(node: object) -> str:
    """JSON text; a list of (key, value) tuples becomes an object that may repeat keys."""
    if isinstance(node, list) and node and all(isinstance(p, tuple) for p in node):
        return "{" + ",".join(f"{json.dumps(k)}:{_render(v)}" for k, v in node) + "}"
    if isinstance(node, list):
        return "[" + ",".join(_render(v) for v in node) + "]"
    return json.dumps(node)


@settings(max_examples=500)
@given(json_trees)
def test_duplicate_key_detection_matches_reference(tree: object) -> None:
    raw = _render(tree).encode()
    expected = ref_duplicate_path(raw)
    if expected is None:
        schemas._refuse_duplicate_keys(raw)
    else:
        with pytest.raises(SchemaError) as info:
            schemas._refuse_duplicate_keys(raw)
        assert (info.value.code, info.value.field) == ("schema.duplicate_key", expected)


colon_keys = st.sampled_from(["a", "b", "a:b", ":", "中:", "x y"])
colon_trees = st.recursive(
    st.none()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet='a:\\"é', max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.lists(st.tuples(colon_keys, inner), max_size=4),
    max_leaves=15,
)


def _render_spelled(node: object, escape_colons: bool, space: str) -> str:
    """Like `_render`, with `space` after every separator and, if `escape_colons`, every colon in
    a string written as \\u003a or \\u003A (the other spellings a parser must read alike)."""

    def text(value: str) -> str:
        out = json.dumps(value, ensure_ascii=False)
        return out.replace(":", "\\u003a" if len(out) % 2 else "\\u003A") if escape_colons else out

    if isinstance(node, list) and node and all(isinstance(p, tuple) for p in node):
        inner = f",{space}".join(f"{text(k)}{space}:{space}{_render_spelled(v, escape_colons, space)}" for k, v in node)
        return "{" + space + inner + space + "}"
    if isinstance(node, list):
        return "[" + f",{space}".join(_render_spelled(v, escape_colons, space) for v in node) + "]"
    return text(node) if isinstance(node, str) else json.dumps(node)


@settings(max_examples=800)
@given(colon_trees, st.booleans(), st.sampled_from(["", " ", "\n  "]))
@example([("a:b", ":"), ("a:b", None)], False, "")
@example([("a", "x:y"), ("a", 1)], False, " ")
@example([("a", [("b", 1), ("b", 2)])], True, "")
@example([("a", "x"), ("a", 1), ("b", ":")], True, "")  # an escaped colon hides the lost key
def test_duplicate_keys_found_by_counting_decide_as_the_reference(tree: object, escape: bool, space: str) -> None:
    """`refuse_duplicate_keys(raw, parsed)` refuses exactly what the pairs parse refuses, naming the
    same key, and its count alone never passes bytes holding a key twice."""
    raw = _render_spelled(tree, escape, space).encode()
    parsed = msgspec.json.decode(raw)
    expected = ref_duplicate_path(raw)
    if expected is None:
        schemas.refuse_duplicate_keys(raw, parsed)
    else:
        assert not schemas._no_duplicate_by_count(raw, parsed)
        with pytest.raises(SchemaError) as info:
            schemas.refuse_duplicate_keys(raw, parsed)
        assert (info.value.code, info.value.field) == ("schema.duplicate_key", expected)


@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLES.glob("*.json")))
def test_a_submission_without_duplicates_is_passed_by_the_count(name: str) -> None:
    """The common case takes the fast path: a back-end's request, pretty-printed or compact, is
    passed by counting colons, with no second parse."""
    body = json.loads((SAMPLES / name).read_text(encoding="utf-8"))
    for raw in (json.dumps(body).encode(), json.dumps(body, indent=2, ensure_ascii=False).encode()):
        assert schemas._no_duplicate_by_count(raw, msgspec.json.decode(raw))


def test_an_escaped_colon_leaves_the_decision_to_the_parse() -> None:
    raw = b'{"a":"x\\u003ay","a":1}'
    assert not schemas._no_duplicate_by_count(raw, msgspec.json.decode(raw))
    with pytest.raises(SchemaError) as info:
        schemas.refuse_duplicate_keys(raw, msgspec.json.decode(raw))
    assert info.value.field == "$.a"


# --- the per-class field table -----------------------------------------------------------------------

STRUCTS = [
    schemas.SeizureShare, schemas.Commodity, schemas.Trademark, schemas.Party, schemas.PortVisitInvitation,
    schemas.DateRange, schemas.Contact, schemas.PortVisitReply, schemas.SeminarNotice, schemas.Attachment,
]  # fmt: skip
SKIPPED = {
    "SeizureShare": {"seizure_date", "import_export_date", "commodities", "infringed_trademarks", "manufacturers",
                     "shippers", "health_safety_risk", "files"},
    "PortVisitInvitation": {"proposed_dates", "delegation_size", "contacts", "reply_by"},
    "PortVisitReply": {"proposed_dates", "delegation_size"},
    "SeminarNotice": {"starts_at", "ends_at", "registration_deadline", "seats", "attachments", "files"},
    "DateRange": {"start", "end"},
}  # fmt: skip


@pytest.mark.parametrize("cls", STRUCTS, ids=lambda c: c.__name__)
def test_text_fields_are_the_field_rules_minus_text_free_fields(cls: type[msgspec.Struct]) -> None:
    rules = schemas._field_rules(cls)
    kept = schemas._text_fields(cls)
    assert [(n, m, c) for n, (c, m) in rules.items() if n not in SKIPPED.get(cls.__name__, set())] == list(kept)
    assert set(rules) - {n for n, _, _ in kept} == SKIPPED.get(cls.__name__, set())


def _strings_at_skipped_fields(node: object) -> list[str]:
    found: list[str] = []
    if isinstance(node, msgspec.Struct):
        skipped = SKIPPED.get(type(node).__name__, set())
        for name in node.__struct_fields__:
            value = getattr(node, name)
            items = value if isinstance(value, list) else [value]
            if name in skipped and any(isinstance(v, str) for v in items):
                found.append(f"{type(node).__name__}.{name}")
            for v in items:
                found += _strings_at_skipped_fields(v)
    return found


@pytest.mark.parametrize("msg_type", schemas.MESSAGE_TYPES)
def test_skipped_fields_hold_no_text_in_the_samples(msg_type: str) -> None:
    raw = (SAMPLES / f"{msg_type}.json").read_bytes()
    for form in (raw, json.loads(raw)):
        assert _strings_at_skipped_fields(schemas.validate_body(msg_type, form)) == []
