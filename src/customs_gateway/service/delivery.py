"""The delivery worker: drains the outbox to the peer in seq order, in batches, with backoff.

Each attempt re-signs the outer envelope (fresh `sent_at`, `attempt`); the HPKE ciphertext is
reused while the peer's encryption key is unchanged. A message becomes `delivered` only when a
valid receipt about exactly its document is stored (G6); a signed, non-retryable refusal makes
it `refused`; anything else (network errors, 5xx, retryable refusals) is retried with capped
exponential backoff and jitter. One request is in flight per peer, which keeps order; the next
batch is planned and built while it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import hashlib
import random
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from ..core import docfiles
from ..core.audit import AuditEntry
from ..core.encoding import format_ts, json_object
from ..core.envelope import MEDIA_TYPE, SignedDocument
from ..core.errors import GatewayError
from ..http.metrics import observe_receipt_latency
from ..store.base import AttemptOutcome, OutMessage
from . import peer_files
from .crypto_pool import MIN_PROCESS_BATCH
from .crypto_workers import (
    BuildItem,
    Built,
    JudgeItem,
    JudgeKeys,
    ReceiptVerdict,
    RefusalVerdict,
    SealKeys,
    Verdict,
    build_batch,
    judge_batch,
)
from .gateway import Gateway
from .tls import PeerTLS, cancelled, client_ssl, peer_session

log = structlog.get_logger("customs_gateway.delivery")

_POST_HEADERS = {"Accept": "application/json", "Content-Type": "application/json", "X-Envelope-Type": MEDIA_TYPE}


@dataclass(frozen=True)
class Backoff:
    base: float
    cap: float

    def delay(self, attempt: int, rand: float) -> float:
        """Capped exponential backoff with 'equal jitter': between half and all of the step."""
        step = min(self.cap, self.base * (2 ** max(0, attempt - 1)))
        return float(step * (0.5 + rand * 0.5))


#: A batch built ahead is sent only this soon after it was signed; older ones are rebuilt.
AHEAD_MAX_AGE = dt.timedelta(seconds=5)

#: The sender's envelopes are built (and large answers judged) in the crypto worker
#: processes however small the batch: in a thread they would hold the GIL that the event loop
#: (taking submissions) and the SQLite writer (committing them) wait for. At 500 msg/s offered
#: this lowered submit-to-delivered p50 from 31-32 to 25-27 ms and p99 from 62-76 to 52-56 ms
#: (docs/performance.md, session 15), for about 4 % more CPU a message at that rate; under
#: saturation batches are large and go to the processes anyway.
SENDER_PROCESSES_FROM = 1

#: An answer to fewer receipts than this is judged on the event loop itself (a receipt
#: signature check is about 60 us): no hand-off to a worker process to wait for, and none of its
#: CPU. At 500 msg/s (batches of about 7), four alternated pairs: p50 35.7-46.2 against 39.8-48.2
#: ms, p99 lower in three, the sender's CPU 90-91 % of a core against 92-93 % (performance.md,
#: session 16). Larger answers, as under saturation, still go to the processes.
SENDER_JUDGE_INLINE_BELOW = 16


@dataclass(frozen=True)
class _Batch:
    """One planned request: what `due` returned, the expired ones' outcomes, the built envelopes."""

    due: list[OutMessage]
    live: list[OutMessage]
    expired: list[AttemptOutcome]
    built: list[Built]
    planned_at: dt.datetime
    sent_at: dt.datetime | None

    @property
    def ids(self) -> list[str]:
        return [m.id for m in self.due]

    def joined(self, more: _Batch) -> _Batch:
        """This batch and `more` (planned right behind it) as one request. The earlier plan's
        times stand: its `sent_at` is the oldest, which decides whether the batch may still go."""
        sent_at = self.sent_at if self.sent_at is not None else more.sent_at
        return _Batch(
            self.due + more.due,
            self.live + more.live,
            self.expired + more.expired,
            self.built + more.built,
            self.planned_at,
            sent_at,
        )

    @property
    def last_seq(self) -> int:
        return self.due[-1].seq


def delivered_entry(
    gw: Gateway, m: OutMessage, receipt: bytes, received_at: dt.datetime, kid: str, now: dt.datetime, **detail: Any
) -> AuditEntry:
    """The `delivered` audit entry for `m`, binding its document and the peer's receipt."""
    return AuditEntry(
        at=now,
        kind="delivered",
        actor=f"peer:{gw.peer.identity}",
        message_id=m.id,
        peer=gw.peer.identity,
        digests={"document": m.document_sha256.hex(), "receipt": _sha(receipt)},
        detail={"received_at": format_ts(received_at), "receipt_kid": kid, **detail},
    )


