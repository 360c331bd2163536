"""The files a document names (core.docfiles): completed from the caller's uploads, keys never shown."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pytest

from customs_gateway.core import docfiles, schemas
from customs_gateway.core.errors import SchemaError
from customs_gateway.core.upload import UploadRecord
from customs_gateway.service.pair import example_dir

T0 = dt.datetime(2026, 12, 4, 8, 0, tzinfo=dt.timezone.utc)
FID = "019ae8d0-6b3c-7c4a-9d2e-3f1a5b7c9d01"
OTHER = "019ae8d0-6b3c-7c4a-9d2e-3f1a5b7c9d02"
DIGEST = "ab" * 32


def record(file_id: str = FID, *, owner: str = "tok1", offset: int = 1000, length: int | None = 1000) -> UploadRecord:
    done = length is not None and offset == length
    return UploadRecord(
        file_id, owner, "application/pdf", "guide.pdf", length, offset, T0, T0, DIGEST if done else None
    )


def body(*files: dict[str, Any]) -> dict[str, Any]:
    b = dict(schemas_sample())
    b["files"] = list(files)
    return b


def schemas_sample() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((example_dir() / "messages" / "training-material.json").read_text("utf-8"))
    return data


def named(file_id: str = FID) -> dict[str, Any]:
    return {"file_id": file_id, "filename": "培训指南.pdf", "media_type": "application/pdf"}


def complete(b: dict[str, Any], uploads: dict[str, UploadRecord | None], **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"owner": "tok1", "max_files": 20, "randbytes": lambda n: b"\x07" * n} | kw
    return docfiles.complete("training-material", b, uploads, **args)


def refusal(b: dict[str, Any], uploads: dict[str, UploadRecord | None], **kw: Any) -> SchemaError:
    with pytest.raises(SchemaError) as e:
        complete(b, uploads, **kw)
    return e.value


def test_the_gateway_writes_size_digest_and_a_fresh_key_and_the_document_validates() -> None:
    out = complete(body(named()), {FID: record()})
    (f,) = out["files"]
    key = base64.urlsafe_b64encode(b"\x07" * 32).rstrip(b"=").decode()
    assert f == named() | {"size": 1000, "sha256": DIGEST, "key": key}
    assert len(f["key"]) == 43
    schemas.validate_body("training-material", out)
    docfiles.check_sealed(out)
    # Views show the files without the key; the body itself is unchanged.
    shown = docfiles.without_keys(out)
    assert "key" not in shown["files"][0] and out["files"][0]["key"] == key
    assert docfiles.named_file_ids(out) == [FID]


def test_the_back_end_form_validates_but_a_received_document_needs_what_the_gateway_writes() -> None:
    b = body(named())
    schemas.validate_body("training-material", b)
    with pytest.raises(SchemaError) as e:
        docfiles.check_sealed(b)
    assert (e.value.code, e.value.field) == ("schema.required", "$.files[0].size")


@pytest.mark.parametrize(
    ("uploads", "code"),
    [
        ({FID: None}, "file.not_found"),
        ({FID: record(owner="tok2")}, "file.not_found"),
        ({FID: record(offset=10)}, "file.incomplete"),
        ({FID: record(offset=10, length=None)}, "file.incomplete"),
    ],
)
def test_an_upload_the_caller_does_not_hold_whole_is_refused_naming_the_entry(
    uploads: dict[str, UploadRecord | None], code: str
) -> None:
    err = refusal(body(named()), uploads)
    assert (err.code, err.field, err.status) == (code, "$.files[0].file_id", 422)


def test_what_the_gateway_writes_cannot_be_given() -> None:
    for name, value in (("size", 1), ("sha256", DIGEST), ("key", "x" * 43)):
        err = refusal(body(named() | {name: value}), {FID: record()})
        assert (err.code, err.field) == ("schema.forbidden_field", f"$.files[0].{name}")


def test_malformed_entries_are_refused_naming_field_and_rule() -> None:
    assert refusal(body({"filename": "a.pdf", "media_type": "application/pdf"}), {}).field == "$.files[0].file_id"
    assert refusal(body(named() | {"colour": "red"}), {}).code == "schema.unknown_field"
    assert refusal(body(named("../etc/passwd")), {}).code == "schema.uuid"
    assert refusal(body("x"), {}).code == "schema.type"  # type: ignore[arg-type]
    err = refusal({"files": {}}, {})
    assert (err.code, err.field) == ("schema.type", "$.files")


def test_the_limit_is_named() -> None:
    err = refusal(body(named(), named(OTHER)), {FID: record(), OTHER: record(OTHER)}, max_files=1)
    assert (err.code, err.field, err.status) == ("file.limit", "$.files", 422)
    assert "files.max_files_per_message" in err.detail and "1" in err.detail


def test_types_without_files_refuse_them() -> None:
    with pytest.raises(SchemaError) as e:
        docfiles.complete("port-visit-reply", {"files": []}, {}, "tok1", 20, bytes)
    assert e.value.code == "schema.forbidden_field"


def test_training_material_needs_a_file_and_names_each_once() -> None:
    with pytest.raises(SchemaError) as e:
        schemas.validate_body("training-material", body())
    assert (e.value.code, e.value.field) == ("schema.length", "$.files")
    with pytest.raises(SchemaError) as e:
        schemas.validate_body("training-material", body(named(), named()))
    assert (e.value.code, e.value.field) == ("schema.duplicate", "$.files[1].file_id")
    with pytest.raises(SchemaError) as e:
        schemas.validate_body("training-material", body(named() | {"media_type": "Application/PDF"}))
    assert e.value.field == "$.files[0].media_type"
    with pytest.raises(SchemaError) as e:
        schemas.validate_body("training-material", {**body(named()), "kind": "poster"})
    assert (e.value.code, e.value.field) == ("schema.enum", "$.kind")


def test_a_seizure_may_carry_files_and_a_body_without_files_is_unchanged() -> None:
    share = json.loads((example_dir() / "messages" / "seizure-share.json").read_text("utf-8"))
    assert docfiles.complete("seizure-share", share, {}, "tok1", 20, bytes) is share
    out = docfiles.complete("seizure-share", {**share, "files": [named()]}, {FID: record()}, "tok1", 20, bytes)
    schemas.validate_body("seizure-share", out)
    assert docfiles.without_keys(share) is share
