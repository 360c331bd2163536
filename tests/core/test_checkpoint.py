"""Checkpoints, signed notes and cosignatures against Go, C2SP and real-log vectors, plus hypothesis."""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from customs_gateway.core.checkpoint import (
    SIG_COSIGNATURE_V1,
    SIG_ED25519,
    Checkpoint,
    CheckpointError,
    CosignatureVerifier,
    Ed25519NoteVerifier,
    NoteError,
    NoteSignature,
    NoteSignatureError,
    append_signature,
    cosign,
    cosignature_message,
    cosignature_timestamp,
    format_vkey,
    note_key_id,
    open_note,
    parse_vkey,
    sign_note,
    verify_cosignature,
)
from customs_gateway.core.merkle import EMPTY_ROOT

ROOT_DIR = Path(__file__).resolve().parents[2]
V = json.loads((ROOT_DIR / "tests" / "vectors" / "checkpoint.json").read_text(encoding="utf-8"))
EM = "\u2014"


class Ed25519Signer:
    """Test-only signer from a 32-byte seed (the key module belongs elsewhere)."""

    def __init__(self, seed: bytes) -> None:
        self._key = SigningKey(seed)
        self.public_raw = bytes(self._key.verify_key)

    def sign(self, message: bytes) -> bytes:
        return bytes(self._key.sign(message).signature)


LOG = Ed25519Signer(bytes.fromhex(V["log_key"]["seed"]))
WITNESS = Ed25519Signer(bytes.fromhex(V["witness_key"]["seed"]))
LOG_NAME, WITNESS_NAME = V["log_key"]["name"], V["witness_key"]["name"]
LOG_V = Ed25519NoteVerifier(LOG_NAME, LOG.public_raw)
WITNESS_V = CosignatureVerifier(WITNESS_NAME, WITNESS.public_raw)
BODY = V["checkpoint"]["body"].encode()
NOTE = V["signed_note"].encode()
COSIGNED = V["cosignature"]["cosigned_note"].encode()
TS = V["cosignature"]["timestamp"]


def test_vector_file_is_what_the_script_writes() -> None:
    path = ROOT_DIR / "scripts" / "make_audit_vectors.py"
    spec = importlib.util.spec_from_file_location("make_audit_vectors", path)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script._dump(script.build_checkpoint()) == (ROOT_DIR / "tests/vectors/checkpoint.json").read_text("utf-8")


# --- checkpoint body --------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["checkpoint", "checkpoint_with_extension"])
def test_checkpoint_body_round_trip(key: str) -> None:
    c = V[key]
    checkpoint = Checkpoint(c["origin"], c["size"], bytes.fromhex(c["root"]), tuple(c["extensions"]))
    assert checkpoint.body() == c["body"].encode()
    assert Checkpoint.parse(c["body"].encode()) == checkpoint


def test_checkpoint_body_bytes() -> None:
    root = bytes.fromhex("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")
    assert Checkpoint("example.com/log", 8, root).body() == (
        b"example.com/log\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n"
    )
    assert Checkpoint("o", 0, EMPTY_ROOT, ("a", "b c")).body().endswith(b"=\na\nb c\n")


@pytest.mark.parametrize("case", V["invalid_checkpoints"], ids=[c["desc"] for c in V["invalid_checkpoints"]])
def test_invalid_checkpoint_bodies(case: dict[str, str]) -> None:
    with pytest.raises(CheckpointError) as info:
        Checkpoint.parse(case["body"].encode())
    assert info.value.code == "audit.checkpoint_invalid"


@pytest.mark.parametrize(
    "args",
    [
        ("", 1, EMPTY_ROOT, ()),
        ("a\nb", 1, EMPTY_ROOT, ()),
        ("o", -1, EMPTY_ROOT, ()),
        ("o", 1 << 64, EMPTY_ROOT, ()),
        ("o", 1, EMPTY_ROOT[:31], ()),
        ("o", 1, EMPTY_ROOT, ("",)),
        ("o", 1, EMPTY_ROOT, ("x\ty",)),
        ("o\ud800", 1, EMPTY_ROOT, ()),
    ],
)
def test_checkpoint_refuses_bad_fields(args: tuple[Any, ...]) -> None:
    with pytest.raises(CheckpointError):
        Checkpoint(*args)


