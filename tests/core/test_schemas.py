"""Message-body schemas: each rule refuses with its own code and field path, and nothing but SchemaError escapes."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import importlib.util
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from customs_gateway.core import refdata
from customs_gateway.core.errors import SchemaError
from customs_gateway.core.schemas import (
    MAX_ATTACHMENTS_BYTES,
    MAX_ERRORS,
    MESSAGE_TYPES,
    SeizureShare,
    all_schemas,
    body_schema,
    validate_body,
)

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "keys-example" / "messages"
DELETE = object()
CODES = {
    "schema.type_unknown", "schema.json", "schema.required", "schema.type", "schema.unknown_field",
    "schema.container_check_digit", "schema.container_format", "schema.currency", "schema.country",
    "schema.unlocode", "schema.hs_code", "schema.date", "schema.timezone", "schema.date_order",
    "schema.positive", "schema.range", "schema.decimal", "schema.length", "schema.attachment_size",
    "schema.media_type", "schema.base64", "schema.filename", "schema.enum", "schema.text",
    "schema.email", "schema.phone", "schema.url", "schema.uuid", "schema.language",
    "schema.forbidden_field", "schema.duplicate_key", "schema.pattern", "schema.duplicate",
}  # fmt: skip


def sample(msg_type: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SAMPLES / f"{msg_type}.json").read_text(encoding="utf-8"))
    return loaded


def encode(body: object) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def refusal(msg_type: str, body: Any) -> SchemaError:
    with pytest.raises(SchemaError) as info:
        validate_body(msg_type, body)
    return info.value


def put(body: dict[str, Any], path: tuple[str | int, ...], value: object) -> None:
    target: Any = body
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- the samples ---------------------------------------------------------------------------------


def test_every_type_has_a_sample() -> None:
    assert MESSAGE_TYPES == (
        "seizure-share",
        "port-visit-invitation",
        "port-visit-reply",
        "seminar-notice",
        "joint-operation",
        "information-request",
        "consent-request",
        "consent-decision",
        "training-material",
    )
    assert {p.stem for p in SAMPLES.glob("*.json")} >= set(MESSAGE_TYPES)


@pytest.mark.parametrize("msg_type", MESSAGE_TYPES)
def test_sample_validates_as_bytes_and_as_dict(msg_type: str) -> None:
    raw = (SAMPLES / f"{msg_type}.json").read_bytes()
    from_bytes = validate_body(msg_type, raw)
    from_dict = validate_body(msg_type, json.loads(raw))
    assert from_bytes == from_dict
    assert msgspec.json.decode(msgspec.json.encode(from_bytes)) == json.loads(raw)  # lossless round trip


def test_decoded_body_is_typed_and_frozen() -> None:
    body = validate_body("seizure-share", encode(sample("seizure-share")))
    assert isinstance(body, SeizureShare)
    assert body.seizure_date == dt.date(2026, 11, 3)
    assert "鞋业" in body.manufacturers[0].name
    with pytest.raises(AttributeError):
        body.case_reference = "other"  # type: ignore[misc]


def test_chinese_and_multiline_text_is_accepted() -> None:
    body = sample("seizure-share")
    body["notes"] = "中文说明。\n第二行\t制表符 — English too."
    body["infringed_trademarks"][0]["mark"] = "鸿达"
    body["manufacturers"][0]["address"] = "广东省东莞市\n厚街镇"
    validate_body("seizure-share", encode(body))


def test_python_values_are_accepted_in_a_dict() -> None:
    body = sample("seminar-notice")
    body["starts_at"] = dt.datetime(2026, 12, 8, 9, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    body["registration_deadline"] = dt.date(2026, 11, 30)
    body["languages"] = ("zh", "en")
    validate_body("seminar-notice", body)


# --- one test per rule: (type, path, new value, code, field) -----------------------------------


def case(msg_type: str, path: tuple[str | int, ...], value: object, code: str, field: str | None = None) -> Any:
    """One rule: set `path` of a valid sample to `value`; expect `code` at `field` (default: the path)."""
    if field is None:
        field = "$" + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path)
    return pytest.param(msg_type, path, value, code, field, id=f"{msg_type}:{code}:{field}")


TOO_BIG = "A" * ((MAX_ATTACHMENTS_BYTES // 3 + 1) * 4)  # base64 of one byte over the bound
CASES = [
    case("seizure-share", ("case_reference",), DELETE, "schema.required"),
    case("seizure-share", ("commodities", 0, "hs_code"), DELETE, "schema.required"),
    case("seizure-share", ("commodities", 0, "quantity"), 4800, "schema.type"),
    case("seizure-share", ("health_safety_risk",), "yes", "schema.type"),
    case("seizure-share", ("seizure_date",), None, "schema.type"),
    case("seizure-share", ("commodities", 0, "colour"), "red", "schema.unknown_field"),
    case("seizure-share", ("vessel name",), "x", "schema.unknown_field", field='$["vessel name"]'),
    case("seizure-share", ("container_numbers", 0), "CSQU3054384", "schema.container_check_digit"),
    case("seizure-share", ("container_numbers", 1), "CSQA3054383", "schema.container_format"),
    case("seizure-share", ("container_numbers", 1), "csqu3054383", "schema.container_format"),
    case("seizure-share", ("container_numbers", 1), "CSQU 305438 3", "schema.container_format"),
    case("seizure-share", ("commodities", 1, "currency"), "XYZ", "schema.currency"),
    case("seizure-share", ("commodities", 1, "currency"), "usd", "schema.currency"),
    case("seizure-share", ("manufacturers", 1, "country"), "XX", "schema.country"),
    case("seizure-share", ("shippers", 0, "country"), "cn", "schema.country"),
    case("seizure-share", ("port_of_loading",), "CN-NGB", "schema.unlocode"),
    case("seizure-share", ("port_of_loading",), "XXNGB", "schema.unlocode"),
    case("seizure-share", ("port_of_discharge",), "USLG1", "schema.unlocode"),
    case("seizure-share", ("commodities", 2, "hs_code"), "64041", "schema.hs_code"),
    case("seizure-share", ("commodities", 2, "hs_code"), "6404111", "schema.hs_code"),
    case("seizure-share", ("commodities", 2, "hs_code"), "6404.1", "schema.hs_code"),
    case("seizure-share", ("commodities", 2, "hs_code"), "7701.10", "schema.hs_code"),
    case("seizure-share", ("commodities", 2, "hs_code"), "６４０４.１１", "schema.hs_code"),
    case("seizure-share", ("seizure_date",), "2026-02-30", "schema.date"),
    case("seizure-share", ("seizure_date",), "03/11/2026", "schema.date"),
    case("seizure-share", ("import_export_date",), "2026-11-04", "schema.date_order"),
    case("seizure-share", ("commodities", 0, "value"), "0.00", "schema.positive"),
    case("seizure-share", ("commodities", 0, "quantity"), "0", "schema.positive"),
    case("seizure-share", ("commodities", 0, "value"), "1,250.00", "schema.decimal"),
    case("seizure-share", ("commodities", 0, "value"), "-5", "schema.decimal"),
    case("seizure-share", ("commodities", 0, "value"), "1e3", "schema.decimal"),
    case("seizure-share", ("commodities", 0, "value"), "0012", "schema.decimal"),
    case("seizure-share", ("commodities", 0, "value"), "1.1234567", "schema.decimal"),
    case("seizure-share", ("case_reference",), "X" * 65, "schema.length"),
    case("seizure-share", ("case_reference",), "", "schema.length"),
    case("seizure-share", ("commodities",), [], "schema.length"),
    case("seizure-share", ("notes",), "注" * 8001, "schema.length"),
    case("seizure-share", ("transport_mode",), "ship", "schema.enum"),
    case("seizure-share", ("direction",), "transit", "schema.enum"),
    case("seizure-share", ("commodities", 0, "unit"), "PAIRS", "schema.enum"),
    case("seizure-share", ("notes",), "bell \x07", "schema.text"),
    case("seizure-share", ("notes",), "windows\r\nline", "schema.text"),
    case("seizure-share", ("manufacturers", 0, "name"), "two\nlines", "schema.text"),
    case("seizure-share", ("shippers", 0, "name"), "evil\u202egnp.exe", "schema.text"),
    case("seizure-share", ("commodities", 0, "description"), "nul\x00", "schema.text"),
    case("port-visit-invitation", ("port",), "USXX", "schema.unlocode"),
    case("port-visit-invitation", ("purpose",), "sightseeing", "schema.enum"),
    case("port-visit-invitation", ("proposed_dates",), [], "schema.length"),
    case("port-visit-invitation", ("proposed_dates", 1, "end"), "2026-12-13", "schema.date_order"),
    case("port-visit-invitation", ("proposed_dates", 0, "start"), "2026-13-01", "schema.date"),
    case("port-visit-invitation", ("delegation_size",), 0, "schema.positive"),
    case("port-visit-invitation", ("delegation_size",), 51, "schema.range"),
    case("port-visit-invitation", ("delegation_size",), 4.0, "schema.type"),
    case("port-visit-invitation", ("delegation_size",), True, "schema.type"),
    case("port-visit-invitation", ("contacts",), [], "schema.length"),
    case("port-visit-invitation", ("contacts", 1, "email"), "li.ming", "schema.email"),
    case("port-visit-invitation", ("contacts", 0, "phone"), "call me", "schema.phone"),
    case("port-visit-invitation", ("reply_by",), "2026-12-08", "schema.date_order"),
    case("port-visit-reply", ("invitation_id",), "not-a-uuid", "schema.uuid"),
    case("port-visit-reply", ("invitation_id",), "019A8F3E-5B2D-7F41-9E6A-3B8C1F2D4A5E", "schema.uuid"),
    case("port-visit-reply", ("decision",), "maybe", "schema.enum"),
    case("port-visit-reply", ("proposed_dates",), DELETE, "schema.required"),
    case("port-visit-reply", ("decision",), "decline", "schema.forbidden_field", field="$.proposed_dates"),
    case("port-visit-reply", ("delegation_size",), 99, "schema.range"),
    case("seminar-notice", ("starts_at",), "2026-12-08T09:00:00", "schema.timezone"),
    case("seminar-notice", ("starts_at",), "2026-12-08", "schema.date"),
    case("seminar-notice", ("starts_at",), "2026-12-08T09:00:00-05:00", "schema.timezone"),
    case("seminar-notice", ("ends_at",), "2026-12-08T04:30:00Z", "schema.timezone"),
    case("seminar-notice", ("time_zone",), "Mars/Olympus_Mons", "schema.timezone"),
    case("seminar-notice", ("time_zone",), "../../etc/passwd", "schema.timezone"),
    case("seminar-notice", ("time_zone",), "localtime", "schema.timezone"),
    case("seminar-notice", ("ends_at",), "2026-12-08T09:00:00+08:00", "schema.date_order"),
    case("seminar-notice", ("registration_deadline",), "2026-12-09", "schema.date_order"),
    case("seminar-notice", ("online_link",), "http://meet.gacc.example/x", "schema.url"),
    case("seminar-notice", ("online_link",), "https://user:pw@meet.gacc.example/", "schema.url"),
    case("seminar-notice", ("online_link",), "https://meet.gacc.example:99999/", "schema.url"),
    case("seminar-notice", ("languages",), ["zh", "xx"], "schema.language", field="$.languages[1]"),
    case("seminar-notice", ("languages",), ["ZH"], "schema.language", field="$.languages[0]"),
    case("seminar-notice", ("languages",), [], "schema.length"),
    case("seminar-notice", ("seats",), 0, "schema.positive"),
    case("seminar-notice", ("seats",), 10_001, "schema.range"),
    case("seminar-notice", ("title",), "标" * 201, "schema.length"),
    case("seminar-notice", ("attachments", 0, "filename"), "../agenda.txt", "schema.filename"),
    case("seminar-notice", ("attachments", 0, "filename"), "C:\\agenda.txt", "schema.filename"),
    case("seminar-notice", ("attachments", 0, "filename"), ".agenda.txt", "schema.filename"),
    case("seminar-notice", ("attachments", 0, "media_type"), "application/x-msdownload", "schema.media_type"),
    case("seminar-notice", ("attachments", 1, "filename"), "guide.txt", "schema.media_type",
         field="$.attachments[1].media_type"),
    case("seminar-notice", ("attachments", 1, "content"), b64(b"MZ\x90\x00 not a pdf"), "schema.media_type"),
    case("seminar-notice", ("attachments", 0, "content"), b64("中文".encode("gb18030")), "schema.media_type"),
    case("seminar-notice", ("attachments", 0, "content"), "not base64!", "schema.base64"),
    case("seminar-notice", ("attachments", 0, "content"), "YWI", "schema.base64"),
    case("seminar-notice", ("attachments", 0, "content"), "YWJ=", "schema.base64"),
    case("seminar-notice", ("attachments", 0, "content"), "YW-_", "schema.base64"),
    case("seminar-notice", ("attachments", 0, "content"), "", "schema.length"),
    case("seminar-notice", ("attachments", 0, "content"), TOO_BIG, "schema.attachment_size"),
]  # fmt: skip


@pytest.mark.parametrize(("msg_type", "path", "value", "code", "field"), CASES)
def test_rule_refuses_with_code_and_field(
    msg_type: str, path: tuple[str | int, ...], value: object, code: str, field: str
) -> None:
    body = sample(msg_type)
    put(body, path, value)
    for form in (encode(body), body):  # the same rule holds for bytes and for an already-parsed dict
        err = refusal(msg_type, form)
        assert (err.code, err.field) == (code, field), err
        assert err.status == 422
        assert code in CODES


def test_other_purpose_needs_detail() -> None:
    body = sample("port-visit-invitation")
    body["purpose"] = "other"
    del body["purpose_detail"]
    err = refusal("port-visit-invitation", body)
    assert (err.code, err.field) == ("schema.required", "$.purpose_detail")


def test_seminar_needs_venue_or_link() -> None:
    body = sample("seminar-notice")
    del body["venue"]
    validate_body("seminar-notice", body)
    del body["online_link"]
    err = refusal("seminar-notice", body)
    assert (err.code, err.field) == ("schema.required", "$.venue")


def test_reply_accept_needs_no_dates() -> None:
    body = sample("port-visit-reply")
    body["decision"] = "accept"
    del body["proposed_dates"]
    validate_body("port-visit-reply", encode(body))


def test_export_may_be_seized_before_its_declared_date() -> None:
    body = sample("seizure-share")
    body["direction"] = "export"
    body["import_export_date"] = "2026-11-10"
    validate_body("seizure-share", encode(body))


def test_lone_surrogate_is_refused() -> None:
    body = sample("seizure-share")
    body["notes"] = "half \ud800 a pair"  # only a dict can carry one; JSON bytes fail to parse
    err = refusal("seizure-share", body)
    assert (err.code, err.field) == ("schema.text", "$.notes")
    raw = encode(sample("seizure-share")).replace(b'"notes": "', b'"notes": "\\ud800')
    assert refusal("seizure-share", raw).code == "schema.json"


def test_attachments_total_size_is_bounded() -> None:
    body = sample("seminar-notice")
    half = b"%PDF-" + bytes(MAX_ATTACHMENTS_BYTES // 2)
    body["attachments"] = [
        {"filename": f"part{i}.pdf", "media_type": "application/pdf", "content": b64(half)} for i in (1, 2)
    ]
    err = refusal("seminar-notice", encode(body))
    assert (err.code, err.field) == ("schema.attachment_size", "$.attachments")
    body["attachments"].pop()
    validate_body("seminar-notice", body)


def test_attachment_data_decodes() -> None:
    notice = validate_body("seminar-notice", encode(sample("seminar-notice")))
    attachment = notice.attachments[0]  # type: ignore[attr-defined]
    assert "研讨会".encode() in attachment.data()
    assert attachment.size() == len(attachment.data())


# --- ISO 6346 --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    [
        "CSQU3054383",  # the ISO 6346 worked example
        "BICU1234565",  # BIC's own example
        "MSCU1000070",  # sum mod 11 is 10, so the check digit is 0
    ],
)
def test_container_check_digit_on_known_numbers(number: str) -> None:
    assert refdata.is_container_format(number)
    assert refdata.is_container_check_digit_valid(number)
    for wrong in set("0123456789") - {number[-1]}:
        assert not refdata.is_container_check_digit_valid(number[:-1] + wrong)


def test_container_check_digit_by_hand() -> None:
    # C=13 S=30 Q=28 U=32 3 0 5 4 3 8, weights 1..512: 6185 mod 11 = 3.
    assert 13 + 30 * 2 + 28 * 4 + 32 * 8 + 3 * 16 + 0 * 32 + 5 * 64 + 4 * 128 + 3 * 256 + 8 * 512 == 6185
    assert refdata.container_check_digit("CSQU305438") == 6185 % 11 == 3


# --- framing: type, JSON, duplicates, dict quirks ------------------------------------------------


@pytest.mark.parametrize("msg_type", ["ack", "Seizure-Share", "", None, ["seizure-share"]])
def test_unknown_type(msg_type: Any) -> None:
    err = refusal(msg_type, b"{}")
    assert (err.code, err.field) == ("schema.type_unknown", "type")
    with pytest.raises(SchemaError):
        body_schema(msg_type)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", "schema.json"),
        (b"{", "schema.json"),
        (b"\xff\xfe{}", "schema.json"),
        (b'{"notes": "\xc3"}', "schema.json"),
        (b"not json", "schema.json"),
        (encode(sample("seizure-share")) + b" {}", "schema.json"),
        (b"[]", "schema.type"),
        (b'"a string"', "schema.type"),
        (b"null", "schema.type"),
    ],
)
def test_not_a_json_object(raw: bytes, code: str) -> None:
    err = refusal("seizure-share", raw)
    assert (err.code, err.field) == (code, "$")


def test_duplicate_keys_are_refused() -> None:
    raw = encode(sample("seizure-share"))
    top = raw.replace(b'"direction": "import"', b'"direction": "export", "direction": "import"')
    err = refusal("seizure-share", top)
    assert (err.code, err.field) == ("schema.duplicate_key", "$.direction")
    nested = raw.replace(b'"hs_code": "6404.11"', b'"hs_code": "9999.99", "hs_code": "6404.11"')
    err = refusal("seizure-share", nested)
    assert (err.code, err.field) == ("schema.duplicate_key", "$.commodities[0].hs_code")


def test_dict_with_non_string_key() -> None:
    body: dict[Any, Any] = sample("seizure-share")
    body[1] = "x"
    err = refusal("seizure-share", body)
    assert (err.code, err.field) == ("schema.type", "$")


def test_refusals_do_not_echo_values() -> None:
    secret = "SECRET-0042-秘密"
    for path in [("transport_mode",), ("commodities", 0, "currency"), ("port_of_loading",), ("notes",)]:
        body = sample("seizure-share")
        put(body, path, secret + ("\x07" if path == ("notes",) else ""))
        err = refusal("seizure-share", encode(body))
        assert "SECRET" not in err.detail and "秘密" not in err.detail
        assert "SECRET" not in json.dumps(err.diagnostics())


def test_hostile_key_names_give_a_printable_field() -> None:
    body = sample("seizure-share")
    body["x\n\u202e`evil` - at `$.notes"] = 1
    err = refusal("seizure-share", encode(body))
    assert err.code == "schema.unknown_field"
    assert err.field is not None and err.field.isascii() and err.field.isprintable()


# --- JSON Schema export ----------------------------------------------------------------------------


def test_schemas_cover_every_type() -> None:
    schemas = all_schemas()
    assert tuple(schemas) == MESSAGE_TYPES
    for msg_type, schema in schemas.items():
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["title"] == msg_type
    schemas["seizure-share"]["title"] = "changed"
    assert body_schema("seizure-share")["title"] == "seizure-share"  # callers get copies


def test_docs_schemas_are_up_to_date() -> None:
    spec = importlib.util.spec_from_file_location("export_schemas", ROOT / "scripts" / "export_schemas.py")
    assert spec is not None and spec.loader is not None
    exporter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exporter)
    for msg_type, schema in all_schemas().items():
        path = ROOT / "docs" / "schemas" / f"{msg_type}.json"
        assert path.exists(), f"{path} missing: run scripts/export_schemas.py"
        assert path.read_text(encoding="utf-8") == exporter.render(schema), (
            f"{path} is stale: run scripts/export_schemas.py"
        )


# --- garbage in, SchemaError out -------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
python_values = st.recursive(
    json_values | st.floats() | st.binary(max_size=8) | st.dates() | st.datetimes() | st.sampled_from([object()]),
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner) | st.dictionaries(st.integers() | st.text(), inner),
    max_leaves=10,
)


def only_schema_errors(msg_type: str, body: Any) -> None:
    try:
        validate_body(msg_type, body)
    except SchemaError as e:
        assert e.code in CODES or e.code == "schema.invalid", e
        assert e.field == "type" or (e.field or "").startswith("$"), e


FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(msg_type=st.sampled_from(MESSAGE_TYPES), raw=st.binary(max_size=256))
def test_arbitrary_bytes(msg_type: str, raw: bytes) -> None:
    only_schema_errors(msg_type, raw)


@FAST
@given(msg_type=st.sampled_from(MESSAGE_TYPES), value=json_values)
def test_arbitrary_json(msg_type: str, value: object) -> None:
    only_schema_errors(msg_type, encode(value))
    only_schema_errors(msg_type, value)


@FAST
@given(msg_type=st.sampled_from(MESSAGE_TYPES), value=python_values)
def test_arbitrary_python_values(msg_type: str, value: object) -> None:
    only_schema_errors(msg_type, value)


def _paths(node: object, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    out: list[tuple[str | int, ...]] = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


SAMPLE_BODIES = {t: sample(t) for t in MESSAGE_TYPES}


@settings(max_examples=300, deadline=None)
@given(data=st.data(), msg_type=st.sampled_from(MESSAGE_TYPES))
def test_mutated_samples(data: st.DataObject, msg_type: str) -> None:
    # One field of a valid body replaced (or deleted): every refusal is mapped to a specific code.
    body = copy.deepcopy(SAMPLE_BODIES[msg_type])
    path = data.draw(st.sampled_from(_paths(body)))
    value = data.draw(st.just(DELETE) | json_values | st.text() | st.integers(-5, 10_100))
    put(body, path, value)
    for form in (encode(body), body):
        try:
            validate_body(msg_type, form)
        except SchemaError as e:
            assert e.code in CODES, e


def test_event_dates_cannot_lie_in_the_future() -> None:
    import datetime as _dt
    import json as _json
    from pathlib import Path as _Path

    from customs_gateway.core.errors import SchemaError as _SchemaError
    from customs_gateway.core.schemas import check_happened, validate_body

    sample = _json.loads((_Path(__file__).parents[2] / "keys-example/messages/seizure-share.json").read_text())
    now = _dt.datetime(2026, 12, 3, 12, tzinfo=_dt.timezone.utc)
    check_happened(validate_body("seizure-share", sample), now)
    # The date has begun somewhere (UTC+14) until 10:00 UTC the day before: accepted.
    sample["seizure_date"] = "2026-12-04"
    check_happened(validate_body("seizure-share", sample), now)
    for name, value in (
        ("seizure_date", "2030-01-01"),
        ("seizure_date", "2026-12-05"),
        ("import_export_date", "2027-01-01"),
    ):
        body = dict(sample, seizure_date="2026-11-03", import_export_date="2026-10-28")
        body[name] = value
        if name == "import_export_date":
            body["direction"] = "export"  # the import-order rule would refuse it first
        with pytest.raises(_SchemaError) as info:
            check_happened(validate_body("seizure-share", body), now)
        assert (info.value.code, info.value.field) == ("schema.date_future", f"$.{name}")


def test_the_list_is_bounded() -> None:
    body: dict[str, Any] = {f"unknown_{i}": i for i in range(60)}
    with pytest.raises(SchemaError) as info:
        validate_body("seizure-share", body)
    errors = info.value.errors
    assert len(errors) == MAX_ERRORS


def test_a_file_media_type_outside_its_pattern_is_schema_pattern() -> None:
    body = sample("training-material")
    body["files"][0]["media_type"] = "PDF please"
    e = refusal("training-material", body)
    assert (e.code, e.field) == ("schema.pattern", "$.files[0].media_type")
    assert "please" not in e.detail  # the value is not echoed
