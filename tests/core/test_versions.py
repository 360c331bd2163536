"""Every versioned format refuses a version that is not exactly the integer 1: `true`, `1.0` and
`"1"` compare equal to 1 in Python, so each reader checks the type too (`encoding.is_version`)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from customs_gateway.core.audit import AuditEntry
from customs_gateway.core.bundle import KeyBundle, KeyRecord, SignedBundle, sign_bundle
from customs_gateway.core.encoding import is_version
from customs_gateway.core.envelope import Envelope
from customs_gateway.core.errors import DecodeError
from customs_gateway.core.keys import ALG_ED25519, SigningKey

BAD = [True, 1.0, "1", 2, 0, None, [1]]
UTC = dt.timezone.utc


def _with_v(raw: bytes, v: object) -> bytes:
    d = json.loads(raw)
    d["v"] = v
    return json.dumps(d).encode()


@pytest.mark.parametrize("v", BAD, ids=repr)
def test_is_version(v: object) -> None:
    assert not is_version(v)
    assert is_version(1)


@pytest.mark.parametrize("v", BAD, ids=repr)
def test_envelope(v: object) -> None:
    good = json.dumps({"v": 1, "header": "e30", "ciphertext": "AA", "signature": "AA"}).encode()
    Envelope.from_bytes(good)
    with pytest.raises(DecodeError) as info:
        Envelope.from_bytes(_with_v(good, v))
    assert info.value.field == "envelope.v"


@pytest.mark.parametrize("v", BAD, ids=repr)
def test_signed_bundle(v: object) -> None:
    k = SigningKey(b"\x05" * 32)
    t = dt.datetime(2026, 1, 1, tzinfo=UTC)
    rec = KeyRecord(k.kid, "signing", ALG_ED25519, k.public_raw, t, t + dt.timedelta(days=9))
    good = sign_bundle(KeyBundle("US-CBP", t, (rec,), ("x",), "cert"), [k]).to_bytes()
    SignedBundle.from_bytes(good)
    with pytest.raises(DecodeError):
        SignedBundle.from_bytes(_with_v(good, v))


@pytest.mark.parametrize("v", BAD, ids=repr)
def test_audit_entry(v: object) -> None:
    good = AuditEntry(dt.datetime(2026, 1, 1, tzinfo=UTC), "sent", "system", "m").to_bytes()
    AuditEntry.from_bytes(good)
    with pytest.raises(DecodeError):
        AuditEntry.from_bytes(_with_v(good, v))
