"""Write the crypto test vectors: tests/vectors/{keyid,envelope,receipt,bundle,keyfile}.json.

Every key comes from a fixed, test-only seed (SHA-256 of a label), so everything but HPKE
ciphertexts is deterministic: Ed25519 signatures are deterministic and key files take their salt
and nonce from the same seeded stream. HPKE encryption draws a fresh ephemeral key inside
`cryptography`, so envelope vectors store the complete envelope bytes produced once plus the
recipient's private seeds; tests open them and check every intermediate byte string.

Each file has `valid` cases with each intermediate value spelled out and `invalid` cases in
Wycheproof style (`"result": "invalid"` and the GatewayError `code` the opener must raise).
The byte layout is in tests/vectors/README.md (also written here).

Usage: .venv/bin/python scripts/make_crypto_vectors.py
"""

# ruff: noqa: E501
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nacl.pwhash

from customs_gateway.core.bundle import KeyBundle, KeyRecord, PeerKeys, SignedBundle, sign_bundle
from customs_gateway.core.encoding import b64url, format_ts, json_bytes, unb64url
from customs_gateway.core.envelope import (
    Document,
    Envelope,
    Header,
    SignedDocument,
    build_envelope,
    hpke_info,
    open_envelope,
    sign_envelope,
)
from customs_gateway.core.errors import GatewayError
from customs_gateway.core.keyfile import KeyFileMeta, open_private_key, seal_private_key
from customs_gateway.core.keys import (
    ALG_ED25519,
    ALG_MLKEM768_X25519,
    ALG_X25519,
    LABELS,
    DecryptionKey,
    EncryptionKey,
    SigningKey,
    VerifyKey,
    domain,
)
from customs_gateway.core.receipt import Statement, make_receipt, make_refusal, verify_receipt, verify_refusal

VECTORS = Path(__file__).resolve().parent.parent / "tests" / "vectors"
US, CN = "US-CBP", "CN-GACC"
UTC = dt.UTC


def seed(label: str, n: int) -> bytes:
    """Test-only key material: SHA-256 in counter mode over a public label."""
    out = b""
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"customs-gateway test vector {label} {i}".encode()).digest()
        i += 1
    return out[:n]


class Stream:
    """A seeded byte stream (key-file salts and nonces)."""

    def __init__(self, label: str) -> None:
        self.label, self.i = label, 0

    def __call__(self, n: int) -> bytes:
        self.i += 1
        return seed(f"{self.label}/{self.i}", n)


def ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def write(name: str, obj: dict[str, Any]) -> None:
    path = VECTORS / name
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(VECTORS.parent.parent)}")


def code_of(fn: Callable[[], object]) -> str:
    try:
        fn()
    except GatewayError as e:
        return e.code
    raise SystemExit("an invalid vector was accepted: fix the generator or the code")


# --- keyid.json -------------------------------------------------------------------------------


def keyid_vectors() -> dict[str, Any]:
    valid = []
    ed = SigningKey(seed("keyid/ed25519", 32))
    valid.append({"alg": ALG_ED25519, "seed": ed.seed.hex(), "public": ed.public_raw.hex()})
    for alg, n in ((ALG_X25519, 32), (ALG_MLKEM768_X25519, 96)):
        dk = DecryptionKey(alg, seed(f"keyid/{alg}", n))
        valid.append({"alg": alg, "seed": dk.seed.hex(), "public": dk.public.raw.hex()})
    for i, v in enumerate(valid, 1):
        pub = bytes.fromhex(v["public"])
        v.update(
            tcId=i,
            result="valid",
            public_len=len(pub),
            sha256_public=hashlib.sha256(pub).hexdigest(),
            kid=hashlib.sha256(pub).digest()[:16].hex(),
        )
    good_hybrid = bytes.fromhex(valid[2]["public"])
    invalid_inputs = [
        ("Ed25519 public key of 31 bytes", ALG_ED25519, bytes(31)),
        ("X25519 public key of 33 bytes", ALG_X25519, bytes(33)),
        ("hybrid public key one byte short", ALG_MLKEM768_X25519, good_hybrid[:-1]),
        (
            "hybrid public key with an ML-KEM part that is not reduced mod q",
            ALG_MLKEM768_X25519,
            b"\xff" * 1184 + good_hybrid[1184:],
        ),
        ("unknown algorithm", "rsa-2048", bytes(32)),
    ]
    invalid = []
    for j, (comment, alg, pub) in enumerate(invalid_inputs, len(valid) + 1):
        load: Callable[[], object] = (
            (lambda p=pub: VerifyKey(p)) if alg == ALG_ED25519 else (lambda a=alg, p=pub: EncryptionKey(a, p))
        )
        invalid.append(
            {
                "tcId": j,
                "comment": comment,
                "alg": alg,
                "public": pub.hex(),
                "result": "invalid",
                "error": code_of(load),
            }
        )
    return {
        "description": "Key ids (DESIGN §4): kid = hex(SHA-256(raw public key)[:16]); raw public keys: Ed25519 32 bytes, X25519 32 bytes, hybrid = ML-KEM-768 encapsulation key (1184) || X25519 (32). Seeds: Ed25519 32-byte seed, X25519 32-byte private key, hybrid = ML-KEM-768 64-byte seed (d||z) || X25519 private key. Test-only keys.",
        "domains": [
            {"label": label, "prefix_hex": domain(label).hex(), "prefix": domain(label).decode()}
            for label in sorted(LABELS)
        ],
        "tests": valid + invalid,
    }


# --- bundle.json ------------------------------------------------------------------------------

BUNDLE_CERT = "-----BEGIN CERTIFICATE-----\nTEST-ONLY-NOT-A-CERTIFICATE\n-----END CERTIFICATE-----\n"


