"""G8 with real processes: no key, token, passphrase or message body in anything the gateways log.

Two gateways made by `init` (real key files, real modes) log JSON at debug level to files while
they exchange every sample message both ways, acknowledge one, refuse bad input, issue a token
over the API and rotate both signing and encryption keys. Then every byte they wrote (serve's
stdout and stderr, the CLI's stderr) is searched for every private key seed (hex, base64,
base64url, also of a prefix), the TLS private key (PEM body lines and DER), every bearer token
and its secret part, the passphrase, and distinctive strings of every message body (raw and
inside decoded JSON log lines, so escaping cannot hide them). The database files must hold no
key, token secret or passphrase either. Private key files and the database files must be mode
0600, key directories 0700.
"""

from __future__ import annotations

import base64
import json
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from customs_gateway.service.pair import free_port
from customs_gateway.startup.keystore import KeyStore

from .drill import CN, US, GatewayProcess, Home, ProcessPair, both, cli, drill_env, http, sample, wait_until

PASSPHRASE = "secrets-drill-passphrase-CANARY-5d1e"
CANARY = "CANARY-7f3a9c"  # put into bodies we send, so a leak of our own text is found too
TYPES = ("seizure-share", "port-visit-invitation", "port-visit-reply", "seminar-notice")


@dataclass
class Setup:
    root: Path
    env: dict[str, str]
    homes: dict[str, Home]
    procs: dict[str, GatewayProcess]
    tokens: dict[str, dict[str, str]]
    cli_stderr: list[str] = field(default_factory=list)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        res = cli(*args, env=self.env)
        self.cli_stderr.append(res.stderr)
        assert res.returncode == 0, f"{args}: {res.stdout}{res.stderr}"
        return res

    def call(self, name: str, method: str, path: str, role: str = "agency", body: Any = None) -> tuple[int, Any]:
        status, _, res = http(method, self.homes[name].local_url + path, self.tokens[name][role], body)
        return status, res


@pytest.fixture
def initialised(tmp_path: Path) -> Iterator[Setup]:
    env = drill_env() | {
        "CUSTOMS_GATEWAY_PASSPHRASE": PASSPHRASE,
        "CUSTOMS_GATEWAY_LOG_FORMAT": "json",
        "CUSTOMS_GATEWAY_LOG_LEVEL": "debug",
        "CUSTOMS_GATEWAY_DELIVERY__RETRY_BASE_SECONDS": "0.05",
        "CUSTOMS_GATEWAY_DELIVERY__RETRY_CAP_SECONDS": "0.5",
        "CUSTOMS_GATEWAY_AUDIT__CHECKPOINT_EVERY_SECONDS": "1",
    }
    ports = {n: (free_port(), free_port()) for n in (US, CN)}
    s = Setup(tmp_path, env, {}, {}, {})
    pairs = ((US, CN), (CN, US))
    # Each step runs for both gateways at once (they are independent); the steps stay in order.
    both(
        lambda me, other: s.run(
            "init", "--identity", me, "--dir", str(tmp_path / me),
            "--local-port", str(ports[me][0]), "--peer-port", str(ports[me][1]),
            "--peer-identity", other, "--peer-url", f"https://127.0.0.1:{ports[other][1]}", "--kdf-fast",
        ),
        pairs,
    )  # fmt: skip
    for me in (US, CN):
        s.homes[me] = Home(me, tmp_path / me, tmp_path / me / "gateway.toml", *ports[me])
    both(
        lambda me, _: s.run(
            "keys", "export", "--config", str(s.homes[me].config_path), "--out", str(tmp_path / f"{me}.bundle.json")
        ),
        pairs,
    )
    both(
        lambda me, other: s.run(
            "keys",
            "import-peer",
            str(tmp_path / f"{other}.bundle.json"),
            "--config",
            str(s.homes[me].config_path),
            "--yes",
        ),
        pairs,
    )
    issued = both(
        lambda me, _: {
            role: s.run("tokens", "issue", "--role", role, "--config", str(s.homes[me].config_path)).stdout.strip()
            for role in ("agency", "admin")
        },
        pairs,
    )
    s.tokens = {me: tokens for (me, _), tokens in zip(pairs, issued, strict=True)}
    for me in (US, CN):
        s.procs[me] = GatewayProcess(me, s.homes[me], env, tmp_path / f"{me}.serve.log")
    try:
        for p in s.procs.values():
            p.start()
        yield s
    finally:
        for p in s.procs.values():
            p.stop()