def test_checkpoint_largest_size() -> None:
    body = b"o\n18446744073709551615\n" + base64.b64encode(EMPTY_ROOT) + b"\n"
    assert Checkpoint.parse(body).size == (1 << 64) - 1


# --- keys ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["log_key", "witness_key"])
def test_key_ids_and_vkeys(key: str) -> None:
    k = V[key]
    public = bytes.fromhex(k["public_key"])
    assert Ed25519Signer(bytes.fromhex(k["seed"])).public_raw == public
    assert note_key_id(k["name"], public, k["signature_type"]).hex() == k["key_id"]
    assert format_vkey(k["name"], public, k["signature_type"]) == k["vkey"]
    verifier = parse_vkey(k["vkey"])
    assert (verifier.name, verifier.key_id.hex()) == (k["name"], k["key_id"])
    assert isinstance(
        verifier, CosignatureVerifier if k["signature_type"] == SIG_COSIGNATURE_V1 else Ed25519NoteVerifier
    )


def test_key_id_definition() -> None:
    import hashlib

    pub = LOG.public_raw
    assert note_key_id("n", pub) == hashlib.sha256(b"n\n\x01" + pub).digest()[:4]
    assert note_key_id("n", pub, SIG_COSIGNATURE_V1) == hashlib.sha256(b"n\n\x04" + pub).digest()[:4]
    assert note_key_id("n", pub) != note_key_id("n", pub, SIG_COSIGNATURE_V1)


@pytest.mark.parametrize(
    "vkey",
    [
        "",
        "PeterNeumann",
        "PeterNeumann+c74f20a3",
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong id
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # upper-case hex
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",  # bad base64
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # unknown type (from note_test.go)
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",  # long key (note_test.go)
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "Peter\ud800+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # unencodable name
    ],
)
def test_bad_vkeys(vkey: str) -> None:
    with pytest.raises(NoteError):
        parse_vkey(vkey)


# --- our vectors: sign, open, cosign -----------------------------------------------------------------


def test_sign_note_matches_vector() -> None:
    assert sign_note(BODY, LOG_NAME, LOG) == NOTE
    assert NOTE.startswith(BODY + f"\n{EM} {LOG_NAME} ".encode())
    opened = open_note(NOTE, [LOG_V])
    assert (opened.body, opened.names) == (BODY, (LOG_NAME,))


def test_cosignature_matches_vector() -> None:
    c = V["cosignature"]
    assert cosignature_message(BODY, TS) == c["message"].encode()
    assert c["message"].startswith(f"cosignature/v1\ntime {TS}\n")
    line = cosign(BODY, WITNESS_NAME, WITNESS, TS)
    assert line == c["line"].encode()
    raw = base64.b64decode(line.decode().split(" ")[-1])
    assert len(raw) == 4 + 8 + 64
    assert raw[:4] == note_key_id(WITNESS_NAME, WITNESS.public_raw, SIG_COSIGNATURE_V1)
    assert int.from_bytes(raw[4:12], "big") == TS
    assert verify_cosignature(BODY, line, WITNESS_NAME, WITNESS.public_raw) == TS
    assert append_signature(NOTE, line) == COSIGNED


def test_open_cosigned_note() -> None:
    both = open_note(COSIGNED, [LOG_V, WITNESS_V])
    assert both.names == (LOG_NAME, WITNESS_NAME)
    assert cosignature_timestamp(both.signatures[1]) == TS
    assert open_note(COSIGNED, [WITNESS_V]).names == (WITNESS_NAME,)
    assert open_note(COSIGNED, [LOG_V]).names == (LOG_NAME,)


def test_cosignature_refusals() -> None:
    line = V["cosignature"]["line"].encode()
    other = Ed25519Signer(b"\x07" * 32)
    with pytest.raises(NoteSignatureError):  # a different witness key
        verify_cosignature(BODY, line, WITNESS_NAME, other.public_raw)
    with pytest.raises(NoteSignatureError):  # a different name for the same key
        verify_cosignature(BODY, line, "someone.example/else", WITNESS.public_raw)
    with pytest.raises(NoteSignatureError):  # another checkpoint
        verify_cosignature(BODY.replace(b"\n8\n", b"\n9\n"), line, WITNESS_NAME, WITNESS.public_raw)
    # The log key (type 0x01 id) must not pass for the witness key (type 0x04 id) or vice versa.
    forged = sign_note(BODY, WITNESS_NAME, WITNESS)
    with pytest.raises(NoteSignatureError):
        open_note(forged, [WITNESS_V])
    with pytest.raises(NoteError):
        verify_cosignature(BODY, line + line, WITNESS_NAME, WITNESS.public_raw)
    with pytest.raises(NoteError):
        verify_cosignature(BODY, line[:-1], WITNESS_NAME, WITNESS.public_raw)


