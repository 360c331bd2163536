"""The key store on real files: modes, create/load, refusals, passphrase change, peer bundles."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from pathlib import Path

import pytest

from customs_gateway.core.bundle import KeyRecord, SignedBundle, sign_bundle
from customs_gateway.core.errors import ConfigError, Conflict, GatewayError, KeyFileError, KeyStateError
from customs_gateway.core.keys import ALG_X25519, SUITE_HYBRID, SUITE_X25519, DecryptionKey, SigningKey
from customs_gateway.service.tls import cert_fingerprint
from customs_gateway.startup.keystore import Identity, KeyStore, import_peer_bundle, load_peer, read_signed_bundle

FAST = {"opslimit": 1, "memlimit": 8192}
PASS = b"correct horse"
NOW = dt.datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
HOSTS = ["127.0.0.1", "localhost", "gw.us-cbp.example", "::1"]


def new_store(tmp_path: Path, name: str = "US-CBP") -> tuple[KeyStore, Identity]:
    store = KeyStore(tmp_path / name / "keys", tmp_path / name / "tls")
    return store, store.create(name, PASS, hosts=HOSTS, now=NOW, **FAST)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_create_writes_private_files_0600_and_public_files_0644(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store, ident = new_store(tmp_path)
    finally:
        os.umask(old)
    key_files = sorted(store.keys_dir.glob("*.key"))
    assert ident.store_key is not None
    held = {*ident.signing, *ident.decryption, ident.witness.kid, ident.store_key.kid}
    assert {p.stem for p in key_files} == held
    assert len(key_files) == 5  # signing, two encryption suites, witness, store
    for p in [*key_files, store.tls_key_path]:
        assert mode(p) == 0o600, p
    assert mode(store.bundle_path) == 0o644 and mode(store.cert_path) == 0o644
    assert mode(store.keys_dir) == 0o700 and mode(store.tls_dir) == 0o700
    assert not list(store.keys_dir.glob(".*")) and not list(store.tls_dir.glob(".*"))  # no temporaries left
    assert store.permission_problems() == []
    # the TLS key is an argon2id key file, never a PEM
    tls_key = json.loads(store.tls_key_path.read_bytes())
    assert (tls_key["use"], tls_key["alg"], tls_key["kdf"]["name"]) == ("tls", "ecdsa-p256", "argon2id")
    assert b"PRIVATE KEY" not in store.tls_key_path.read_bytes()


def test_created_bundle_announces_every_key_and_both_suites(tmp_path: Path) -> None:
    store, ident = new_store(tmp_path)
    bundle = read_signed_bundle(store.bundle_path).verify_self_signed()
    assert bundle.identity == ident.name == "US-CBP"
    assert bundle.suites == (SUITE_HYBRID, SUITE_X25519)
    uses = sorted((r.use, r.alg) for r in bundle.keys)
    assert uses == [
        ("encryption", "mlkem768-x25519"),
        ("encryption", "x25519"),
        ("signing", "ed25519"),
        ("witness", "ed25519"),
    ]
    for r in bundle.keys:
        assert r.not_before == NOW.replace(microsecond=0) and (r.not_after - r.not_before).days == 730
    assert bundle.tls_certificate.encode() == store.cert_path.read_bytes() == ident.tls_cert_pem
    assert ident.bundle.to_bytes() == store.bundle_path.read_bytes()


def test_create_then_load_round_trip(tmp_path: Path) -> None:
    store, created = new_store(tmp_path)
    loaded = store.load(PASS)
    assert loaded.name == created.name
    assert {k: v.public_raw for k, v in loaded.signing.items()} == {k: v.public_raw for k, v in created.signing.items()}
    assert {k: v.public.raw for k, v in loaded.decryption.items()} == {
        k: v.public.raw for k, v in created.decryption.items()
    }
    assert loaded.witness.kid == created.witness.kid
    assert loaded.tls_key_pem == created.tls_key_pem and loaded.tls_cert_pem == created.tls_cert_pem
    assert loaded.bundle == created.bundle
    assert loaded.store_key == created.store_key is not None
    # what the gateway asks of an identity
    at = NOW + dt.timedelta(days=1)
    signing = loaded.active_signing_key(at)
    assert loaded.verify_key(signing.kid, at).raw == signing.public_raw
    for kid in loaded.decryption:
        assert loaded.decryption_key(kid).kid == kid
    with pytest.raises(KeyStateError) as ei:
        loaded.decryption_key("00" * 16)
    assert (ei.value.code, ei.value.field) == ("key.unknown", "header.enc_kid")
    assert loaded.public_keys().encryption_key(at).alg == "mlkem768-x25519"
    with pytest.raises(KeyStateError) as ei:
        loaded.active_signing_key(NOW + dt.timedelta(days=731))
    assert ei.value.code == "key.no_active_signing"
    # secrets stay out of reprs
    text = repr(loaded)
    assert "PRIVATE KEY" not in text and signing.seed.hex() not in text


def test_an_identity_without_a_store_key_gets_one_and_keeps_it(tmp_path: Path) -> None:
    store, created = new_store(tmp_path)
    assert created.store_key is not None
    (store.keys_dir / f"{created.store_key.kid}.key").unlink()  # as made before store keys existed
    first = store.load(PASS).store_key
    assert first is not None and first != created.store_key
    path = store.keys_dir / f"{first.kid}.key"
    assert mode(path) == 0o600 and PASS not in path.read_bytes()
    assert store.load(PASS).store_key == first  # written once, then read back
    store.change_passphrase(PASS, b"new passphrase", **FAST)  # re-sealed with the others
    assert store.load(b"new passphrase").store_key == first


def test_two_store_keys_are_refused(tmp_path: Path) -> None:
    store, _ = new_store(tmp_path / "a")
    other, theirs = new_store(tmp_path / "b")
    assert theirs.store_key is not None
    name = f"{theirs.store_key.kid}.key"
    (store.keys_dir / name).write_bytes((other.keys_dir / name).read_bytes())
    with pytest.raises(KeyFileError) as ei:
        store.load(PASS)
    assert ei.value.code == "keyfile.store_key_ambiguous" and str(store.keys_dir) in ei.value.detail


def test_wrong_passphrase_names_the_file_not_the_secret(tmp_path: Path) -> None:
    store, _ = new_store(tmp_path)
    with pytest.raises(KeyFileError) as ei:
        store.load(b"wrong horse")
    e = ei.value
    assert e.code == "keyfile.passphrase_or_tampered"
    assert str(store.keys_dir) in e.detail or str(store.tls_dir) in e.detail
    assert "wrong horse" not in e.detail and "correct horse" not in e.detail


def test_tampered_key_file_is_refused(tmp_path: Path) -> None:
    store, ident = new_store(tmp_path)
    path = store.keys_dir / f"{ident.witness.kid}.key"
    obj = json.loads(path.read_bytes())
    obj["use"] = "signing"
    path.write_text(json.dumps(obj))
    with pytest.raises(KeyFileError) as ei:
        store.load(PASS)
    assert str(path) in ei.value.detail


def test_key_file_renamed_to_another_kid_is_refused(tmp_path: Path) -> None:
    store, ident = new_store(tmp_path)
    src = store.keys_dir / f"{ident.witness.kid}.key"
    src.rename(store.keys_dir / f"{'ab' * 16}.key")
    with pytest.raises(KeyFileError) as ei:
        store.load(PASS)
    assert ei.value.code == "keyfile.kid_mismatch"


def test_certificate_swapped_for_another_is_refused(tmp_path: Path) -> None:
    store, _ = new_store(tmp_path)
    other, _ = new_store(tmp_path, "CN-GACC")
    store.cert_path.write_bytes(other.cert_path.read_bytes())
    with pytest.raises(KeyFileError) as ei:
        store.load(PASS)
    assert ei.value.code == "keyfile.tls_mismatch"


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    store, _ = new_store(tmp_path)
    before = {p: p.read_bytes() for p in store.keys_dir.iterdir()}
    with pytest.raises(Conflict) as ei:
        store.create("US-CBP", PASS, hosts=HOSTS, now=NOW, **FAST)
    assert ei.value.code == "keystore.exists"
    assert {p: p.read_bytes() for p in store.keys_dir.iterdir()} == before
    # a lone leftover key file is enough to refuse
    lone = KeyStore(tmp_path / "lone" / "keys", tmp_path / "lone" / "tls")
    lone.keys_dir.mkdir(parents=True)
    (lone.keys_dir / f"{'cd' * 16}.key").write_text("{}")
    assert lone.exists()
    with pytest.raises(Conflict):
        lone.create("US-CBP", PASS, hosts=HOSTS, now=NOW, **FAST)


@pytest.mark.parametrize("identity", ["", "US CBP", "../US", "US/CBP", "x" * 65])
def test_refuses_bad_identity(tmp_path: Path, identity: str) -> None:
    with pytest.raises(ConfigError):
        KeyStore(tmp_path / "k", tmp_path / "t").create(identity, PASS, hosts=HOSTS, now=NOW, **FAST)
    assert not (tmp_path / "k").exists()


def test_change_passphrase(tmp_path: Path) -> None:
    store, created = new_store(tmp_path)
    with pytest.raises(KeyFileError):
        store.change_passphrase(b"not it", b"new passphrase", **FAST)
    assert store.load(PASS).witness.kid == created.witness.kid  # nothing changed
    before = {p.name: p.read_bytes() for p in store.keys_dir.glob("*.key")}
    store.change_passphrase(PASS, b"new passphrase", **FAST)
    after = {p.name: p.read_bytes() for p in store.keys_dir.glob("*.key")}
    assert before.keys() == after.keys() and all(before[n] != after[n] for n in before)
    with pytest.raises(KeyFileError):
        store.load(PASS)
    assert store.load(b"new passphrase").witness.kid == created.witness.kid
    for p in [*store.keys_dir.glob("*.key"), store.tls_key_path]:
        assert mode(p) == 0o600
    assert not list(store.keys_dir.glob(".*")) and not list(store.tls_dir.glob(".*"))


def test_interrupted_passphrase_change_rolls_forward(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, created = new_store(tmp_path)
    calls = {"n": 0}
    real = KeyStore._recover

    def crash_after_commit(self: KeyStore) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the journal is written; die before renaming anything
            raise KeyboardInterrupt
        real(self)

    monkeypatch.setattr(KeyStore, "_recover", crash_after_commit)
    with pytest.raises(KeyboardInterrupt):
        store.change_passphrase(PASS, b"new passphrase", **FAST)
    monkeypatch.setattr(KeyStore, "_recover", real)
    assert (store.keys_dir / ".passphrase-change.json").exists()
    assert store.load(b"new passphrase").witness.kid == created.witness.kid  # load finished the change
    assert not (store.keys_dir / ".passphrase-change.json").exists()
    with pytest.raises(KeyFileError):
        store.load(PASS)


def test_add_private_key_and_save_bundle(tmp_path: Path) -> None:
    store, ident = new_store(tmp_path)
    new_sign = SigningKey(bytes(range(32)))
    with pytest.raises(KeyFileError):
        store.add_private_key(new_sign, "signing", b"other passphrase", **FAST)
    with pytest.raises(KeyStateError):
        store.add_private_key(new_sign, "encryption", PASS, **FAST)
    store.add_private_key(new_sign, "signing", PASS, **FAST)
    new_enc = DecryptionKey(ALG_X25519, bytes(range(1, 33)))
    store.add_private_key(new_enc, "encryption", PASS, **FAST)
    assert mode(store.keys_dir / f"{new_sign.kid}.key") == 0o600
    at = NOW + dt.timedelta(days=1)
    bundle = ident.bundle.bundle
    rec = KeyRecord(new_sign.kid, "signing", "ed25519", new_sign.public_raw, at, at + dt.timedelta(days=365))
    old_sign = ident.signing[next(iter(ident.signing))]
    store.save_bundle(sign_bundle(bundle.with_keys((*bundle.keys, rec), at), [old_sign, new_sign]))
    loaded = store.load(PASS)
    assert loaded.bundle.bundle.serial == 2
    assert loaded.active_signing_key(at + dt.timedelta(seconds=1)).kid == new_sign.kid
    assert loaded.decryption_key(new_enc.kid).kid == new_enc.kid
    assert set(loaded.signing) == {old_sign.kid, new_sign.kid}
    # a bundle that does not verify, or is someone else's, is refused
    with pytest.raises(GatewayError):
        store.save_bundle(SignedBundle(loaded.bundle.bundle_bytes, ((old_sign.kid, bytes(64)),)))
    _, other = new_store(tmp_path, "CN-GACC")
    with pytest.raises(Conflict):
        store.save_bundle(other.bundle)


def test_import_peer_bundle(tmp_path: Path) -> None:
    _, us = new_store(tmp_path, "US-CBP")
    _, cn = new_store(tmp_path, "CN-GACC")
    dest = tmp_path / "US-CBP" / "peers" / "CN-GACC.bundle.json"
    signed = import_peer_bundle(cn.bundle.to_bytes(), dest, own_identity="US-CBP")
    assert signed == cn.bundle and dest.read_bytes() == cn.bundle.to_bytes()
    peer = load_peer(dest)
    assert peer.identity == "CN-GACC"
    assert cert_fingerprint(peer.bundle.tls_certificate.encode()) == cert_fingerprint(cn.tls_cert_pem)
    with pytest.raises(Conflict) as ei:
        import_peer_bundle(us.bundle.to_bytes(), tmp_path / "x.json", own_identity="US-CBP")
    assert ei.value.code == "bundle.own_identity"
    with pytest.raises(Conflict) as ei:
        import_peer_bundle(us.bundle.to_bytes(), dest)  # another identity at the same path
    assert ei.value.code == "bundle.identity_changed"
    assert import_peer_bundle(us.bundle.to_bytes(), dest, replace=True).bundle.identity == "US-CBP"
    # a tampered bundle never reaches the disk
    bad = bytearray(cn.bundle.to_bytes())
    bad[40] ^= 1
    with pytest.raises(GatewayError):
        import_peer_bundle(bytes(bad), tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()


def test_import_refuses_an_older_serial(tmp_path: Path) -> None:
    _, cn = new_store(tmp_path, "CN-GACC")
    dest = tmp_path / "peer.json"
    signer = next(iter(cn.signing.values()))
    b = cn.bundle.bundle
    newer = sign_bundle(b.with_keys(b.keys, NOW + dt.timedelta(hours=1)), [signer])
    import_peer_bundle(newer.to_bytes(), dest)
    with pytest.raises(Conflict) as ei:
        import_peer_bundle(cn.bundle.to_bytes(), dest)
    assert ei.value.code == "bundle.rollback"
    assert load_peer(dest).bundle.serial == 2


def test_missing_bundle_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        load_peer(tmp_path / "nope.json")
    assert "nope.json" in ei.value.detail
    (tmp_path / "junk.json").write_text("{")
    with pytest.raises(GatewayError) as ei2:
        load_peer(tmp_path / "junk.json")
    assert "junk.json" in ei2.value.detail
