"""The `cpu_floor` row of `customs-gateway bench`: what the gateway's own logic costs a message when
nothing else does, against the cryptography of one message.

Both gateways run in this process with `[performance] crypto_processes = 0`, so every thread
that works for them is this process's, and `getrusage` counts all of it. Messages go in as
`POST /v1/messages:batch` would put them (`Gateway.submit_batch`, 100 a request: the cheapest
way in) and out through the real `DeliveryWorker` (`run_once`: plan, build the envelopes, judge
the answers, commit the outcomes), whose request to the peer is a direct call of the receiving
gateway's `receive` (open, check, store, sign receipts) with its answer encoded as the peer API
encodes it. What is left out is everything a deployment adds around that logic: HTTP and TLS on
both APIs, the hand-offs to worker processes, and two busy cores shared by many threads.

Every message is still stored with `synchronous=FULL`, audited, sealed at rest and signed,
opened and receipted for real; the batches are as large as the store takes them (delivery
batches of `batch_max`, 200 by default). So the figure is a floor for the pair's CPU per
message: no deployment of this code spends less. The CPU-multiple target of issue 21 (both
gateways ≤ 1.5 × the crypto CPU) is out of reach whenever this floor alone is above it.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import aiohttp

from ..http.peer import envelope_results
from ..service.delivery import DeliveryWorker
from ..service.gateway import Caller, Gateway
from ..service.pair import IDENTITIES, LocalPair, prepare_pair
from ..service.tls import peer_session
from ..startup.logs import configure_logging
from .benchmark import NoProgress, ProgressSink, crypto_ceiling, descendants, sample_body, task_seconds

#: Messages per `submit_batch` call: the batch row's size, the cheapest way in.
SUBMIT_BATCH = 100


class TreeCpu:
    """CPU seconds used by this process (every thread, those that ended too: `getrusage`) and
    by its child processes (the crypto workers and their fork server, when there are any:
    `/proc/PID/task/*/schedstat`, which they outlive). The children are listed once, here, not
    at every reading: listing them reads all of `/proc`."""

    def __init__(self) -> None:
        self.children = descendants(os.getpid())

    def seconds(self) -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        return own.ru_utime + own.ru_stime + sum(task_seconds(pid)[0] for pid in self.children)


@dataclass(frozen=True)
class Layers:
    """What `logic_floor` puts back of a deployment: the crypto worker processes (the default
    configuration has 2 a gateway) and the peer API over mutual TLS (real HTTP requests from the
    sender's delivery worker to the receiver's server, both in this process)."""

    processes: int = 0
    https: bool = False

    def describe(self) -> str:
        parts = [f"{self.processes} worker processes a gateway" if self.processes else "no worker processes"]
        parts.append("the peer API over mutual TLS" if self.https else "the peer called directly")
        return ", ".join(parts)


class _Answer:
    """What `DeliveryWorker._send` reads of an aiohttp response: the status and the body."""

    def __init__(self, body: bytes) -> None:
        self.status = 200
        self._body = body

    async def read(self) -> bytes:
        return self._body


class _Exchange:
    """One request to the peer, answered by calling its gateway directly (the CPU it takes is
    counted apart, as the receiver's)."""

    def __init__(self, peer: DirectPeer, body: bytes) -> None:
        self.peer = peer
        self.body = body

    async def __aenter__(self) -> _Answer:
        t0 = self.peer.cpu.seconds()
        answer = envelope_results(await self.peer.gateway.receive(self.body))  # as the peer API answers
        self.peer.cpu_seconds += self.peer.cpu.seconds() - t0
        return _Answer(answer)

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


class DirectPeer:
    """Stands in for the delivery worker's HTTP session: `post` hands the body to the receiving
    gateway in this process. Only envelope batches go through it (the bench's messages name no
    files, and the restore check has passed over real HTTPS before it is used)."""

    def __init__(self, gateway: Gateway, cpu: TreeCpu) -> None:
        self.gateway = gateway
        self.cpu = cpu
        self.cpu_seconds = 0.0

    def post(self, url: str, *, data: bytes, headers: dict[str, str], ssl: object) -> _Exchange:
        if not url.endswith("/peer/v1/envelopes"):
            raise AssertionError(f"the floor's direct peer takes envelope batches only, not {url}")
        return _Exchange(self, data)


async def _delivered(gw: Gateway, ids: list[str], timeout: float) -> None:
    """Wait until every message of `ids` is `delivered` (the real worker, over HTTPS)."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = [m.status if (m := await gw.store.get_message(i)) else "missing" for i in ids]
        if all(s == "delivered" for s in statuses):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"warm-up messages not delivered over HTTPS within {timeout:.0f} s: {statuses}")
        await asyncio.sleep(0.05)


async def logic_floor(
    root: Path,
    messages: int,
    crypto_seconds: float,
    progress: ProgressSink | None = None,
    *,
    layers: Layers = Layers(),
) -> dict[str, Any]:
    """CPU per message of both gateways' logic alone (see the module docstring), the crypto CPU
    of one message read right after in this process, and their ratio. `layers` puts back parts
    of a deployment, to measure what each costs (`benchmarks/layers.py`); with the peer API over
    TLS the receiver's share is not told apart from the sender's delivery."""
    sink = progress or NoProgress()
    batches = max(1, -(-messages // SUBMIT_BATCH))
    root.mkdir(parents=True, exist_ok=True)
    homes = prepare_pair(root, overrides={"performance": {"crypto_processes": layers.processes}})
    pair = LocalPair(homes)
    us, cn = IDENTITIES
    caller = Caller("bench-floor", "agency")
    item = {"type": "seizure-share", "to": cn, "body": sample_body()}
    raw = json.dumps({"messages": [item] * SUBMIT_BATCH}, ensure_ascii=False).encode("utf-8")
    log = (root / "gateways.log").open("w", encoding="utf-8")
    configure_logging("json", "info", stream=log)  # as `serve` logs: one JSON line per event
    session: aiohttp.ClientSession | None = None
    try:
        await pair.start_all()
        sender, receiver = pair.servers[us].gateway, pair.servers[cn].gateway
        # One batch the real way first (mutual TLS, the restore check, the first receipts, the
        # worker processes started).
        warm = [r.message.id for r in await sender.submit_batch(raw, caller) if r.message is not None]
        await _delivered(sender, warm, 60)
        running = pair.servers[us].worker
        tls = running.tls if running is not None else None
        for server in pair.servers.values():
            if server.worker is not None:
                await server.worker.stop()
            if server.checkpointer is not None:
                await server.checkpointer.stop()
        cpu = TreeCpu()
        peer = DirectPeer(receiver, cpu)
        worker = DeliveryWorker(sender, tls=tls)
        if layers.https:
            session = peer_session(tls, sender.config.delivery.request_timeout_seconds, limit=4)
            worker._session = session
        else:
            worker._session = cast(aiohttp.ClientSession, peer)  # its requests go to `receiver`, in-process
        # As many submissions as one delivery batch takes, then their delivery: full batches.
        per_round = max(1, sender.config.delivery.batch_max // SUBMIT_BATCH)
        sink.begin(f"gateway logic ({layers.describe()}): {batches * SUBMIT_BATCH:,} messages", batches)
        submit_cpu = deliver_cpu = 0.0
        accepted = 0
        t0 = time.perf_counter()
        for first in range(0, batches, per_round):
            c0 = cpu.seconds()
            for _ in range(min(per_round, batches - first)):
                accepted += sum(1 for r in await sender.submit_batch(raw, caller) if r.created)
            c1 = cpu.seconds()
            while await worker.run_once():
                pass
            c2 = cpu.seconds()
            submit_cpu += c1 - c0
            deliver_cpu += c2 - c1
            sink.update(min(batches, first + per_round))
        wall = time.perf_counter() - t0
        sink.end()
        depth, _ = await sender.store.queue_depth(cn)
        if depth:
            raise RuntimeError(f"{depth} messages left undelivered by the in-process delivery")
    finally:
        if session is not None:
            await session.close()
        await pair.stop_all()
        configure_logging("json", "warning", stream=sys.stderr)
        log.close()
    crypto = await asyncio.to_thread(crypto_ceiling, crypto_seconds, "hybrid", None)
    crypto_us = 1e6 / float(crypto["messages_per_second"])
    receiver_cpu = peer.cpu_seconds
    per = 1e6 / accepted
    total_us = (submit_cpu + deliver_cpu) * per
    return {
        "layers": layers.describe(),
        "messages": accepted,
        "requests_to_peer": worker.requests,
        "cpu_us_per_message": round(total_us, 1),
        "sender_submit_us": round(submit_cpu * per, 1),
        "sender_delivery_us": None if layers.https else round((deliver_cpu - receiver_cpu) * per, 1),
        "receiver_us": None if layers.https else round(receiver_cpu * per, 1),
        "delivery_both_sides_us": round(deliver_cpu * per, 1),
        "wall_us_per_message": round(wall * per, 1),
        "crypto_us_per_message": round(crypto_us, 1),
        "crypto_messages_per_second": crypto["messages_per_second"],
        "multiple": round(total_us / crypto_us, 2),
        "budget_beside_crypto_us": round(0.5 * crypto_us, 1),
        "logic_beside_crypto_us": round(total_us - crypto_us, 1),
    }
