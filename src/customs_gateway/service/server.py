"""Assembles a running gateway from a config: keys, store, both listeners, the delivery worker.

`GatewayServer` is what `serve` runs and what tests and the demo start in-process; it owns
start/stop order so a stop never loses an accepted message (the store closes last).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import ssl
from dataclasses import dataclass
from typing import Protocol, TypeVar

import structlog
from aiohttp import web

from ..core.audit import AuditEntry
from ..core.clock import Clock, IdSource, SystemClock, UUID7Source
from ..core.encoding import format_ts
from ..core.errors import ConfigError, GatewayError
from ..core.rotation import EXPIRY_WARNING_DAYS
from ..http.local import local_app
from ..http.metrics import watch_cosigning
from ..http.peer import peer_app
from ..http.problems import ProblemAppRunner
from ..startup.config import Config, ListenerConfig
from ..startup.keystore import Identity, KeyStore, load_peer, read_signed_bundle
from ..store.base import Store
from ..store.sqlite import SQLiteStore
from . import tls
from .checkpointer import Checkpointer
from .delivery import DeliveryWorker
from .evidence import EvidenceCollector
from .gateway import Gateway
from .lifecycle import KeyLifecycle
from .recovery import Recovery

log = structlog.get_logger("customs_gateway.server")


class ClockBehind(GatewayError):
    """This host's clock is behind the gateway's own audit log by more than the skew window."""

    code = "clock.behind_log"
    status = 503


def open_store(config: Config) -> Store:
    if config.store.backend == "sqlite":
        return SQLiteStore(config.path(config.store.path), busy_timeout_ms=config.store.busy_timeout_ms)
    # Imported here so an SQLite deployment never loads asyncpg. The schema comes from the DSN's
    # search_path; each store instance names itself (host, pid, random) as the replica that
    # claims outbox messages, so two processes can never share a claim by configuration mistake.
    from ..store.postgres import PostgresStore

    return PostgresStore(config.store.dsn, replica_id=None, lease_seconds=config.store.lease_seconds)


def load_identity(config: Config, passphrase: bytes) -> Identity:
    return KeyStore(config.path(config.keys_dir), config.path(config.tls_dir)).load(passphrase)


@dataclass
class Listeners:
    local_port: int
    peer_port: int


class _Service(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


S = TypeVar("S", bound=_Service)


async def _entered(stack: contextlib.AsyncExitStack, service: S) -> S:
    """Start `service` and have the stack stop it when it unwinds."""
    await service.start()
    stack.push_async_callback(service.stop)
    return service


class GatewayServer:
    """One gateway process (or one of two in the demo): start() binds, stop() drains and closes."""

    def __init__(
        self,
        config: Config,
        identity: Identity,
        *,
        clock: Clock | None = None,
        ids: IdSource | None = None,
        store: Store | None = None,
        passphrase: bytes | None = None,
        accept_clock: bool = False,
    ) -> None:
        if not config.peer.bundle:
            raise ConfigError(
                "peer.bundle must name the imported peer bundle", field="peer.bundle", code="config.required"
            )
        peer = load_peer(config.path(config.peer.bundle))
        if config.peer.identity and peer.identity != config.peer.identity:
            raise ConfigError(
                f"peer.identity is {config.peer.identity!r} but the bundle is {peer.identity!r}",
                field="peer.identity",
            )
        if not config.peer.url:
            raise ConfigError(
                "peer.url must name the peer's peer API (https://host:port)", field="peer.url", code="config.required"
            )
        if config.identity != identity.name:
            raise ConfigError(
                f"identity is {config.identity!r} but the key store holds {identity.name!r}", field="identity"
            )
        self.config = config
        self.accept_clock = accept_clock
        clock = clock or SystemClock()
        self.gateway = Gateway(config, identity, peer, store or open_store(config), clock, ids or UUID7Source(clock))
        self._stack = contextlib.AsyncExitStack()
        self.worker: DeliveryWorker | None = None
        self.checkpointer: Checkpointer | None = None
        self.evidence: EvidenceCollector | None = None
        self.lifecycle: KeyLifecycle | None = None
        if passphrase is not None:
            keystore = KeyStore(config.path(config.keys_dir), config.path(config.tls_dir))
            self.lifecycle = KeyLifecycle(self.gateway, keystore, passphrase)
            self.gateway.lifecycle = self.lifecycle
        self._maintenance: asyncio.Task[None] | None = None
        self._expiry_warned: dict[str, dt.datetime] = {}
        self.ports = Listeners(0, 0)

    def _peer_tls(self) -> tls.PeerTLS | None:
        gw = self.gateway
        if self.config.security.allow_insecure_peer_http:
            log.warning(
                "INSECURE: peer traffic over plain HTTP without mutual TLS (security.allow_insecure_peer_http)",
                identity=gw.name,
            )
            return None
        return tls.PeerTLS(
            gw.identity.presented_tls,
            lambda: gw.peer.bundle.tls_pins(gw.clock.now()),
            gw.clock.now,
        )

    async def start(self) -> Listeners:
        """Open the store, the workers and both listeners. Each resource is entered on an exit
        stack as it opens, so `stop` (and any failure on the way up: a port taken, a clock behind
        the log) closes exactly what was opened, in reverse order."""
        self._stack = contextlib.AsyncExitStack()
        try:
            return await self._start(self._stack)
        except BaseException:
            await self.stop()
            raise

    async def _start(self, stack: contextlib.AsyncExitStack) -> Listeners:
        gw = self.gateway
        await gw.store.open()
        stack.push_async_callback(gw.store.close)
        await gw.load_origins()
        await self._check_clock()
        await gw.crypto.start()
        stack.push_async_callback(gw.close)
        peer_tls = self._peer_tls()
        gw.tls = peer_tls
        self.evidence = await _entered(stack, EvidenceCollector(gw, peer_tls))
        local = await self._listen(stack, local_app(gw, self.evidence), self.config.local_api, None)
        server_ctx = peer_tls.server if peer_tls is not None else None
        peer = await self._listen(stack, peer_app(gw, peer_tls), self.config.peer_api, server_ctx)
        # Unwound first (newest first): a file part still arriving ends now, keeping what arrived,
        # instead of holding the listener's shutdown until the body read times out.
        stack.callback(gw.peer_files.cut_parts)
        self.ports = Listeners(_port(local), _port(peer))
        now = gw.clock.now()
        await gw.adopt_stored_peer_bundles()
        await gw.store.remember_bundle(gw.name, gw.identity.bundle.to_bytes(), now)
        peer_signed = read_signed_bundle(self.config.path(self.config.peer.bundle))
        await gw.store.remember_bundle(gw.peer.identity, peer_signed.to_bytes(), now)
        if self.lifecycle is not None:
            await self.lifecycle.resume()
            await self.lifecycle.adopt_profile()
        gw.check_peer_profile()
        self._maintenance = asyncio.create_task(self._maintain(), name="key-maintenance")
        stack.push_async_callback(tls.cancelled, self._maintenance)
        backfill = asyncio.create_task(self._backfill(), name="reference-backfill")
        stack.push_async_callback(tls.cancelled, backfill)
        disposal = asyncio.create_task(gw.disposal.run(), name="disposal")
        stack.push_async_callback(tls.cancelled, disposal)
        gw.recovery = Recovery(gw, peer_tls)  # delivery and cosigning ask it before they start
        self.worker = await _entered(stack, DeliveryWorker(gw, tls=peer_tls))
        self.checkpointer = Checkpointer(gw, peer_tls)
        gw.recovery.checkpointer = self.checkpointer
        watch_cosigning(gw, self.checkpointer)
        await _entered(stack, self.checkpointer)
        log.info(
            "gateway.started",
            identity=gw.name,
            peer=gw.peer.identity,
            local_port=self.ports.local_port,
            peer_port=self.ports.peer_port,
            pid=os.getpid(),
        )
        return self.ports

    async def _listen(
        self, stack: contextlib.AsyncExitStack, app: web.Application, where: ListenerConfig, tls: ssl.SSLContext | None
    ) -> web.AppRunner:
        """Serve `app` on `where.host:where.port`; the runner is cleaned up when the stack unwinds."""
        runner = ProblemAppRunner(app, access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, where.host, where.port, ssl_context=tls).start()
        return runner

    async def _check_clock(self) -> None:
        """Refuse to start with a clock behind our own log by more than the skew window (DESIGN
        §11): its entries would all be restamped, and its envelopes refused as from the past."""
        gw = self.gateway
        size, _ = await gw.store.audit_head()
        if size == 0:
            return
        ((_, data),) = await gw.store.audit_entries(size - 1, size)
        last = AuditEntry.from_bytes(data).at
        behind = (last - gw.clock.now()).total_seconds()
        if behind <= self.config.security.skew_seconds:
            return
        if not self.accept_clock:
            raise ClockBehind(
                f"this host's clock is {behind:.0f} s behind the newest entry of its own audit log "
                f"({format_ts(last)}); set the clock right, or start with --accept-clock to run anyway"
            )
        log.warning("gateway.clock_behind_log", behind_seconds=round(behind, 3), last_entry_at=format_ts(last))

    async def stop(self) -> None:
        """Close what `start` opened, newest first (safe to call twice, or after a failed start)."""
        stack, self._stack = self._stack, contextlib.AsyncExitStack()
        try:
            await stack.aclose()
        finally:
            self.worker = self.checkpointer = self.evidence = None

    async def _backfill(self) -> None:
        """Index what was stored before the reference index and seal what was stored in clear
        (upgrades); a failure is logged and tried again at the next start (progress is kept)."""
        try:
            await self.gateway.backfill_references()
            await self.gateway.backfill_sealing()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("references.backfill_failed")

    async def maintain_once(self) -> None:
        """One round of upkeep: retire keys whose overlap has passed, drop TLS pins whose overlap
        has ended, and warn (once a day per kind) about keys or a certificate expiring soon."""
        gw = self.gateway
        if self.lifecycle is not None:
            retired = await self.lifecycle.retire_due()
            if retired:
                log.info("keys.retired", kids=retired)
        if gw.tls is not None:
            gw.tls.refresh()
        now = gw.clock.now()
        for kind, end in gw.identity.expiry().items():
            days = (end - now).total_seconds() / 86400
            last = self._expiry_warned.get(kind)
            if days <= EXPIRY_WARNING_DAYS and (last is None or now - last >= dt.timedelta(days=1)):
                self._expiry_warned[kind] = now
                log.warning(
                    "keys.expiring",
                    kind=kind,
                    days_left=round(days, 1),
                    not_after=format_ts(end),
                    action=f"customs-gateway keys renew --kind {kind}",
                )

    async def _maintain(self) -> None:
        """Upkeep every minute (cheap when there is nothing to do)."""
        while True:
            try:
                await self.maintain_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("keys.maintenance_failed")
            await asyncio.sleep(60)


def _port(runner: web.AppRunner) -> int:
    for addr in runner.addresses:
        if isinstance(addr, tuple):
            return int(addr[1])
    raise RuntimeError("listener has no TCP address")
