"""Benchmark measurements: each figure `customs-gateway bench` reports, as one function returning plain data.

The cryptographic ceiling (all crypto of one message, no I/O), two real gateways end to end
(sustained throughput with closed-loop clients, latency at a fixed open-loop offered load), a
RabbitMQ reference (durable publish-confirm + consume-ack, no crypto) and offline audit
verification. The gateways themselves are started by `benchmark_pair`; `cli/bench_cmd.py`
orders the phases and renders the results.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib.util
import json
import os
import platform
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..core.bundle import KeyBundle, KeyRecord, PeerKeys
from ..core.envelope import Document, build_envelope, open_envelope
from ..core.keys import ALG_MLKEM768_X25519, ALG_X25519, SUITE_HYBRID, SUITE_X25519, DecryptionKey, SigningKey
from ..core.receipt import make_receipt, verify_receipt
from ..service.pair import example_dir
from .loadclient import LoadClient


class ProgressSink(Protocol):
    """Where a long phase reports how far it is (the CLI draws a rich progress bar)."""

    def begin(self, label: str, total: float) -> None: ...
    def update(self, completed: float) -> None: ...
    def end(self) -> None: ...


class NoProgress:
    """A progress sink that shows nothing (scripts, tests)."""

    def begin(self, label: str, total: float) -> None:
        pass

    def update(self, completed: float) -> None:
        pass

    def end(self) -> None:
        pass


class Skipped(Exception):
    """A row that cannot be measured here (a service down, an optional package missing)."""


def sample_body(msg_type: str = "seizure-share") -> dict[str, Any]:
    """The sample message body of `keys-example/messages/` every row sends."""
    body: dict[str, Any] = json.loads((example_dir() / "messages" / f"{msg_type}.json").read_text(encoding="utf-8"))
    return body


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an already sorted, non-empty list."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    rank = max(1, min(len(sorted_values), -(-int(q * len(sorted_values)) // 100)))
    return sorted_values[rank - 1]


def summarize_ms(seconds: Iterable[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds of a set of durations in seconds."""
    xs = sorted(s * 1000.0 for s in seconds)
    if not xs:
        return {}
    return {
        "p50_ms": round(percentile(xs, 50), 1),
        "p95_ms": round(percentile(xs, 95), 1),
        "p99_ms": round(percentile(xs, 99), 1),
        "max_ms": round(xs[-1], 1),
    }


def task_seconds(pid: int) -> tuple[float, float]:
    run = wait = 0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = (task / "schedstat").read_text(encoding="ascii").split()
                run, wait = run + int(fields[0]), wait + int(fields[1])
    return run / 1e9, wait / 1e9


