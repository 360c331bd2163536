"""`init` and `keys export / import-peer / list` through `customs_gateway.cli.main.main`.

Uses the hidden, test-only `init --kdf-fast` (argon2id at its minimum cost) to stay fast.
"""

from __future__ import annotations

import json
import stat
import tomllib
from pathlib import Path

import pytest

from customs_gateway.cli.main import main
from customs_gateway.startup.config import load_config
from customs_gateway.startup.keystore import KeyStore, load_peer

PASS = "cli test passphrase"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUSTOMS_GATEWAY_PASSPHRASE", PASS)
    monkeypatch.delenv("CUSTOMS_GATEWAY_CONFIG", raising=False)


def init(home: Path, identity: str, *extra: str) -> int:
    return main(["init", "--identity", identity, "--dir", str(home), "--kdf-fast", *extra])


def test_exchange_bundles_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    us, cn = tmp_path / "us", tmp_path / "cn"
    assert init(us, "US-CBP", "--host", "127.0.0.1", "--host", "gw.us.example", "--peer-port", "9443") == 0
    out = capsys.readouterr()
    assert "Bundle fingerprint" in out.err and "Next steps" in out.err and PASS not in out.err + out.out
    assert init(cn, "CN-GACC", "--peer-identity", "US-CBP") == 0
    capsys.readouterr()

    # layout and modes
    for home in (us, cn):
        for d in ("keys", "tls", "data"):
            assert stat.S_IMODE((home / d).stat().st_mode) == 0o700
        cfg = tomllib.loads((home / "gateway.toml").read_text())
        assert (cfg["keys_dir"], cfg["tls_dir"], cfg["store"]["path"]) == ("keys", "tls", "data/gateway.db")
    assert load_config(us / "gateway.toml", env={}).peer_api.port == 9443
    assert load_config(cn / "gateway.toml", env={}).peer.bundle == "peers/US-CBP.bundle.json"

    # export: stdout or a file, fingerprint on stderr
    assert main(["keys", "export", "--config", str(us / "gateway.toml")]) == 0
    out = capsys.readouterr()
    exported = out.out.encode()
    assert exported == (us / "keys" / "bundle.json").read_bytes()
    fingerprint = next(line for line in out.err.splitlines() if line.startswith("Fingerprint:")).split(": ", 1)[1]
    bundle_file = tmp_path / "US-CBP.bundle.json"
    assert main(["keys", "export", "--config", str(us / "gateway.toml"), "--out", str(bundle_file)]) == 0
    assert bundle_file.read_bytes() == exported
    capsys.readouterr()

    # import on the other side
    assert main(["keys", "import-peer", "--config", str(cn / "gateway.toml"), str(bundle_file), "--yes"]) == 0
    out = capsys.readouterr()
    assert "US-CBP" in out.err and fingerprint in out.err
    peer = load_peer(cn / "peers" / "US-CBP.bundle.json")
    assert peer.identity == "US-CBP"
    assert peer.bundle.endpoint == "https://127.0.0.1:9443"

    # list --json: own keys by default, the peer's with --peer; no passphrase needed
    assert main(["keys", "list", "--config", str(cn / "gateway.toml"), "--json", "--peer"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["identity"] == "US-CBP" and listed["fingerprint"] == fingerprint
    assert sorted(k["use"] for k in listed["keys"]) == ["encryption", "encryption", "signing", "witness"]
    assert {k["kid"] for k in listed["keys"]} == {r.kid for r in peer.records()}
    for k in listed["keys"]:
        assert set(k) >= {"kid", "use", "alg", "state", "not_before", "not_after", "fingerprint"}
        assert k["fingerprint"].startswith(k["kid"])  # kid = first 16 bytes of the SHA-256
    assert main(["keys", "list", "--config", str(us / "gateway.toml"), "--json"]) == 0
    own = json.loads(capsys.readouterr().out)
    assert own["identity"] == "US-CBP" and own["keys"] == listed["keys"]
    assert main(["keys", "list", "--config", str(cn / "gateway.toml")]) == 0
    table = capsys.readouterr().out
    assert "CN-GACC" in table and "witness" in table

    # the keys really open with the passphrase
    ident = KeyStore(us / "keys", us / "tls").load(PASS.encode())
    assert ident.name == "US-CBP"


def test_init_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "us"
    assert init(home, "US-CBP") == 0
    before = (home / "keys" / "bundle.json").read_bytes()
    capsys.readouterr()
    assert init(home, "US-CBP") == 3
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (home / "keys" / "bundle.json").read_bytes() == before


def test_init_refuses_a_bad_identity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert init(tmp_path / "x", "US CBP") == 2
    assert "identity" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_import_refuses_our_own_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "us"
    assert init(home, "US-CBP") == 0
    code = main(
        ["keys", "import-peer", "--config", str(home / "gateway.toml"), str(home / "keys" / "bundle.json"), "--yes"]
    )
    assert code == 3
    assert "own" in capsys.readouterr().err
    assert not (home / "peers").exists()


def test_import_refuses_a_tampered_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    us, cn = tmp_path / "us", tmp_path / "cn"
    assert init(us, "US-CBP") == 0 and init(cn, "CN-GACC") == 0
    raw = json.loads((us / "keys" / "bundle.json").read_bytes())
    raw["signatures"][0]["signature"] = "A" * 86
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(raw))
    capsys.readouterr()
    assert main(["keys", "import-peer", "--config", str(cn / "gateway.toml"), str(bad), "--yes"]) == 3
    assert "signature" in capsys.readouterr().err
    assert not (cn / "peers").exists()


def test_import_without_yes_needs_a_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    us, cn = tmp_path / "us", tmp_path / "cn"
    assert init(us, "US-CBP") == 0 and init(cn, "CN-GACC") == 0
    code = main(["keys", "import-peer", "--config", str(cn / "gateway.toml"), str(us / "keys" / "bundle.json")])
    assert code == 2
    assert not (cn / "peers").exists()


def test_config_from_environment_and_passphrase_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CUSTOMS_GATEWAY_PASSPHRASE")
    pw = tmp_path / "pw"
    pw.write_text("from a file\n")
    home = tmp_path / "us"
    assert init(home, "US-CBP", "--passphrase-file", str(pw)) == 0
    assert KeyStore(home / "keys", home / "tls").load(b"from a file").name == "US-CBP"
    monkeypatch.setenv("CUSTOMS_GATEWAY_CONFIG", str(home / "gateway.toml"))
    capsys.readouterr()
    assert main(["keys", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["identity"] == "US-CBP"


def test_a_refused_peer_bundle_is_one_line_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A CLI failure is one line with the rule's code and the field it is about, as the client
    prints an API problem's."""
    us, cn = tmp_path / "us", tmp_path / "cn"
    assert init(us, "US-CBP") == 0
    assert init(cn, "CN-GACC", "--peer-identity", "US-CBP") == 0
    exported = (us / "keys" / "bundle.json").read_bytes()
    forged = tmp_path / "twice.bundle.json"
    forged.write_bytes(exported.replace(b'{"bundle":', b'{"bundle":"e30","bundle":', 1))
    capsys.readouterr()
    assert main(["keys", "import-peer", "--config", str(cn / "gateway.toml"), str(forged)]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("customs-gateway: schema.duplicate_key [signed_bundle.bundle]: "), err
    assert not (cn / "peers" / "US-CBP.bundle.json").exists()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ((b'"v":1', b'"v":2'), "signed_bundle.v"),
        ((b'"signatures":[', b'"signatures":[7,'), "signed_bundle.signatures[0]"),
    ],
)
def test_a_malformed_peer_bundle_names_the_field_under_signed_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: tuple[bytes, bytes], field: str
) -> None:
    # The field is named as it sits in the file (`signed_bundle.v`), not as a bare `v`.
    us, cn = tmp_path / "us", tmp_path / "cn"
    assert init(us, "US-CBP") == 0
    assert init(cn, "CN-GACC", "--peer-identity", "US-CBP") == 0
    exported = (us / "keys" / "bundle.json").read_bytes()
    assert exported.count(change[0]) == 1
    bad = tmp_path / "bad.bundle.json"
    bad.write_bytes(exported.replace(*change))
    capsys.readouterr()
    assert main(["keys", "import-peer", "--config", str(cn / "gateway.toml"), str(bad)]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"customs-gateway: decode.malformed [{field}]: "), err
