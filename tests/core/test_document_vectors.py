"""tests/vectors/document.json: the signed document with and without `in_reply_to` (threads),
recomputed byte for byte; malformed answers refused with the code the vectors name."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from customs_gateway.core.envelope import Document, SignedDocument
from customs_gateway.core.errors import GatewayError
from customs_gateway.core.keys import VerifyKey, domain

V = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "document.json").read_text(encoding="utf-8"))
VALID = [t for t in V["tests"] if t["result"] == "valid"]
INVALID = [t for t in V["tests"] if t["result"] == "invalid"]


@pytest.mark.parametrize("tc", VALID, ids=lambda t: str(t["tcId"]))
def test_valid_documents(tc: dict[str, Any]) -> None:
    data = tc["document_bytes"].encode()
    doc = Document.from_bytes(data)
    assert doc.in_reply_to == tc["in_reply_to"]
    assert doc.to_bytes() == data  # the same bytes again: absent stays absent
    assert ("in_reply_to" in json.loads(data)) == (tc["in_reply_to"] is not None)
    assert (domain("document") + data).hex() == tc["document_signature_input_hex"]
    key = VerifyKey(bytes.fromhex(V["signing_public_key"]))
    assert key.kid == V["kid"]
    key.verify("document", data, bytes.fromhex(tc["document_signature"]))
    signed = SignedDocument.from_bytes(tc["signed_document_bytes"].encode())
    assert signed.document_bytes == data and signed.kid == V["kid"]
    assert hashlib.sha256(tc["signed_document_bytes"].encode()).hexdigest() == tc["signed_document_sha256"]


def test_the_answer_is_signed_with_the_document() -> None:
    """Changing or dropping `in_reply_to` breaks the document signature."""
    tc = VALID[1]
    key = VerifyKey(bytes.fromhex(V["signing_public_key"]))
    sig = bytes.fromhex(tc["document_signature"])
    d = json.loads(tc["document_bytes"])
    changed = json.dumps({**d, "in_reply_to": "01950000-0000-7000-8000-0000000000a2"}, sort_keys=True)
    dropped = json.dumps({k: v for k, v in d.items() if k != "in_reply_to"}, sort_keys=True)
    for forged in (changed, dropped):
        with pytest.raises(GatewayError):
            key.verify("document", forged.encode(), sig)


@pytest.mark.parametrize("tc", INVALID, ids=lambda t: str(t["tcId"]))
def test_malformed_answers_are_refused(tc: dict[str, Any]) -> None:
    with pytest.raises(GatewayError) as e:
        Document.from_bytes(tc["document_bytes"].encode())
    assert e.value.code == tc["code"] and e.value.field == "document.in_reply_to"
