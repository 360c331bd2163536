"""Prometheus metrics: what an operator watches on one gateway, read from it at scrape time.

Each gateway has its own `CollectorRegistry` (never the process-global one), so two gateways in
one process (the demo, the tests) never clash. Counters come from `Gateway.counters` (in-process,
reset on restart, as Prometheus expects of counters); queue, sequence, audit and checkpoint
values are read from the store by the `/metrics` handler just before rendering; the receipt
latency histogram is fed by the delivery worker through `observe_receipt_latency`. No label ever
carries a key, token or body: labels are the peer identity, a key use, a direction or a code.
"""

from __future__ import annotations

import datetime as dt
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)

from ..core.errors import GatewayError
from ..core.refusals import REFUSALS
from ..core.tlscert import cert_info
from ..service.disposal import utc_day
from ..service.gateway import Gateway
from ..store.base import CheckpointRecord, PeerState, RetentionTotals
from .appkeys import GATEWAY

PREFIX: Final = "customs_gateway"
#: Submission to verified receipt: milliseconds on a healthy link, hours across a peer outage.
LATENCY_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0)
KEY_USES: Final = ("signing", "encryption", "witness")


class CosignSource(Protocol):
    """What the metrics need of a checkpointer: its `status` with `cosigned` and `failures` counts."""

    @property
    def status(self) -> _CosignStatus: ...


class _CosignStatus(Protocol):
    @property
    def cosigned(self) -> int: ...

    @property
    def failures(self) -> int: ...


@dataclass(frozen=True)
class StoreSnapshot:
    """The store-backed values of one scrape, read together by the handler (None: store down)."""

    now: dt.datetime
    queue_depth: int
    oldest_queued_at: dt.datetime | None
    peer_state: PeerState
    audit_size: int
    checkpoint: CheckpointRecord | None
    cosigned: CheckpointRecord | None
    retention: RetentionTotals