def descendants(pid: int, exclude: frozenset[int] = frozenset()) -> list[int]:
    """Every live process below `pid` (a gateway's crypto workers and their fork server), not
    descending into `exclude` (processes measured on their own)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text(encoding="ascii")
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child in exclude:
                continue
            out.append(child)
            todo.append(child)
    return out


def cpu_and_wait_seconds(pid: int, exclude: frozenset[int] = frozenset()) -> tuple[float, float]:
    """Seconds a process's live threads, and those of every live process below it (its crypto
    workers), have run on a CPU, and waited runnable for one (`/proc/PID/task/*/schedstat`): the
    wait is what other load on the machine cost them."""
    run, wait = task_seconds(pid)
    for child in descendants(pid, exclude):
        r, w = task_seconds(child)
        run, wait = run + r, wait + w
    return run, wait


def machine_busy_seconds() -> float:
    """CPU seconds all processes on this machine have used (every core, from /proc/stat)."""
    fields = Path("/proc/stat").read_text(encoding="ascii").splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU used by named processes over a window, and CPU they waited for, as % of one core."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._start: dict[str, tuple[float, float]] = {}
        self._t0 = self._machine0 = 0.0

    def _others(self, pid: int) -> frozenset[int]:
        return frozenset(p for p in self.pids.values() if p != pid)

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._machine0 = machine_busy_seconds()
        self._start = {name: cpu_and_wait_seconds(pid, self._others(pid)) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, dict[str, float]]:
        elapsed = time.monotonic() - self._t0
        out: dict[str, dict[str, float]] = {}
        for name, pid in self.pids.items():
            run, wait = cpu_and_wait_seconds(pid, self._others(pid))
            run0, wait0 = self._start[name]
            out[name] = {
                "cpu_percent": round(100 * (run - run0) / elapsed, 1),
                "runqueue_wait_percent": round(100 * (wait - wait0) / elapsed, 1),
            }
        machine = 100 * (machine_busy_seconds() - self._machine0) / elapsed
        ours = sum(v["cpu_percent"] for v in out.values())
        out["rest of the machine"] = {"cpu_percent": round(max(0.0, machine - ours), 1)}
        return out


# --- the cryptographic ceiling ----------------------------------------------------------------

_NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.timezone.utc)


def _record(kid: str, use: str, alg: str, public: bytes) -> KeyRecord:
    return KeyRecord(kid, use, alg, public, _NOW - dt.timedelta(days=1), _NOW + dt.timedelta(days=365))


def crypto_ceiling(seconds: float, suite: str = "hybrid", progress: ProgressSink | None = None) -> dict[str, Any]:
    """All crypto of one message end to end, in a tight loop on one core, for `seconds`.

    One message = document sign, HPKE seal, envelope sign, envelope verify, HPKE open, document
    verify, receipt sign, receipt verify: what every message costs the two gateways together.
    """
    alg = ALG_MLKEM768_X25519 if suite == "hybrid" else ALG_X25519
    a_sig = SigningKey(bytes(range(32)))
    b_sig = SigningKey(bytes(range(1, 33)))
    b_enc = DecryptionKey.generate(alg)
    suite_id = SUITE_HYBRID if alg == ALG_MLKEM768_X25519 else SUITE_X25519
    peer_a = PeerKeys(
        KeyBundle("US-CBP", _NOW, (_record(a_sig.kid, "signing", "ed25519", a_sig.public_raw),), (suite_id,), "")
    )
    peer_b = PeerKeys(
        KeyBundle(
            "CN-GACC",
            _NOW,
            (
                _record(b_sig.kid, "signing", "ed25519", b_sig.public_raw),
                _record(b_enc.kid, "encryption", alg, b_enc.public.raw),
            ),
            (suite_id,),
            "",
        )
    )
    body = sample_body()
    enc_key = peer_b.encryption_key(_NOW)
    sink = progress or NoProgress()
    sink.begin(f"crypto ceiling ({suite})", seconds)
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while (now := time.perf_counter()) < deadline:
        sink.update(now - start)
        for _ in range(50):
            doc = Document(f"0190a1b2-0000-7000-8000-{n:012d}", "US-CBP", "CN-GACC", "seizure-share", _NOW, body)
            env, signed, _ = build_envelope(
                doc, seq=n + 1, sent_at=_NOW, attempt=1, signing_key=a_sig, recipient_key=enc_key
            )
            opened = open_envelope(
                env, me="CN-GACC", peer=peer_a, decryption_key=lambda _k: b_enc, now=_NOW, skew_seconds=300
            )
            rc = make_receipt(
                message_id=doc.id,
                sender="US-CBP",
                receiver="CN-GACC",
                document_sha256=opened.signed_document.digest,
                received_at=_NOW,
                key=b_sig,
            )
            verify_receipt(
                rc,
                message_id=doc.id,
                sender="US-CBP",
                receiver="CN-GACC",
                document_sha256=signed.digest,
                key_for=peer_b.verify_key,
            )
            n += 1
    elapsed = time.perf_counter() - start
    sink.end()
    return {"suite": suite, "messages": n, "seconds": round(elapsed, 2), "messages_per_second": round(n / elapsed, 1)}


# --- watching a gateway's outbox ---------------------------------------------------------------


class OutboxProbe:
    """A read-only connection to a gateway's SQLite file: counts and delivery times of its outbox.

    It reads the store's tables directly (WAL lets it read beside the running gateway without
    blocking its writer), so it costs the gateway no HTTP request. Call it through a thread.
    """

    DONE = ("delivered", "acknowledged")

    def __init__(self, db_path: Path) -> None:
        self.conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, check_same_thread=False, timeout=30)

    def close(self) -> None:
        self.conn.close()

    def counts(self) -> tuple[int, int]:
        """(delivered or acknowledged, still pending: queued or sent)."""
        done = self.conn.execute(
            "SELECT count(*) FROM messages WHERE status IN ('delivered','acknowledged')"
        ).fetchone()[0]
        pending = self.conn.execute("SELECT count(*) FROM messages WHERE status IN ('queued','retrying')").fetchone()[0]
        return int(done), int(pending)

    def _rows_for(self, sql: str, ids: list[str]) -> Iterator[tuple[Any, ...]]:
        """Run `sql` (with `{marks}` where the id placeholders go) over `ids`, 500 at a time."""
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            yield from self.conn.execute(sql.format(marks=",".join("?" * len(chunk))), chunk)

    def finished_among(self, ids: list[str]) -> list[tuple[str, str]]:
        """(id, status) of those messages no longer pending: delivered, or refused or expired."""
        sql = "SELECT id, status FROM messages WHERE id IN ({marks}) AND status NOT IN ('queued','retrying')"
        return [(str(mid), str(status)) for mid, status in self._rows_for(sql, ids)]

    def failures(self) -> dict[str, int]:
        """Messages that will never be delivered (refused by the peer, expired), by status and reason."""
        rows = self.conn.execute(
            "SELECT status, coalesce(last_error, ''), count(*) FROM messages"
            " WHERE status IN ('refused','expired') GROUP BY 1, 2"
        ).fetchall()
        return {f"{st}: {err.split(':', 1)[0]}": int(n) for st, err, n in rows}

    def delivered_history(self, ids: list[str]) -> dict[str, float]:
        """Message id -> POSIX time of its `delivered` history entry (millisecond precision)."""
        out: dict[str, float] = {}
        sql = "SELECT message_id, at FROM history WHERE message_id IN ({marks}) AND status='delivered'"
        for mid, at in self._rows_for(sql, ids):
            when = dt.datetime.fromisoformat(str(at).replace("Z", "+00:00")).timestamp()
            out[str(mid)] = min(out.get(str(mid), when), when)
        return out


class PgOutboxProbe(OutboxProbe):
    """The same counts read from a gateway's PostgreSQL schema (its own connection, on an event
    loop of its own, so the probe's methods stay plain calls made through a thread)."""

    def __init__(self, dsn: str) -> None:  # the SQLite connection of the base class is not opened
        import asyncpg  # the PostgreSQL store's driver: imported only when a row asks for it

        self.loop = asyncio.new_event_loop()
        self.pg = self.loop.run_until_complete(asyncpg.connect(dsn, timeout=30))

    def close(self) -> None:
        self.loop.run_until_complete(self.pg.close())
        self.loop.close()

    def _fetch(self, sql: str, *args: Any) -> list[Any]:
        return list(self.loop.run_until_complete(self.pg.fetch(sql, *args)))

    def counts(self) -> tuple[int, int]:
        row = self._fetch(
            "SELECT count(*) FILTER (WHERE status IN ('delivered','acknowledged')),"
            " count(*) FILTER (WHERE status IN ('queued','retrying')) FROM messages"
        )[0]
        return int(row[0]), int(row[1])

    def finished_among(self, ids: list[str]) -> list[tuple[str, str]]:
        sql = "SELECT id, status FROM messages WHERE id = ANY($1) AND status NOT IN ('queued','retrying')"
        return [(str(r[0]), str(r[1])) for r in self._fetch(sql, ids)]

    def failures(self) -> dict[str, int]:
        rows = self._fetch(
            "SELECT status, coalesce(last_error, ''), count(*) FROM messages"
            " WHERE status IN ('refused','expired') GROUP BY 1, 2"
        )
        return {f"{st}: {err.split(':', 1)[0]}": int(n) for st, err, n in rows}

    def delivered_history(self, ids: list[str]) -> dict[str, float]:
        sql = "SELECT message_id, min(at) FROM history WHERE message_id = ANY($1) AND status='delivered' GROUP BY 1"
        return {str(r[0]): r[1].timestamp() for r in self._fetch(sql, ids)}


