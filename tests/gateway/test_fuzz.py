"""G9 under hostile input: fuzzing both APIs of two real gateways (loopback, real TLS, real SQLite).

Hypothesis-driven and mutation-based garbage, truncations, oversize fields, wrong types and
tampered envelopes go to every local route (with a valid token of each role, no token, junk
tokens) and to the peer API over pinned mutual TLS. Every answer must be a 4xx
`application/problem+json` (RFC 9457 fields) or a correct success; never a 5xx, never a hang
(every call has a timeout), never a dead server. A refused input changes no state: each store's
tables are compared before and after, and the audit log may only grow by the `refused` entries
the refusals themselves account for (G4: every refused envelope is logged).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import hashlib
import http.client
import json
import socket
import sqlite3
import ssl
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from customs_gateway.core.encoding import b64url
from customs_gateway.core.envelope import Document, Header, SignedDocument, build_envelope, seal_document, sign_envelope
from customs_gateway.core.keys import SUITE_HYBRID, SUITE_X25519, SigningKey
from customs_gateway.core.receipt import Statement, verify_refusal
from customs_gateway.http.local import ROUTES
from customs_gateway.service import tls
from customs_gateway.service.gateway import Gateway
from customs_gateway.service.pair import LocalPair, prepare_pair

from .conftest import CN, US, role_tokens, sample, terms

ROLES = ("agency", "admin", "auditor")
TIMEOUT = 15.0  # seconds: an answer slower than this is a hang
#: Inputs tried, by kind; printed at the end of the module (run with -s to see it).
TRIED: Counter[str] = Counter()
#: Inputs that were legitimately accepted (2xx), by API.
ACCEPTED: Counter[str] = Counter()
#: Refusal codes and problem codes seen, to show how deep the inputs went.
CODES: Counter[str] = Counter()
#: Tables whose content a refused input must leave exactly as it was. The audit tables are
#: compared separately (refusals append to them); checkpoints are made by a timer.
VOLATILE = {"audit", "audit_nodes", "audit_state", "checkpoints", "schema_version", "sqlite_sequence"}
FUZZ_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


# --- two gateways in a background event loop ----------------------------------------------------


class Live:
    """Both gateways running in their own thread's loop, so hypothesis drives them synchronously."""

    def __init__(self, root: Path) -> None:
        overrides = {
            "delivery": {"retry_base_seconds": 0.05, "retry_cap_seconds": 0.5},
            # No timer-driven writes while inputs are being compared.
            "audit": {"checkpoint_every_entries": 10**9, "checkpoint_every_seconds": 86400.0},
        }
        self.homes = prepare_pair(root, overrides=overrides)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-gateways", daemon=True)
        self.thread.start()
        self.lp = LocalPair(self.homes)
        self.run(self.lp.start_all())
        self.tokens: dict[str, dict[str, str]] = {
            name: self.run(role_tokens(self.gw(name), "fuzz")) for name in self.homes
        }
        # Each log's first checkpoint is made (and cosigned by the other side) right away; later ones
        # only after a day, so none lands in the middle of a before/after comparison.
        end = time.monotonic() + 30
        for name in self.homes:
            while self.run(self.gw(name).store.latest_checkpoint(cosigned=True)) is None:
                assert time.monotonic() < end, f"{name}'s first checkpoint was never cosigned"
                time.sleep(0.1)
        self.ssl = tls.client_context(
            self.gw(US).identity.tls_cert_pem,
            self.gw(US).identity.tls_key_pem,
            self.gw(US).peer.bundle.tls_certificate.encode(),
        )

    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def gw(self, name: str) -> Gateway:
        return self.lp.servers[name].gateway

    def close(self) -> None:
        try:
            self.run(self.lp.stop_all())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    lv = Live(tmp_path_factory.mktemp("fuzz"))
    try:
        yield lv
        assert lv.thread.is_alive()
        for name in (US, CN):
            assert local(lv, name, "GET", "/healthz").status == 200
    finally:
        lv.close()
        total = sum(TRIED.values())
        lines = ", ".join(f"{k} {v}" for k, v in sorted(TRIED.items()))
        print(f"\nfuzz: {total} inputs tried ({lines}); accepted as valid: {dict(ACCEPTED)}")
        print(
            f"fuzz: {len(CODES)} distinct refusal/problem codes: "
            + ", ".join(f"{k} {v}" for k, v in CODES.most_common())
        )


# --- HTTP over real sockets -----------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def ctype(self) -> str:
        return self.headers.get("Content-Type", "")

    def json(self) -> Any:
        return json.loads(self.body)