def bundle_vectors() -> dict[str, Any]:
    sk = SigningKey(seed("bundle/signing", 32))
    wk = SigningKey(seed("bundle/witness", 32))
    ek = DecryptionKey(ALG_X25519, seed("bundle/x25519", 32))
    nb, na = ts("2026-01-01T00:00:00.000Z"), ts("2028-01-01T00:00:00.000Z")
    records = (
        KeyRecord(sk.kid, "signing", ALG_ED25519, sk.public_raw, nb, na),
        KeyRecord(ek.kid, "encryption", ALG_X25519, ek.public.raw, nb, na),
        KeyRecord(wk.kid, "witness", ALG_ED25519, wk.public_raw, nb, na),
    )
    issued = ts("2026-03-01T12:00:00.000Z")
    bundle = KeyBundle(
        US, issued, records, ("x25519-hkdfsha256-chacha20poly1305",), BUNDLE_CERT, "https://127.0.0.1:8443", 1
    )
    signed = sign_bundle(bundle, [sk])
    data = bundle.to_bytes()
    valid = {
        "tcId": 1,
        "result": "valid",
        "signing_seed": sk.seed.hex(),
        "bundle_bytes": data.decode(),
        "signature_input_hex": (domain("key-bundle") + data).hex(),
        "signature": signed.signatures[0][1].hex(),
        "signed_bundle": signed.to_bytes().decode(),
        "fingerprint": signed.fingerprint(),
        "identity": US,
        "kids": [r.kid for r in records],
    }

    def resign(mutate: Callable[[dict[str, Any]], None], signer: SigningKey = sk) -> bytes:
        d = json.loads(data)
        mutate(d)
        raw = json_bytes(d)
        return SignedBundle(raw, ((signer.kid, signer.sign("key-bundle", raw)),)).to_bytes()

    def raw_signed(obj: dict[str, Any]) -> bytes:
        return json_bytes(obj) + b"\n"

    outer = json.loads(signed.to_bytes())
    other = SigningKey(seed("bundle/other", 32))
    revoked_rec = dataclasses.replace(
        records[0], state="revoked", revoked_at=ts("2026-02-01T00:00:00.000Z"), revocation_reason="compromise"
    )
    flipped = bytearray(data)
    flipped[data.index(b'"serial":1') + 9] = ord("2")
    cases: list[tuple[str, bytes]] = [
        (
            "bundle bytes changed after signing (serial 1 -> 2)",
            SignedBundle(bytes(flipped), signed.signatures).to_bytes(),
        ),
        (
            "signature by a key the bundle does not list",
            SignedBundle(data, ((other.kid, other.sign("key-bundle", data)),)).to_bytes(),
        ),
        (
            "signature by the witness key (listed, but not a signing key)",
            SignedBundle(data, ((wk.kid, wk.sign("key-bundle", data)),)).to_bytes(),
        ),
        (
            "signature over the bundle without the domain prefix",
            SignedBundle(data, ((sk.kid, sk.sign_raw(data)),)).to_bytes(),
        ),
        (
            "signature made for another purpose (receipt domain)",
            SignedBundle(data, ((sk.kid, sk.sign("receipt", data)),)).to_bytes(),
        ),
        ("a record's kid does not match its public key", resign(lambda d: d["keys"][1].update(kid=wk.kid))),
        ("an encryption record with an Ed25519 algorithm", resign(lambda d: d["keys"][1].update(alg="ed25519"))),
        (
            "signing key revoked before the bundle was issued",
            resign(lambda d: d["keys"].__setitem__(0, revoked_rec.to_dict())),
        ),
        ("signing key expired at issue time", resign(lambda d: d.update(issued_at="2029-01-01T00:00:00.000Z"))),
        ("signing key not yet valid at issue time", resign(lambda d: d.update(issued_at="2025-06-01T00:00:00.000Z"))),
        ("the same key listed twice", resign(lambda d: d["keys"].append(d["keys"][2]))),
        ("identity with a space (would make the HPKE info ambiguous)", resign(lambda d: d.update(identity="US CBP"))),
        ("identity with a slash (names a file)", resign(lambda d: d.update(identity="../US-CBP"))),
        ("unknown key state", resign(lambda d: d["keys"][0].update(state="paused"))),
        ("serial is not a positive integer", resign(lambda d: d.update(serial=0))),
        ("wrong format string", resign(lambda d: d.update(format="customs-gateway/v2 key-bundle"))),
        (
            "X25519 public key of 31 bytes (kid recomputed)",
            resign(
                lambda d: d["keys"][1].update(
                    public=b64url(bytes(31)), kid=hashlib.sha256(bytes(31)).digest()[:16].hex()
                )
            ),
        ),
        ("no signatures", raw_signed({**outer, "signatures": []})),
        ("signed-bundle version 2", raw_signed({**outer, "v": 2})),
        ("bundle field is padded base64", raw_signed({**outer, "bundle": outer["bundle"] + "="})),
        ("not JSON", b'{"v":1,"bundle":'),
    ]
    invalid = [
        {
            "tcId": i,
            "comment": comment,
            "signed_bundle": blob.decode(),
            "result": "invalid",
            "error": code_of(lambda b=blob: SignedBundle.from_bytes(b).verify_self_signed()),
        }
        for i, (comment, blob) in enumerate(cases, 2)
    ]
    return {
        "description": "Key bundles: bundle bytes = compact JSON with sorted keys; signature = Ed25519 over 'customs-gateway/v1 key-bundle\\n' || bundle bytes by a signing key the bundle lists, valid at issued_at; fingerprint = upper-case hex SHA-256 of the bundle bytes in groups of 4. Test-only keys.",
        "tests": [valid, *invalid],
    }


# --- document.json ----------------------------------------------------------------------------


def document_vectors() -> dict[str, Any]:
    """The signed document with and without `in_reply_to` (threads), and malformed answers."""
    key = SigningKey(seed("doc/sender", 32))
    body = {"case_reference": "VEC-2026-0002", "notes": "回复 — a reply"}
    parent = "01950000-0000-7000-8000-0000000000a1"
    tests: list[dict[str, Any]] = []
    for i, reply_to in enumerate((None, parent), 1):
        doc = Document(f"01950000-0000-7000-8000-0000000000b{i}", US, CN, "seizure-share", CREATED, body, reply_to)
        signed = SignedDocument.create(doc, key)
        assert Document.from_bytes(signed.document_bytes) == doc
        tests.append(
            {
                "tcId": i,
                "comment": "answers nothing: no in_reply_to key at all" if reply_to is None else "answers a message",
                "result": "valid",
                "in_reply_to": reply_to,
                "document_bytes": signed.document_bytes.decode(),
                "document_signature_input_hex": (domain("document") + signed.document_bytes).hex(),
                "document_signature": signed.signature.hex(),
                "signed_document_bytes": signed.raw.decode(),
                "signed_document_sha256": signed.digest.hex(),
            }
        )
    good = json.loads(tests[1]["document_bytes"])
    for i, (bad, why) in enumerate(
        (
            (None, "null is not a message id (omit the key instead)"),
            (parent.upper(), "upper-case UUID"),
            (42, "a number"),
            ("", "empty"),
            (parent + "0", "too long"),
        ),
        len(tests) + 1,
    ):
        raw = json_bytes({**good, "in_reply_to": bad})
        try:
            Document.from_bytes(raw)
        except GatewayError as e:
            code = e.code
        else:
            raise AssertionError(f"document with in_reply_to {bad!r} was accepted")
        tests.append({"tcId": i, "comment": why, "result": "invalid", "document_bytes": raw.decode(), "code": code})
    return {
        "description": "Signed documents (threads): `in_reply_to` is absent or a lower-case message id",
        "signing_public_key": key.public_raw.hex(),
        "kid": key.kid,
        "tests": tests,
    }


# --- atrest.json ------------------------------------------------------------------------------