async def wait_drained(
    probe: OutboxProbe, timeout: float, progress: ProgressSink | None = None, label: str = "draining the queue"
) -> float:
    """Wait until the outbox holds nothing pending; returns the seconds it took. Raises TimeoutError."""
    sink = progress or NoProgress()
    start = time.monotonic()
    _, first = await asyncio.to_thread(probe.counts)
    sink.begin(label, max(1, first))
    try:
        while True:
            _, pending = await asyncio.to_thread(probe.counts)
            sink.update(max(0, first - pending))
            if pending == 0:
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"{pending} messages still pending after {timeout:.0f} s")
            await asyncio.sleep(0.05)
    finally:
        sink.end()


# --- load: back-end clients submitting over the local API ---------------------------------------


def submit_payload(peer: str, body: dict[str, Any]) -> bytes:
    """The JSON bytes of one `POST /v1/messages` request sending seizure share `body` to `peer`."""
    return json.dumps({"type": "seizure-share", "to": peer, "body": body}, ensure_ascii=False).encode("utf-8")


@dataclass
class Submitter:
    """What every load client posts: one pre-encoded submit request to one gateway's local API
    (`url`, its base: `http://host:port`)."""

    url: str
    token: str
    payload: bytes
    path: str = field(init=False, default="/v1/messages")
    headers: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}

    @classmethod
    def for_peer(cls, local_url: str, token: str, peer: str, body: dict[str, Any]) -> Submitter:
        return cls(local_url, token, submit_payload(peer, body))

    async def submit(self, client: LoadClient) -> str | None:
        """POST once; the message id on 202, None on any other answer."""
        status, answer = await client.post(self.path, self.payload, self.headers)
        if status != 202:
            return None
        return str(json.loads(answer)["id"])

    async def submit_count(self, client: LoadClient) -> int:
        """POST once; how many messages were accepted (0 or 1)."""
        return 0 if await self.submit(client) is None else 1