class DeliveryWorker:
    """Drains one peer's queue over HTTPS (mutual TLS) to its `/peer/v1/envelopes`."""

    def __init__(
        self,
        gw: Gateway,
        *,
        tls: PeerTLS | None,
        rng: random.Random | None = None,
    ) -> None:
        self.gw = gw
        self.url = gw.config.peer.url.rstrip("/") + "/peer/v1/envelopes"
        self.tls = tls
        self.backoff = Backoff(gw.config.delivery.retry_base_seconds, gw.config.delivery.retry_cap_seconds)
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.requests = 0
        self.pipelined = 0  # batches sent straight after the answer to the one before (built ahead)
        self.last_error: str | None = None
        self._batch_jitter: float | None = None
        self._warned_at: dt.datetime | None = None
        self.file_progress = peer_files.Progress()  # file ciphertext bytes sent this run

    async def start(self) -> None:
        self._session = peer_session(self.tls, self.gw.config.delivery.request_timeout_seconds, limit=4)
        self._task = asyncio.create_task(self._run(), name="delivery")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancelled(task)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        while True:
            # Cleared before looking at the queue, never after: a message submitted while the
            # worker plans (or reads the next due time) then wakes the sleep below at once.
            self.gw.outbox_changed.clear()
            recovery = self.gw.recovery
            if recovery is not None and recovery.needed:
                await recovery.cleared.wait()  # a restored store: nothing leaves until `recover`
            try:
                first = await self._plan()
                if first is not None:
                    await self._pipeline(first)
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:  # the worker must survive anything and try again, not at once
                log.exception("delivery.loop_error")
                await asyncio.sleep(min(1.0, self.backoff.base))
                continue
            await self._sleep_until_due()

    async def _sleep_until_due(self) -> None:
        gw = self.gw
        nxt = await gw.store.next_due_at(gw.peer.identity)
        timeout = 1.0
        if nxt is not None:
            timeout = max(0.0, min(timeout, (nxt - gw.clock.now()).total_seconds()))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(gw.outbox_changed.wait(), timeout)

    async def run_once(self) -> bool:
        """Send one batch if anything is due, without pipelining; True if a batch was attempted."""
        batch = await self._plan()
        if batch is None:
            return False
        await self._finish(batch, await self._attempt(batch))
        return True

    async def _pipeline(self, cur: _Batch) -> None:
        """Send `cur`, and keep sending while messages are due, one request in flight at a time.

        Each next batch is planned and built while the one before it is at the peer, and goes out
        as soon as that one's answer is judged, before its outcomes are committed: the peer and
        this gateway work at the same time instead of in turn. The next batch is sent only if
        every message of the one before got a final answer (a retry must keep its place in the
        queue) and it was built recently (its `sent_at` must stay within the peer's skew window);
        otherwise it is given up and planned again from the store."""
        sending = asyncio.create_task(self._attempt(cur))
        nxt: _Batch | None = None
        try:
            while True:
                nxt = await self._plan_ahead(cur, sending)
                outcomes = await sending
                if nxt is not None and not self._may_follow(outcomes, nxt):
                    await self.gw.store.release(nxt.ids)
                    nxt = None
                if nxt is not None:
                    self.pipelined += 1
                    sending = asyncio.create_task(self._attempt(nxt))
                await self._finish(cur, outcomes)
                if nxt is None:
                    return
                cur, nxt = nxt, None
        finally:
            if not sending.done():
                # Cancelled or failed while a batch was at the peer: its messages stay pending
                # and are sent again (the peer answers duplicates with the original receipt).
                sending.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sending

    async def _plan_ahead(self, cur: _Batch, sending: asyncio.Future[list[AttemptOutcome]]) -> _Batch | None:
        """The batch to send after `cur`, planned while `cur` is at the peer and, while it is
        small, topped up with what is submitted until the answer comes: a message submitted during
        a round trip goes out right after it, not one round trip later.

        Only a small batch is topped up (fewer than `MIN_PROCESS_BATCH`). Under load the batch
        planned ahead is large already, and topping it up would build its stragglers a few at a
        time instead of with the next batch (at saturation, topping up to `batch_max` measured
        3.00 ms of CPU a message against 2.89 without, three runs each: within the noise, in
        that direction)."""
        limit = self.gw.config.delivery.batch_max
        small = min(limit, MIN_PROCESS_BATCH)
        nxt = await self._plan_more(cur.last_seq, limit)
        while not sending.done() and (nxt is None or len(nxt.due) < small):
            changed = asyncio.ensure_future(self.gw.outbox_changed.wait())
            try:
                await asyncio.wait((sending, changed), return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()
            if sending.done():
                break
            # Cleared before `due` reads the queue: a submission committed from here on wakes
            # this wait again. Whatever is left when the pipeline ends, `_run` plans afresh.
            self.gw.outbox_changed.clear()
            more = await self._plan_more(nxt.last_seq if nxt else cur.last_seq, limit - (len(nxt.due) if nxt else 0))
            nxt = more if nxt is None else nxt.joined(more) if more is not None else nxt
        return nxt

    async def _plan_more(self, after_seq: int, limit: int) -> _Batch | None:
        try:
            return await self._plan(after_seq=after_seq, limit=limit)
        except asyncio.CancelledError:
            raise
        except Exception:  # planning ahead is an optimisation: the batch in flight goes on
            log.exception("delivery.plan_ahead_error")
            return None

    def _may_follow(self, outcomes: list[AttemptOutcome], nxt: _Batch) -> bool:
        if any(o.kind == "retry" for o in outcomes):
            return False
        return nxt.sent_at is None or self.gw.clock.now() - nxt.sent_at <= AHEAD_MAX_AGE

    async def _plan(self, after_seq: int = 0, limit: int | None = None) -> _Batch | None:
        """The due messages behind `after_seq` (at most `limit`, else `batch_max`), expired ones
        set apart, the rest built."""
        gw = self.gw
        now = gw.clock.now()
        limit = gw.config.delivery.batch_max if limit is None else limit
        due = await gw.store.due(gw.peer.identity, now, limit, after_seq)
        gw.planned(len(due), full=len(due) >= limit)
        if not due:
            return None
        live = [m for m in due if m.expires_at > now]
        expired = [self._expired(m, now) for m in due if m.expires_at <= now]
        if not live:
            return _Batch(due, live, expired, [], now, None)
        # Read the clock again after `due`: a message committed meanwhile (or by another
        # replica with a slightly faster clock) must never look sent before it was created.
        sent_at = max(gw.clock.now(), *(m.created_at for m in live))
        try:
            built = await self._build(live, sent_at)
        except Exception:
            await gw.store.release([m.id for m in due])
            raise
        return _Batch(due, live, expired, built, now, sent_at)

    async def _attempt(self, batch: _Batch) -> list[AttemptOutcome]:
        self._batch_jitter = None
        outcomes = list(batch.expired)
        if batch.live:
            outcomes += await self._send(batch.live, batch.built, batch.planned_at)
        return outcomes

    async def _finish(self, batch: _Batch, outcomes: list[AttemptOutcome]) -> None:
        gw = self.gw
        await gw.store.record_outcomes(outcomes)
        if gw.lifecycle is not None:
            done = {o.message_id for o in outcomes if o.kind == "delivered"}
            announced = [m for m in batch.live if m.id in done and m.type == "key-announcement"]
            if announced:
                await gw.lifecycle.on_delivered(announced)

    async def _build(self, msgs: list[OutMessage], sent_at: dt.datetime) -> list[Built]:
        """Envelopes for `msgs` under the keys valid at `sent_at`, built by the crypto workers.

        The ciphertext of an earlier attempt is reused while the peer's encryption key is the
        same (the document inside is the same signed document)."""
        gw = self.gw
        key = gw.peer.encryption_key(sent_at)
        sig_key = gw.identity.active_signing_key(sent_at)
        items: list[BuildItem] = [
            (m.signed_document, m.seq, m.attempts + 1, m.ciphertext if m.enc_kid == key.kid else None) for m in msgs
        ]
        return await gw.crypto.map(
            build_batch, SealKeys.of(sig_key, key), sent_at, items, processes_from=SENDER_PROCESSES_FROM
        )

    async def _send(self, msgs: list[OutMessage], built: list[Built], now: dt.datetime) -> list[AttemptOutcome]:
        assert self._session is not None
        gw = self.gw
        # Each envelope arrives as JSON bytes from the workers: the batch is their concatenation.
        body = b'{"envelopes":[' + b",".join(b[0] for b in built) + b"]}"
        self.requests += 1
        recovery = gw.recovery
        try:
            if recovery is not None and not recovery.checked:
                await recovery.check(self._session)  # before the first envelope leaves this run
            if recovery is not None and recovery.needed:
                why = "recovery needed: this store is behind the peer; run customs-gateway recover"
                return [self._retry(m, b, now, why) for m, b in zip(msgs, built, strict=True)]
            named = _named_files(msgs, built)
            if named:
                await self._announce(named)
                await self._push_files(named)
            async with self._session.post(self.url, data=body, headers=_POST_HEADERS, ssl=client_ssl(self.tls)) as resp:
                raw = await resp.read() if resp.status == 200 else None
            payload = json_object(raw) if raw is not None else None
        except (TimeoutError, aiohttp.ClientError, GatewayError, OSError) as e:
            self.last_error = f"{type(e).__name__}: {e}"
            self._link_failed(now, f"peer unreachable: {type(e).__name__}", len(msgs))
            return [
                self._retry(m, b, now, f"peer unreachable: {type(e).__name__}")
                for m, b in zip(msgs, built, strict=True)
            ]
        if payload is None:
            self._link_failed(now, f"peer answered HTTP {resp.status}", len(msgs))
            return [
                self._retry(m, b, now, f"peer answered HTTP {resp.status}") for m, b in zip(msgs, built, strict=True)
            ]
        now = gw.clock.now()  # the answer's time: after the peer's received_at, not before
        gw.link.answered(now)
        results = payload.get("results")
        if not isinstance(results, list) or len(results) != len(msgs):
            return [
                self._retry(m, b, now, "peer answered a malformed result list")
                for m, b in zip(msgs, built, strict=True)
            ]
        items: list[JudgeItem] = [
            # The envelope's digest matters only to judge a refusal (which must name this envelope).
            (m.id, m.document_sha256, hashlib.sha256(b[0]).digest() if _is_refusal(r) else b"", r)
            for m, b, r in zip(msgs, built, results, strict=True)
        ]
        keys = JudgeKeys(gw.name, gw.peer_bundle_bytes())
        verdicts = await gw.crypto.map(
            judge_batch,
            keys,
            now,
            items,
            processes_from=SENDER_PROCESSES_FROM,
            inline_below=SENDER_JUDGE_INLINE_BELOW,
        )
        return [self._judge(m, b, v, now) for m, b, v in zip(msgs, built, verdicts, strict=True)]

    async def _announce(self, named: list[_Named]) -> None:
        """Show the peer the envelopes whose files are about to be pushed (decision 0017), so it
        checks each file as its ciphertext arrives instead of all of it once the envelope comes.
        An optimisation only: a peer that does not know the path (404) or is busy checks the files
        after the envelope, as before; a broken link fails the attempt as the push would."""
        assert self._session is not None
        url = self.gw.config.peer.url.rstrip("/") + "/peer/v1/announce"
        body = b'{"envelopes":[' + b",".join(n.envelope for n in named) + b"]}"
        async with self._session.post(url, data=body, headers=_POST_HEADERS, ssl=client_ssl(self.tls)) as resp:
            await resp.read()
        if resp.status != 200:
            log.info("file.announce_ignored", status=resp.status)

    async def _push_files(self, named: list[_Named]) -> None:
        """Send the peer every file these messages name that it may not hold yet, before their
        envelopes (DESIGN §13): each resumes from the offset the peer holds. A failure raises, and
        the batch is retried like any attempt the link broke. The peer is asked each attempt (a
        HEAD per file) rather than remembered: a restored peer may have lost what it held."""
        assert self._session is not None
        base = self.gw.config.peer.url.rstrip("/") + "/peer/v1/files/"
        for n in named:
            for f in n.files:
                chunks = functools.partial(self.gw.files.chunks, f.file_id)
                url, ssl = base + f.file_id, client_ssl(self.tls)
                sent = await peer_files.push(
                    self._session, url, ssl, chunks, f.key, f.size, progress=self.file_progress
                )
                log.info("file.pushed", message_id=n.message_id, file_id=f.file_id, bytes=sent)

    def _judge(self, m: OutMessage, b: Built, v: Verdict, now: dt.datetime) -> AttemptOutcome:
        """The outcome of one verified (or unverifiable) answer, with its audit entries."""
        gw = self.gw
        if isinstance(v, ReceiptVerdict):
            statement, received_at, kid = v.statement, v.received_at, v.kid
            gw.observe_peer_clock(received_at, now)
            gw.counters.delivered += 1
            gw.recent.add("delivered", now)
            observe_receipt_latency(gw, (now - m.created_at).total_seconds())
            entry = delivered_entry(gw, m, statement, received_at, kid, now, attempt=m.attempts + 1)
            return AttemptOutcome(
                m.id, "delivered", now, m.attempts + 1, receipt=statement, audit=(*self._sent(m, now), entry)
            )
        if isinstance(v, RefusalVerdict):
            statement, code, detail = v.statement, v.code, v.detail
            if v.retryable:
                return self._retry(m, b, now, f"peer refused (retryable): {code}")
            gw.counters.refused_out[code] = gw.counters.refused_out.get(code, 0) + 1
            gw.recent.add("refused", now)
            entry = AuditEntry(
                at=now,
                kind="refusal_received",
                actor=f"peer:{gw.peer.identity}",
                message_id=m.id,
                peer=gw.peer.identity,
                code=code,
                digests={"document": m.document_sha256.hex(), "refusal": _sha(statement)},
            )
            return AttemptOutcome(
                m.id,
                "refused",
                now,
                m.attempts + 1,
                refusal=statement,
                error=f"{code}: {detail}",
                audit=(*self._sent(m, now), entry),
            )
        log.warning("delivery.bad_result", message_id=m.id, code=v.code)
        return self._retry(m, b, now, f"unverifiable answer from peer: {v.code}")

    def _sent(self, m: OutMessage, now: dt.datetime) -> tuple[AuditEntry, ...]:
        if m.status != "queued":
            return ()
        return (
            AuditEntry(
                at=now,
                kind="sent",
                actor="system",
                message_id=m.id,
                peer=m.peer,
                digests={"document": m.document_sha256.hex()},
            ),
        )

    def _link_failed(self, now: dt.datetime, why: str, messages: int) -> None:
        """Record a failed delivery request; warn, at most once a minute, with the reason."""
        gw = self.gw
        gw.link.failed(now, why)
        if self._warned_at is None or (now - self._warned_at).total_seconds() >= 60:
            self._warned_at = now
            log.warning(
                "delivery.failing",
                peer=gw.peer.identity,
                reason=why,
                messages=messages,
                failing_for_seconds=round(gw.link.unreachable_for(now), 1),
            )

    def _retry(self, m: OutMessage, b: Built, now: dt.datetime, why: str) -> AttemptOutcome:
        self.gw.counters.retries += 1
        attempt = m.attempts + 1
        # One jitter draw per batch: every message of a failed batch waits the same time, so none
        # overtakes the head of the queue.
        if self._batch_jitter is None:
            self._batch_jitter = self.rng.random()
        delay = self.backoff.delay(attempt, self._batch_jitter)
        return AttemptOutcome(
            m.id,
            "retry",
            now,
            attempt,
            error=why,
            next_attempt_at=now + dt.timedelta(seconds=delay),
            ciphertext=b[1],
            enc_kid=b[2],
            audit=self._sent(m, now),
            retain_until=m.retain_until,  # the ciphertext is sealed under the message's day
        )

    def _expired(self, m: OutMessage, now: dt.datetime) -> AttemptOutcome:
        self.gw.counters.expired += 1
        entry = AuditEntry(
            at=now,
            kind="expired",
            actor="system",
            message_id=m.id,
            peer=m.peer,
            digests={"document": m.document_sha256.hex()},
        )
        return AttemptOutcome(m.id, "expired", now, m.attempts, error="expired before delivery", audit=(entry,))


@dataclass(frozen=True)
class _Named:
    """A message of the batch that names files: its envelope and the files to push first."""

    message_id: str
    envelope: bytes
    files: list[docfiles.SealedFile]


def _named_files(msgs: list[OutMessage], built: list[Built]) -> list[_Named]:
    """The messages of a batch that name at least one file (most name none: nothing to announce
    or push for them, and an announce would make the peer open their envelopes twice). The
    crypto workers said which, from the document they had parsed to build the envelope."""
    named: list[_Named] = []
    for m, b in zip(msgs, built, strict=True):
        if b[3]:
            document = SignedDocument.from_bytes(m.signed_document).document_bytes
            named.append(_Named(m.id, b[0], docfiles.sealed_files(m.type, document)))
    return named


def _is_refusal(result: object) -> bool:
    return isinstance(result, dict) and "refusal" in result


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