def atrest_vectors() -> dict[str, Any]:
    """Data sealed under a day key, and a day key wrapped under the store key's wrap subkey."""
    from customs_gateway.core import atrest
    from customs_gateway.core.storekey import StoreKey

    store_key = StoreKey(seed("atrest/store-key", 32))
    wrap_key = store_key.derive(atrest.WRAP_KEY_LABEL)
    day = dt.date(2031, 3, 1)
    day_key = seed("atrest/day-key/2031-03-01", 32)
    context = b"inbox.body\x0001950000-0000-7000-8000-0000000000c1"
    plaintext = '{"case_reference":"VEC-2026-0003","notes":"静态加密 — at rest"}'.encode()
    nonce = seed("atrest/nonce/1", 24)
    blob = atrest.seal(day_key, day, context, plaintext, nonce)
    assert atrest.open_sealed(day_key, context, blob) == plaintext
    wrapped = atrest.wrap_day_key(wrap_key, day, day_key, seed("atrest/nonce/wrap", 24))
    assert atrest.unwrap_day_key(wrap_key, day, wrapped) == day_key

    def code_of(fn: Callable[[], object]) -> str:
        try:
            fn()
        except GatewayError as e:
            return e.code
        raise AssertionError("accepted")

    flipped = bytearray(blob)
    flipped[-1] ^= 1
    other_day = blob[:1] + atrest.seal(day_key, dt.date(2031, 3, 2), context, plaintext, nonce)[1:5] + blob[5:]
    invalid = [
        ("last tag byte flipped", bytes(flipped), context),
        ("moved to another row", blob, b"inbox.body\x0001950000-0000-7000-8000-0000000000c2"),
        ("moved to another column", blob, b"inbox.signed_document\x0001950000-0000-7000-8000-0000000000c1"),
        ("header claims another day", other_day, context),
        ("truncated below header and tag", blob[: atrest.HEADER_BYTES + 15], context),
        ("unknown version", b"\x03" + blob[1:], context),
    ]
    tests: list[dict[str, Any]] = [
        {
            "tcId": 1,
            "comment": "seal: version, day, nonce, XChaCha20-Poly1305",
            "result": "valid",
            "day": day.isoformat(),
            "day_number": atrest.day_number(day),
            "day_key": day_key.hex(),
            "context_hex": context.hex(),
            "plaintext": plaintext.decode(),
            "nonce": nonce.hex(),
            "aad_hex": (b"customs-gateway/v1 at-rest\n" + context + b"\x00" + blob[1:5]).hex(),
            "sealed": blob.hex(),
        }
    ]
    for i, (why, bad, ctx) in enumerate(invalid, 2):
        tests.append(
            {
                "tcId": i,
                "comment": why,
                "result": "invalid",
                "context_hex": ctx.hex(),
                "sealed": bad.hex(),
                "code": code_of(lambda bad=bad, ctx=ctx: atrest.open_sealed(day_key, ctx, bad)),
            }
        )
    other_store = StoreKey(seed("atrest/another-store-key", 32)).derive(atrest.WRAP_KEY_LABEL)
    wrap_tests = [
        {"tcId": 1, "comment": "wrapped day key", "result": "valid", "day": day.isoformat(), "file": wrapped.decode()},
        {
            "tcId": 2,
            "comment": "another store key",
            "result": "invalid",
            "day": day.isoformat(),
            "file": wrapped.decode(),
            "code": code_of(lambda: atrest.unwrap_day_key(other_store, day, wrapped)),
            "wrap_key": other_store.hex(),
        },
        {
            "tcId": 3,
            "comment": "renamed to another day",
            "result": "invalid",
            "day": "2031-03-02",
            "file": wrapped.decode(),
            "code": code_of(lambda: atrest.unwrap_day_key(wrap_key, dt.date(2031, 3, 2), wrapped)),
        },
    ]
    hold_id = seed("atrest/hold-id/1", atrest.HOLD_ID_BYTES)
    hold_key = seed("atrest/hold-key/1", 32)
    held = atrest.seal_hold(hold_key, hold_id, context, plaintext, seed("atrest/nonce/hold", 24))
    assert atrest.open_sealed(hold_key, context, held) == plaintext
    held_flipped = bytearray(held)
    held_flipped[1] ^= 0x01  # the hold id in the header: the key of another hold
    hold_wrapped = atrest.wrap_hold_key(wrap_key, hold_id, hold_key, seed("atrest/nonce/hold-wrap", 24))
    hold_tests = [
        {
            "tcId": 1,
            "comment": "sealed under a legal hold's key (version 2)",
            "result": "valid",
            "hold_id": hold_id.hex(),
            "hold_key": hold_key.hex(),
            "context_hex": context.hex(),
            "plaintext": plaintext.decode(),
            "nonce": seed("atrest/nonce/hold", 24).hex(),
            "aad_hex": (b"customs-gateway/v1 at-rest\n" + context + b"\x00\x02" + hold_id).hex(),
            "sealed": held.hex(),
            "wrapped": hold_wrapped.decode(),
        },
        {
            "tcId": 2,
            "comment": "another hold id in the header",
            "result": "invalid",
            "sealed": bytes(held_flipped).hex(),
            "code": code_of(lambda: atrest.open_sealed(hold_key, context, bytes(held_flipped))),
        },
        {
            "tcId": 3,
            "comment": "opened with the day key",
            "result": "invalid",
            "sealed": held.hex(),
            "code": code_of(lambda: atrest.open_sealed(day_key, context, held)),
        },
        {
            "tcId": 4,
            "comment": "wrapped hold key read as another hold's",
            "result": "invalid",
            "code": code_of(lambda: atrest.unwrap_hold_key(wrap_key, bytes(16), hold_wrapped)),
        },
    ]
    return {
        "description": "Data at rest: sealed under a day key (or a legal hold's key); those keys wrapped under the"
        " store key",
        "store_key": store_key.secret.hex(),
        "wrap_key_label": atrest.WRAP_KEY_LABEL,
        "wrap_key": wrap_key.hex(),
        "tests": tests,
        "wrapped_day_keys": wrap_tests,
        "holds": hold_tests,
    }


# --- filecrypt.json ---------------------------------------------------------------------------


def file_plaintext(size: int) -> bytes:
    """The vectors' plaintext of `size` bytes: byte i is i mod 251 (reproducible, no repeats at 256)."""
    return bytes(i % 251 for i in range(size))


def filecrypt_vectors() -> dict[str, Any]:
    """Files in 64 KiB ChaCha20-Poly1305 STREAM chunks (DESIGN §13)."""
    from customs_gateway.core import filecrypt

    key = seed("file/key", 32)
    tests = []
    for i, size in enumerate((0, 1, filecrypt.CHUNK - 1, filecrypt.CHUNK, filecrypt.CHUNK + 1, 3 * filecrypt.CHUNK), 1):
        plain = file_plaintext(size)
        enc = filecrypt.Encryptor(key)
        chunks = [*enc.feed(plain), enc.finish()]
        ct = b"".join(chunks)
        assert len(ct) == filecrypt.ciphertext_size(size) and len(chunks) == filecrypt.chunk_count(size)
        tests.append(
            {
                "tcId": i,
                "comment": f"{size} bytes, {len(chunks)} chunk(s)",
                "result": "valid",
                "size": size,
                "plaintext_sha256": hashlib.sha256(plain).hexdigest(),
                "ciphertext_size": len(ct),
                "ciphertext_sha256": hashlib.sha256(ct).hexdigest(),
                "nonces": [filecrypt.nonce(n, n == len(chunks) - 1).hex() for n in range(len(chunks))],
                "first_chunk_head": chunks[0][:48].hex(),
                "last_chunk_tail": chunks[-1][-48:].hex(),
            }
        )
    return {
        "description": "File STREAM encryption: 64 KiB chunks, ChaCha20-Poly1305, nonce = 11-byte counter || last flag",
        "key": key.hex(),
        "chunk": filecrypt.CHUNK,
        "plaintext": "byte i is i mod 251",
        "tests": tests,
    }