@dataclass
class BatchSubmitter:
    """A load client of `POST /v1/messages:batch`: `size` seizure shares per request."""

    url: str
    token: str
    peer: str
    body: dict[str, Any]
    size: int = 100
    path: str = field(init=False, default="/v1/messages:batch")
    payload: bytes = field(init=False)
    headers: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        item = {"type": "seizure-share", "to": self.peer, "body": self.body}
        self.payload = json.dumps({"messages": [item] * self.size}, ensure_ascii=False).encode("utf-8")

    async def submit_count(self, client: LoadClient) -> int:
        """POST one batch; how many of its messages were accepted."""
        status, answer = await client.post(self.path, self.payload, self.headers)
        if status != 200:
            return 0
        return sum(1 for x in json.loads(answer)["results"] if x["status"] == "accepted")


async def closed_loop_throughput(
    submitter: Submitter | BatchSubmitter,
    probe: OutboxProbe,
    *,
    clients: int,
    warmup: float,
    window: float,
    drain_timeout: float,
    cpu: CpuMeter | None = None,
    progress: ProgressSink | None = None,
) -> dict[str, Any]:
    """N clients submit in a loop; delivered/s is counted over `window` after `warmup`, then the
    queue is drained. Delivered means the sender stored the peer's receipt (status `delivered`)."""
    sink = progress or NoProgress()
    stop = asyncio.Event()
    accepted = [0]
    refused = [0]
    errors: dict[str, int] = {}

    async def client(session: LoadClient) -> None:
        while not stop.is_set():
            try:
                n = await submitter.submit_count(session)
            except (OSError, TimeoutError, ValueError) as e:
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                await asyncio.sleep(0.05)
                continue
            if n == 0:
                refused[0] += 1
            else:
                accepted[0] += n

    async with LoadClient(submitter.url, timeout=60) as session:  # one connection per client
        tasks = [asyncio.create_task(client(session)) for _ in range(clients)]
        try:
            start = time.monotonic()
            sink.begin(f"end to end, {clients} clients (warm-up {warmup:.0f} s)", warmup + window)
            while time.monotonic() - start < warmup:
                sink.update(time.monotonic() - start)
                await asyncio.sleep(0.2)
            d0, _ = await asyncio.to_thread(probe.counts)
            a0, t0 = accepted[0], time.monotonic()
            if cpu is not None:
                cpu.start()
            per_second: list[float] = []
            last_d, last_t = d0, t0
            # A window in which nothing was delivered measured nothing (a loaded machine, a tiny
            # --quick window): it goes on, up to ten windows, until the first delivery.
            while (now := time.monotonic()) - t0 < window or (last_d == d0 and now - t0 < 10 * window):
                await asyncio.sleep(min(1.0, max(0.05, window - (now - t0))))
                d, _ = await asyncio.to_thread(probe.counts)
                t = time.monotonic()
                per_second.append((d - last_d) / (t - last_t))
                last_d, last_t = d, t
                sink.update(warmup + t - t0)
            d1, pending_at_end = await asyncio.to_thread(probe.counts)
            a1, t1 = accepted[0], time.monotonic()
            cpu_percent = cpu.stop() if cpu is not None else {}
            sink.end()
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
    drain = await wait_drained(probe, drain_timeout, sink)
    lost = await asyncio.to_thread(probe.failures)
    elapsed = t1 - t0
    return {
        "clients": clients,
        "warmup_seconds": warmup,
        "window_seconds": round(elapsed, 2),
        "delivered": d1 - d0,
        "messages_per_second": round((d1 - d0) / elapsed, 1),
        "submitted_per_second": round((a1 - a0) / elapsed, 1),
        "per_second_min": round(min(per_second), 1) if per_second else None,
        "per_second_max": round(max(per_second), 1) if per_second else None,
        "pending_at_window_end": pending_at_end,
        "drain_seconds": round(drain, 2),
        "submit_refusals": refused[0],
        "never_delivered": lost,
        "client_errors": errors,
        "cpu": cpu_percent,
    }


