"""Two gateways as real `customs-gateway serve` processes, for the crash and outage drills.

`ProcessPair` lays out both homes from `keys-example/` (`pair.prepare_pair`), issues one token
per role straight into each store, and starts, SIGKILLs and restarts the processes. `Submitter`
is a back-end in a thread: a steady stream of submissions, each re-sent with the same
`Idempotency-Key` until it gets an answer, so every message the gateway committed ends up known
by id. `run_crash_drill` is the whole crash drill; the test and `benchmarks/crash_drill.py` run it.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from typing import Any, TypeVar

from customs_gateway.bench.benchmark import sample_body as sample
from customs_gateway.bench.benchmark_pair import db_path
from customs_gateway.core.audit import AuditEntry, log_origin
from customs_gateway.core.bundle import PeerKeys
from customs_gateway.core.checkpoint import Checkpoint, Ed25519NoteVerifier, open_note
from customs_gateway.core.clock import SystemClock
from customs_gateway.core.encoding import json_bytes
from customs_gateway.core.errors import GatewayError
from customs_gateway.core.merkle import leaf_hash, root_from_leaves
from customs_gateway.core.receipt import Statement, verify_receipt
from customs_gateway.service.gateway import issue_token
from customs_gateway.service.pair import EXAMPLE_PASSPHRASE, IDENTITIES, Home, prepare_pair
from customs_gateway.startup.keystore import load_peer
from customs_gateway.store.base import Store
from customs_gateway.store.sqlite import SQLiteStore

US, CN = IDENTITIES
T = TypeVar("T")
CLI = [sys.executable, "-m", "customs_gateway.cli.main"]
ROLES = ("agency", "admin", "auditor")
#: Quick retries and checkpoints: a drill should spend its time crashing, not waiting.
DRILL_OVERRIDES: dict[str, dict[str, Any]] = {
    "delivery": {"retry_base_seconds": 0.05, "retry_cap_seconds": 0.5, "request_timeout_seconds": 10.0},
    "audit": {"checkpoint_every_seconds": 1.0},
}


class Unreachable(Exception):
    """The request got no complete HTTP answer (refused, reset, timed out, cut short)."""


def http(
    method: str,
    url: str,
    token: str | None = None,
    body: Any = None,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], Any]:
    """One call: (status, headers, JSON or text body); raises Unreachable on transport failure."""
    data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, hdrs, raw = r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            status, hdrs, raw = e.code, dict(e.headers), e.read()
    except (OSError, HTTPException) as e:
        raise Unreachable(f"{type(e).__name__}: {e}") from e
    ctype = hdrs.get("Content-Type", "")
    if "json" in ctype:
        try:
            return status, hdrs, json.loads(raw) if raw else None
        except ValueError as e:
            raise Unreachable(f"truncated JSON answer: {e}") from e
    return status, hdrs, raw.decode("utf-8", "replace")


def drill_overrides(overrides: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """`DRILL_OVERRIDES` with `overrides` merged in, section by section."""
    merged: dict[str, dict[str, Any]] = copy.deepcopy(DRILL_OVERRIDES)
    for section, values in (overrides or {}).items():
        merged.setdefault(section, {}).update(values)
    return merged


def drill_env() -> dict[str, str]:
    """The environment for child processes: ours without CUSTOMS_GATEWAY_* overrides, plus the passphrase."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOMS_GATEWAY_")}
    env["CUSTOMS_GATEWAY_PASSPHRASE"] = EXAMPLE_PASSPHRASE.decode()
    return env