def _exchange(
    conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> Answer:
    try:
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        return Answer(r.status, r.headers, r.read())
    except TimeoutError:
        pytest.fail(f"hang: {method} {path[:200]} got no answer within {TIMEOUT} s")
    finally:
        conn.close()


def local(
    lv: Live, name: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", lv.homes[name].local_port, timeout=TIMEOUT)
    return _exchange(conn, method, path, body, headers or {})


def peer(
    lv: Live, path: str, body: bytes | None, headers: dict[str, str] | None = None, method: str = "POST"
) -> Answer:
    """A call to CN's peer API presenting US's pinned client certificate."""
    conn = http.client.HTTPSConnection("127.0.0.1", lv.homes[CN].peer_port, timeout=TIMEOUT, context=lv.ssl)
    h = {"Content-Type": "application/json"} if headers is None else headers
    return _exchange(conn, method, path, body, h)


def json_auth(lv: Live, name: str, role: str) -> dict[str, str]:
    """Headers of a JSON request to `name`'s local API with its `role` token."""
    return {"Authorization": f"Bearer {lv.tokens[name][role]}", "Content-Type": "application/json"}


def well_formed(ans: Answer, what: str, head: bool = False) -> Any:
    """A 4xx problem+json with the RFC 9457 fields, or a 2xx; returns the parsed body (a HEAD
    answer has none: only its status and Content-Type are checked)."""
    assert ans.status < 500, f"{what}: HTTP {ans.status} {ans.body[:300]!r}"
    assert 200 <= ans.status < 500 and not 300 <= ans.status < 400, f"{what}: HTTP {ans.status}"
    if ans.status >= 400:
        assert ans.ctype.startswith("application/problem+json"), f"{what}: {ans.status} as {ans.ctype}"
        if head:
            return None
        p = ans.json()
        assert isinstance(p, dict), what
        for name in ("type", "title", "detail", "code"):
            assert isinstance(p.get(name), str) and p[name], f"{what}: problem without {name}: {p}"
        assert p.get("status") == ans.status, f"{what}: problem status {p.get('status')} != {ans.status}"
        CODES[p["code"]] += 1
        return p
    if ans.ctype.startswith(("application/json", "application/openapi+json")):
        return ans.json()
    return ans.body


# --- state --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class State:
    tables: dict[str, str]  # table -> digest of its rows
    audit: tuple[bytes, ...]  # each entry as stored; parsed only where new (the log only grows)


def state(lv: Live, name: str) -> State:
    path = lv.homes[name].dir / "data" / "gateway.db"
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        tables = {}
        for t in sorted(set(names) - VOLATILE):
            rows = sorted(repr(r) for r in conn.execute(f'SELECT * FROM "{t}"'))
            tables[t] = hashlib.sha256("\n".join(rows).encode()).hexdigest()
        audit = tuple(bytes(r[0]) for r in conn.execute("SELECT entry FROM audit ORDER BY idx"))
        return State(tables, audit)
    finally:
        conn.close()


def both(lv: Live) -> dict[str, State]:
    return {name: state(lv, name) for name in (US, CN)}


def unchanged(before: dict[str, State], after: dict[str, State], what: str, refused: dict[str, int]) -> None:
    """No table changed; each log grew by exactly `refused[name]` entries, all of kind `refused`."""
    for name in (US, CN):
        b, a = before[name], after[name]
        changed = [t for t in set(a.tables) | set(b.tables) if a.tables.get(t) != b.tables.get(t)]
        assert not changed, f"{what}: refused input changed {name}'s tables {changed}"
        assert a.audit[: len(b.audit)] == b.audit, f"{what}: {name}'s audit log was rewritten"
        new = [json.loads(e) for e in a.audit[len(b.audit) :]]
        assert [e["kind"] for e in new] == ["refused"] * refused.get(name, 0), f"{what}: {name} logged {new}"


def quiesce(lv: Live, timeout: float = 20.0) -> None:
    """Wait until neither gateway has anything queued (after an input that was legitimately accepted)."""
    end = time.monotonic() + timeout
    waited = False
    for name, other in ((US, CN), (CN, US)):
        while lv.run(lv.gw(name).store.queue_depth(other))[0]:
            assert time.monotonic() < end, f"{name}'s queue did not drain"
            waited = True
            time.sleep(0.01)
    if waited:  # a delivery just finished: give its last writes a moment (most accepted inputs queue nothing)
        time.sleep(0.05)


# --- strategies ---------------------------------------------------------------------------------

JSON_LEAF = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
JSON_ANY = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
NASTY_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "\u202e\u0645\u0631\u062d\u0628\u0627",  # RTL override
        "\ufeff",
        "😀" * 50,
        "中" * 3000,
        "x" * 70_000,
        "../../etc/passwd",
        "'; DROP TABLE messages; --",
        "%s%n%x",
        "${jndi:ldap://x}",
        "2026-13-45T99:99:99.000Z",
        "NaN",
        "-0",
        "1e309",
    ]
)
WEIRD_NUMBER = st.sampled_from([-1, 0, 2**31, 2**63, 2**64 + 1, -(2**63) - 1, 10**40, 1e308, -0.0, 0.5, True, False])


def _paths(obj: Any, here: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield here
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*here, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*here, i))


