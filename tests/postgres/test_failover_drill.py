"""Failover drill: three US-CBP replicas on one PostgreSQL schema behind TCP balancers, one SIGKILLed.

Every process is a real `customs-gateway serve`. The three US replicas share one schema and one
identity (copies of the same key directories); CN-GACC is one process on SQLite. A round-robin
TCP balancer stands in front of the replicas' local API (the back-end's side) and another in front
of their peer API, so CN's mutual TLS runs end to end through it. A back-end submits a steady
stream through the balancer; the replica that leads checkpointing is SIGKILLed mid-stream and
later restarted. At the end every 202'd message must be in CN's inbox exactly once, delivered,
with a receipt that verifies, and the US audit log must verify offline.

`ReplicaCluster` and `Balancer` are also what `benchmarks/replicas.py` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import shutil
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from customs_gateway.bench.benchmark_pair import db_path
from customs_gateway.service.pair import Home, free_port, prepare_pair
from customs_gateway.startup.config import ListenerConfig, StoreConfig, load_config, render_config
from customs_gateway.store.pg_migrations import lock_key
from customs_gateway.store.postgres import PostgresStore
from customs_gateway.store.sqlite import SQLiteStore

from ..e2e.drill import (
    CN,
    US,
    AuditCheck,
    GatewayProcess,
    ProcessPair,
    Submitter,
    check_audit_live,
    check_audit_offline,
    check_delivery,
    drill_env,
    drill_overrides,
    exactly_once_in_audit,
    issue_role_tokens,
    undelivered,
    wait_until,
)
from .pg import base_dsn, drop_later, dsn_for, fresh_schemas, require_postgres


class Balancer:
    """A loopback TCP balancer: each new connection goes to the next backend that accepts it.

    Byte-for-byte forwarding, so TLS passes through untouched. A backend that refuses the
    connection (a killed replica) is skipped, as a load balancer's health check would skip it.
    Runs its own event loop on a daemon thread; `connections` counts what each backend got.
    """

    def __init__(self, ports: list[int]) -> None:
        self.ports = list(ports)
        self.connections = [0] * len(ports)
        self.port = 0
        self._next = itertools.count()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="balancer", daemon=True)

    def start(self) -> int:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self.port = fut.result(timeout=10)
        return self.port

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=512)
        return int(self._server.sockets[0].getsockname()[1])

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        start = next(self._next)
        for k in range(len(self.ports)):
            i = (start + k) % len(self.ports)
            try:
                up_r, up_w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.ports[i]), 2)
            except (OSError, TimeoutError):
                continue
            self.connections[i] += 1
            await asyncio.gather(_pipe(client_r, up_w), _pipe(up_r, client_w), return_exceptions=True)
            return
        client_w.close()


async def _pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    try:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
        if w.can_write_eof():
            w.write_eof()
    except (OSError, RuntimeError):
        pass
    finally:
        if r.at_eof():
            w.close()


@dataclass
class ReplicaCluster:
    """N US-CBP replicas on one PostgreSQL schema (or one on SQLite when n=0) and CN-GACC on SQLite."""

    root: Path
    schema: str | None
    us: list[GatewayProcess]
    cn: GatewayProcess
    local_lb: Balancer | None
    peer_lb: Balancer | None
    pair: ProcessPair  # US through the local balancer, for drill.py's checks
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def prepare(
        cls, root: Path, replicas: int, overrides: Mapping[str, Mapping[str, Any]] | None = None
    ) -> ReplicaCluster:
        """`replicas` US processes on a fresh PostgreSQL schema; 0 means one US process on SQLite."""
        homes = prepare_pair(root, overrides=drill_overrides(overrides))
        env = drill_env()
        us_home, cn_home = homes[US], homes[CN]
        schema = fresh_schemas(1)[0] if replicas else None
        us_homes = [us_home] if not replicas else _replica_homes(root, us_home, dsn_for(str(schema)), replicas)
        local_lb = peer_lb = None
        front = us_homes[0]
        if replicas:
            local_lb, peer_lb = Balancer([h.local_port for h in us_homes]), Balancer([h.peer_port for h in us_homes])
            front = dataclasses.replace(us_home, local_port=local_lb.start(), peer_port=peer_lb.start())
            cn_cfg = load_config(cn_home.config_path, env={})
            cn_cfg = msgspec.structs.replace(
                cn_cfg, peer=msgspec.structs.replace(cn_cfg.peer, url=f"https://127.0.0.1:{front.peer_port}")
            )
            cn_home.config_path.write_text(render_config(cn_cfg), encoding="utf-8")
            front = dataclasses.replace(front, dir=us_homes[0].dir, config_path=us_homes[0].config_path)
        us_store = PostgresStore(dsn_for(schema), pool_size=2) if schema else SQLiteStore(db_path(us_home))
        tokens = {
            US: asyncio.run(issue_role_tokens(us_store)),
            CN: asyncio.run(issue_role_tokens(SQLiteStore(db_path(cn_home)))),
        }
        us = [GatewayProcess(f"{US}-{i}", h, env, root / f"{US}-{i}.log") for i, h in enumerate(us_homes)]
        cn = GatewayProcess(CN, cn_home, env, root / f"{CN}.log")
        front_proc = GatewayProcess(US, front, env, root / "unused.log")  # only its url is used
        pair = ProcessPair(root, {US: front, CN: cn_home}, {US: front_proc, CN: cn}, tokens, env)
        return cls(root, schema, us, cn, local_lb, peer_lb, pair, env)

    @property
    def url(self) -> str:
        """Where the back-end sends: the local balancer, or the single process."""
        return self.pair.procs[US].url

    def start(self) -> None:
        with contextlib.ExitStack() as undo:
            for p in [*self.us, self.cn]:
                p.start()
                undo.callback(p.stop)
            undo.pop_all()

    def stop(self) -> dict[str, int]:
        codes = {p.name: p.stop() for p in [*self.us, self.cn]}
        for lb in (self.local_lb, self.peer_lb):
            if lb is not None:
                lb.stop()
        return codes

    def drop(self) -> None:
        if self.schema is not None:
            drop_later(self.schema)

    def checkpoint_leader(self) -> int | None:
        """Index of the US replica holding the checkpointer lock (looked up in pg_locks by pid)."""
        pids = {p.proc.pid: i for i, p in enumerate(self.us) if p.proc is not None}
        assert self.schema is not None
        holders = asyncio.run(_advisory_holders(lock_key("lead/checkpointer", self.schema)))
        found = [pids[pid] for pid in holders if pid in pids]
        return found[0] if found else None


def _replica_homes(root: Path, us_home: Home, dsn: str, n: int) -> list[Home]:
    """n copies of the US home (same keys, same identity), each with its own ports, on `dsn`."""
    base = load_config(us_home.config_path, env={})
    out = []
    # The replicas share one day-key directory (docs/operations.md): what one seals, all open.
    days = root / f"{US}-days"
    days.mkdir(mode=0o700, exist_ok=True)
    for i in range(n):
        d = root / f"{US}-{i}"
        shutil.copytree(us_home.dir, d, ignore=shutil.ignore_patterns("data", "days"))
        (d / "keys" / "days").symlink_to(days, target_is_directory=True)
        (d / "data").mkdir(mode=0o700)
        local, peer = free_port(), free_port()
        cfg = msgspec.structs.replace(
            base,
            local_api=ListenerConfig("127.0.0.1", local),
            peer_api=ListenerConfig("127.0.0.1", peer),
            store=StoreConfig(backend="postgres", dsn=dsn, lease_seconds=5.0),
        )
        (d / "gateway.toml").write_text(render_config(cfg), encoding="utf-8")
        out.append(Home(US, d, d / "gateway.toml", local, peer))
    return out


async def _advisory_holders(key: int) -> list[int]:
    """Process ids of the gateway replicas holding advisory lock `key` (a bigint key: two oids)."""
    conn = await asyncpg.connect(base_dsn(), timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT s.application_name FROM pg_locks l JOIN pg_stat_activity s USING (pid)"
            " WHERE l.locktype='advisory' AND l.granted AND l.objsubid=1"
            " AND l.classid::bigint=$1 AND l.objid::bigint=$2",
            (key >> 32) & 0xFFFFFFFF,
            key & 0xFFFFFFFF,
        )
    finally:
        await conn.close()
    # application_name is "customs-gateway host:pid:suffix"; the pid is the replica process's.
    out = []
    for r in rows:
        with contextlib.suppress(IndexError, ValueError):
            out.append(int(r["application_name"].split(" ", 1)[1].split(":")[1]))
    return out


# --- the drill ---------------------------------------------------------------------------------

STREAM_BEFORE_KILL = 3.0
DOWN = 3.0
STREAM_AFTER_RESTART = 2.0


@dataclass
class FailoverReport:
    submitted: int = 0
    accepted: int = 0
    transport_errors: int = 0
    refused: list[Any] = field(default_factory=list)
    unresolved: list[int] = field(default_factory=list)
    killed: str = ""
    killed_was_leader: bool = False
    connections: dict[str, list[int]] = field(default_factory=dict)
    audit: AuditCheck | None = None
    audit_exactly_once: list[str] = field(default_factory=list)
    exit_codes: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    undelivered: list[tuple[str, str, str | None]] = field(default_factory=list)


def test_three_replicas_survive_a_sigkill_under_load(tmp_path: Path) -> None:
    require_postgres()
    t0 = time.monotonic()
    rep = FailoverReport()
    cluster = ReplicaCluster.prepare(tmp_path, 3)
    submitter = Submitter(cluster.url, cluster.pair.tokens[US]["agency"], to=CN, interval=0.01, prefix="FAILOVER")
    try:
        cluster.start()
        wait_until("a checkpoint leader", lambda: cluster.checkpoint_leader() is not None, 15)
        rep.seconds["setup"] = time.monotonic() - t0
        t1 = time.monotonic()
        submitter.start()
        time.sleep(STREAM_BEFORE_KILL)
        leader = cluster.checkpoint_leader()
        victim = cluster.us[leader if leader is not None else 1]
        rep.killed, rep.killed_was_leader = victim.name, leader is not None
        victim.kill()
        accepted_at_kill = len(submitter.accepted)
        # Another replica takes checkpointing over once the dead one's session is gone.
        wait_until("a new checkpoint leader", lambda: cluster.checkpoint_leader() not in (None, leader), 15)
        # Service goes on without the dead replica: fresh 202s arrive while it is down.
        wait_until("a 202 while a replica is down", lambda: len(submitter.accepted) > accepted_at_kill + 20, 30)
        time.sleep(DOWN)
        victim.start()
        time.sleep(STREAM_AFTER_RESTART)
        submitter.halt()
        rep.seconds["stream"] = time.monotonic() - t1
        t2 = time.monotonic()
        accepted = submitter.accepted
        ids = [a.id for a in accepted]
        # A claim the killed replica held blocks the lane until its lease runs out (5 s here).
        wait_until("the outbox to drain", lambda: cluster.pair.queue_depth(US) == 0, 60, every=0.3)
        rep.undelivered = list(undelivered(cluster.pair, ids))
        rep.seconds["drain"] = time.monotonic() - t2
        t3 = time.monotonic()
        delivery = check_delivery(cluster.pair, accepted)
        rep.audit = check_audit_live(cluster.pair, US)
        idset = set(ids)
        us_log = cluster.pair.audit_entries(US)
        rep.audit_exactly_once = (
            exactly_once_in_audit(us_log, idset, "submitted")
            + exactly_once_in_audit(us_log, idset, "delivered")
            + exactly_once_in_audit(cluster.pair.audit_entries(CN), idset, "received")
        )
    finally:
        if submitter.is_alive():
            submitter.halt()
        rep.exit_codes = cluster.stop()
        try:
            if rep.audit is not None:
                check_audit_offline(cluster.pair, rep.audit)  # reads the schema: drop it only afterwards
        finally:
            cluster.drop()
    assert rep.audit is not None
    rep.seconds["checks"] = time.monotonic() - t3
    rep.seconds["total"] = time.monotonic() - t0
    assert cluster.local_lb is not None and cluster.peer_lb is not None
    rep.connections = {"local": cluster.local_lb.connections, "peer": cluster.peer_lb.connections}
    rep.submitted, rep.accepted = submitter.submitted, len(submitter.accepted)
    rep.transport_errors, rep.refused, rep.unresolved = (
        submitter.transport_errors,
        submitter.refused,
        submitter.unresolved,
    )
    d = rep.audit
    print(
        f"\nfailover drill: killed {rep.killed} (checkpoint leader: {rep.killed_was_leader}), restarted it\n"
        f"submitted {rep.submitted}, accepted (202) {rep.accepted}, client transport errors {rep.transport_errors},"
        f" refused {len(rep.refused)}, unresolved {len(rep.unresolved)}\n"
        f"delivered {delivery.delivered}, in CN inbox {delivery.inbox}, duplicates {delivery.duplicates},"
        f" missing {len(delivery.missing)}, unexpected {len(delivery.unexpected)}, out of order"
        f" {delivery.out_of_order}, receipts verified {delivery.receipts_verified}, re-sent {delivery.resends}\n"
        f"US audit: {d.entries} entries, checkpoint at {d.checkpoint_size}, root matches {d.root_matches},"
        f" exported {d.exported}, offline verify {'OK' if d.verified else 'FAILED'}\n"
        f"connections per replica: {rep.connections}; exits {rep.exit_codes}\n"
        "seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in rep.seconds.items())
    )
    assert not rep.refused and not rep.unresolved, (rep.refused, rep.unresolved)
    assert rep.accepted > 0
    assert not rep.undelivered, rep.undelivered[:10]
    assert delivery.ok, delivery
    assert d.ok, d.problems
    assert not rep.audit_exactly_once, rep.audit_exactly_once[:10]
    assert all(c == 0 for c in rep.exit_codes.values()), rep.exit_codes
    assert all(n > 0 for n in rep.connections["local"]), "the balancer did not spread the load"