def _body(tag: str, msg_type: str = "seizure-share") -> dict[str, Any]:
    """A sample body carrying the canary (case reference and notes) where the type has them."""
    body = sample(msg_type)
    if msg_type == "seizure-share":
        body["case_reference"] = f"{CANARY}-{tag}"
    if "notes" in body:
        body["notes"] = f"{body['notes']}\n{CANARY} notes {tag} 机密备注"
    return body


def _send(s: Setup, sender: str, receiver: str, msg_type: str, tag: str, **fields: Any) -> str:
    body = {**_body(tag, msg_type), **fields}
    status, res = s.call(sender, "POST", "/v1/messages", body={"type": msg_type, "to": receiver, "body": body})
    assert status == 202, res
    return str(res["id"])


def _delivered(s: Setup, sender: str, ids: list[str]) -> bool:
    return all(s.call(sender, "GET", f"/v1/messages/{i}")[1]["status"] in ("delivered", "acknowledged") for i in ids)


def _signing_now(s: Setup, name: str, kid: str) -> bool:
    _, keys = s.call(name, "GET", "/v1/admin/keys", role="admin")
    return any(k["kid"] == kid and k["signing_now"] for k in keys["keys"])


def _peer_knows(s: Setup, name: str, kid: str) -> bool:
    _, keys = s.call(name, "GET", "/v1/admin/keys", role="admin")
    return any(k["kid"] == kid for k in keys["peer"]["keys"])


def _exchange(s: Setup, tag: str) -> None:
    sent: dict[str, list[str]] = {US: [], CN: []}
    # Invitations first: a reply must answer one the replying side really received.
    invitations = {
        sender: _send(s, sender, receiver, "port-visit-invitation", f"{tag}-{sender}")
        for sender, receiver in ((US, CN), (CN, US))
    }
    for sender, inv in invitations.items():
        wait_until(
            f"{sender}'s invitation to be delivered", lambda sender=sender, inv=inv: _delivered(s, sender, [inv]), 30
        )
    for sender, receiver in ((US, CN), (CN, US)):
        sent[sender].append(invitations[sender])
        for t in TYPES:
            if t == "port-visit-invitation":
                continue
            extra = {"invitation_id": invitations[receiver]} if t == "port-visit-reply" else {}
            sent[sender].append(_send(s, sender, receiver, t, f"{tag}-{sender}", **extra))
    for sender, ids in sent.items():
        wait_until(
            f"{sender}'s messages to be delivered", lambda sender=sender, ids=ids: _delivered(s, sender, ids), 30
        )


def _modes(s: Setup) -> list[str]:
    """Files and directories whose mode is wider than G8 allows."""
    bad = []
    for home in s.homes.values():
        for d in (home.dir / "keys", home.dir / "tls"):
            if stat.S_IMODE(d.stat().st_mode) != 0o700:
                bad.append(f"{d}: {oct(stat.S_IMODE(d.stat().st_mode))}, want 0o700")
        private = [*sorted((home.dir / "keys").glob("*.key")), home.dir / "tls" / "key.key"]
        db = home.dir / "data" / "gateway.db"
        for f in [*private, db, db.with_name("gateway.db-wal"), db.with_name("gateway.db-shm")]:
            if f.exists() and stat.S_IMODE(f.stat().st_mode) != 0o600:
                bad.append(f"{f}: {oct(stat.S_IMODE(f.stat().st_mode))}, want 0o600")
    return bad


def _encodings(secret: bytes) -> set[str]:
    """How a secret could show up in text: hex, base64 and base64url, padded or not, also of a prefix."""
    out: set[str] = set()
    for part in (secret, secret[:15]):
        for enc in (base64.b64encode, base64.urlsafe_b64encode):
            text = enc(part).decode()
            out |= {text, text.rstrip("=")}
        out |= {part.hex(), part.hex().upper()}
        out.add(repr(part)[2:-1][:40])  # a bytes repr, as a careless f-string would print it
    return {x for x in out if len(x) >= 16}