# --- envelope.json ----------------------------------------------------------------------------

NOW = ts("2026-03-01T12:00:05.000Z")
CREATED = ts("2026-03-01T11:59:00.000Z")
SENT = ts("2026-03-01T12:00:00.000Z")
SKEW = 300.0


def envelope_vectors() -> dict[str, Any]:
    keys = {
        "current": (
            SigningKey(seed("env/sender/current", 32)),
            "2026-01-01T00:00:00.000Z",
            "2027-01-01T00:00:00.000Z",
            None,
        ),
        "expired": (
            SigningKey(seed("env/sender/expired", 32)),
            "2025-01-01T00:00:00.000Z",
            "2025-12-31T00:00:00.000Z",
            None,
        ),
        "future": (
            SigningKey(seed("env/sender/future", 32)),
            "2030-01-01T00:00:00.000Z",
            "2031-01-01T00:00:00.000Z",
            None,
        ),
        "revoked": (
            SigningKey(seed("env/sender/revoked", 32)),
            "2026-01-01T00:00:00.000Z",
            "2027-01-01T00:00:00.000Z",
            "2026-02-01T00:00:00.000Z",
        ),
        "witness": (
            SigningKey(seed("env/sender/witness", 32)),
            "2026-01-01T00:00:00.000Z",
            "2027-01-01T00:00:00.000Z",
            None,
        ),
    }
    records = []
    for name, (k, nb, na, rev) in keys.items():
        use = "witness" if name == "witness" else "signing"
        records.append(
            KeyRecord(
                k.kid,
                use,
                ALG_ED25519,
                k.public_raw,
                ts(nb),
                ts(na),
                state="revoked" if rev else "active",
                revoked_at=ts(rev) if rev else None,
                revocation_reason="compromise" if rev else None,
            )
        )
    sender_bundle = KeyBundle(
        US, ts("2026-01-01T00:00:00.000Z"), tuple(records), ("x25519-hkdfsha256-chacha20poly1305",), BUNDLE_CERT
    )
    peer = PeerKeys(sender_bundle)
    rcpt = {
        ALG_MLKEM768_X25519: DecryptionKey(ALG_MLKEM768_X25519, seed("env/recipient/hybrid", 96)),
        ALG_X25519: DecryptionKey(ALG_X25519, seed("env/recipient/x25519", 32)),
    }
    by_kid = {k.kid: k for k in rcpt.values()}

    def dk_for(kid: str) -> DecryptionKey:
        from customs_gateway.core.errors import KeyStateError

        if kid not in by_kid:
            raise KeyStateError(f"unknown key {kid}", code="key.unknown", field="header.enc_kid")
        return by_kid[kid]

    def opener(raw: bytes, now: dt.datetime = NOW) -> Callable[[], object]:
        return lambda: open_envelope(
            Envelope.from_bytes(raw), me=CN, peer=peer, decryption_key=dk_for, now=now, skew_seconds=SKEW
        )

    current = keys["current"][0]
    body = {"case_reference": "VEC-2026-0001", "notes": "Test vector — 测试向量", "quantity": 1200}
    valid = []
    base: dict[str, tuple[Envelope, Header, Document]] = {}
    for i, alg in enumerate((ALG_MLKEM768_X25519, ALG_X25519), 1):
        msg_id = f"01950000-0000-7000-8000-00000000000{i}"
        doc = Document(msg_id, US, CN, "seizure-share", CREATED, body)
        env, signed, ct = build_envelope(
            doc, seq=i, sent_at=SENT, attempt=1, signing_key=current, recipient_key=rcpt[alg].public
        )
        header = Header.from_bytes(env.header_bytes)
        opened = opener(env.to_bytes())()
        assert opened is not None
        enc_len = 1120 if alg == ALG_MLKEM768_X25519 else 32
        assert len(ct) == enc_len + len(signed.raw) + 16
        base[alg] = (env, header, doc)
        valid.append(
            {
                "tcId": i,
                "comment": f"seizure-share to {CN}, suite {header.suite}",
                "result": "valid",
                "now": format_ts(NOW),
                "me": CN,
                "document": {
                    "id": doc.id,
                    "from": doc.sender,
                    "to": doc.recipient,
                    "type": doc.type,
                    "created_at": format_ts(doc.created_at),
                    "body": body,
                },
                "document_bytes": signed.document_bytes.decode(),
                "document_signature_input_hex": (domain("document") + signed.document_bytes).hex(),
                "document_signature": signed.signature.hex(),
                "signed_document_bytes": signed.raw.decode(),
                "signed_document_sha256": signed.digest.hex(),
                "hpke_info": hpke_info(US, CN, msg_id).decode(),
                "hpke_enc_len": enc_len,
                "hpke_tag_len": 16,
                "ciphertext_sha256": hashlib.sha256(ct).hexdigest(),
                "header": json.loads(env.header_bytes),
                "header_bytes": env.header_bytes.decode(),
                "envelope_signature_input_hex": (domain("envelope") + env.signed_bytes()).hex(),
                "envelope_signature": env.signature.hex(),
                "envelope": env.to_bytes().decode(),
            }
        )

    env, header, doc = base[ALG_MLKEM768_X25519]
    env_x, header_x, _ = base[ALG_X25519]

    def resigned(key: SigningKey = current, ciphertext: bytes | None = None, **changes: Any) -> bytes:
        h = dataclasses.replace(header, sig_kid=key.kid, **changes)
        return sign_envelope(h, env.ciphertext if ciphertext is None else ciphertext, key).to_bytes()

    def with_document(
        d: Document, *, key: SigningKey = current, seal_id: str | None = None, doc_key: SigningKey | None = None
    ) -> bytes:
        signed = SignedDocument.create(d, doc_key or key)
        ct = rcpt[ALG_MLKEM768_X25519].public.seal(signed.raw, hpke_info(US, CN, seal_id or header.id))
        return resigned(key, ct)

    def tampered_inner_signature() -> bytes:
        good = SignedDocument.create(doc, current)
        bad_sig = bytearray(good.signature)
        bad_sig[0] ^= 1
        raw = json_bytes(
            {"document": b64url(good.document_bytes), "kid": current.kid, "signature": b64url(bytes(bad_sig))}
        )
        return resigned(current, rcpt[ALG_MLKEM768_X25519].public.seal(raw, hpke_info(US, CN, header.id)))

    def with_document_bytes(data: bytes) -> bytes:
        raw = json_bytes(
            {"document": b64url(data), "kid": current.kid, "signature": b64url(current.sign("document", data))}
        )
        return resigned(current, rcpt[ALG_MLKEM768_X25519].public.seal(raw, hpke_info(US, CN, header.id)))

    def with_header_bytes(data: bytes) -> bytes:
        sig = current.sign("envelope", data + hashlib.sha256(env.ciphertext).digest())
        return Envelope(data, env.ciphertext, sig).to_bytes()

    d = env.to_dict()
    flip = lambda b, i: bytes(x ^ (1 if j == i else 0) for j, x in enumerate(b))  # noqa: E731
    unknown = SigningKey(seed("env/unknown", 32))
    cases: list[tuple[str, bytes, dt.datetime]] = [
        (
            "outer signature: last byte flipped",
            Envelope(env.header_bytes, env.ciphertext, flip(env.signature, 63)).to_bytes(),
            NOW,
        ),
        ("outer signature: 63 bytes", Envelope(env.header_bytes, env.ciphertext, env.signature[:63]).to_bytes(), NOW),
        (
            "ciphertext: one byte flipped (the outer signature covers its SHA-256)",
            Envelope(env.header_bytes, flip(env.ciphertext, 100), env.signature).to_bytes(),
            NOW,
        ),
        (
            "header: seq changed without re-signing",
            Envelope(env.header_bytes.replace(b'"seq":1', b'"seq":2'), env.ciphertext, env.signature).to_bytes(),
            NOW,
        ),
        ("header: `to` is another gateway (re-signed by the sender)", resigned(recipient="EU-OLAF"), NOW),
        ("header: `from` is not the peer (re-signed)", resigned(sender="EU-OLAF"), NOW),
        (
            "header: id changed and re-signed: HPKE info no longer matches",
            resigned(id="01950000-0000-7000-8000-0000000000ff"),
            NOW,
        ),
        (
            "ciphertext of message 2 under the header of message 1 (re-signed)",
            resigned(ciphertext=env_x.ciphertext),
            NOW,
        ),
        ("header: sent_at 301 s behind our clock", resigned(sent_at=NOW - dt.timedelta(seconds=301)), NOW),
        ("header: sent_at 301 s ahead of our clock", resigned(sent_at=NOW + dt.timedelta(seconds=301)), NOW),
        ("header: created_at after sent_at", resigned(created_at=SENT + dt.timedelta(seconds=1)), NOW),
        ("header: created_at differs from the document's", resigned(created_at=CREATED - dt.timedelta(seconds=1)), NOW),
        ("header: type differs from the document's", resigned(type="seminar-notice"), NOW),
        ("header: enc_kid names no key of ours", resigned(enc_kid="00" * 16), NOW),
        ("header: unknown suite", resigned(suite="p256-hkdfsha256-aes128gcm"), NOW),
        ("header: suite X25519 but enc_kid is the hybrid key", resigned(suite=header_x.suite), NOW),
        ("signed by a key the sender never announced", resigned(unknown), NOW),
        ("signed by an expired key", resigned(keys["expired"][0]), NOW),
        ("signed by a key not valid yet", resigned(keys["future"][0]), NOW),
        ("signed by a revoked key after its revocation", resigned(keys["revoked"][0]), NOW),
        ("signed by the sender's witness key (not a signing key)", resigned(keys["witness"][0]), NOW),
        (
            "inner document addressed to another gateway",
            with_document(dataclasses.replace(doc, recipient="EU-OLAF")),
            NOW,
        ),
        (
            "inner document id differs (sealed under the header's id)",
            with_document(dataclasses.replace(doc, id="01950000-0000-7000-8000-0000000000ee")),
            NOW,
        ),
        ("inner document type differs", with_document(dataclasses.replace(doc, type="port-visit-invitation")), NOW),
        ("inner document signature invalid", tampered_inner_signature(), NOW),
        ("inner document signed by an unknown key", with_document(doc, doc_key=unknown), NOW),
        (
            "HPKE plaintext is not a signed document",
            resigned(ciphertext=rcpt[ALG_MLKEM768_X25519].public.seal(b"[]", hpke_info(US, CN, header.id))),
            NOW,
        ),
        ("envelope version 2", json_bytes({**d, "v": 2}), NOW),
        ("envelope with an unknown field", json_bytes({**d, "x": "1"}), NOW),
        ("envelope ciphertext in padded base64", json_bytes({**d, "ciphertext": d["ciphertext"] + "="}), NOW),
        ("header with an unknown field", json_bytes({**d, "header": b64url(env.header_bytes[:-1] + b',"zz":1}')}), NOW),
        ("truncated envelope", env.to_bytes()[:-2], NOW),
        (
            "inner document with a key twice, signed (I-JSON: parsers differ on which `to` counts)",
            with_document_bytes(doc.to_bytes().replace(b'"to":"CN-GACC"', b'"to":"EU-OLAF","to":"CN-GACC"', 1)),
            NOW,
        ),
        (
            "header with a key twice, signed",
            with_header_bytes(env.header_bytes.replace(b'"attempt":1', b'"attempt":1,"attempt":1', 1)),
            NOW,
        ),
    ]
    invalid = [
        {
            "tcId": i,
            "comment": comment,
            "now": format_ts(now),
            "me": CN,
            "envelope": raw.decode(),
            "result": "invalid",
            "error": code_of(opener(raw, now)),
        }
        for i, (comment, raw, now) in enumerate(cases, len(valid) + 1)
    ]
    return {
        "description": "Envelopes (DESIGN §4) from US-CBP to CN-GACC. document bytes = compact sorted JSON {body, created_at, from, id, to, type}; signed document (the HPKE plaintext) = compact sorted JSON {document: b64url(document bytes), kid, signature: b64url(Ed25519 over 'customs-gateway/v1 document\\n' || document bytes)}; ciphertext = HPKE base-mode enc || ct with info 'customs-gateway/v1 FROM TO ID' and empty aad; envelope signature = Ed25519 over 'customs-gateway/v1 envelope\\n' || header bytes || SHA-256(ciphertext). HPKE is randomised: ciphertexts were produced once. Open with me=CN-GACC, skew 300 s, the sender keys below and the recipient seeds. Test-only keys.",
        "skew_seconds": SKEW,
        "sender": {
            "identity": US,
            "bundle_bytes": sender_bundle.to_bytes().decode(),
            "signing_seeds": {name: k.seed.hex() for name, (k, *_rest) in keys.items()},
            "unknown_seed": unknown.seed.hex(),
        },
        "recipient": {
            "identity": CN,
            "keys": [{"alg": k.alg, "seed": k.seed.hex(), "kid": k.kid} for k in rcpt.values()],
        },
        "tests": valid + invalid,
    }


