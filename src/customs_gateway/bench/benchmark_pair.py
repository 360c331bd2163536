"""The gateway pair under benchmark: two `serve` processes (or one in-process `LocalPair`), their memory,
and a bulk path that queues many messages for a stopped peer.

Both layouts come from `pair.prepare_pair` (keys from `keys-example/`, real mutual TLS, SQLite with
synchronous=FULL, audit log and checkpoint cosigning on). As processes, each gateway has its own
interpreter and its own resident set, read from `/proc/PID/status`; in process, both gateways and
the load generator share one interpreter and one resident set.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.parse
from concurrent.futures import Future
from multiprocessing import get_context
from pathlib import Path
from typing import IO, Any, Protocol

import aiohttp
import msgspec

from ..core import handling
from ..core.audit import AuditEntry
from ..core.clock import SystemClock, UUID7Source
from ..core.encoding import format_ts
from ..core.envelope import Document, SignedDocument
from ..core.keys import SigningKey
from ..service.crypto_pool import MainlessProcessPool
from ..service.gateway import issue_token
from ..service.pair import EXAMPLE_PASSPHRASE, Home, LocalPair
from ..service.server import open_store
from ..startup.agreement import builtin_profile
from ..startup.config import PASSPHRASE_ENV, RESERVED_ENV, Config, load_config, render_config
from ..startup.logs import configure_logging
from ..store.pg_migrations import quote_ident
from ..store.sqlite import _audit
from .benchmark import NoProgress, ProgressSink, descendants


def _status_kib(pid: int, keys: tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
            key, _, rest = line.partition(":")
            if key in keys:
                out[key] = int(rest.split()[0])
    return out


def _pss_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text(encoding="utf-8").splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def read_memory(pid: int) -> dict[str, float]:
    """Memory of a gateway in MiB: VmRSS (resident now) and VmHWM (peak) of its own process, and
    of the whole gateway with its crypto workers and their fork server: the sum of their VmRSS
    (pages shared between them counted in each) and of their PSS (shared pages divided among
    them: what the gateway as a whole costs the machine)."""
    own = _status_kib(pid, ("VmRSS", "VmHWM"))
    tree = [pid, *descendants(pid)]
    rss = sum(_status_kib(p, ("VmRSS",)).get("VmRSS", 0) for p in tree)
    return {
        "vmrss_mib": round(own.get("VmRSS", 0) / 1024, 1),
        "vmhwm_mib": round(own.get("VmHWM", 0) / 1024, 1),
        "processes": len(tree),
        "tree_rss_mib": round(rss / 1024, 1),
        "tree_pss_mib": round(sum(_pss_kib(p) for p in tree) / 1024, 1),
    }


def pg_dsn(base: str, schema: str) -> str:
    """`base` with `schema` as its search_path (libpq `options`, which PostgresStore reads)."""
    parts = urllib.parse.urlsplit(base)
    option = urllib.parse.urlencode({"options": f"-c search_path={schema}"}, quote_via=urllib.parse.quote)
    return parts._replace(query=f"{parts.query}&{option}" if parts.query else option).geturl()


def use_postgres(home: Home, dsn: str) -> None:
    """Point a (stopped) gateway's configuration at a PostgreSQL schema instead of its SQLite file."""
    config = load_config(home.config_path, env={})
    store = msgspec.structs.replace(config.store, backend="postgres", dsn=dsn)
    home.config_path.write_text(render_config(msgspec.structs.replace(config, store=store)), encoding="utf-8")


async def drop_schema(base: str, schema: str) -> None:
    """Drop a benchmark's PostgreSQL schema and everything in it."""
    import asyncpg

    conn = await asyncpg.connect(base, timeout=30)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
    finally:
        await conn.close()


def db_path(home: Home) -> Path:
    config = load_config(home.config_path, env={})
    return config.path(config.store.path)


async def issue_agency_token(home: Home) -> tuple[str, str]:
    """Issue an agency token straight into a (stopped) gateway's store: (token id, bearer secret)."""
    store = open_store(load_config(home.config_path, env={}))
    await store.open()
    try:
        return await issue_token(store, SystemClock(), "agency", "benchmark load", "cli:bench")
    finally:
        await store.close()


