"""The upload rules (core/upload.py): one test per refusal, each naming its code and field."""

from __future__ import annotations

import datetime as dt

import pytest

from customs_gateway.core.errors import GatewayError
from customs_gateway.core.upload import (
    OffsetMismatch,
    UploadRecord,
    check_declared_part,
    check_file_id,
    check_filename,
    check_media_type,
    check_resume,
    parse_length,
    parse_offset,
    room,
)

T0 = dt.datetime(2026, 12, 4, tzinfo=dt.timezone.utc)
FID = "01938a2b-0000-7000-8000-000000000001"


def record(offset: int = 0, length: int | None = 100, owner: str = "a" * 16) -> UploadRecord:
    return UploadRecord(FID, owner, "application/pdf", "guide.pdf", length, offset, T0, T0)


def refused(fn: object, *args: object) -> GatewayError:
    with pytest.raises(GatewayError) as e:
        fn(*args)  # type: ignore[operator]
    return e.value


def test_size_complete_and_expiry() -> None:
    assert (record(40).size, record(40).complete) == (100, False)
    assert record(100).complete
    assert (record(7, None).size, record(7, None).complete) == (7, False)  # still arriving, no length
    assert record(0, 0).complete
    assert record().expires_at(3600) == T0 + dt.timedelta(hours=1)


def test_only_the_owner_sees_an_upload_and_only_until_it_expires() -> None:
    rec = record()
    assert rec.visible_to("a" * 16, T0 + dt.timedelta(seconds=59), 60)
    assert not rec.visible_to("b" * 16, T0, 60)
    assert not rec.visible_to("a" * 16, T0 + dt.timedelta(seconds=60), 60)


@pytest.mark.parametrize("bad", ["../etc/passwd", FID.upper(), FID + "/..", "", "x" * 36, FID[:-1] + "g"])
def test_a_file_id_is_a_lower_case_uuid_or_not_found(bad: str) -> None:
    e = refused(check_file_id, bad)
    assert (e.status, e.code) == (404, "file.not_found")
    assert check_file_id(FID) == FID


def test_lengths_and_offsets() -> None:
    assert parse_length(None, 10) is None
    assert parse_length("10", 10) == 10
    e = refused(parse_length, "11", 10)
    assert (e.status, e.code, e.field) == (413, "file.too_large", "Upload-Length")
    for bad in ("-1", "1e3", "0x10", "", "1" * 20):
        assert refused(parse_length, bad, 10).code == "schema.type"
        assert refused(parse_offset, bad).field == "Upload-Offset"
    assert refused(parse_offset, None).code == "schema.required"
    assert parse_offset("0") == 0


def test_a_part_starts_at_the_offset_held_of_an_incomplete_upload() -> None:
    check_resume(record(40), 40)
    e = refused(check_resume, record(40), 39)
    assert isinstance(e, OffsetMismatch) and e.held == 40
    assert (e.status, e.code, e.field) == (409, "file.offset_mismatch", "Upload-Offset")
    assert "40" in e.detail
    assert refused(check_resume, record(100), 100).code == "file.complete"


def test_room_is_the_declared_length_else_the_limit() -> None:
    assert room(record(40), 1000) == 60
    assert room(record(40, None), 1000) == 960
    check_declared_part(record(40), 60, 1000)
    check_declared_part(record(40), None, 1000)
    e = refused(check_declared_part, record(40), 61, 1000)
    assert (e.status, e.code, e.field) == (413, "file.length_exceeded", "Upload-Length")
    e = refused(check_declared_part, record(40, None), 961, 1000)
    assert (e.status, e.code) == (413, "file.too_large")
    assert "1000" in e.detail


def test_file_names_and_media_types() -> None:
    assert check_filename(None) is None
    assert check_filename("扣留 2026.jpg") == "扣留 2026.jpg"
    for bad in ("", ".", "..", "a/b", "a\\b", "a\nb", "a\x00b", "x" * 256):
        e = refused(check_filename, bad)
        assert (e.code, e.field) == ("schema.filename", "filename")
    assert check_media_type("Image/JPEG; charset=binary") == "image/jpeg"
    for bad in ("", "jpeg", "image/", "/jpeg", "image/jp eg", "a/b/c"):
        assert refused(check_media_type, bad).code == "schema.media_type"