# --- receipt.json -----------------------------------------------------------------------------


def receipt_vectors() -> dict[str, Any]:
    key = SigningKey(seed("receipt/receiver", 32))
    old = SigningKey(seed("receipt/receiver-old", 32))
    records = (
        KeyRecord(
            key.kid,
            "signing",
            ALG_ED25519,
            key.public_raw,
            ts("2026-01-01T00:00:00.000Z"),
            ts("2027-01-01T00:00:00.000Z"),
        ),
        KeyRecord(
            old.kid,
            "signing",
            ALG_ED25519,
            old.public_raw,
            ts("2025-01-01T00:00:00.000Z"),
            ts("2025-12-31T00:00:00.000Z"),
        ),
    )
    bundle = KeyBundle(
        CN, ts("2026-01-01T00:00:00.000Z"), records, ("x25519-hkdfsha256-chacha20poly1305",), BUNDLE_CERT
    )
    peer = PeerKeys(bundle)
    msg_id = "01950000-0000-7000-8000-000000000001"
    digest = hashlib.sha256(b"signed document bytes of the test message").digest()
    received = ts("2026-03-01T12:00:06.000Z")
    rc = make_receipt(message_id=msg_id, sender=US, receiver=CN, document_sha256=digest, received_at=received, key=key)
    envelope = hashlib.sha256(b"the exact envelope that was refused").digest()
    rf = make_refusal(
        message_id=msg_id,
        sender=US,
        receiver=CN,
        code="replay.skew",
        detail="sent_at is 400 s behind this gateway's clock",
        retryable=False,
        refused_at=received,
        envelope_sha256=envelope,
        key=key,
    )
    expect = {"message_id": msg_id, "sender": US, "receiver": CN, "document_sha256": digest}
    refusal_expect = {"message_id": msg_id, "sender": US, "receiver": CN, "envelope_sha256": envelope}
    rf_payload = json.loads(rf.payload)

    def stmt(st: Statement) -> dict[str, Any]:
        return {
            "payload_bytes": st.payload.decode(),
            "signature_input_hex": (domain(st.label) + st.payload).hex(),
            "signature": st.signature.hex(),
            "statement": st.to_bytes().decode(),
        }

    def forged(label: str, payload: dict[str, Any], signer: SigningKey, kid: str | None = None) -> Statement:
        data = json_bytes(payload)
        return Statement(label, data, kid or signer.kid, signer.sign(label, data))

    base_payload = json.loads(rc.payload)
    sig = bytearray(rc.signature)
    sig[10] ^= 0x80
    cases: list[tuple[str, str, Statement, dict[str, Any]]] = [
        ("receipt signature flipped", "receipt", Statement("receipt", rc.payload, rc.kid, bytes(sig)), expect),
        (
            "receipt for another message",
            "receipt",
            rc,
            {**expect, "message_id": "01950000-0000-7000-8000-000000000002"},
        ),
        ("receipt for another document digest", "receipt", rc, {**expect, "document_sha256": bytes(32)}),
        ("receipt from another receiver", "receipt", rc, {**expect, "receiver": "EU-OLAF"}),
        (
            "payload kid differs from the statement kid",
            "receipt",
            forged("receipt", {**base_payload, "kid": old.kid}, key),
            expect,
        ),
        (
            "signed by a key expired at received_at",
            "receipt",
            forged("receipt", {**base_payload, "kid": old.kid}, old),
            expect,
        ),
        (
            "received_at missing",
            "receipt",
            forged("receipt", {k: v for k, v in base_payload.items() if k != "received_at"}, key),
            expect,
        ),
        (
            "receipt payload signed under the refusal domain",
            "receipt",
            Statement("receipt", rc.payload, rc.kid, key.sign("refusal", rc.payload)),
            expect,
        ),
        (
            "refusal about another message",
            "refusal",
            rf,
            {**refusal_expect, "message_id": "01950000-0000-7000-8000-000000000002"},
        ),
        ("refusal about another envelope", "refusal", rf, {**refusal_expect, "envelope_sha256": bytes(32)}),
        ("refusal from another receiver", "refusal", rf, {**refusal_expect, "receiver": "EU-OLAF"}),
        ("refusal of another sender's message", "refusal", rf, {**refusal_expect, "sender": "EU-OLAF"}),
        (
            "refusal naming no envelope",
            "refusal",
            forged("refusal", {k: v for k, v in rf_payload.items() if k != "envelope_sha256"}, key),
            refusal_expect,
        ),
        (
            "refusal signature made under the receipt domain",
            "refusal",
            Statement("refusal", rf.payload, rf.kid, key.sign("receipt", rf.payload)),
            refusal_expect,
        ),
    ]

    def check(label: str, st: Statement, exp: dict[str, Any]) -> Callable[[], object]:
        if label == "receipt":
            return lambda: verify_receipt(st, key_for=peer.verify_key, **exp)
        return lambda: verify_refusal(st, key_for=peer.verify_key, **exp)

    invalid = []
    for i, (comment, label, st, exp) in enumerate(cases, 3):
        exp_json = {k: (v.hex() if isinstance(v, bytes) else v) for k, v in exp.items()}
        invalid.append(
            {
                "tcId": i,
                "comment": comment,
                "label": label,
                "statement": st.to_bytes().decode(),
                "expect": exp_json,
                "result": "invalid",
                "error": code_of(check(label, st, exp)),
            }
        )
    return {
        "description": "Receipts and refusals: payload bytes = compact sorted JSON including the signer's kid; signature = Ed25519 over 'customs-gateway/v1 receipt\\n' (or refusal) || payload bytes; the statement on the wire = compact sorted JSON {receipt|refusal: b64url(payload), kid, signature: b64url(sig)}. Verify with the receiver bundle's key valid at received_at/refused_at. Test-only keys.",
        "receiver": {
            "identity": CN,
            "bundle_bytes": bundle.to_bytes().decode(),
            "seed": key.seed.hex(),
            "old_seed": old.seed.hex(),
        },
        "tests": [
            {
                "tcId": 1,
                "comment": "receipt",
                "label": "receipt",
                "result": "valid",
                "expect": {**expect, "document_sha256": digest.hex()},
                "received_at": format_ts(received),
                **stmt(rc),
            },
            {
                "tcId": 2,
                "comment": "refusal",
                "label": "refusal",
                "result": "valid",
                "expect": {**refusal_expect, "envelope_sha256": envelope.hex()},
                "refused_at": format_ts(received),
                **stmt(rf),
            },
            *invalid,
        ],
    }


