"""Documents that name files (DESIGN §13, issue 19): the gateway completes each file from the
caller's upload (size, digest, a fresh key), refuses what it cannot, never shows the key, and
keeps a named upload from expiring. Real gateways on loopback, both stores."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from customs_gateway.core.envelope import Document, SignedDocument

from .conftest import CN, US, Pair, role_tokens, sample


async def test_a_named_upload_is_completed_in_the_signed_document_and_shown_without_its_key(pair: Pair) -> None:
    us = pair.apis[US]
    data = b"%PDF-1.4 training guide " * 1000
    fid = await us.upload(data, "guide.pdf")
    body = {
        **sample("training-material"),
        "files": [{"file_id": fid, "filename": "培训指南.pdf", "media_type": "application/pdf"}],
    }
    status, res = await us.submit("training-material", body=body)
    assert status == 202, res
    m = await pair.gw(US).store.get_message(res["id"])
    doc = Document.from_bytes(SignedDocument.from_bytes(m.signed_document).document_bytes)
    (f,) = doc.body["files"]
    assert f["file_id"] == fid and f["size"] == len(data) and len(f["key"]) == 43
    assert f["sha256"] == hashlib.sha256(data).hexdigest()
    # The upload is the message's now: it no longer expires.
    status, up, _ = await us.call("GET", f"/v1/files/{fid}")
    assert status == 200 and up["message_id"] == res["id"] and up["expires_at"] is None, up
    uploads = pair.gw(US).files
    assert uploads.sweep(pair.gw(US).clock.now() + dt.timedelta(days=400), 100) == 0
    assert uploads.get(fid) is not None
    await us.wait_status(res["id"], {"delivered"})
    status, item, _ = await pair.apis[CN].call("GET", f"/v1/inbox/{res['id']}")
    assert status == 200, item
    (shown,) = item["body"]["files"]
    assert "key" not in shown and shown["sha256"] == f["sha256"], shown


async def test_files_a_caller_does_not_hold_whole_are_refused_naming_the_entry(pair: Pair) -> None:
    us = pair.apis[US]
    status, res, _ = await us.call(
        "POST",
        "/v1/files?filename=a.pdf",
        data=b"x",
        headers={"Content-Type": "application/pdf", "Upload-Length": "10"},
    )
    assert status == 201, res
    partial = res["file_id"]
    done = await us.upload(b"%PDF-1.4 done")

    async def refused(files: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
        status, prob = await us.submit("training-material", body={**sample("training-material"), "files": files}, **kw)
        assert status == 422, prob
        return dict(prob)

    entry = {"filename": "a.pdf", "media_type": "application/pdf"}
    prob = await refused([{**entry, "file_id": partial}])
    assert (prob["code"], prob["field"]) == ("file.incomplete", "$.body.files[0].file_id")
    prob = await refused([{**entry, "file_id": "019ae8d0-6b3c-7c4a-9d2e-3f1a5b7c9d01"}])
    assert (prob["code"], prob["field"]) == ("file.not_found", "$.body.files[0].file_id")
    # Another token's upload is not found either.
    other_token = (await role_tokens(pair.gw(US), "other"))["agency"]
    prob = await refused([{**entry, "file_id": done}], role=None, headers={"Authorization": f"Bearer {other_token}"})
    assert (prob["code"], prob["field"]) == ("file.not_found", "$.body.files[0].file_id")
    prob = await refused([{**entry, "file_id": done, "key": "A" * 43}])
    assert (prob["code"], prob["field"]) == ("schema.forbidden_field", "$.body.files[0].key")
    limit = pair.gw(US).config.files.max_files_per_message
    prob = await refused([{**entry, "file_id": done}] * (limit + 1))
    assert (prob["code"], prob["field"]) == ("file.limit", "$.body.files")
    assert "files.max_files_per_message" in prob["detail"]


async def test_a_batch_names_files_as_a_submission_does_and_claims_them(pair: Pair) -> None:
    us = pair.apis[US]
    fid = await us.upload(b"%PDF-1.4 batch guide " * 500)
    entry = {"file_id": fid, "filename": "guide.pdf", "media_type": "application/pdf"}
    missing = {**entry, "file_id": "019ae8d0-6b3c-7c4a-9d2e-3f1a5b7c9d01"}
    items = [
        {"type": "training-material", "to": CN, "body": {**sample("training-material"), "files": [entry]}},
        {"type": "training-material", "to": CN, "body": {**sample("training-material"), "files": [missing]}},
    ]
    status, res, _ = await us.call("POST", "/v1/messages:batch", json_body={"messages": items})
    assert status == 200, res
    ok, refused = res["results"]
    assert ok["status"] == "accepted", ok
    assert refused["status"] == "refused" and refused["problem"]["code"] == "file.not_found", refused
    assert refused["problem"]["field"] == "$.messages[1].body.files[0].file_id", refused
    rec = pair.gw(US).files.get(fid)
    assert rec is not None and rec.named_by == ok["id"]
    await us.wait_status(ok["id"], {"delivered"})