async def wait_ready(url: str, timeout: float, alive: Any = None) -> None:
    """Poll `GET /readyz` until it answers 200; `alive()` False means the process died."""
    end = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < end:
            if alive is not None and not alive():
                raise RuntimeError(f"the gateway behind {url} exited during start-up")
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with session.get(url + "/readyz") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} was not ready after {timeout:.0f} s")


class BenchPair(Protocol):
    """Start and stop either gateway, and say which process holds it."""

    homes: dict[str, Home]
    in_process: bool

    async def start(self, name: str) -> None: ...
    async def stop(self, name: str) -> None: ...
    async def stop_all(self) -> None: ...
    def pid(self, name: str) -> int: ...


class ProcessPair:
    """Each gateway as `customs-gateway serve --config …` in its own process, logging to a file."""

    in_process = False

    def __init__(self, homes: dict[str, Home], passphrase: bytes = EXAMPLE_PASSPHRASE) -> None:
        self.homes = homes
        # Configuration overrides (CUSTOMS_GATEWAY_<SECTION>__<KEY>) pass on, as the run's JSON
        # records them; the variables that are not configuration (a token, a passphrase) do not.
        self._env = {k: v for k, v in os.environ.items() if k not in RESERVED_ENV}
        self._env[PASSPHRASE_ENV] = passphrase.decode("utf-8")
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._logs: dict[str, IO[bytes]] = {}

    async def start(self, name: str, ready_timeout: float = 120) -> None:
        home = self.homes[name]
        log = (home.dir / "serve.log").open("ab")
        cmd = [sys.executable, "-m", "customs_gateway.cli.main", "serve", "--config", str(home.config_path)]
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self._env
        )
        self._procs[name], self._logs[name] = proc, log
        await wait_ready(home.local_url, ready_timeout, alive=lambda: proc.returncode is None)

    async def stop(self, name: str) -> None:
        proc = self._procs.pop(name, None)
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log = self._logs.pop(name, None)
        if log is not None:
            log.close()

    async def stop_all(self) -> None:
        for name in list(self._procs):
            await self.stop(name)

    def pid(self, name: str) -> int:
        return self._procs[name].pid


class InProcessPair:
    """Both gateways in this process and event loop (`LocalPair`), logging JSON to a file."""

    in_process = True

    def __init__(self, homes: dict[str, Home], log_path: Path) -> None:
        self.homes = homes
        self._pair = LocalPair(homes)
        self._log = log_path.open("w", encoding="utf-8")
        configure_logging("json", "info", stream=self._log)

    async def start(self, name: str) -> None:
        await self._pair.start(name)
        await wait_ready(self.homes[name].local_url, 30)

    async def stop(self, name: str) -> None:
        await self._pair.stop(name)

    async def stop_all(self) -> None:
        await self._pair.stop_all()
        self._log.close()

    def pid(self, name: str) -> int:
        return os.getpid()


# --- recording profiles with py-spy ---------------------------------------------------------------


def py_spy_available() -> bool:
    return shutil.which("py-spy") is not None or (Path(sys.executable).parent / "py-spy").exists()