def test_cosign_refuses_bad_input() -> None:
    with pytest.raises(CheckpointError):
        cosign(b"not a checkpoint\n", WITNESS_NAME, WITNESS, TS)
    with pytest.raises(NoteError):
        cosign(BODY, WITNESS_NAME, WITNESS, 1 << 63)
    with pytest.raises(NoteError):
        cosign(BODY, WITNESS_NAME, WITNESS, -1)
    with pytest.raises(NoteError):
        cosign(BODY, "two words", WITNESS, TS)


def test_cosignature_with_timestamp_beyond_2_63_does_not_verify() -> None:
    message = cosignature_message(BODY, 1 << 63)
    sig = NoteSignature(WITNESS_NAME, WITNESS_V.key_id, (1 << 63).to_bytes(8, "big") + WITNESS.sign(message))
    with pytest.raises(NoteSignatureError):
        open_note(NOTE + sig.line(), [WITNESS_V])


def test_sign_note_refusals() -> None:
    with pytest.raises(NoteError):
        sign_note(b"no newline", LOG_NAME, LOG)
    with pytest.raises(NoteError):
        sign_note(b"tab\there\n", LOG_NAME, LOG)
    for name in ("", "a b", "a+b", "a\u00a0b", "a\u3000b", "a\ud800"):
        with pytest.raises(NoteError):
            sign_note(BODY, name, LOG)

    class Broken:
        public_raw = LOG.public_raw

        def sign(self, message: bytes) -> bytes:
            return b"short"

    with pytest.raises(ValueError):
        sign_note(BODY, LOG_NAME, Broken())


def test_notes_round_trip_with_blank_lines_in_body() -> None:
    for body in (b"\n", b"a\n\n", b"a\n\n\nb\n", "中文 body\n".encode()):
        assert open_note(sign_note(body, LOG_NAME, LOG), [LOG_V]).body == body


def test_append_signature_refusals() -> None:
    line = V["cosignature"]["line"].encode()
    with pytest.raises(NoteError):
        append_signature(BODY, line)
    with pytest.raises(NoteError):
        append_signature(NOTE, b"not a signature line\n")
    with pytest.raises(NoteError):
        append_signature(NOTE, line + line)
    full = NOTE + line * 99
    with pytest.raises(NoteError):
        append_signature(full, line)


def test_every_known_signature_must_verify() -> None:
    good = NOTE.split(b"\n\n")[1]
    bad = NoteSignature(LOG_NAME, LOG_V.key_id, b"\x00" * 64).line()
    assert open_note(NOTE + good, [LOG_V]).names == (LOG_NAME,)  # an identical repeat counts once
    with pytest.raises(NoteSignatureError):  # a second, different signature by the same key is checked
        open_note(NOTE + bad, [LOG_V])


def test_ambiguous_verifiers_are_refused() -> None:
    with pytest.raises(NoteError):
        open_note(NOTE, [LOG_V, Ed25519NoteVerifier(LOG_NAME, LOG.public_raw)])


# --- interoperability vectors ------------------------------------------------------------------------

INTEROP = V["interop"]


def test_go_sumdb_note_sign_is_byte_identical() -> None:
    g = INTEROP["go_sign"]
    peter = Ed25519Signer(bytes.fromhex(g["seed"]))
    assert format_vkey(g["name"], peter.public_raw, SIG_ED25519) == g["vkey"]
    assert sign_note(g["text"].encode(), g["name"], peter) == g["note"].encode()
    assert open_note(g["note"].encode(), [parse_vkey(g["vkey"])]).body == g["text"].encode()


