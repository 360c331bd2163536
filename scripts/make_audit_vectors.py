"""Write the audit-log test vectors: tests/vectors/merkle.json and tests/vectors/checkpoint.json.

Deterministic: run it again and the files do not change (tests/core/test_merkle.py and
test_checkpoint.py rebuild both and compare). Two kinds of content:

* external vectors, copied as constants with their source, never computed here: the RFC 6962
  reference tree and proofs of transparency-dev/merkle `proof/verify_test.go`, the signed notes
  of golang.org/x/mod `sumdb/note/note_test.go`, the C2SP signed-note worked example, two real
  sum.golang.org checkpoints, and a real witness cosignature of a CT log checkpoint;
* our own vectors (a checkpoint signed and cosigned with fixed test-only seeds, every proof of
  the 8-leaf reference tree, and corruptions of the external proofs), generated with
  customs_gateway.core. The generator refuses to write if our code disagrees with an external
  constant.

Usage: .venv/bin/python scripts/make_audit_vectors.py [--check]
"""

# ruff: noqa: E501  (external vectors are quoted verbatim, one per line)
from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from customs_gateway.core import checkpoint as cp
from customs_gateway.core import merkle

VECTORS = Path(__file__).resolve().parent.parent / "tests" / "vectors"

# --- external: transparency-dev/merkle proof/verify_test.go ---------------------------------------
TD_SOURCE = "github.com/transparency-dev/merkle proof/verify_test.go"
TD_LEAVES = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
]
TD_ROOTS = [  # roots[size - 1]
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (zero-based index, size, proof); verify_test.go lists 1-based leaf numbers.
TD_INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
TD_CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
TD_SOME_HASH = "abacaba000000000000000000000000000000000000000000060061e00123456"

# --- external: signed notes ------------------------------------------------------------------------
EM = "\u2014"
GO_NOTE_SOURCE = "golang.org/x/mod sumdb/note/note_test.go (TestSign, TestOpen)"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_PETER_SIG = (
    f"{EM} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
GO_ENOCH_SIG = (
    f"{EM} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
)
C2SP_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
C2SP_NOTE = (
    "This is an example message.\n\n"
    f"{EM} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_NOTES = [
    "go.sum database tree\n31700353\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\n\n"
    f"{EM} sum.golang.org Az3grnmrIUEDFqHzAElIQCPNoRFRAAdFo47fooyWKMHb89k11GJh5zHIfNCOBmwn/C3YI8oW9/C8DJ87F61QqspBYwM=\n",
    "go.sum database tree\n65209736\n5+uGFjx6xBZG8ip1+wi77v+grwbhhukIrxEUS8PXvRo=\n\n"
    f"{EM} sum.golang.org Az3grnbssgK7ubgFX36gVETtNv0U23qxyAhAMai2QUfeGa3nB/akvkMdlUErfcZz7l/R3cVtYspg3dxXABkGZZKdsQ8=\n",
]
CT_LOG_VKEY = "arche2025h1.staging.ct.transparency.dev+ba2f06c0+AU0vHmlGCS/PdN8b2OaGmKprLI8HKM+dJ472xgFYh15f"
CT_WITNESS_VKEY = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"
CT_BODY = "arche2025h1.staging.ct.transparency.dev\n1432088532\nU7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro=\n"
CT_SIGS = [
    "arche2025h1.staging.ct.transparency.dev zTM8sQAAAZ5W0WdjBAMARjBEAiBjW5IQf9pvsYLfQFX6hoGREPMHbdQ3urbllzalApkpt"
    "QIgIpwtEroeW2BXaHAI4kJXFbon5Ch9MNL5zRNZ55lvGt0=",
    "arche2025h1.staging.ct.transparency.dev ui8GwCF1+kWqZrxGdhj4aX3gcw7XUlXQQabg/27lefwhUkzbC3NygNI75MdhL1bfTW9g8Ei"
    "59RA23oHP7Ry1k3ZFWwQ=",
    "transparency.dev/DEV:witness-little-garden 2AQqhwAAAABqEiEgzgFIqqhbUoDwjMWE6UP8nd8/KYTzwZ2rhIgcqoXHAwVkjZr4Ascy"
    "lP3v7sEodkRAErumC2q44vdgJY096st5BQ==",
    "witness1.smartit.nu/witness1 pIyCDwAAAABqEiEghIp82KWebrw7/oHQwlTAm3g2RKS4+eebl8eO0WH+/iEcxZ75W3u5hNI7TOQtmJbqmNWV"
    "uE0tgh0XwzdZsDsUAQ==",
    "remora.n621.de 2net5wAAAABqEiEgPlfF3V06o0Y+fHM+J5J9s27wgxxcOVSpZ/2g/KSiXCg9DEZI+aVCIobWX9sXTynk5XeU/zZ0WBxtqB0D"
    "rAWfBw==",
    "witness.stagemole.eu Z/euoAAAAABqEiEgw0i+7g2ENfDAWHmtRzCfKTHSDwYDJA2NmKeGi9Y8FtEyOUvVr+AJmIY/2TUFucgKi7lI7cUiOvKF"
    "Ye/TmN9DAg==",
]

# --- ours: fixed, public, test-only keys ---------------------------------------------------------
LOG_NAME = "us-cbp.customs-gateway.example/audit"
WITNESS_NAME = "cn-gacc.customs-gateway.example/witness"
LOG_SEED = hashlib.sha256(b"customs-gateway test vector: log key (public, never use)").digest()
WITNESS_SEED = hashlib.sha256(b"customs-gateway test vector: witness key (public, never use)").digest()
COSIGN_TIME = 1795500000  # 2026-11-24T06:00:00Z


class SeedSigner:
    """Ed25519 from a 32-byte seed (test vectors only)."""

    def __init__(self, seed: bytes) -> None:
        self._key = SigningKey(seed)
        self.public_raw = bytes(self._key.verify_key)

    def sign(self, message: bytes) -> bytes:
        return bytes(self._key.sign(message).signature)


def _hx(hashes: list[bytes]) -> list[str]:
    return [h.hex() for h in hashes]


def _flip(h: bytes, mask: int) -> bytes:
    return bytes([h[0] ^ mask]) + h[1:]


InclusionCase = tuple[int, int, bytes, list[bytes], bytes]  # index, size, leaf hash, proof, root
ConsistencyCase = tuple[int, int, list[bytes], bytes, bytes]  # old size, new size, proof, old root, new root


def _inclusion_case(desc: str, case: InclusionCase, *, valid: bool, source: str) -> dict[str, Any]:
    index, size, leaf, proof, root = case
    return {
        "desc": desc,
        "source": source,
        "index": index,
        "size": size,
        "leaf_hash": leaf.hex(),
        "proof": _hx(proof),
        "root": root.hex(),
        "result": "valid" if valid else "invalid",
    }


def _consistency_case(desc: str, case: ConsistencyCase, *, valid: bool, source: str) -> dict[str, Any]:
    old, new, proof, old_root, new_root = case
    return {
        "desc": desc,
        "source": source,
        "old_size": old,
        "new_size": new,
        "proof": _hx(proof),
        "old_root": old_root.hex(),
        "new_root": new_root.hex(),
        "result": "valid" if valid else "invalid",
    }


def build_merkle() -> dict[str, Any]:
    leaves = [merkle.leaf_hash(bytes.fromhex(x)) for x in TD_LEAVES]
    roots = [bytes.fromhex(r) for r in TD_ROOTS]
    some = bytes.fromhex(TD_SOME_HASH)
    for n in range(1, 9):
        if merkle.root_from_leaves(leaves[:n]) != roots[n - 1]:
            raise SystemExit(f"our root at size {n} disagrees with {TD_SOURCE}")

    inclusion: list[dict[str, Any]] = []
    seen: set[tuple[int, int]] = set()
    td = f"{TD_SOURCE} (known proof)"
    probe = f"{TD_SOURCE} (corruptInclusionProof probe)"
    for index, size, proof_hex in TD_INCLUSION:
        proof = [bytes.fromhex(h) for h in proof_hex]
        if merkle.inclusion_proof(leaves, index, size) != proof:
            raise SystemExit(f"our inclusion proof ({index}, {size}) disagrees with {TD_SOURCE}")
        leaf, root = leaves[index], roots[size - 1]
        seen.add((index, size))
        inclusion.append(_inclusion_case("happy path", (index, size, leaf, proof, root), valid=True, source=td))
        bad = [
            ("index - 1", index - 1, size, leaf, proof, root),
            ("index + 1", index + 1, size, leaf, proof, root),
            ("index ^ 2", index ^ 2, size, leaf, proof, root),
            ("index = size", size, size, leaf, proof, root),
            ("size * 2", index, size * 2, leaf, proof, root),
            ("size / 2", index, size // 2, leaf, proof, root),
            ("wrong leaf", index, size, merkle.leaf_hash(b"WrongLeaf"), proof, root),
            ("empty root", index, size, leaf, proof, merkle.EMPTY_ROOT),
            ("random root", index, size, leaf, proof, some),
            ("root with flipped bit", index, size, leaf, proof, _flip(root, 8)),
            ("trailing root (one too long)", index, size, leaf, [*proof, root], root),
            ("preceding root (one too long)", index, size, leaf, [root, *proof], root),
        ]
        bad += [
            (f"proof[{i}] bit 3 flipped", index, size, leaf, [*proof[:i], _flip(p, 8), *proof[i + 1 :]], root)
            for i, p in enumerate(proof)
        ]
        if proof:
            bad.append(("removed component (one too short)", index, size, leaf, proof[:-1], root))
        if len(proof) > 1:
            bad.append(("inserted component", index, size, leaf, [proof[0], some, *proof[1:]], root))
        for desc, *case in bad:
            inclusion.append(_inclusion_case(desc, tuple(case), valid=False, source=probe))
    data = merkle.leaf_hash(b"data")
    single = f"{TD_SOURCE} (TestVerifyInclusionSingleEntry, TestVerifyInclusion)"
    inclusion.append(_inclusion_case("single entry", (0, 1, data, [], data), valid=True, source=single))
    for index, size in [(0, 0), (1, 0), (2, 1), (1, 1)]:
        inclusion.append(
            _inclusion_case("index >= size", (index, size, some, [], merkle.EMPTY_ROOT), valid=False, source=single)
        )
    for size in range(1, 9):
        for index in range(size):
            if (index, size) not in seen:
                proof = merkle.inclusion_proof(leaves, index, size)
                inclusion.append(
                    _inclusion_case(
                        "generated",
                        (index, size, leaves[index], proof, roots[size - 1]),
                        valid=True,
                        source="ours",
                    )
                )

    consistency: list[dict[str, Any]] = []
    seen = set()
    cprobe = f"{TD_SOURCE} (corruptConsistencyProof probe)"
    for old, new, proof_hex in TD_CONSISTENCY:
        proof = [bytes.fromhex(h) for h in proof_hex]
        if merkle.consistency_proof(leaves, old, new) != proof:
            raise SystemExit(f"our consistency proof ({old}, {new}) disagrees with {TD_SOURCE}")
        r1, r2 = roots[old - 1], roots[new - 1]
        seen.add((old, new))
        consistency.append(_consistency_case("happy path", (old, new, proof, r1, r2), valid=True, source=td))
        if not proof:
            continue
        wrong = hashlib.sha256(b"WrongRoot").digest()
        bad2 = [
            ("size1 - 1", old - 1, new, proof, r1, r2),
            ("size1 + 1", old + 1, new, proof, r1, r2),
            ("size1 ^ 2", old ^ 2, new, proof, r1, r2),
            ("size2 * 2", old, new * 2, proof, r1, r2),
            ("size2 / 2", old, new // 2, proof, r1, r2),
            ("wrong root1", old, new, proof, wrong, r2),
            ("wrong root2", old, new, proof, r1, wrong),
            ("root2 with flipped bit", old, new, proof, r1, _flip(r2, 16)),
            ("swapped roots", old, new, proof, r2, r1),
            ("empty proof", old, new, [], r1, r2),
            ("trailing root1 (one too long)", old, new, [*proof, r1], r1, r2),
            ("trailing root2 (one too long)", old, new, [*proof, r2], r1, r2),
            ("preceding root1", old, new, [r1, *proof], r1, r2),
            ("preceding root2", old, new, [r2, *proof], r1, r2),
            ("preceding proof[0]", old, new, [proof[0], *proof], r1, r2),
            ("truncated proof (one too short)", old, new, proof[:-1], r1, r2),
        ]
        bad2 += [
            (f"proof[{i}] bit 4 flipped", old, new, [*proof[:i], _flip(p, 16), *proof[i + 1 :]], r1, r2)
            for i, p in enumerate(proof)
        ]
        for desc, *case in bad2:
            consistency.append(_consistency_case(desc, tuple(case), valid=False, source=cprobe))
    care1, care2, empty = (
        hashlib.sha256(b"don't care 1").digest(),
        hashlib.sha256(b"don't care 2").digest(),
        merkle.EMPTY_ROOT,
    )
    edge = f"{TD_SOURCE} (TestVerifyConsistency, roots made 32 bytes)"
    for desc, m, n, a, b, pf, ok in [
        ("0 -> 0, different roots", 0, 0, care1, care2, [], False),
        ("1 -> 1, different roots", 1, 1, care1, care2, [], False),
        ("0 -> 0, same root", 0, 0, care1, care1, [], True),
        ("0 -> 1, anything extends the empty tree", 0, 1, care1, care2, [], True),
        ("1 -> 1, same root", 1, 1, care2, care2, [], True),
        ("1 -> 0, time travel", 1, 0, care1, care2, [], False),
        ("2 -> 1, time travel", 2, 1, care1, care2, [], False),
        ("1 -> 2, empty proof", 1, 2, care1, care2, [], False),
        ("0 -> 0, roots differ", 0, 0, empty, care2, [], False),
        ("1 -> 1, roots differ", 1, 1, empty, care2, [], False),
        ("0 -> 0, non-empty proof", 0, 0, empty, empty, [empty], False),
        ("0 -> 1, non-empty proof", 0, 1, empty, empty, [empty], False),
        ("1 -> 1, non-empty proof", 1, 1, empty, empty, [empty], False),
    ]:
        consistency.append(_consistency_case(desc, (m, n, pf, a, b), valid=ok, source=edge))
    for new in range(1, 9):
        for old in range(new + 1):
            if (old, new) not in seen:
                proof = merkle.consistency_proof(leaves, old, new)
                r1 = roots[old - 1] if old else merkle.EMPTY_ROOT
                consistency.append(
                    _consistency_case("generated", (old, new, proof, r1, roots[new - 1]), valid=True, source="ours")
                )

    return {
        "description": "RFC 6962/9162 Merkle tree vectors: leaf/node hashing, inclusion and consistency proofs. "
        "Hashes are hex. Written by scripts/make_audit_vectors.py; external cases name their source.",
        "leaves": TD_LEAVES,
        "leaf_hashes": _hx(leaves),
        "empty_root": merkle.EMPTY_ROOT.hex(),
        "roots": [{"size": n, "root": r, "source": TD_SOURCE} for n, r in enumerate(TD_ROOTS, 1)],
        "inclusion": inclusion,
        "consistency": consistency,
    }


def _key_block(name: str, seed: bytes, sig_type: int) -> dict[str, Any]:
    signer = SeedSigner(seed)
    return {
        "name": name,
        "seed": seed.hex(),
        "public_key": signer.public_raw.hex(),
        "signature_type": sig_type,
        "key_id": cp.note_key_id(name, signer.public_raw, sig_type).hex(),
        "vkey": cp.format_vkey(name, signer.public_raw, sig_type),
    }


def build_checkpoint() -> dict[str, Any]:
    root8 = bytes.fromhex(TD_ROOTS[-1])
    checkpoint = cp.Checkpoint(LOG_NAME, 8, root8)
    body = checkpoint.body()
    log, witness = SeedSigner(LOG_SEED), SeedSigner(WITNESS_SEED)
    note = cp.sign_note(body, LOG_NAME, log)
    line = cp.cosign(body, WITNESS_NAME, witness, COSIGN_TIME)
    ext = cp.Checkpoint(LOG_NAME, 0, merkle.EMPTY_ROOT, ("customs-gateway/v1 extension",))

    peter_seed = base64.b64decode(GO_PETER_SKEY.split("+", 4)[4])[1:]  # skey = 0x01 ‖ seed
    peter_note = GO_TEXT + "\n" + GO_PETER_SIG
    cp_bad = [
        ("no final newline", body[:-1].decode()),
        ("two lines", f"{LOG_NAME}\n8\n"),
        ("empty origin", "\n8\n" + body.decode().split("\n", 2)[2]),
        ("leading zero size", body.decode().replace("\n8\n", "\n08\n")),
        ("signed size", body.decode().replace("\n8\n", "\n+8\n")),
        ("size with space", body.decode().replace("\n8\n", "\n 8\n")),
        ("non-ASCII digit size", body.decode().replace("\n8\n", "\n\u0668\n")),
        ("size beyond uint64", body.decode().replace("\n8\n", "\n18446744073709551616\n")),
        ("unpadded root", body.decode().replace("=\n", "\n")),
        ("non-canonical root base64", body.decode().replace("Qyg=\n", "Qyh=\n")),
        ("url-safe root base64", f"{LOG_NAME}\n1\n{'_' * 43}=\n"),
        ("31-byte root", f"{LOG_NAME}\n1\n{'A' * 40}AA==\n"),
        ("empty extension line", body.decode() + "\n"),
        ("tab in origin", body.decode().replace("us-cbp", "us\tcbp")),
        ("CRLF line ends", body.decode().replace("\n", "\r\n")),
    ]
    if "Qyg=\n" not in body.decode():
        raise SystemExit("checkpoint corruption cases assume the reference root's base64 ends in 'Qyg='")

    invalid_notes: list[dict[str, Any]] = [
        {"desc": desc, "note": text, "error": "audit.note_invalid"}
        for desc, text in [
            ("text only", GO_TEXT),
            ("text and blank line only", GO_TEXT + "\n"),
            ("no final newline", GO_TEXT + "\n" + GO_PETER_SIG[:-1]),
            ("control character", "\x01" + GO_TEXT + "\n" + GO_PETER_SIG),
            ("space in key name", GO_TEXT + "\n" + GO_PETER_SIG.replace("PeterNeumann", "Bad Name")[:-1]),
            ("unexpected line", GO_TEXT + "\n" + GO_PETER_SIG + "Unexpected line.\n"),
            ("101 signatures", GO_TEXT + "\n" + GO_PETER_SIG * 101),
            ("plus in key name", GO_TEXT + "\n" + GO_PETER_SIG.replace("PeterNeumann", "Peter+Neumann")),
            ("hyphen instead of em dash", GO_TEXT + "\n" + GO_PETER_SIG.replace(EM, "-")),
            ("signature is only a key id", GO_TEXT + "\n" + f"{EM} PeterNeumann x08gow==\n"),
        ]
    ]
    invalid_notes.insert(
        4,
        {
            "desc": "invalid UTF-8",
            "note_hex": (b"\xff" + peter_note.encode()).hex(),
            "error": "audit.note_invalid",
        },
    )
    invalid_notes += [
        {
            "desc": "known key, corrupted signature",
            "note": GO_TEXT + "\n" + GO_PETER_SIG[:60] + "ABCD" + GO_PETER_SIG[60:],
            "error": "audit.signature_invalid",
        },
        {
            "desc": "no known key signed",
            "note": GO_TEXT + "\n" + GO_ENOCH_SIG,
            "error": "audit.signature_invalid",
        },
        {
            "desc": "body changed after signing",
            "note": peter_note.replace("answer", "Answer"),
            "error": "audit.signature_invalid",
        },
    ]

    return {
        "description": "C2SP tlog-checkpoint, signed-note and tlog-cosignature vectors. Keys are test-only. "
        "Written by scripts/make_audit_vectors.py; external cases name their source.",
        "log_key": _key_block(LOG_NAME, LOG_SEED, cp.SIG_ED25519),
        "witness_key": _key_block(WITNESS_NAME, WITNESS_SEED, cp.SIG_COSIGNATURE_V1),
        "checkpoint": {
            "origin": LOG_NAME,
            "size": 8,
            "root": root8.hex(),
            "extensions": [],
            "body": body.decode(),
        },
        "checkpoint_with_extension": {
            "origin": ext.origin,
            "size": ext.size,
            "root": ext.root.hex(),
            "extensions": list(ext.extensions),
            "body": ext.body().decode(),
        },
        "signed_note": note.decode(),
        "cosignature": {
            "timestamp": COSIGN_TIME,
            "message": cp.cosignature_message(body, COSIGN_TIME).decode(),
            "line": line.decode(),
            "cosigned_note": cp.append_signature(note, line).decode(),
        },
        "invalid_checkpoints": [{"desc": d, "body": b} for d, b in cp_bad],
        "invalid_notes": invalid_notes,
        "interop": {
            "go_sign": {
                "source": GO_NOTE_SOURCE,
                "seed": peter_seed.hex(),
                "name": "PeterNeumann",
                "vkey": GO_PETER_VKEY,
                "text": GO_TEXT,
                "note": peter_note,
            },
            "go_open_two_keys": {
                "source": GO_NOTE_SOURCE,
                "vkeys": [GO_PETER_VKEY, GO_ENOCH_VKEY],
                "note": GO_TEXT + "\n" + GO_PETER_SIG + GO_ENOCH_SIG,
            },
            "c2sp_signed_note_example": {
                "source": "c2sp.org/signed-note worked example (C2SP/C2SP signed-note.md at d4c16da5)",
                "vkey": C2SP_VKEY,
                "note": C2SP_NOTE,
            },
            "sum_golang_org": {
                "source": "real sum.golang.org checkpoints; key from cmd/go (GOSUMDB default)",
                "vkey": SUMDB_VKEY,
                "notes": SUMDB_NOTES,
            },
            "witness_cosignature": {
                "source": "real arche2025h1 staging CT log checkpoint with witness cosignatures "
                "(vkeys as published by the log and the remora.n621.de witness)",
                "log_vkey": CT_LOG_VKEY,
                "witness_vkey": CT_WITNESS_VKEY,
                "body": CT_BODY,
                "note": CT_BODY + "\n" + "".join(f"{EM} {s}\n" for s in CT_SIGS),
                "witness_line": f"{EM} {CT_SIGS[4]}\n",
                "witness_timestamp": 1779573024,
            },
        },
    }


def _dump(obj: dict[str, Any]) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def outputs() -> dict[Path, str]:
    return {
        VECTORS / "merkle.json": _dump(build_merkle()),
        VECTORS / "checkpoint.json": _dump(build_checkpoint()),
    }


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for path, text in outputs().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not check:
            path.write_text(text, encoding="utf-8")
    for path in stale:
        print(("stale: " if check else "wrote: ") + str(path))
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
