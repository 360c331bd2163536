"""Write tests/vectors/filerest.json: uploaded files at rest (`core.filerest`), chunk records and
wrapped upload keys. Each record is computed three ways — by `core.filerest` (`core.xchacha`:
HChaCha20 from one ChaCha20 block), by libsodium's XChaCha20-Poly1305 (PyNaCl), and from HChaCha20
rounds written out here + ChaCha20-Poly1305 (`cryptography`) — and all must agree.
Deterministic: every key and nonce is derived from a published label."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import nacl.bindings
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from customs_gateway.core import filerest
from customs_gateway.core.storekey import StoreKey

OUT = Path(__file__).resolve().parents[1] / "tests" / "vectors" / "filerest.json"
FILE_ID = "01950000-0000-7000-8000-0000000000f1"


def label(name: str, n: int = 32) -> bytes:
    return hashlib.sha256(f"customs-gateway/v1 test vector {name}".encode()).digest()[:n]


def _hchacha20(key: bytes, nonce16: bytes) -> bytes:
    """HChaCha20 (draft-irtf-cfrg-xchacha §2.2) in plain Python: 20 ChaCha rounds, no feed-forward."""

    def rotl(v: int, c: int) -> int:
        return ((v << c) & 0xFFFFFFFF) | (v >> (32 - c))

    def qr(s: list[int], a: int, b: int, c: int, d: int) -> None:
        s[a] = (s[a] + s[b]) & 0xFFFFFFFF
        s[d] = rotl(s[d] ^ s[a], 16)
        s[c] = (s[c] + s[d]) & 0xFFFFFFFF
        s[b] = rotl(s[b] ^ s[c], 12)
        s[a] = (s[a] + s[b]) & 0xFFFFFFFF
        s[d] = rotl(s[d] ^ s[a], 8)
        s[c] = (s[c] + s[d]) & 0xFFFFFFFF
        s[b] = rotl(s[b] ^ s[c], 7)

    words = [int.from_bytes(x, "little") for x in (b"expa", b"nd 3", b"2-by", b"te k")]
    words += [int.from_bytes(key[i : i + 4], "little") for i in range(0, 32, 4)]
    words += [int.from_bytes(nonce16[i : i + 4], "little") for i in range(0, 16, 4)]
    for _ in range(10):
        qr(words, 0, 4, 8, 12), qr(words, 1, 5, 9, 13), qr(words, 2, 6, 10, 14), qr(words, 3, 7, 11, 15)
        qr(words, 0, 5, 10, 15), qr(words, 1, 6, 11, 12), qr(words, 2, 7, 8, 13), qr(words, 3, 4, 9, 14)
    return b"".join(w.to_bytes(4, "little") for w in words[0:4] + words[12:16])


def xchacha_by_hand(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """XChaCha20-Poly1305-IETF from its definition: subkey = HChaCha20(key, nonce[:16]), then
    ChaCha20-Poly1305 with nonce 0x00000000 || nonce[16:]."""
    subkey = _hchacha20(key, nonce[:16])
    return ChaCha20Poly1305(subkey).encrypt(b"\x00" * 4 + nonce[16:], plaintext, aad)


def plain(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


def main() -> None:
    key = label("upload key")
    store_key = StoreKey(label("store key"))
    wrap_key = store_key.derive(filerest.WRAP_KEY_LABEL)
    tests: list[dict[str, Any]] = []
    for tc, (index, size, comment) in enumerate(
        [
            (0, 0, "empty chunk"),
            (0, 11, "short first chunk"),
            (3, 1000, "partial tail at index 3"),
            (1, filerest.RECORD - filerest.OVERHEAD, "a full 64 KiB chunk"),
        ],
        start=1,
    ):
        nonce = label(f"upload nonce {tc}", 24)
        pt = plain(size)
        aad = filerest.chunk_aad(FILE_ID, index)
        record = filerest.seal_chunk(key, FILE_ID, index, pt, nonce)
        assert record == nonce + xchacha_by_hand(key, nonce, pt, aad)
        assert record == nonce + nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(pt, aad, nonce, key)
        case: dict[str, Any] = {
            "tcId": tc,
            "comment": comment,
            "result": "valid",
            "index": index,
            "size": size,
            "nonce": nonce.hex(),
            "aad_hex": aad.hex(),
        }
        if size <= 1000:
            case["record"] = record.hex()
        else:
            case["record_sha256"] = hashlib.sha256(record).hexdigest()
            case["record_tail"] = record[-48:].hex()
        tests.append(case)
    base = bytes.fromhex(tests[2]["record"])
    bad = [
        ("another key", {"key": label("another key").hex(), "index": 3, "record": base.hex()}),
        ("moved to another index", {"index": 4, "record": base.hex()}),
        (
            "moved to another file",
            {"index": 3, "file_id": "01950000-0000-7000-8000-0000000000f2", "record": base.hex()},
        ),
        ("record cut short", {"index": 3, "record": base[:-1].hex()}),
        ("record shorter than nonce and tag", {"index": 3, "record": base[:39].hex()}),
        ("a ciphertext byte changed", {"index": 3, "record": (base[:30] + bytes([base[30] ^ 1]) + base[31:]).hex()}),
        ("a nonce byte changed", {"index": 3, "record": (bytes([base[0] ^ 0x80]) + base[1:]).hex()}),
    ]
    for comment, fields in bad:
        code = "file.at_rest_truncated" if "shorter than" in comment else "file.at_rest_auth_failed"
        tests.append({"tcId": len(tests) + 1, "comment": comment, "result": "invalid", "code": code, **fields})
    wrap_nonce = label("upload key wrap nonce", 24)
    wrapped = filerest.wrap_upload_key(wrap_key, FILE_ID, key, wrap_nonce)
    wrap_aad = b"customs-gateway/v1 upload key\n" + FILE_ID.encode()
    assert wrapped == wrap_nonce + xchacha_by_hand(wrap_key, wrap_nonce, key, wrap_aad)
    doc = {
        "description": "Uploaded files at rest: chunk records under a per-upload key, the key wrapped",
        "file_id": FILE_ID,
        "key": key.hex(),
        "chunk": 65536,
        "plaintext": "byte i is i mod 251",
        "tests": tests,
        "wrap": {
            "store_key": store_key.secret.hex(),
            "wrap_key_label": filerest.WRAP_KEY_LABEL,
            "wrap_key": wrap_key.hex(),
            "nonce": wrap_nonce.hex(),
            "aad_hex": wrap_aad.hex(),
            "wrapped": wrapped.hex(),
        },
    }
    OUT.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