def cli(*args: str, env: Mapping[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=dict(env), capture_output=True, text=True, timeout=timeout, check=False)


def both(step: Callable[[str, str], T], pairs: Iterable[tuple[str, str]]) -> list[T]:
    """`step(me, other)` for each (me, other) at the same time, in threads; results in order.

    For setup steps two operators take independently (init, export, import, issue a token)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda p: step(*p), pairs))


async def issue_role_tokens(store: Store) -> dict[str, str]:
    """One token per role, issued straight into a stopped gateway's `store` (opened and closed here)."""
    await store.open()
    try:
        tokens = {}
        for role in ROLES:
            _, tokens[role] = await issue_token(store, SystemClock(), role, f"drill-{role}", "drill")
        return tokens
    finally:
        await store.close()


@dataclass
class GatewayProcess:
    """One `customs-gateway serve` process; its stdout and stderr are appended to `log_path`."""

    name: str
    home: Home
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0

    @property
    def url(self) -> str:
        return self.home.local_url

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, ready_timeout: float = 30.0) -> None:
        assert self.proc is None, f"{self.name} is already running"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*CLI, "serve", "--config", str(self.home.config_path)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1
        self.wait_ready(ready_timeout)

    def wait_ready(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if http("GET", self.url + "/readyz", timeout=2)[0] == 200:
                    return
            except Unreachable:
                pass
            time.sleep(0.05)
        raise AssertionError(f"{self.name} never became ready:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind runs in the gateway."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None
        self.kills += 1

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait for a clean exit; returns the exit code (SIGKILL after `timeout`)."""
        if self.proc is None:
            return 0
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            return -9

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class ProcessPair:
    root: Path
    homes: dict[str, Home]
    procs: dict[str, GatewayProcess]
    tokens: dict[str, dict[str, str]]
    env: dict[str, str]

    @classmethod
    def prepare(cls, root: Path, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> ProcessPair:
        homes = prepare_pair(root, overrides=drill_overrides(overrides))
        env = drill_env()
        tokens = {name: asyncio.run(issue_role_tokens(SQLiteStore(db_path(home)))) for name, home in homes.items()}
        procs = {name: GatewayProcess(name, home, env, root / f"{name}.log") for name, home in homes.items()}
        return cls(root, homes, procs, tokens, env)

    def start_all(self) -> None:
        for p in self.procs.values():
            p.start()

    def stop_all(self) -> dict[str, int]:
        return {name: p.stop() for name, p in self.procs.items()}

    def call(self, name: str, method: str, path: str, role: str = "agency", body: Any = None) -> tuple[int, Any]:
        status, _, res = http(method, self.procs[name].url + path, self.tokens[name][role], body)
        return status, res

    def queue_depth(self, name: str = US) -> int:
        status, res = self.call(name, "GET", "/v1/admin/peers", role="admin")
        assert status == 200, res
        return int(res["peers"][0]["queue_depth"])

    def inbox(self, name: str) -> list[dict[str, Any]]:
        """Every business message in `name`'s inbox, in inbox order."""
        out: list[dict[str, Any]] = []
        cursor = 0
        while True:
            status, res = self.call(name, "GET", f"/v1/inbox?after={cursor}&limit=500")
            assert status == 200, res
            out += res["messages"]
            if not res["messages"]:
                return out
            cursor = res["next_cursor"]

    def audit_entries(self, name: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            status, res = self.call(name, "GET", f"/v1/audit/entries?start={len(out)}&limit=1000", role="auditor")
            assert status == 200, res
            if not res["entries"]:
                return out
            assert [e["index"] for e in res["entries"]] == list(range(len(out), len(out) + len(res["entries"])))
            out += [e["entry"] for e in res["entries"]]

    def checkpoint(self, name: str, *, cosigned: bool = False) -> Checkpoint | None:
        """`name`'s latest (or latest peer-cosigned) checkpoint, its signature verified under
        `name`'s public signing keys."""
        path = "/v1/audit/checkpoint" + ("?cosigned=true" if cosigned else "")
        status, _, text = http("GET", self.procs[name].url + path, self.tokens[name]["auditor"])
        if status == 404:
            return None
        assert status == 200, text
        own = load_peer(self.homes[name].dir / "keys" / "bundle.json")
        verifiers = [Ed25519NoteVerifier(log_origin(name), r.public) for r in own.records() if r.use == "signing"]
        return Checkpoint.parse(open_note(text.encode("utf-8"), verifiers).body)


@dataclass
class Accepted:
    n: int
    id: str
    seq: int
    case_reference: str


class Submitter(threading.Thread):
    """A back-end sending seizure shares in a steady stream, keeping only the ids that got a 202.

    A submission without an answer (the gateway was killed or is down) is re-sent with the same
    Idempotency-Key until one comes: the gateway may have committed it, and only the replayed
    202 tells its id. `interval` is the pause between two submissions.
    """

    def __init__(
        self, url: str, token: str, *, to: str, interval: float, prefix: str = "DRILL", give_up_after: float = 120.0
    ) -> None:
        super().__init__(name=f"submitter-{prefix}", daemon=True)
        self.url, self.token, self.to, self.interval, self.prefix = url, token, to, interval, prefix
        self.give_up_after = give_up_after
        self.accepted: list[Accepted] = []
        self.attempts = 0
        self.transport_errors = 0
        self.replayed = 0
        self.refused: list[tuple[int, int, Any]] = []
        self.unresolved: list[int] = []
        self._halt = threading.Event()
        self._template = sample("seizure-share")

    def halt(self, timeout: float = 150.0) -> None:
        """Stop after the submission in progress has its answer."""
        self._halt.set()
        self.join(timeout)
        assert not self.is_alive(), "the submitter did not finish"

    def run(self) -> None:
        n = 0
        while not self._halt.is_set():
            self._submit(n)
            n += 1
            self._halt.wait(self.interval)

    @property
    def submitted(self) -> int:
        """Distinct submissions made (each may have been sent several times)."""
        return len(self.accepted) + len(self.refused) + len(self.unresolved)

    def _submit(self, n: int) -> None:
        ref = f"{self.prefix}-{n:06d}"
        body = {**self._template, "case_reference": ref}
        request = {"type": "seizure-share", "to": self.to, "body": body}
        deadline = time.monotonic() + self.give_up_after
        while time.monotonic() < deadline:
            self.attempts += 1
            try:
                status, headers, res = http(
                    "POST", self.url + "/v1/messages", self.token, request, headers={"Idempotency-Key": ref}
                )
            except Unreachable:
                self.transport_errors += 1
                time.sleep(0.05)
                continue
            if status == 202:
                self.accepted.append(Accepted(n, res["id"], int(res["seq"]), ref))
                self.replayed += headers.get("Idempotent-Replayed") == "true"
                return
            if status in (429, 503):
                time.sleep(0.05)
                continue
            self.refused.append((n, status, res))
            return
        self.unresolved.append(n)


def wait_until(what: str, check: Callable[[], bool], timeout: float, every: float = 0.1) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def undelivered(pp: ProcessPair, ids: Iterable[str], sender: str = US) -> Iterator[tuple[str, str, str | None]]:
    """(id, status, last_error) of each of `ids` that has not (yet) ended delivered, lazily."""
    for mid in ids:
        status, m = pp.call(sender, "GET", f"/v1/messages/{mid}")
        if status != 200 or m["status"] not in ("delivered", "acknowledged"):
            m = m if isinstance(m, dict) else {}
            yield mid, str(m.get("status")), m.get("last_error")


def drained(pp: ProcessPair, ids: list[str], sender: str = US) -> bool:
    return pp.queue_depth(sender) == 0 and next(undelivered(pp, ids, sender), None) is None


@dataclass
class Delivery:
    """What the receiver's inbox holds against what the sender got a 202 for."""

    accepted: int = 0
    inbox: int = 0
    delivered: int = 0
    duplicates: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    out_of_order: int = 0
    body_mismatches: list[str] = field(default_factory=list)
    receipts_verified: int = 0
    receipt_failures: list[str] = field(default_factory=list)
    resends: int = 0

    @property
    def ok(self) -> bool:
        return (
            self.inbox == self.accepted == self.delivered == self.receipts_verified
            and not (self.duplicates or self.missing or self.unexpected or self.out_of_order)
            and not (self.body_mismatches or self.receipt_failures)
        )


def check_delivery(pp: ProcessPair, accepted: list[Accepted], sender: str = US, receiver: str = CN) -> Delivery:
    """Exactly once into the inbox, in submission order, each with a receipt that verifies."""
    rep = Delivery(accepted=len(accepted))
    inbox = pp.inbox(receiver)
    rep.inbox = len(inbox)
    ids = [m["id"] for m in inbox]
    counts = Counter(ids)
    rep.duplicates = sum(c - 1 for c in counts.values())
    want = {a.id: a for a in accepted}
    rep.missing = [a.id for a in accepted if a.id not in counts]
    rep.unexpected = [i for i in counts if i not in want]
    in_order = [i for i in ids if i in want]
    expected_order = [a.id for a in sorted(accepted, key=lambda a: a.seq)]
    rep.out_of_order = sum(1 for a, b in zip(in_order, expected_order, strict=False) if a != b)
    by_id = {m["id"]: m for m in inbox}
    receiver_keys: PeerKeys = load_peer(pp.homes[receiver].dir / "keys" / "bundle.json")
    for a in accepted:
        status, m = pp.call(sender, "GET", f"/v1/messages/{a.id}")
        if status != 200 or m["status"] not in ("delivered", "acknowledged"):
            continue
        rep.delivered += 1
        rep.resends += max(0, int(m["attempts"]) - 1)
        got = by_id.get(a.id)
        if got is not None and got["body"].get("case_reference") != a.case_reference:
            rep.body_mismatches.append(a.id)
        try:
            rc = verify_receipt(
                Statement.from_dict("receipt", m["receipt"]),
                message_id=a.id,
                sender=sender,
                receiver=receiver,
                document_sha256=bytes.fromhex(m["document_sha256"]),
                key_for=receiver_keys.verify_key,
            )
            if got is None or bytes.fromhex(got["document_sha256"]) != rc.document_sha256:
                raise AssertionError("the inbox holds another document digest than the receipt binds")
            rep.receipts_verified += 1
        except (GatewayError, AssertionError, KeyError, TypeError) as e:
            rep.receipt_failures.append(f"{a.id}: {e}")
    return rep


@dataclass
class AuditCheck:
    """One gateway's log: it parses, its checkpoint root is the root of the entries served, and
    the offline verifier (`audit export` + `audit verify`) accepts the export."""

    name: str
    entries: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    checkpoint_size: int = 0
    root_matches: bool = False
    exported: int = 0
    verified: bool = False
    verify_output: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.root_matches and self.verified and not self.problems


def check_audit_live(pp: ProcessPair, name: str, timeout: float = 30.0) -> AuditCheck:
    """While running: wait for a checkpoint covering the whole log, then recompute its root."""
    rep = AuditCheck(name)
    entries: list[dict[str, Any]] = []

    def covered() -> bool:
        nonlocal entries
        entries = pp.audit_entries(name)
        cp = pp.checkpoint(name, cosigned=True)  # an export's latest checkpoint must be cosigned
        return cp is not None and cp.size == len(entries)

    wait_until(f"a cosigned checkpoint of {name}'s whole log", covered, timeout, every=0.3)
    cp = pp.checkpoint(name)
    assert cp is not None
    rep.entries, rep.checkpoint_size = len(entries), cp.size
    leaves = []
    for i, e in enumerate(entries):
        raw = json_bytes(e)
        try:
            AuditEntry.from_bytes(raw)
        except GatewayError as err:
            rep.problems.append(f"entry {i} does not parse: {err.code}")
        leaves.append(leaf_hash(raw))
    rep.kinds = dict(Counter(e["kind"] for e in entries))
    rep.root_matches = root_from_leaves(leaves) == cp.root
    if not rep.root_matches:
        rep.problems.append("the checkpoint root is not the root of the entries served")
    return rep


def check_audit_offline(pp: ProcessPair, rep: AuditCheck) -> None:
    """After a clean stop: `audit export` then `audit verify` (offline, public keys only)."""
    out = pp.root / f"{rep.name}.audit.jsonl"
    cfg = str(pp.homes[rep.name].config_path)
    exp = cli("audit", "export", "--config", cfg, "--out", str(out), "--json", env=pp.env)
    if exp.returncode != 0:
        rep.problems.append(f"audit export exited {exp.returncode}: {exp.stdout}{exp.stderr}")
        return
    summary = json.loads(exp.stdout)
    rep.exported = int(summary["size"])
    if rep.exported != rep.entries:
        rep.problems.append(f"the export covers {rep.exported} entries, the log has {rep.entries}")
    ver = cli("audit", "verify", str(out), "--json", "--workers", "0", env=pp.env)
    rep.verify_output = ver.stdout.strip()
    rep.verified = ver.returncode == 0 and json.loads(ver.stdout).get("verified") is True
    if not rep.verified:
        rep.problems.append(f"audit verify exited {ver.returncode}: {ver.stdout}{ver.stderr}")


def exactly_once_in_audit(entries: list[dict[str, Any]], ids: set[str], kind: str) -> list[str]:
    """Problems: ids with not exactly one `kind` entry, and `kind` entries about unknown ids."""
    counts = Counter(e.get("message_id") for e in entries if e["kind"] == kind)
    bad = [f"{kind} x{counts.get(i, 0)}: {i}" for i in sorted(ids) if counts.get(i, 0) != 1]
    bad += [f"{kind} for an unknown id {i}" for i in counts if i not in ids]
    return bad


# --- the crash drill -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CrashDrillConfig:
    seed: int = 20261124
    kills: int = 10
    min_gap: float = 0.6  # seconds of traffic between two kills
    max_gap: float = 2.0
    max_down: float = 0.6  # seconds a killed gateway stays down
    interval: float = 0.02  # the back-end's pause between two submissions
    tail: float = 1.0  # traffic after the last restart
    drain_timeout: float = 90.0


@dataclass
class CrashDrillReport:
    config: CrashDrillConfig
    kills: dict[str, int] = field(default_factory=dict)
    schedule: list[tuple[float, str, float]] = field(default_factory=list)
    submitted: int = 0
    accepted: int = 0
    replayed_202: int = 0
    client_attempts: int = 0
    transport_errors: int = 0
    refused: list[Any] = field(default_factory=list)
    unresolved: list[int] = field(default_factory=list)
    delivery: Delivery = field(default_factory=Delivery)
    audit: dict[str, AuditCheck] = field(default_factory=dict)
    audit_exactly_once: list[str] = field(default_factory=list)
    exit_codes: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (
            not self.refused
            and not self.unresolved
            and self.delivery.ok
            and all(a.ok for a in self.audit.values())
            and not self.audit_exactly_once
            and all(c == 0 for c in self.exit_codes.values())
        )

    def lines(self) -> list[str]:
        d = self.delivery
        out = [
            f"seed {self.config.seed}; kills {sum(self.kills.values())} "
            f"({', '.join(f'{k} {v}' for k, v in self.kills.items())})",
            f"submitted {self.submitted}, accepted (202) {self.accepted} (of which replayed 202s {self.replayed_202}), "
            f"client sends {self.client_attempts}, transport errors {self.transport_errors}, "
            f"refused {len(self.refused)}, unresolved {len(self.unresolved)}",
            f"delivered {d.delivered}, in the peer inbox {d.inbox}, duplicates {d.duplicates}, missing "
            f"{len(d.missing)}, unexpected {len(d.unexpected)}, out of order {d.out_of_order}, receipts verified "
            f"{d.receipts_verified}, envelopes re-sent {d.resends}",
        ]
        for a in self.audit.values():
            out.append(
                f"audit {a.name}: {a.entries} entries, checkpoint at {a.checkpoint_size}, root matches "
                f"{a.root_matches}, exported {a.exported}, offline verify {'OK' if a.verified else 'FAILED'}"
            )
        out.append(f"exactly-once audit problems {len(self.audit_exactly_once)}; clean exits {self.exit_codes}")
        out.append("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in self.seconds.items()))
        out.append("RESULT: " + ("OK" if self.ok else "FAILED"))
        return out


def run_crash_drill(
    root: Path, cfg: CrashDrillConfig, progress: Callable[[str], None] = lambda _: None
) -> CrashDrillReport:
    """SIGKILL the sender or the receiver at random moments under load, then check everything."""
    t0 = time.monotonic()
    rep = CrashDrillReport(cfg)
    pp = ProcessPair.prepare(root)
    rng = random.Random(cfg.seed)
    pp.start_all()
    submitter = Submitter(pp.procs[US].url, pp.tokens[US]["agency"], to=CN, interval=cfg.interval)
    try:
        rep.seconds["setup"] = time.monotonic() - t0
        t1 = time.monotonic()
        submitter.start()
        for k in range(cfg.kills):
            time.sleep(rng.uniform(cfg.min_gap, cfg.max_gap))
            victim = rng.choice((US, CN))
            down = rng.uniform(0.0, cfg.max_down)
            pp.procs[victim].kill()
            rep.schedule.append((time.monotonic() - t1, victim, down))
            progress(f"kill {k + 1}/{cfg.kills}: {victim} (down {down:.2f} s), {len(submitter.accepted)} accepted")
            time.sleep(down)
            pp.procs[victim].start()
        time.sleep(cfg.tail)
        submitter.halt()
        rep.seconds["crashing"] = time.monotonic() - t1
        t2 = time.monotonic()
        accepted = submitter.accepted
        ids = [a.id for a in accepted]
        wait_until("the sender's queue to drain", lambda: drained(pp, ids), cfg.drain_timeout, every=0.3)
        rep.seconds["drain"] = time.monotonic() - t2
        t3 = time.monotonic()
        rep.delivery = check_delivery(pp, accepted)
        for name in (US, CN):
            rep.audit[name] = check_audit_live(pp, name)
        us_log, cn_log = pp.audit_entries(US), pp.audit_entries(CN)
        idset = set(ids)
        rep.audit_exactly_once = (
            exactly_once_in_audit(us_log, idset, "submitted")
            + exactly_once_in_audit(us_log, idset, "delivered")
            + exactly_once_in_audit(cn_log, idset, "received")
        )
    finally:
        if submitter.is_alive():
            submitter.halt()
        rep.exit_codes = pp.stop_all()
    for name in (US, CN):
        if name in rep.audit:
            check_audit_offline(pp, rep.audit[name])
    rep.seconds["checks"] = time.monotonic() - t3
    rep.seconds["total"] = time.monotonic() - t0
    rep.kills = {name: p.kills for name, p in pp.procs.items()}
    rep.submitted, rep.accepted = submitter.submitted, len(submitter.accepted)
    rep.replayed_202, rep.client_attempts = submitter.replayed, submitter.attempts
    rep.transport_errors, rep.refused, rep.unresolved = (
        submitter.transport_errors,
        submitter.refused,
        submitter.unresolved,
    )
    return rep