def start_py_spy(pid: int, seconds: float, out: Path, *, gil: bool = False) -> subprocess.Popen[bytes]:
    """Sample `pid` with py-spy for `seconds` (raw collapsed stacks per thread, idle excluded;
    with `gil`, only the thread holding the GIL: where the interpreter's one core goes)."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    cmd += ["--rate", "100", "--format", "raw", "--threads", "--subprocesses", "--output", str(out), "--nonblocking"]
    if gil:
        cmd.append("--gil")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603


# --- queueing many messages for a stopped peer -------------------------------------------------------

_signer: tuple[SigningKey, str, str, dict[str, Any]] | None = None


def _init_signer(seed: bytes, sender: str, peer: str, body: dict[str, Any]) -> None:
    global _signer  # noqa: PLW0603 - one signer per worker process, set once by the pool initializer
    _signer = (SigningKey(seed), sender, peer, body)


def _sign_chunk(count: int, created_at: dt.datetime) -> list[tuple[str, bytes, bytes]]:
    """`count` fresh documents signed as the gateway signs a submission: (id, signed bytes, digest)."""
    assert _signer is not None
    key, sender, peer, body = _signer
    ids = UUID7Source(SystemClock())
    terms = handling.default_wire("seizure-share", builtin_profile(), created_at.date())
    out = []
    for _ in range(count):
        doc = Document(ids.new_id(), sender, peer, "seizure-share", created_at, body, handling=terms)
        signed = SignedDocument.create(doc, key)
        out.append((doc.id, signed.raw, signed.digest))
    return out


def queue_bulk(
    config: Config,
    signing_key: SigningKey,
    token_id: str,
    body: dict[str, Any],
    count: int,
    *,
    chunk: int = 5000,
    workers: int | None = None,
    progress: ProgressSink | None = None,
) -> dict[str, Any]:
    """Queue `count` seizure-share messages in a stopped gateway's outbox, as fast as this machine can.

    The documented bulk path: documents are signed with the gateway's signing key in worker
    processes, then written in transactions of `chunk` rows to the same tables the store's
    `submit` writes (messages, history, peer sequence) with one `submitted` audit entry per
    message appended to the Merkle log by the store's own `_audit`. What it skips is only the
    per-message HTTP request, schema check and idempotency row. The gateway must be stopped.
    """
    sink = progress or NoProgress()
    path = config.path(config.store.path)
    sender, peer = config.identity, config.peer.identity
    created = dt.datetime.now(dt.timezone.utc)
    expires = created + dt.timedelta(seconds=config.delivery.default_ttl_seconds)
    ts, exp = format_ts(created), format_ts(expires)
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    n_workers = workers or max(1, (os.cpu_count() or 1))
    sink.begin(f"queueing {count:,} messages for the stopped peer", count)
    start = time.perf_counter()
    done = 0
    with MainlessProcessPool(
        n_workers,
        mp_context=get_context("spawn"),
        initializer=_init_signer,
        initargs=(signing_key.seed, sender, peer, body),
    ) as pool:
        sizes = [min(chunk, count - i) for i in range(0, count, chunk)]
        pending: list[Future[list[tuple[str, bytes, bytes]]]] = []
        for size in sizes[: 2 * n_workers]:
            pending.append(pool.submit(_sign_chunk, size, created))
        nxt = len(pending)
        while pending:
            signed = pending.pop(0).result()
            if nxt < len(sizes):
                pending.append(pool.submit(_sign_chunk, sizes[nxt], created))
                nxt += 1
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("INSERT OR IGNORE INTO peer_state(peer) VALUES (?)", (peer,))
                seq = int(conn.execute("SELECT next_seq FROM peer_state WHERE peer=?", (peer,)).fetchone()[0])
                conn.executemany(
                    "INSERT INTO messages(id, peer, seq, type, status, created_at, expires_at, signed_document,"
                    " document_sha256, attempts, next_attempt_at, token_id, updated_at)"
                    " VALUES (?,?,?,'seizure-share','queued',?,?,?,?,0,?,?,?)",
                    [
                        (mid, peer, seq + i, ts, exp, raw, dg, ts, token_id, ts)
                        for i, (mid, raw, dg) in enumerate(signed)
                    ],
                )
                conn.executemany(
                    "INSERT INTO history(message_id, at, status, detail) VALUES (?,?,'queued','')",
                    [(mid, ts) for mid, _, _ in signed],
                )
                conn.execute("UPDATE peer_state SET next_seq=? WHERE peer=?", (seq + len(signed), peer))
                _audit(
                    conn,
                    *(
                        AuditEntry.submitted(created, f"token:{token_id}", mid, peer, dg, {"type": "seizure-share"})
                        for mid, _, dg in signed
                    ),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            done += len(signed)
            sink.update(done)
    conn.close()
    elapsed = time.perf_counter() - start
    sink.end()
    size_mib = sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 2**20
    return {
        "queued": done,
        "fill_seconds": round(elapsed, 1),
        "fill_per_second": round(done / elapsed),
        "database_mib": round(size_mib, 1),
        "signing_workers": n_workers,
    }