class GatewayMetrics:
    """One gateway's registry: the receipt latency histogram and the scrape-time collector."""

    def __init__(self, gw: Gateway) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.receipt_latency = Histogram(
            f"{PREFIX}_receipt_latency_seconds",
            "Seconds from a message's acceptance (202) to the peer's verified receipt.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.snapshot: StoreSnapshot | None = None
        self.store_up = True
        self.cosign: CosignSource | None = None
        self.registry.register(_GatewayCollector(gw, self))

    def render(self, snapshot: StoreSnapshot | None) -> bytes:
        """The Prometheus text exposition of everything, with `snapshot` as the store values."""
        # No await between setting the snapshot and rendering: a concurrent scrape cannot swap it.
        self.snapshot = snapshot
        self.store_up = snapshot is not None
        return generate_latest(self.registry)


_BY_GATEWAY: weakref.WeakKeyDictionary[Gateway, GatewayMetrics] = weakref.WeakKeyDictionary()


def metrics_for(gw: Gateway) -> GatewayMetrics:
    """The metrics of `gw`, created on first use."""
    m = _BY_GATEWAY.get(gw)
    if m is None:
        m = _BY_GATEWAY[gw] = GatewayMetrics(gw)
    return m


def observe_receipt_latency(gw: Gateway, seconds: float) -> None:
    """Record one delivered message's latency (acceptance to verified receipt) in seconds."""
    metrics_for(gw).receipt_latency.observe(max(0.0, seconds))


def watch_cosigning(gw: Gateway, checkpointer: CosignSource | None) -> None:
    """Report this checkpointer's cosign counts (None: stop reporting them)."""
    metrics_for(gw).cosign = checkpointer


async def read_store(gw: Gateway) -> StoreSnapshot:
    """Read every store-backed metric value; raises GatewayError if the store cannot answer."""
    peer = gw.peer.identity
    depth, oldest = await gw.store.queue_depth(peer)
    return StoreSnapshot(
        now=gw.clock.now(),
        queue_depth=depth,
        oldest_queued_at=oldest,
        peer_state=await gw.store.peer_state(peer),
        audit_size=await gw.store.audit_size(),
        checkpoint=await gw.store.latest_checkpoint(),
        cosigned=await gw.store.latest_checkpoint(cosigned=True),
        retention=await gw.store.retention_totals(utc_day(gw.clock.now())),
    )


async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics in the text exposition format (no token: bind the listener where ops wants)."""
    gw = request.app[GATEWAY]
    try:
        snapshot: StoreSnapshot | None = await read_store(gw)
    except GatewayError:
        snapshot = None
    body = metrics_for(gw).render(snapshot)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


class _GatewayCollector:
    """Yields the metric families of one gateway from its counters, identity and last snapshot."""

    def __init__(self, gw: Gateway, owner: GatewayMetrics) -> None:
        self._gw = weakref.ref(gw)
        self._owner = owner

    def collect(self) -> Iterator[Metric]:
        gw = self._gw()
        if gw is None:
            return
        peer = gw.peer.identity
        info = InfoMetricFamily(PREFIX, "This gateway's identity and its peer.", labels=["identity", "peer"])
        info.add_metric([gw.name, peer], {})
        yield info
        yield from self._counters(gw)
        yield from self._keys(gw)
        if gw.peer_clock.offset_seconds is not None:
            yield _gauge(
                "peer_clock_offset_seconds",
                "The peer's clock minus ours, from timestamps it signed (positive: the peer is ahead).",
                gw.peer_clock.offset_seconds,
                peer,
            )
        up = GaugeMetricFamily(f"{PREFIX}_store_up", "1 if the store answered this scrape, else 0.")
        up.add_metric([], 1.0 if self._owner.store_up else 0.0)
        yield up
        snap = self._owner.snapshot
        if snap is not None:
            yield from self._store(snap, peer)
        cosign = self._owner.cosign
        if cosign is not None:
            yield _counter(
                "cosign_failures", "Failed attempts to get our checkpoint cosigned by the peer.", cosign.status.failures
            )
            yield _counter("checkpoints_cosigned", "Checkpoints of our log the peer cosigned.", cosign.status.cosigned)

    def _counters(self, gw: Gateway) -> Iterator[Metric]:
        c = gw.counters
        yield _counter("messages_submitted", "Messages accepted from back-ends (202).", c.submitted)
        yield _counter("messages_received", "Envelopes from the peer accepted into the inbox.", c.received)
        yield _counter("messages_duplicate", "Re-sent envelopes answered with the original receipt.", c.duplicates)
        yield _counter(
            "submissions_paced", "Submissions held by flow control while delivery caught up (decision 0018).", c.paced
        )
        yield _counter("messages_delivered", "Outbound messages with a verified receipt.", c.delivered)
        yield _counter("messages_expired", "Outbound messages that expired before delivery.", c.expired)
        yield _counter("delivery_retries", "Delivery attempts that will be retried.", c.retries)
        yield _counter(
            "forks_detected",
            "Distinct forks: peer checkpoints inconsistent with one we cosigned (each counted once).",
            c.forks,
        )
        refused = CounterMetricFamily(
            f"{PREFIX}_refused",
            "Signed refusals: inbound (we refused the peer's envelope), outbound (the peer refused ours).",
            labels=["direction", "code"],
        )
        for direction, by_code in (("inbound", c.refused_in), ("outbound", c.refused_out)):
            # Every known code has a series from the start (0 until it happens), so a rate or an
            # alert on it works before the first refusal; codes not in the table still appear.
            for code in sorted({*REFUSALS, *by_code}):
                refused.add_metric([direction, code], by_code.get(code, 0))
        yield refused

    def _keys(self, gw: Gateway) -> Iterator[Metric]:
        now = gw.clock.now()
        g = GaugeMetricFamily(
            f"{PREFIX}_key_expiry_seconds",
            "Seconds until the earliest not_after of our active keys of each use, or of the TLS "
            "certificate presented (negative: expired).",
            labels=["use"],
        )
        ends = gw.identity.expiry()
        for use in (*KEY_USES, "tls"):
            if use in ends:
                g.add_metric([use], (ends[use] - now).total_seconds())
        yield g
        per_key = GaugeMetricFamily(
            f"{PREFIX}_key_not_after_timestamp_seconds",
            "End of validity (Unix time) of each of our keys still in use (active or retiring) and of "
            "each pinned TLS certificate of ours (kid: the certificate's SHA-256, first 32 hex digits).",
            labels=["use", "kid", "state"],
        )
        bundle = gw.identity.bundle.bundle
        for r in bundle.keys:
            if r.state in ("active", "retiring") and r.revoked_at is None:
                per_key.add_metric([r.use, r.kid, r.state], r.not_after.timestamp())
        for pem, state in ((bundle.tls_certificate, "active"), *((p, "retiring") for p, _ in bundle.tls_previous)):
            try:
                info = cert_info(pem)
            except GatewayError:
                continue  # a scrape must not fail; readyz reports a broken certificate
            per_key.add_metric(["tls", info.fingerprint[:32], state], info.not_after.timestamp())
        yield per_key

    def _store(self, s: StoreSnapshot, peer: str) -> Iterator[Metric]:
        yield _gauge("queue_depth", "Outbound messages queued or sent, not yet answered.", s.queue_depth, peer)
        age = (s.now - s.oldest_queued_at).total_seconds() if s.oldest_queued_at else 0.0
        yield _gauge("queue_oldest_age_seconds", "Age of the oldest pending outbound message (0: none).", age, peer)
        gaps = CounterMetricFamily(
            f"{PREFIX}_sequence_gaps", "Gaps seen in the peer's sequence numbers.", labels=["peer"]
        )
        gaps.add_metric([peer], s.peer_state.gap_count)
        yield gaps
        yield _gauge(
            "sequence_high_water", "Highest sequence number received from the peer.", s.peer_state.recv_high_water, peer
        )
        yield _gauge("audit_entries", "Entries in our audit log.", s.audit_size)
        r = s.retention
        yield _gauge(
            "retention_due_messages", "Messages past their retention day, not disposed of yet (held excluded).", r.due
        )
        yield _gauge(
            "retention_disposed_messages", "Messages disposed of at their retention date (rows kept).", r.disposed
        )
        yield _gauge("retention_held_messages", "Messages under an active legal hold of ours.", r.held)
        held_for = 0.0
        if r.oldest_held is not None:
            start = dt.datetime.combine(r.oldest_held + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
            held_for = max(0.0, (s.now - start).total_seconds())
        yield _gauge(
            "retention_oldest_held_overdue_seconds",
            "How long the held message with the earliest retention day has been kept past it (0: none).",
            held_for,
        )
        for name, cp, what in (
            ("checkpoint", s.checkpoint, "our newest signed checkpoint"),
            ("cosigned_checkpoint", s.cosigned, "our newest checkpoint cosigned by the peer"),
        ):
            if cp is None:
                continue
            yield _gauge(f"{name}_size", f"Log size covered by {what}.", cp.size)
            yield _gauge(
                f"{name}_age_seconds", f"Seconds since {what} was made.", (s.now - cp.created_at).total_seconds()
            )


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", doc, value=value)


def _gauge(name: str, doc: str, value: float, peer: str | None = None) -> GaugeMetricFamily:
    if peer is None:
        return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)
    g = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=["peer"])
    g.add_metric([peer], value)
    return g