def test_go_sumdb_note_open_with_two_keys() -> None:
    g = INTEROP["go_open_two_keys"]
    peter, enoch = (parse_vkey(k) for k in g["vkeys"])
    note = g["note"].encode()
    assert open_note(note, [peter]).names == ("PeterNeumann",)
    assert open_note(note, [enoch]).names == ("EnochRoot",)
    assert open_note(note, [peter, enoch]).names == ("PeterNeumann", "EnochRoot")
    with pytest.raises(NoteSignatureError):
        open_note(note, [])


def test_c2sp_signed_note_example() -> None:
    c = INTEROP["c2sp_signed_note_example"]
    assert open_note(c["note"].encode(), [parse_vkey(c["vkey"])]).body == b"This is an example message.\n"


def test_real_sum_golang_org_checkpoints() -> None:
    s = INTEROP["sum_golang_org"]
    verifier = parse_vkey(s["vkey"])
    for text in s["notes"]:
        opened = open_note(text.encode(), [verifier])
        checkpoint = Checkpoint.parse(opened.body)
        assert checkpoint.origin == "go.sum database tree"
        assert checkpoint.body() == opened.body


def test_real_witness_cosignature() -> None:
    w = INTEROP["witness_cosignature"]
    log, witness = parse_vkey(w["log_vkey"]), parse_vkey(w["witness_vkey"])
    assert isinstance(witness, CosignatureVerifier)
    note, body = w["note"].encode(), w["body"].encode()
    # Four other signatures (an RFC 6962 STH signature under the log's own name, three other
    # witnesses) are from unknown keys and must be ignored.
    opened = open_note(note, [log, witness])
    assert opened.body == body
    assert opened.names == (log.name, witness.name)
    assert cosignature_timestamp(opened.signatures[1]) == w["witness_timestamp"]
    assert verify_cosignature(body, w["witness_line"].encode(), witness.name, witness.public_raw) == 1779573024
    assert Checkpoint.parse(body).size == 1432088532


@pytest.mark.parametrize("case", V["invalid_notes"], ids=[c["desc"] for c in V["invalid_notes"]])
def test_invalid_notes(case: dict[str, str]) -> None:
    text = bytes.fromhex(case["note_hex"]) if "note_hex" in case else case["note"].encode()
    with pytest.raises(NoteError) as info:
        open_note(text, [parse_vkey(INTEROP["go_sign"]["vkey"])])
    assert info.value.code == case["error"]


# --- properties --------------------------------------------------------------------------------------

VERIFIERS = [LOG_V, WITNESS_V, parse_vkey(INTEROP["go_sign"]["vkey"])]
line_text = st.text(st.characters(min_codepoint=0x20, blacklist_categories=("Cs",)), min_size=1, max_size=30)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_garbage_only_raises_note_error(data: bytes) -> None:
    for call in (
        lambda: open_note(data, VERIFIERS),
        lambda: Checkpoint.parse(data),
        lambda: append_signature(NOTE, data),
        lambda: verify_cosignature(BODY, data, WITNESS_NAME, WITNESS.public_raw),
        lambda: parse_vkey(data.decode("utf-8", "surrogateescape")),
    ):
        with contextlib.suppress(NoteError):
            call()


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_mutated_notes_only_raise_note_error_and_never_change_the_body(data: st.DataObject) -> None:
    text = bytearray(COSIGNED)
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        pos = data.draw(st.integers(0, len(text) - 1), label="pos")
        kind = data.draw(st.sampled_from(["flip", "delete", "insert"]), label="kind")
        if kind == "flip":
            text[pos] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        elif kind == "delete":
            del text[pos]
        else:
            text.insert(pos, data.draw(st.integers(0, 255), label="byte"))
    try:
        opened = open_note(bytes(text), [LOG_V, WITNESS_V])
    except NoteError:
        return
    assert opened.body == BODY


@settings(max_examples=200, deadline=None)
@given(
    origin=line_text,
    size=st.integers(0, (1 << 64) - 1),
    root=st.binary(min_size=32, max_size=32),
    extensions=st.lists(line_text, max_size=3),
)
def test_checkpoint_parse_inverts_body(origin: str, size: int, root: bytes, extensions: list[str]) -> None:
    checkpoint = Checkpoint(origin, size, root, tuple(extensions))
    assert Checkpoint.parse(checkpoint.body()) == checkpoint
    note = sign_note(checkpoint.body(), LOG_NAME, LOG)
    assert Checkpoint.parse(open_note(note, [LOG_V]).body) == checkpoint