async def open_loop_latency(
    submitter: Submitter,
    probe: OutboxProbe,
    *,
    rate: float,
    duration: float,
    drain_timeout: float,
    poll_interval: float = 0.005,
    seed: int = 1,
    warmup: float = 0.0,
    cpu: CpuMeter | None = None,
    progress: ProgressSink | None = None,
) -> dict[str, Any]:
    """Submit at a fixed offered rate (Poisson arrivals, independent of answers) for `warmup`,
    then for `duration`: the figures are those of the arrivals after the warm-up.

    Latency runs from each arrival's scheduled time (so a late load generator cannot hide queueing)
    to the message's `delivered` status, observed two ways: by polling the sender's store every
    `poll_interval` (the headline figure: an upper bound, late by at most one poll) and from the
    timestamp of the `delivered` history entry, as the delivery worker stamps it (before the
    receipt is verified and committed, so a lower bound). The warm-up's arrivals (a pair that
    was idle or just started: connections, caches and the first batches) are waited for like the
    others and summarized apart, as `warmup_delivered`; their failed submissions and refusals are
    counted apart too (`warmup_submit_failures`, `warmup_not_delivered`).
    """
    sink = progress or NoProgress()
    rng = random.Random(seed)  # noqa: S311 - arrival times, not security
    loop = asyncio.get_running_loop()
    scheduled: dict[str, float] = {}
    warm: dict[str, float] = {}
    submit_lat: list[float] = []
    observed: dict[str, float] = {}
    outstanding: set[str] = set()
    lost: dict[str, str] = {}
    failures = [0]
    warm_failures = [0]
    done_sending = asyncio.Event()

    async def one(session: LoadClient, at_wall: float, measured: bool) -> None:
        try:
            mid = await submitter.submit(session)
        except (OSError, TimeoutError, ValueError):
            mid = None
        if mid is None:
            (failures if measured else warm_failures)[0] += 1
            return
        if not measured:
            warm[mid] = at_wall
            outstanding.add(mid)
            return
        submit_lat.append(time.time() - at_wall)
        scheduled[mid] = at_wall
        outstanding.add(mid)

    async def poller() -> None:
        while not (done_sending.is_set() and not outstanding):
            started = time.time()
            if outstanding:
                batch = list(outstanding)
                for mid, status in await asyncio.to_thread(probe.finished_among, batch):
                    if status in OutboxProbe.DONE:
                        observed[mid] = started
                    else:
                        lost[mid] = status
                    outstanding.discard(mid)
            await asyncio.sleep(poll_interval)

    async with LoadClient(submitter.url, timeout=60) as session:
        poll_task = asyncio.create_task(poller())
        tasks: set[asyncio.Task[None]] = set()
        label = f"latency at {rate:.0f} msg/s offered (open loop" + (f", warm-up {warmup:.0f} s)" if warmup else ")")
        sink.begin(label, warmup + duration)
        t0, wall0 = loop.time(), time.time()
        measuring = False
        offset = rng.expovariate(rate)
        while offset < warmup + duration:
            delay = t0 + offset - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if not measuring and offset >= warmup:
                measuring = True
                if cpu is not None:
                    cpu.start()
            task = asyncio.create_task(one(session, wall0 + offset, measuring))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sink.update(offset)
            offset += rng.expovariate(rate)
        cpu_percent = cpu.stop() if cpu is not None and measuring else {}
        await asyncio.gather(*tasks)
        sent = len(scheduled) + failures[0]
        sink.end()
        lag = loop.time() - t0 - warmup - duration
        drain_start = time.monotonic()
        done_sending.set()
        try:
            await asyncio.wait_for(poll_task, drain_timeout)
        except TimeoutError as e:
            raise TimeoutError(f"{len(outstanding)} messages not delivered {drain_timeout:.0f} s after the run") from e
        drain = time.monotonic() - drain_start
    ids = list(scheduled)
    stamped = await asyncio.to_thread(probe.delivered_history, ids)
    return {
        "offered_per_second": rate,
        "warmup_seconds": warmup,
        "duration_seconds": duration,
        "arrivals": sent,
        "achieved_per_second": round(len(scheduled) / duration, 1),
        "submit_failures": failures[0],
        "generator_lag_seconds": round(max(0.0, lag), 3),
        "samples": sum(1 for m in observed if m in scheduled),
        "not_delivered": sum(1 for m in lost if m in scheduled),
        "poll_interval_ms": poll_interval * 1000,
        "delivered": summarize_ms(observed[m] - scheduled[m] for m in observed if m in scheduled),
        "delivered_history": summarize_ms(stamped[m] - scheduled[m] for m in stamped),
        "warmup_arrivals": len(warm),
        "warmup_submit_failures": warm_failures[0],
        "warmup_not_delivered": sum(1 for m in lost if m in warm),
        "warmup_delivered": summarize_ms(observed[m] - warm[m] for m in observed if m in warm),
        "accepted_202": summarize_ms(submit_lat),
        "drain_after_seconds": round(drain, 2),
        "cpu": cpu_percent,
    }