def _get(obj: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        obj = obj[p]
    return obj


@st.composite
def mutated(draw: st.DrawFn, base: Any, max_mutations: int = 3) -> Any:
    """`base` with one to three structural mutations: deletions, wrong types, oversize or nasty
    values, unknown keys, extra nesting."""
    obj = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, max_mutations))):
        paths = list(_paths(obj))
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["delete", "retype", "nasty", "number", "unknown", "wrap", "empty"]))
        if not path:
            if op == "wrap":
                obj = [obj]
            elif op == "retype":
                obj = draw(JSON_ANY)
            continue
        parent, key = _get(obj, path[:-1]), path[-1]
        if op == "delete":
            del parent[key]
        elif op == "retype":
            parent[key] = draw(JSON_ANY)
        elif op == "nasty":
            parent[key] = draw(NASTY_TEXT)
        elif op == "number":
            parent[key] = draw(WEIRD_NUMBER)
        elif op == "unknown" and isinstance(parent[key], dict):
            parent[key][draw(st.text(min_size=1, max_size=10))] = draw(JSON_LEAF)
        elif op == "wrap":
            parent[key] = [parent[key]]
        elif op == "empty":
            parent[key] = type(parent[key])() if isinstance(parent[key], list | dict | str) else None
    return obj


@st.composite
def byte_mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """Truncation, a flipped byte, inserted junk, or a duplicated slice of `data`."""
    op = draw(st.sampled_from(["truncate", "flip", "insert", "duplicate"]))
    i = draw(st.integers(0, max(0, len(data) - 1)))
    if op == "truncate":
        return data[:i]
    if op == "flip" and data:
        return data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1 :]
    if op == "insert":
        return data[:i] + draw(st.binary(min_size=1, max_size=16)) + data[i:]
    j = draw(st.integers(i, len(data)))
    return data[:j] + data[i:j] + data[j:]


def dumps(obj: Any, ascii_only: bool) -> bytes:
    return json.dumps(obj, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


# --- local API ----------------------------------------------------------------------------------

QUERY_NAMES = (
    "limit",
    "cursor",
    "after",
    "wait",
    "direction",
    "status",
    "type",
    "since",
    "start",
    "size",
    "index",
    "old",
    "new",
    "cosigned",
    "zzz",
)
QUERY_VALUE = (
    st.text(max_size=40)
    | st.integers(-(2**70), 2**70).map(str)
    | st.floats(allow_nan=True, allow_infinity=True).map(repr)
    | st.sampled_from(
        [
            "",
            "0",
            "-1",
            "1",
            "500",
            "501",
            "1e309",
            "nan",
            "inf",
            "true",
            "outbound",
            "inbound",
            "delivered",
            "seizure-share",
            "2026-01-01T00:00:00.000Z",
            "9" * 40,
        ]
    )
)
#: Latin-1 header text, control characters included (the HTTP parser refuses them: a problem too);
#: only CR and LF are left out, which would end the header line.
HEADER_TEXT = st.text(st.characters(max_codepoint=255, exclude_characters="\r\n"), max_size=300)
CONTENT_TYPES = st.sampled_from(
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=zz",
        "application/problem+json",
        "application/vnd.customs-gateway.envelope+json",
        "",
    ]
)
JUNK_AUTH = st.sampled_from(
    [
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer cgw_0000000000000000.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "Bearer cgw_zz.zz",
        "bearer " + "a" * 500,
    ]
)


def _valid_bodies() -> dict[str, list[Any]]:
    submits = [
        {"type": t, "to": CN, "body": sample(t)}
        for t in ("seizure-share", "port-visit-invitation", "port-visit-reply", "seminar-notice")
    ]
    return {
        "/v1/messages": submits,
        "/v1/inbox/{id}/ack": [{"status": "processed"}, {"status": "rejected", "reason": "not ours"}],
        "/v1/admin/tokens": [{"role": "agency", "label": "fuzz"}],
        "/v1/admin/keys": [{"kind": "signing"}],
        "/v1/admin/keys/rotate": [{"kind": "encryption"}],
        "/v1/admin/keys/{kid}/revoke": [{"reason": "fuzz"}],
    }


VALID_BODIES = _valid_bodies()
ROTATES = {"/v1/admin/keys", "/v1/admin/keys/rotate"}


def _decodes_to_valid_rotation(body: bytes | None) -> bool:
    try:
        d = json.loads(body or b"")
    except ValueError:
        return False
    return isinstance(d, dict) and d.get("kind") in ("signing", "encryption")