def _key_needles(s: Setup) -> dict[str, str]:
    needles: dict[str, str] = {}
    for name, home in s.homes.items():
        ident = KeyStore(home.dir / "keys", home.dir / "tls").load(PASSPHRASE.encode())
        keys: list[tuple[str, bytes]] = [(f"signing {k}", v.seed) for k, v in ident.signing.items()]
        keys += [(f"decryption {k}", v.seed) for k, v in ident.decryption.items()]
        keys.append(("witness", ident.witness.seed))
        pem_lines = [ln for ln in ident.tls_key_pem.decode().splitlines() if ln and not ln.startswith("-----")]
        keys.append(("tls der", base64.b64decode("".join(pem_lines))))
        for label, secret in keys:
            for text in _encodings(secret):
                needles[text] = f"{name} {label} private key"
        for i, line in enumerate(pem_lines):
            if len(line) >= 16:
                needles[line] = f"{name} TLS key PEM line {i}"
        needles["".join(pem_lines)] = f"{name} TLS key PEM body"
        if name == US:  # the one that rotated: old and new keys both held
            assert len(ident.signing) >= 2 and len(ident.decryption) >= 3, "the rotation made no new key files"
    return needles


def _body_needles() -> dict[str, str]:
    """Distinctive strings of every sample body: a prefix of each string leaf of 12+ characters."""
    needles: dict[str, str] = {CANARY: "a body we sent (canary)"}

    def walk(v: Any, where: str) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, f"{where}.{k}")
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, f"{where}[{i}]")
        elif isinstance(v, str) and len(v) >= 12 and not v.replace("_", "").replace("/", "").isalpha():
            needles[v[:24]] = f"message body {where}"

    for t in TYPES:
        walk(sample(t), t)
    return needles


def _strings(v: Any, out: list[str]) -> None:
    if isinstance(v, dict):
        for k, x in v.items():
            out.append(str(k))
            _strings(x, out)
    elif isinstance(v, list):
        for x in v:
            _strings(x, out)
    else:
        out.append(str(v))


def _searchable(raw: str) -> str:
    """The raw text plus, for each JSON line, its decoded keys and values (escapes undone)."""
    decoded: list[str] = []
    for line in raw.splitlines():
        try:
            _strings(json.loads(line), decoded)
        except ValueError:
            continue
    return raw + "\n" + "\n".join(decoded)


def _log_texts(s: Setup) -> dict[str, str]:
    """Everything logged: each serve process's stdout and stderr, and the CLI's stderr."""
    texts = {f"cli stderr #{i}": _searchable(t) for i, t in enumerate(s.cli_stderr)}
    for f in sorted(s.root.glob("*.log")):
        texts[f.name] = _searchable(f.read_bytes().decode("utf-8", "replace"))
    return texts


def _found(needles: dict[str, str], texts: dict[str, str]) -> list[str]:
    return sorted({f"{what} in {where}" for where, t in texts.items() for n, what in needles.items() if n in t})