# --- keyfile.json -----------------------------------------------------------------------------


def keyfile_vectors() -> dict[str, Any]:
    ops, mem = 1, 8192
    passphrase = "correct horse battery staple — 测试"  # noqa: S105 (test vector)
    sk = SigningKey(seed("keyfile/signing", 32))
    meta = KeyFileMeta(sk.kid, "signing", ALG_ED25519)
    data = seal_private_key(sk.seed, meta, passphrase.encode(), opslimit=ops, memlimit=mem, randbytes=Stream("keyfile"))
    obj = json.loads(data)
    header = {k: v for k, v in obj.items() if k != "ciphertext"}
    salt = unb64url(obj["kdf"]["salt"])
    key = nacl.pwhash.argon2id.kdf(32, passphrase.encode(), salt, opslimit=ops, memlimit=mem)
    valid = {
        "tcId": 1,
        "result": "valid",
        "passphrase": passphrase,
        "seed": sk.seed.hex(),
        "kid": sk.kid,
        "use": "signing",
        "alg": ALG_ED25519,
        "salt_hex": salt.hex(),
        "nonce_hex": unb64url(obj["aead"]["nonce"]).hex(),
        "derived_key_hex": bytes(key).hex(),
        "aad": json_bytes(header).decode(),
        "ciphertext_hex": unb64url(obj["ciphertext"]).hex(),
        "file": data.decode(),
    }
    assert open_private_key(data, passphrase.encode()) == (meta, sk.seed)

    def edit(fn: Callable[[dict[str, Any]], None]) -> bytes:
        o = json.loads(data)
        fn(o)
        return json_bytes(o) + b"\n"

    other_salt = b64url(seed("keyfile/other-salt", 16))
    other_nonce = b64url(seed("keyfile/other-nonce", 24))
    ct = bytearray(unb64url(obj["ciphertext"]))
    ct[0] ^= 1
    cases: list[tuple[str, bytes, str]] = [
        ("wrong passphrase", data, "correct horse battery staple"),
        ("kid changed", edit(lambda o: o.update(kid="00" * 16)), passphrase),
        ("use changed to witness", edit(lambda o: o.update(use="witness")), passphrase),
        ("alg changed", edit(lambda o: o.update(alg="x25519")), passphrase),
        ("opslimit raised to 2", edit(lambda o: o["kdf"].update(opslimit=2)), passphrase),
        ("memlimit doubled", edit(lambda o: o["kdf"].update(memlimit=16384)), passphrase),
        ("salt replaced", edit(lambda o: o["kdf"].update(salt=other_salt)), passphrase),
        ("nonce replaced", edit(lambda o: o["aead"].update(nonce=other_nonce)), passphrase),
        (
            "an extra header field (every header field is authenticated)",
            edit(lambda o: o.update(comment="x")),
            passphrase,
        ),
        ("ciphertext: first byte flipped", edit(lambda o: o.update(ciphertext=b64url(bytes(ct)))), passphrase),
        (
            "ciphertext truncated by one byte",
            edit(lambda o: o.update(ciphertext=b64url(unb64url(o["ciphertext"])[:-1]))),
            passphrase,
        ),
        ("format string changed", edit(lambda o: o.update(format="customs-gateway/v2 private-key")), passphrase),
        ("KDF is not argon2id", edit(lambda o: o["kdf"].update(name="scrypt")), passphrase),
        ("AEAD is not XChaCha20-Poly1305", edit(lambda o: o["aead"].update(name="aes-256-gcm")), passphrase),
        ("opslimit 0", edit(lambda o: o["kdf"].update(opslimit=0)), passphrase),
        ("opslimit is a boolean", edit(lambda o: o["kdf"].update(opslimit=True)), passphrase),
        ("memlimit above 4 GiB", edit(lambda o: o["kdf"].update(memlimit=8 << 30)), passphrase),
        ("salt of 15 bytes", edit(lambda o: o["kdf"].update(salt=b64url(bytes(15)))), passphrase),
        ("ciphertext missing", edit(lambda o: o.pop("ciphertext")), passphrase),
        ("truncated file", data[: len(data) // 2], passphrase),
        ("not JSON", b"-----BEGIN PRIVATE KEY-----\n", passphrase),
        ("a JSON array", b"[]", passphrase),
    ]
    invalid = [
        {
            "tcId": i,
            "comment": comment,
            "passphrase": pw,
            "file": raw.decode(),
            "result": "invalid",
            "error": code_of(lambda r=raw, p=pw: open_private_key(r, p.encode())),
        }
        for i, (comment, raw, pw) in enumerate(cases, 2)
    ]
    return {
        "description": "Private key files: key = argon2id(passphrase UTF-8, salt 16 bytes, opslimit, memlimit) -> 32 bytes; ciphertext = XChaCha20-Poly1305-IETF(key, nonce 24 bytes, plaintext = key seed, aad = compact sorted JSON of every field but `ciphertext`) = encrypted seed || 16-byte tag; file = compact sorted JSON of the header fields plus `ciphertext` (base64url), then a newline. Small argon2 limits here for speed; real files use opslimit 3, memlimit 64 MiB. Test-only keys.",
        "tests": [valid, *invalid],
    }


README = """\
# tests/vectors/ — test vectors and their byte layout

Written by `scripts/make_crypto_vectors.py` (keyid, document, envelope, receipt, bundle, keyfile,
atrest, filecrypt) and
`scripts/make_audit_vectors.py` (merkle, checkpoint). Every key here is test-only, derived from
a published label. Cases are Wycheproof-style: `"result": "valid"` cases spell out each
intermediate byte string; `"result": "invalid"` cases name the GatewayError `code` expected.

Notation: `||` concatenation; `JSON(x)` compact JSON with keys sorted, UTF-8, no trailing
newline (`encoding.json_bytes`); `b64url` unpadded base64url; timestamps
`YYYY-MM-DDTHH:MM:SS.mmmZ`; `D(label)` = ASCII `customs-gateway/v1 <label>` then 0x0A.

## Key ids (`keyid.json`)

    kid = hex(SHA-256(raw public key)[0:16])                              32 hex characters
    Ed25519 raw public key      32 bytes (RFC 8032)
    X25519 raw public key       32 bytes (RFC 7748)
    hybrid raw public key       ML-KEM-768 encapsulation key (1184) || X25519 (32) = 1216 bytes
    hybrid private seed         ML-KEM-768 seed d||z (64) || X25519 private key (32) = 96 bytes

## Envelope (`envelope.json`)

    document bytes   = JSON({body, created_at, from, id, in_reply_to?, to, type})
                       in_reply_to: absent, or the lower-case UUID of the message it answers
                       (`document.json`: with and without it, and malformed values)
    doc signature    = Ed25519(D("document") || document bytes)                       64 bytes
    signed document  = JSON({document: b64url(document bytes), kid, signature: b64url(doc signature)})
    hpke info        = ASCII "customs-gateway/v1 " || from || " " || to || " " || id
    ciphertext       = HPKE base mode, single shot, aad empty:
                       enc (hybrid 1120 = ML-KEM-768 ciphertext 1088 || X25519 32; X25519 32)
                       || ChaCha20-Poly1305(signed document) (plaintext length + 16-byte tag)
    header bytes     = JSON({attempt, created_at, enc_kid, from, id, sent_at, seq, sig_kid, suite, to, type})
    env signature    = Ed25519(D("envelope") || header bytes || SHA-256(ciphertext))    64 bytes
    envelope         = JSON({ciphertext: b64url, header: b64url(header bytes), signature: b64url, v: 1})

The receipt binds SHA-256(signed document bytes) (`signed_document_sha256`).

A receiver refuses a header, signed document or document in which an object holds a key twice
(`schema.duplicate_key`; the last two invalid vectors), though every signature verifies.

## Receipt and refusal (`receipt.json`)

    payload   = JSON({document_sha256 (hex), from, kid, message_id, received_at, to})
                JSON({code, detail, envelope_sha256 (hex), from, kid, message_id, refused_at, retryable, to})
    signature = Ed25519(D("receipt" | "refusal") || payload)
    statement = JSON({receipt|refusal: b64url(payload), kid, signature: b64url(signature)})

## Key bundle (`bundle.json`)

    bundle bytes  = JSON({endpoint?, format: "customs-gateway/v1 key-bundle", identity, issued_at,
                          keys: [{alg, kid, not_after, not_before, public: b64url, state,
                                  revoked_at?, revocation_reason?}], serial, suites, tls_certificate})
    signature     = Ed25519(D("key-bundle") || bundle bytes), by a listed signing key valid at issued_at
    signed bundle = JSON({bundle: b64url(bundle bytes), signatures: [{kid, signature: b64url}], v: 1}) || 0x0A
    fingerprint   = upper-case hex SHA-256(bundle bytes), groups of 4 separated by spaces

## Data at rest (`atrest.json`)

    sealed     = 0x01 || day (uint32 BE, days since 1970-01-01) || nonce (24) || XChaCha20-Poly1305 ct || tag (16)
    aad        = "customs-gateway/v1 at-rest\n" || context (table.column 0x00 message id) || 0x00 || day (4)
    wrap key   = HKDF-SHA256(store key, salt none, info "customs-gateway/v1 day-key wrap", 32)
    day key    = JSON({ciphertext: b64url, day, format: "customs-gateway/v1 day-key", nonce: b64url}) || 0x0A
                 ciphertext = XChaCha20-Poly1305(wrap key, nonce, day key, aad = format || 0x0A || day)
    held       = 0x02 || hold id (16) || nonce (24) || XChaCha20-Poly1305 ct || tag (16)   (a message under legal hold)
    aad        = "customs-gateway/v1 at-rest\n" || context || 0x00 || 0x02 || hold id
    hold key   = JSON({ciphertext: b64url, format: "customs-gateway/v1 hold-key", hold: hex id, nonce: b64url}) || 0x0A
                 ciphertext = XChaCha20-Poly1305(wrap key, nonce, hold key, aad = format || 0x0A || hex id)

## Files (`filecrypt.json`)

    chunks     = plaintext cut into 64 KiB pieces; every one full but the last (1..65536 bytes,
                 0 only for an empty file)
    nonce(i)   = i as 11 bytes big-endian || 0x01 for the last chunk, else 0x00          12 bytes
    chunk i    = ChaCha20-Poly1305(file key, nonce(i), chunk, aad empty)          len + 16 bytes
    ciphertext = chunk 0 || chunk 1 || ...; the file key is random per file (32 bytes) and
                 travels only inside the sealed document, with the plaintext's size and SHA-256

## Private key file (`keyfile.json`)

    key        = argon2id(passphrase, salt 16 bytes, opslimit, memlimit) -> 32 bytes
    header     = {aead: {name: "xchacha20poly1305-ietf", nonce: b64url(24 bytes)}, alg,
                  format: "customs-gateway/v1 private-key", kdf: {memlimit, name: "argon2id",
                  opslimit, salt: b64url}, kid, use}
    ciphertext = XChaCha20-Poly1305-IETF(key, nonce, seed, aad = JSON(header))  = seed || 16-byte tag
    file       = JSON(header + {ciphertext: b64url}) || 0x0A

Seeds: Ed25519 32-byte seed; HPKE keys as in key ids; TLS key (use "tls", alg "ecdsa-p256"):
the PKCS#8 DER of the P-256 private key.

## Evidence for one message (`evidence.jsonl`)

Written by `scripts/make_evidence_vectors.py` from `tests/core/evidence_builder.py` (fixed
seeds, fixed times: the file is byte-identical on every run). JSON Lines, each line the compact
msgspec encoding of one object ending in 0x0A, no CR anywhere, in this order:

    header   {t:"header", format:"customs-gateway/v1 message-evidence", message_id, sender,
              receiver, made_by (sender|receiver), made_at}
    bundle   {t:"bundle", owner, signed_bundle: b64url(signed bundle bytes)}        every version, both sides
    message  {t:"message", role:"message"|"ack", id, sender, receiver, type, created_at,
              document_sha256 (hex of SHA-256(signed document)), signed_document: b64url | null,
              withheld: reason | null, receipt: b64url(statement) | null, refusal: b64url | null}
    log      {t:"log", owner, size, note: checkpoint note + owner's signature + the other side's
              cosignature, entries: [{index, entry: b64url(entry bytes), proof: [b64url(32 bytes)]}]}
                                                            sender's log first, then the receiver's
    end      {t:"end", lines: count of lines before it, sha256: hex SHA-256 of those lines' bytes}

Each entry verifies as `leaf = SHA-256(0x00 || entry bytes)` included at `index` in the tree of
`size` whose root the note signs (RFC 9162 §2.1.3). Trust in each side's keys starts at its
lowest-serial bundle (or the one whose fingerprint the auditor passes) and follows each later
version only if `rotation.check_update` accepts it.

`evidence-disposed.jsonl` is the same message's file as its sender makes it after disposing of
it at `retain_until`: the message part has `signed_document: null, withheld: "disposed"` and
keeps `document_sha256`, the receipt still binds that digest, and the sender's log part also
carries its `disposed` entry (`digests.document`, `detail.direction: "outbound"`). A withheld
document verifies only if a proven entry names its digest.
"""


def main(argv: list[str] | None = None) -> int:
    """Write every vector file, or only those named (`receipt.json`): HPKE ciphertexts differ on
    every run, so regenerating one construction need not rewrite the envelope vectors."""
    only = set(sys.argv[1:] if argv is None else argv)
    VECTORS.mkdir(parents=True, exist_ok=True)
    makers: dict[str, Callable[[], dict[str, Any]]] = {
        "keyid.json": keyid_vectors,
        "bundle.json": bundle_vectors,
        "envelope.json": envelope_vectors,
        "document.json": document_vectors,
        "atrest.json": atrest_vectors,
        "filecrypt.json": filecrypt_vectors,
        "receipt.json": receipt_vectors,
        "keyfile.json": keyfile_vectors,
    }
    for name, make in makers.items():
        if not only or name in only:
            write(name, make())
    (VECTORS / "README.md").write_text(README, encoding="utf-8")
    print("wrote tests/vectors/README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