@st.composite
def local_request(draw: st.DrawFn, ids: list[str]) -> tuple[str, str, str, bytes | None, dict[str, str]]:
    """(route template, method, path with query, body, headers) for one call to US's local API."""
    method, template, _, allowed = draw(st.sampled_from(ROUTES))
    if draw(st.integers(0, 19)) == 0:
        method = draw(st.sampled_from(["PUT", "DELETE", "PATCH", "GET", "POST", "OPTIONS"]))
    path = template
    for param in ("{id}", "{kid}", "{token_id}", "{file_id}"):
        if param in path:
            seg = draw(
                st.sampled_from(ids)
                | st.text(min_size=1, max_size=80)
                | NASTY_TEXT.filter(bool)
                | st.binary(min_size=1, max_size=40).map(bytes.hex)
            )
            path = path.replace(param, urllib.parse.quote(seg.encode("utf-8", "surrogatepass"), safe=""))
    query = draw(st.dictionaries(st.sampled_from(QUERY_NAMES), QUERY_VALUE, max_size=4))
    if "wait" in query:  # a valid long-poll waits as asked: keep the run short
        try:
            if float(query["wait"]) > 0.2:
                query["wait"] = "0.2"
        except ValueError:
            pass
    if query:
        path += "?" + urllib.parse.urlencode({k: v.encode("utf-8", "surrogatepass") for k, v in query.items()})
    bases = VALID_BODIES.get(template, [])
    kind = draw(st.sampled_from(["none", "bytes", "json", "mutated", "byte_mutated", "valid"]))
    body: bytes | None
    if kind == "none":
        body = None
    elif kind == "bytes":
        body = draw(st.binary(max_size=400))
    elif kind == "json":
        body = dumps(draw(JSON_ANY), draw(st.booleans()))
    elif bases and kind == "mutated":
        body = dumps(draw(mutated(draw(st.sampled_from(bases)))), draw(st.booleans()))
    elif bases and kind == "byte_mutated":
        body = draw(byte_mutated(dumps(draw(st.sampled_from(bases)), False)))
    elif bases:
        body = dumps(draw(st.sampled_from(bases)), False)
    else:
        body = dumps(draw(JSON_ANY), True)
    headers: dict[str, str] = {}
    # Mostly the right token and media type, so that inputs get past auth to the parsers.
    ctype = draw(st.just("application/json") | CONTENT_TYPES)
    if ctype is not None:
        headers["Content-Type"] = ctype
    who = draw(st.sampled_from(allowed) | st.sampled_from([*ROLES, "none", "junk"]) if allowed else st.just("none"))
    if who in ROLES:
        headers["Authorization"] = f"Bearer {{{who}}}"  # filled in with US's token by the test
    elif who == "junk":
        headers["Authorization"] = draw(JUNK_AUTH)
    if draw(st.booleans()):
        headers["Idempotency-Key"] = draw(HEADER_TEXT)
    if template in ROTATES and headers.get("Authorization") == "Bearer {admin}":
        assume(not _decodes_to_valid_rotation(body))  # a real rotation is not an input worth fuzzing
    return template, method, path, body, headers


@pytest.fixture(scope="module")
def known_ids(live: Live) -> list[str]:
    """Real ids the fuzzer may put in paths: one delivered outbound message and one inbox item of US."""

    def submit(sender: str, to: str, msg_type: str) -> str:
        request = dumps({"type": msg_type, "to": to, "body": sample(msg_type)}, False)
        ans = local(live, sender, "POST", "/v1/messages", request, json_auth(live, sender, "agency"))
        assert ans.status == 202
        return str(ans.json()["id"])

    inbound = submit(CN, US, "seminar-notice")
    outbound = submit(US, CN, "seizure-share")
    quiesce(live)
    return [inbound, outbound, "0" * 32]


@pytest.mark.slow
@FUZZ_SETTINGS
@given(data=st.data())
def test_local_api_answers_garbage_with_problems_and_changes_nothing(
    live: Live, known_ids: list[str], data: st.DataObject
) -> None:
    _, method, path, body, headers = data.draw(local_request(known_ids))
    auth = headers.get("Authorization", "")
    for role in ROLES:
        auth = auth.replace(f"{{{role}}}", live.tokens[US][role])
    if auth:
        headers["Authorization"] = auth
    before = both(live)
    TRIED["local"] += 1
    ans = local(live, US, method, path, body, headers)
    what = f"{method} {path[:120]} body={(body or b'')[:120]!r} headers={list(headers)}"
    well_formed(ans, what, head=method == "HEAD")
    if ans.status >= 400:
        unchanged(before, both(live), what, {})
    else:
        ACCEPTED["local"] += 1
        quiesce(live)  # a success may queue a message; let it settle before the next input


IDEMPOTENCY_KEYS = st.none() | st.sampled_from(["fuzz-1", "fuzz-2"]) | HEADER_TEXT


@pytest.mark.slow
@FUZZ_SETTINGS
@given(data=st.data())
def test_local_api_mutated_submissions_are_refused_naming_the_field(live: Live, data: st.DataObject) -> None:
    base = data.draw(st.sampled_from(VALID_BODIES["/v1/messages"]))
    how = data.draw(st.sampled_from(["body", "body", "body", "request", "bytes"]))
    if how == "body":
        raw = dumps({**base, "body": data.draw(mutated(base["body"]))}, data.draw(st.booleans()))
    elif how == "request":
        raw = dumps(data.draw(mutated(base)), data.draw(st.booleans()))
    else:
        raw = data.draw(byte_mutated(dumps(base, False)))
    headers = json_auth(live, US, "agency")
    key = data.draw(IDEMPOTENCY_KEYS)
    if key is not None:
        headers["Idempotency-Key"] = key
    before = both(live)
    TRIED["local submissions"] += 1
    ans = local(live, US, "POST", "/v1/messages", raw, headers)
    what = f"submission {raw[:300]!r}"
    p = well_formed(ans, what)
    if ans.status >= 400:
        if p["code"].startswith("schema."):
            assert isinstance(p.get("field"), str) and p["field"], f"{what}: {p}"  # G9: names the field
        unchanged(before, both(live), what, {})
        return
    ACCEPTED["local"] += 1
    assert (ans.status == 202 and p["status"] == "queued") or ans.headers.get("Idempotent-Replayed") == "true", p
    quiesce(live)