# --- the RabbitMQ reference -----------------------------------------------------------------------


async def rabbitmq_reference(
    url: str,
    payload: bytes,
    *,
    publishers: int,
    warmup: float,
    window: float,
    progress: ProgressSink | None = None,
) -> dict[str, Any]:
    """The same payloads through RabbitMQ: persistent messages to a durable queue, each publish
    awaiting its confirm, one consumer acking each message; messages consumed per second.

    Raises Skipped when aio-pika is not installed or the broker cannot be reached."""
    try:
        import aio_pika  # type: ignore[import-not-found,unused-ignore]
    except ImportError as e:
        raise Skipped("aio-pika is not installed (pip install 'customs-gateway[bench]')") from e
    sink = progress or NoProgress()
    try:
        pub_conn = await asyncio.wait_for(aio_pika.connect(url), 5)
        con_conn = await asyncio.wait_for(aio_pika.connect(url), 5)
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as e:
        raise Skipped(f"RabbitMQ unreachable at {_redact(url)}: {type(e).__name__}") from e
    name = f"customs-gateway-bench-{os.getpid()}-{int(time.time())}"
    consumed = [0]
    published = [0]
    stop = asyncio.Event()
    try:
        pub_ch = await pub_conn.channel(publisher_confirms=True)
        queue = await pub_ch.declare_queue(name, durable=True)
        con_ch = await con_conn.channel()
        await con_ch.set_qos(prefetch_count=256)
        con_queue = await con_ch.get_queue(name)

        async def on_message(message: Any) -> None:
            await message.ack()
            consumed[0] += 1

        tag = await con_queue.consume(on_message)

        async def publisher() -> None:
            exchange = pub_ch.default_exchange
            while not stop.is_set():
                msg = aio_pika.Message(payload, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
                await exchange.publish(msg, routing_key=name)
                published[0] += 1

        tasks = [asyncio.create_task(publisher()) for _ in range(publishers)]
        try:
            sink.begin(f"RabbitMQ reference, {publishers} publishers", warmup + window)
            start = time.monotonic()
            while time.monotonic() - start < warmup:
                sink.update(time.monotonic() - start)
                await asyncio.sleep(0.2)
            c0, p0, t0 = consumed[0], published[0], time.monotonic()
            while (now := time.monotonic()) - t0 < window:
                sink.update(warmup + now - t0)
                await asyncio.sleep(0.2)
            c1, p1, t1 = consumed[0], published[0], time.monotonic()
            sink.end()
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        drain_start = time.monotonic()
        while consumed[0] < published[0] and time.monotonic() - drain_start < 60:
            await asyncio.sleep(0.05)
        drain = time.monotonic() - drain_start
        await con_queue.cancel(tag)
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await con_conn.close()
        await pub_conn.close()
    elapsed = t1 - t0
    return {
        "publishers": publishers,
        "window_seconds": round(elapsed, 2),
        "messages_per_second": round((c1 - c0) / elapsed, 1),
        "published_per_second": round((p1 - p0) / elapsed, 1),
        "drain_seconds": round(drain, 2),
        "payload_bytes": len(payload),
    }


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://…@{rest.rsplit('@', 1)[1]}"
    return url


# --- offline audit verification ---------------------------------------------------------------------


def source_root() -> Path | None:
    """The source checkout this package runs from (with `benchmarks/`), if any."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "benchmarks").is_dir() else None


def audit_verify(entries: int, timeout: float = 600) -> dict[str, Any]:
    """Generate an `entries`-entry export bundle and time `verify_bundle` on it, by running
    `benchmarks/audit_verify.py` (its own generator) in a child process. Raises Skipped when the
    verifier or the script is not available."""
    if importlib.util.find_spec("customs_gateway.core.audit_bundle") is None:
        raise Skipped("customs_gateway.core.audit_bundle is not available")
    from ..core import audit_bundle

    if not hasattr(audit_bundle, "verify_bundle"):
        raise Skipped("core.audit_bundle.verify_bundle is not available")
    root = source_root()
    script = root / "benchmarks" / "audit_verify.py" if root else None
    if script is None or not script.exists():
        raise Skipped("benchmarks/audit_verify.py is not available (run from a source checkout)")
    proc = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, str(script), "--json", "--entries", str(entries)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"audit_verify.py exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# --- where and on what the run happened -------------------------------------------------------------


def git_commit(root: Path | None = None) -> str | None:
    """The checked-out commit, read from `.git` files (no git process); None outside a checkout."""
    base = root or source_root()
    if base is None:
        return None
    git = base / ".git"
    try:
        if git.is_file():  # a worktree: "gitdir: <path>"
            git = Path(git.read_text(encoding="utf-8").split(":", 1)[1].strip())
        head = (git / "HEAD").read_text(encoding="utf-8").strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        common = git / "commondir"
        bases = [git] + ([git / common.read_text(encoding="utf-8").strip()] if common.exists() else [])
        for b in bases:
            if (b / ref).exists():
                return (b / ref).read_text(encoding="utf-8").strip()
            packed = b / "packed-refs"
            if packed.exists():
                for line in packed.read_text(encoding="utf-8").splitlines():
                    if line.endswith(" " + ref):
                        return line.split(" ", 1)[0]
    except (OSError, IndexError):
        return None
    return None


def machine_info() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_mib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                mem_mib = int(line.split()[1]) // 1024
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_mib": mem_mib,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
    }


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