@pytest.mark.slow
def test_nothing_secret_reaches_the_logs_and_files_are_private(initialised: Setup) -> None:
    s = initialised
    # A token issued over the API, used once.
    status, issued = s.call(US, "POST", "/v1/admin/tokens", role="admin", body={"role": "auditor", "label": "audit"})
    assert status == 201, issued
    s.tokens[US]["auditor"] = issued["token"]
    assert s.call(US, "GET", "/v1/audit/entries", role="auditor")[0] == 200
    _exchange(s, "before")

    # Acknowledge a message; refuse bad input of several kinds.
    _, inbox = s.call(CN, "GET", "/v1/inbox")
    status, _ = s.call(CN, "POST", f"/v1/inbox/{inbox['messages'][0]['id']}/ack", body={
        "status": "rejected", "reason": f"{CANARY} ack reason 拒收原因",
    })  # fmt: skip
    assert status == 202
    bad = {**sample("seizure-share"), "container_numbers": [f"{CANARY}-BAD"]}
    assert 400 <= s.call(US, "POST", "/v1/messages", body={"type": "seizure-share", "to": CN, "body": bad})[0] < 500
    assert s.call(US, "POST", "/v1/messages", role="admin", body={"type": "x", "to": CN, "body": bad})[0] == 403
    wrong = s.tokens[US]["agency"][:-4] + "AAAA"
    assert http("GET", s.homes[US].local_url + "/v1/messages", wrong)[0] == 401
    # A client that goes away in the middle of its body (an error path with a traceback).
    cut = json.dumps({"type": "seizure-share", "to": CN, "body": _body(f"{CANARY}-CUT")}).encode()
    with socket.create_connection(("127.0.0.1", s.homes[US].local_port), timeout=10) as sock:
        sock.sendall(
            f"POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {s.tokens[US]['agency']}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(cut) + 100}\r\n\r\n".encode()
            + cut
        )
        time.sleep(0.2)

    # Rotate US's signing and encryption keys on the running gateway; traffic continues.
    status, rot = s.call(US, "POST", "/v1/admin/keys/rotate", role="admin", body={"kind": "signing"})
    assert status == 202, rot
    new_sig = rot["kids"][0]
    wait_until("the new signing key to be in use", lambda: _signing_now(s, US, new_sig), 30)
    status, rot = s.call(US, "POST", "/v1/admin/keys/rotate", role="admin", body={"kind": "encryption"})
    assert status == 202, rot
    wait_until("CN to know the new encryption keys", lambda: all(_peer_knows(s, CN, k) for k in rot["kids"]), 30)
    _exchange(s, "after")

    bad_modes = _modes(s)
    assert any(p.name == "gateway.db-wal" for p in (s.homes[US].dir / "data").iterdir()), "no WAL to check"
    for p in s.procs.values():
        assert p.stop() == 0
    bad_modes += _modes(s)
    assert not bad_modes, bad_modes

    needles = {PASSPHRASE: "the passphrase"}
    for name, toks in s.tokens.items():
        for role, tok in toks.items():
            needles[tok] = f"{name} {role} bearer token"
            needles[tok.split(".", 1)[1]] = f"{name} {role} token secret"
            needles[tok.split(".", 1)[1][:20]] = f"{name} {role} token secret (prefix)"
    needles |= _key_needles(s) | _body_needles()
    # The scan finds what it looks for, even JSON-escaped (a positive control).
    chinese = next(n for n in needles if not n.isascii())
    control = json.dumps({"event": "leak", "x": chinese, "y": s.tokens[US]["agency"].split(".", 1)[1]})
    hits = _found(needles, {"control": _searchable(control)})
    assert "US-CBP agency token secret in control" in hits and any("message body" in h for h in hits), hits

    texts = _log_texts(s)
    assert sum(t.count('"event"') for t in texts.values()) > 20, "the gateways logged (almost) nothing"
    found = _found(needles, texts)
    print(
        f"\nsecrets scan: {len(needles)} needles over {sum(map(len, texts.values()))} characters of {len(texts)} logs"
    )
    assert not found, found

    # The database holds bodies sealed at rest (decision 0013), and no key, token secret or passphrase.
    stores = {
        f"{name} {f.name}": f.read_bytes().decode("latin-1")
        for name, home in s.homes.items()
        for f in (home.dir / "data").glob("gateway.db*")
    }
    secrets = {n: what for n, what in needles.items() if "message body" not in what and "canary" not in what}
    assert all(t.startswith("SQLite format 3") for n, t in stores.items() if n.endswith(".db")), list(stores)
    assert not _found({CANARY: "our canary"}, stores), "a body is stored in clear"
    assert not _found(secrets, stores), _found(secrets, stores)


@pytest.mark.slow
def test_malformed_authorization_header_does_not_log_the_token(tmp_path: Path) -> None:
    """A header the HTTP parser rejects used to reach the log whole, bearer token included (aiohttp
    quotes the offending line in its exception); found by this drill, fixed in `http/problems.py`."""
    pp = ProcessPair.prepare(tmp_path)
    us = pp.procs[US]
    us.start()
    try:
        token = pp.tokens[US]["agency"]
        with socket.create_connection(("127.0.0.1", pp.homes[US].local_port), timeout=10) as sock:
            sock.sendall(f"GET /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\x01\r\n\r\n".encode())
            assert sock.recv(12).startswith(b"HTTP/1.")
        time.sleep(0.3)
    finally:
        us.stop()
    log = us.log_path.read_text(encoding="utf-8", errors="replace")
    assert "gateway.started" in log
    assert token.split(".", 1)[1] not in log


@pytest.mark.slow
def test_client_hanging_up_mid_body_is_not_an_internal_error(tmp_path: Path) -> None:
    pp = ProcessPair.prepare(tmp_path)
    us = pp.procs[US]
    us.start()
    try:
        raw = json.dumps({"type": "seizure-share", "to": CN, "body": sample("seizure-share")}).encode()
        with socket.create_connection(("127.0.0.1", pp.homes[US].local_port), timeout=10) as sock:
            sock.sendall(
                f"POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {pp.tokens[US]['agency']}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(raw) + 100}\r\n\r\n".encode()
                + raw
            )
            time.sleep(0.2)
        time.sleep(0.3)
        assert http("GET", us.url + "/healthz")[0] == 200
    finally:
        us.stop()
    lines = [json.loads(ln) for ln in us.log_path.read_text(encoding="utf-8").splitlines() if ln.startswith("{")]
    errors = [ln for ln in lines if ln.get("level") in ("error", "critical")]
    assert not errors, errors