@pytest.mark.slow
def test_local_api_oversize_and_deeply_nested_bodies(live: Live) -> None:
    cap = live.gw(US).config.security.max_body_bytes
    agency, admin = json_auth(live, US, "agency"), json_auth(live, US, "admin")
    big_note = {**sample("seizure-share"), "notes": "x" * (cap // 2)}
    cases: list[tuple[str, bytes, dict[str, str], int | None]] = [
        ("/v1/messages", b"{" + b" " * (cap + 10) + b"}", agency, 413),
        ("/v1/messages", dumps({"type": "seizure-share", "to": CN, "body": big_note}, False), agency, None),
        ("/v1/messages", b"[" * 200_000 + b"]" * 200_000, agency, None),
        ("/v1/messages", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, agency, None),
        ("/v1/admin/tokens", b'{"role":"agency","label":"' + b"y" * 100_000 + b'"}', admin, None),
        ("/v1/messages", b"\xff\xfe\x00{", agency, None),
        ("/v1/messages", b'{"type": "seizure-share", "to": "\\ud800"}', agency, None),
    ]
    for path, body, headers, want in cases:
        before = both(live)
        TRIED["local oversize"] += 1
        ans = local(live, US, "POST", path, body, headers)
        p = well_formed(ans, f"{path} {len(body)} bytes")
        assert ans.status >= 400, p
        if want is not None:
            assert ans.status == want, p
        unchanged(before, both(live), path, {})


@pytest.mark.slow
def test_cut_connections_and_broken_http_leave_the_servers_up(live: Live) -> None:
    port = live.homes[US].local_port
    token = live.tokens[US]["agency"]
    before = both(live)
    raw_cases = [
        # A body promised and never sent in full, then the client goes away.
        (
            f"POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
        ).encode()
        + dumps({"type": "seizure-share", "to": CN, "body": sample("seizure-share")}, False)[:300],
        b"GET /v1/messages HTTP/1.1\r\nHost: x\r\n",  # headers never finished
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello to the plain-HTTP port
    ]
    for raw in raw_cases:
        TRIED["local raw"] += 1
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
            s.sendall(raw)
        time.sleep(0.05)
    # The same against the peer port, over TLS with the pinned certificate, then without one.
    with (
        socket.create_connection(("127.0.0.1", live.homes[CN].peer_port), timeout=TIMEOUT) as s,
        live.ssl.wrap_socket(s) as t,
    ):
        TRIED["peer raw"] += 1
        t.sendall(b'POST /peer/v1/envelopes HTTP/1.1\r\nHost: x\r\nContent-Length: 9000\r\n\r\n{"envelopes": [')
    bare = ssl.create_default_context()
    bare.check_hostname, bare.verify_mode = False, ssl.CERT_NONE
    TRIED["peer raw"] += 1
    with (
        pytest.raises((ssl.SSLError, ConnectionError)),
        socket.create_connection(("127.0.0.1", live.homes[CN].peer_port), timeout=TIMEOUT) as s,
        bare.wrap_socket(s) as t,
    ):  # without a client certificate the handshake or the first read fails
        t.sendall(b"GET /peer/v1/keys HTTP/1.1\r\nHost: x\r\n\r\n")
        if not t.recv(1):
            raise ConnectionError("closed without an answer")
    time.sleep(0.2)
    for name in (US, CN):
        assert local(live, name, "GET", "/healthz").status == 200
    unchanged(before, both(live), "cut connections", {})


@pytest.mark.slow
def test_malformed_http_is_a_problem_json_400(live: Live) -> None:
    """What aiohttp's HTTP parser rejects (bad request line, bad header, line too long) is a problem
    too, not aiohttp's text/plain 400. Found by this fuzzing; fixed by `http.problems.ProblemRequestHandler`."""
    before = both(live)
    for name, port in ((US, live.homes[US].local_port), (CN, live.homes[CN].local_port)):
        for raw in (
            b"GARBAGE\r\n\r\n",
            b"GET /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            b"GET /v1/messages HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n",
            b"GET /v1/\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        ):
            TRIED["local raw"] += 1
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
                s.sendall(raw)
                data = b""
                while chunk := s.recv(65536):  # the server closes after a malformed request
                    data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = http.client.HTTPMessage()
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip()] = v.strip()
            well_formed(Answer(status, headers, body), f"{name} raw {raw[:40]!r}")
            assert 400 <= status < 500, (raw[:40], status)
    unchanged(before, both(live), "malformed HTTP", {})


def test_boolean_query_parameter_refuses_non_booleans(live: Live) -> None:
    """`?cosigned=banana` is refused naming the parameter, not read as false (found by schemathesis)."""
    TRIED["local"] += 1
    ans = local(
        live,
        US,
        "GET",
        "/v1/audit/checkpoint?cosigned=banana",
        None,
        {"Authorization": f"Bearer {live.tokens[US]['auditor']}"},
    )
    p = well_formed(ans, "cosigned=banana")
    assert ans.status >= 400 and p.get("field") == "cosigned", (ans.status, p)


# --- peer API -----------------------------------------------------------------------------------


class Forge:
    """Envelopes from US to CN built with US's real keys: valid ones, and signed tampered ones."""

    def __init__(self, lv: Live) -> None:
        self.lv = lv
        self.us = lv.gw(US)
        self.seq = 10**6  # far above the delivery worker's own sequence numbers

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def valid(self, msg_type: str = "seizure-share") -> dict[str, Any]:
        now = self.us.clock.now()
        doc = Document(self.us.ids.new_id(), US, CN, msg_type, now, sample(msg_type), handling=terms(msg_type, now))
        env, _, _ = build_envelope(
            doc,
            seq=self.next_seq(),
            sent_at=now,
            attempt=1,
            signing_key=self.us.identity.active_signing_key(now),
            recipient_key=self.us.peer.encryption_key(now),
        )
        return env.to_dict()


@pytest.fixture(scope="module")
def accepted_envelope(live: Live) -> tuple[dict[str, Any], dict[str, Any]]:
    """An envelope CN has accepted, and the receipt it gave: the base every mutation starts from."""
    env = Forge(live).valid()
    ans = peer(live, "/peer/v1/envelopes", dumps(env, True))
    assert ans.status == 200, ans.body
    res = ans.json()["results"][0]
    assert res["status"] == "accepted", res
    return env, res["receipt"]


@st.composite
def envelope_mutation(draw: st.DrawFn, env: dict[str, Any]) -> Any:
    """One way to damage a good envelope without its signing key."""
    how = draw(st.sampled_from(["structure", "header_json", "b64_char", "b64_truncate", "b64_alphabet", "swap"]))
    d = copy.deepcopy(env)
    field = draw(st.sampled_from(["header", "ciphertext", "signature"]))
    if how == "structure":
        return draw(mutated(d))
    if how == "header_json":
        header = json.loads(base64.urlsafe_b64decode(d["header"] + "=" * (-len(d["header"]) % 4)))
        d["header"] = b64url(dumps(draw(mutated(header)), True))
        return d
    s = d[field]
    i = draw(st.integers(0, len(s) - 1))
    if how == "b64_char":
        c = draw(
            st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_").filter(
                lambda c: c != s[i]
            )
        )
        d[field] = s[:i] + c + s[i + 1 :]
    elif how == "b64_truncate":
        d[field] = s[:i]
    elif how == "b64_alphabet":
        d[field] = s[:i] + draw(st.sampled_from(["+", "/", "=", "==", " ", "\n", "é"])) + s[i:]
    else:
        other = draw(st.sampled_from([f for f in ("header", "ciphertext", "signature") if f != field]))
        d[field], d[other] = d[other], d[field]
    return d


def check_results(lv: Live, sent: list[Any], results: Any, receipt: dict[str, Any], original: dict[str, Any]) -> int:
    """Each result: `duplicate` with the original receipt, or a signed refusal; returns the refusals."""
    assert isinstance(results, list) and len(results) == len(sent), results
    refused = 0
    for env, r in zip(sent, results, strict=True):
        if r["status"] == "duplicate":
            assert r["receipt"] == receipt, r
            ACCEPTED["peer duplicate"] += 1
            continue
        assert r["status"] == "refused", (env, r)
        # Compared as JSON: in Python True == 1, so {"v": true} would equal the original {"v": 1}.
        assert json.dumps(env, sort_keys=True) != json.dumps(original, sort_keys=True), (
            f"the accepted envelope itself was refused: {r}"
        )
        assert isinstance(r["code"], str) and r["code"], r
        CODES[r["code"]] += 1
        verify_refusal(
            Statement.from_dict("refusal", r["refusal"]),
            message_id=r["id"],
            sender=US,
            receiver=CN,
            key_for=lv.gw(US).peer.verify_key,
        )
        refused += 1
    return refused


@pytest.mark.slow
@FUZZ_SETTINGS
@given(data=st.data())
def test_peer_api_mutated_envelopes_are_refused_or_duplicates(
    live: Live, accepted_envelope: tuple[dict[str, Any], dict[str, Any]], data: st.DataObject
) -> None:
    env, receipt = accepted_envelope
    n = data.draw(st.integers(1, 4))
    batch = [env if data.draw(st.integers(0, 4)) == 0 else data.draw(envelope_mutation(env)) for _ in range(n)]
    as_batch = n > 1 or data.draw(st.booleans())
    payload = {"envelopes": batch} if as_batch else batch[0]
    before = both(live)
    TRIED["peer envelopes"] += n
    ans = peer(live, "/peer/v1/envelopes", dumps(payload, data.draw(st.booleans())))
    what = f"peer batch of {n}: {json.dumps(batch)[:300]}"
    body = well_formed(ans, what)
    refused = 0
    if ans.status == 200:
        refused = check_results(live, batch, body["results"], receipt, env)
    unchanged(before, both(live), what, {CN: refused})


@pytest.mark.slow
@FUZZ_SETTINGS
@given(data=st.data())
def test_peer_api_garbage_bodies_and_headers(
    live: Live, accepted_envelope: tuple[dict[str, Any], dict[str, Any]], data: st.DataObject
) -> None:
    env, receipt = accepted_envelope
    kind = data.draw(st.sampled_from(["bytes", "json", "truncated", "byte_mutated", "batch_shape", "cosign", "keys"]))
    path, method = "/peer/v1/envelopes", "POST"
    good = dumps({"envelopes": [env]}, True)
    if kind == "bytes":
        body = data.draw(st.binary(max_size=500))
    elif kind == "json":
        body = dumps(data.draw(JSON_ANY), data.draw(st.booleans()))
    elif kind == "truncated":
        body = good[: data.draw(st.integers(0, len(good) - 1))]
    elif kind == "byte_mutated":
        body = data.draw(byte_mutated(good))
    elif kind == "batch_shape":
        body = dumps(data.draw(mutated({"envelopes": [env, env]})), True)
    elif kind == "cosign":
        path = "/peer/v1/cosign"
        body = data.draw(
            st.binary(max_size=300)
            | st.sampled_from([b"old 0\n\n", b"old 00\n\nx", b"old -1\n\n", b"old 1\n" + b"A" * 2000 + b"\n\n"])
            | st.text(max_size=200).map(lambda t: ("old 0\n\n" + t).encode("utf-8", "surrogatepass"))
        )
    else:
        path, method, body = "/peer/v1/keys", data.draw(st.sampled_from(["GET", "POST", "DELETE"])), None
    headers: dict[str, str] = {}
    ctype = data.draw(CONTENT_TYPES)
    if ctype is not None:
        headers["Content-Type"] = ctype
    before = both(live)
    TRIED["peer garbage"] += 1
    ans = peer(live, path, body, headers, method=method)
    what = f"{method} {path} {ctype} {(body or b'')[:200]!r}"
    if path == "/peer/v1/cosign" and ans.status == 409 and ans.ctype.startswith("text/x.tlog.size"):
        assert ans.body.strip().isdigit(), what  # C2SP tlog-witness: the size the witness holds
        parsed = None
    else:
        parsed = well_formed(ans, what)
    refused = 0
    if ans.status == 200 and path == "/peer/v1/envelopes":
        sent = body_envelopes(body)
        refused = check_results(live, sent, parsed["results"], receipt, env)
    unchanged(before, both(live), what, {CN: refused})


def body_envelopes(body: bytes | None) -> list[Any]:
    d = json.loads(body or b"")
    return list(d["envelopes"]) if isinstance(d, dict) and "envelopes" in d else [d]


@pytest.mark.slow
def test_peer_api_oversize_batches_and_bodies(live: Live, accepted_envelope: tuple[dict[str, Any], Any]) -> None:
    env, _ = accepted_envelope
    cap = live.gw(CN).config.security
    for body, want in (
        (dumps({"envelopes": [env] * (cap.max_batch + 1)}, True), 413),
        (b'{"envelopes": [' + b" " * (cap.max_body_bytes + 1) + b"]}", 413),
        (dumps({"envelopes": [{**env, "ciphertext": "A" * 100_000}]}, True), None),
        (b"[" * 100_000, None),
    ):
        before = both(live)
        TRIED["peer oversize"] += 1
        ans = peer(live, "/peer/v1/envelopes", body)
        p = well_formed(ans, f"{len(body)} bytes")
        refused = 0
        if want is not None:
            assert ans.status == want, p
        elif ans.status == 200:
            refused = sum(r["status"] == "refused" for r in p["results"])
        unchanged(before, both(live), f"oversize {len(body)}", {CN: refused})


# --- signed, tampered envelopes (a malicious or broken peer holding the real keys) ---------------

TAMPER_FIELDS = (
    "id",
    "from",
    "to",
    "type",
    "created_at",
    "sent_at",
    "suite",
    "sig_kid",
    "enc_kid",
    "ciphertext",
    "doc",
)


@st.composite
def tampering(draw: st.DrawFn) -> dict[str, str]:
    """For each field, 'ok' or one way to get it wrong; mostly one or two wrong fields at a time."""
    wrong = draw(st.sets(st.sampled_from(TAMPER_FIELDS), max_size=2))
    options = {
        "id": ["fresh", "empty", "long"],
        "from": ["peer", "other"],
        "to": ["sender", "other"],
        "type": ["other_business", "ack", "unknown"],
        "created_at": ["later", "future"],
        "sent_at": ["old", "future"],
        "suite": ["other", "unknown"],
        "sig_kid": ["stranger"],
        "enc_kid": ["unknown", "classic"],
        "ciphertext": ["random", "other_id", "empty"],
        "doc": ["bad_body", "wrong_to", "wrong_type", "not_json", "unsigned", "key_twice"],
    }
    return {f: (draw(st.sampled_from(options[f])) if f in wrong else "ok") for f in TAMPER_FIELDS}


def tampered_envelope(fg: Forge, t: dict[str, str]) -> dict[str, Any]:
    """A properly signed envelope (under US's key unless sig_kid is tampered) with the faults `t`."""
    us = fg.us
    now = us.clock.now()
    sig_key = us.identity.active_signing_key(now)
    mid = us.ids.new_id()
    hybrid = us.peer.encryption_key(now, (SUITE_HYBRID,))
    classic = us.peer.encryption_key(now, (SUITE_X25519,))
    created = now - dt.timedelta(seconds=1)
    doc_type, doc_to, body = "seizure-share", CN, sample("seizure-share")
    if t["doc"] == "bad_body":
        body = {**body, "container_numbers": ["CSQU3054384"]}
    elif t["doc"] == "wrong_to":
        doc_to = "XX-OTHER"
    elif t["doc"] == "wrong_type":
        doc_type, body = "seminar-notice", sample("seminar-notice")
    doc = Document(mid, US, doc_to, doc_type, created, body, handling=terms(doc_type, created))
    signed = SignedDocument.create(doc, sig_key)

    def signed_bytes(data: bytes, signature: bytes | None = None) -> SignedDocument:
        """`data` as a signed document, really signed by `sig_key` unless `signature` is given."""
        sig = sig_key.sign("document", data) if signature is None else signature
        return SignedDocument.from_bytes(
            dumps({"document": b64url(data), "kid": sig_key.kid, "signature": b64url(sig)}, True)
        )

    if t["doc"] == "not_json":
        signed = signed_bytes(b"not json at all")
    elif t["doc"] == "key_twice":  # signed, but parsers may read it two ways (I-JSON)
        signed = signed_bytes(doc.to_bytes().replace(b'"to":"', b'"to":"XX-OTHER","to":"', 1))
    elif t["doc"] == "unsigned":
        signed = signed_bytes(doc.to_bytes(), b"\0" * 64)
    header_id = {"ok": mid, "fresh": str(uuid.uuid4()), "empty": "", "long": "x" * 70}[t["id"]]
    sender = {"ok": US, "peer": CN, "other": "XX-OTHER"}[t["from"]]
    recipient = {"ok": CN, "sender": US, "other": "XX-OTHER"}[t["to"]]
    h_type = {"ok": "seizure-share", "other_business": "port-visit-reply", "ack": "ack", "unknown": "parcel"}[t["type"]]
    sent = {"ok": now, "old": now - dt.timedelta(seconds=400), "future": now + dt.timedelta(seconds=400)}[t["sent_at"]]
    h_created = {"ok": created, "later": created + dt.timedelta(seconds=1), "future": sent + dt.timedelta(seconds=5)}[
        t["created_at"]
    ]
    enc = classic if t["enc_kid"] == "classic" else hybrid
    suite = {"ok": enc.suite_name, "other": SUITE_X25519 if enc is hybrid else SUITE_HYBRID, "unknown": "rot13"}[
        t["suite"]
    ]
    enc_kid = "f" * 32 if t["enc_kid"] == "unknown" else enc.kid
    if t["ciphertext"] == "random":
        ct = bytes(range(256)) * 8
    elif t["ciphertext"] == "empty":
        ct = b""
    elif t["ciphertext"] == "other_id":
        ct = seal_document(signed, us.ids.new_id(), US, CN, enc)
    else:
        ct = seal_document(signed, mid, US, CN, enc)
    if t["sig_kid"] == "stranger":
        sig_key = SigningKey.generate()
    header = Header(
        header_id, fg.next_seq(), sender, recipient, h_type, h_created, sent, 1, suite, sig_key.kid, enc_kid
    )
    return sign_envelope(header, ct, sig_key).to_dict()


@pytest.mark.slow
@settings(FUZZ_SETTINGS, max_examples=150)
@given(t=tampering())
def test_peer_api_signed_but_tampered_envelopes(live: Live, t: dict[str, str]) -> None:
    fg = Forge(live)
    fg.seq = 2 * 10**6 + TRIED["tampered"] * 3
    env = tampered_envelope(fg, t)
    # X25519 alone is the negotiated fallback the peer's bundle announces (G2): not a fault.
    honest = all(v == "ok" or (f, v) == ("enc_kid", "classic") for f, v in t.items())
    before = both(live)
    TRIED["tampered"] += 1
    ans = peer(live, "/peer/v1/envelopes", dumps(env, True))
    r = well_formed(ans, f"tampered {t}")["results"][0]
    if honest:
        assert r["status"] == "accepted", (t, r)
        ACCEPTED["peer"] += 1
        return
    assert r["status"] == "refused", (t, r)
    verify_refusal(
        Statement.from_dict("refusal", r["refusal"]),
        message_id=r["id"],
        sender=US,
        receiver=CN,
        key_for=live.gw(US).peer.verify_key,
    )
    CODES[r["code"]] += 1
    unchanged(before, both(live), f"tampered {t} -> {r['code']}", {CN: 1})


def test_both_gateways_survived_everything(live: Live) -> None:
    """Runs last in this module: after all of the above, both servers still answer on both APIs."""
    assert live.thread.is_alive()
    for name in (US, CN):
        assert local(live, name, "GET", "/healthz").status == 200
        assert local(live, name, "GET", "/readyz").status == 200
    ans = peer(live, "/peer/v1/keys", None, {}, method="GET")
    assert ans.status == 200 and ans.json()
