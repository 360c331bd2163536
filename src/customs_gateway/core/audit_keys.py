"""Keys over time for the offline verifiers, and their Ed25519 checks off the parsing thread.

`KeyHistory` holds one identity's keys as the trust chain (`core.trust`) reached them; its keys
verify through a `SignatureQueue` that batches the arithmetic to an injected executor and reports
the first failure in file order.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from concurrent.futures import Executor, Future
from typing import Final, NamedTuple

import nacl.bindings
import nacl.exceptions

from .audit_format import BundleError
from .bundle import KeyRecord
from .errors import SignatureError
from .keys import VerifyKey, domain
from .trust import TrustedKeys

# --- Ed25519 checks off the parsing thread ------------------------------------------------------


class _Where(NamedTuple):
    line: int
    entry: int | None
    code: str
    what: str


_Check = tuple[bytes, bytes, bytes]  # (public key, signed bytes, signature)
#: Checks a batch. Each batch wakes the pool's two helper threads in this process, which take
#: the GIL from the reading thread: 1,024 instead of 128 took `audit verify` of 100,000 entries
#: from 4.5-5.1 s to 3.9-4.2 s (docs/performance.md, session 16).
BATCH: Final = 1024
MAX_IN_FLIGHT: Final = 8


def first_bad_signature(batch: list[_Check]) -> int:
    """Index of the first Ed25519 signature in the batch that fails, or -1. Module-level so a
    process pool can run it."""
    for i, (public, message, signature) in enumerate(batch):
        try:
            nacl.bindings.crypto_sign_open(signature + message, public)
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            return i
    return -1


class _Batch(NamedTuple):
    checks: list[_Check]
    wheres: list[_Where]
    future: Future[int] | None  # checked by the executor
    bad: int | None  # checked here already (index of the first failure, or -1)


class SignatureQueue:
    """Sends the Ed25519 arithmetic of document and receipt signatures, in batches, to an injected
    executor (a process pool uses a second core while this thread goes on parsing), and reads the
    results in queue order, so the first failure reported is the one a serial check would find
    first. When the executor is behind (MAX_IN_FLIGHT batches queued, the oldest not done), the
    next batch is checked on this thread instead of waiting: both cores stay busy and fewer bytes cross to the workers.
    Without an executor each check runs at once; if the executor breaks, its batches are checked
    here instead. Holds at most MAX_IN_FLIGHT batches."""

    def __init__(self, executor: Executor | None) -> None:
        self._executor = executor
        self._batch: list[_Check] = []
        self._wheres: list[_Where] = []
        self._in_flight: deque[_Batch] = deque()
        self.where = _Where(0, None, "audit.signature", "")  # set by the verifier before each check

    def add(self, public: bytes, message: bytes, signature: bytes) -> None:
        if self._executor is None:
            if first_bad_signature([(public, message, signature)]) >= 0:
                raise SignatureError("signature does not verify")
            return
        self._batch.append((public, message, signature))
        self._wheres.append(self.where)
        if len(self._batch) >= BATCH:
            self._submit()

    def _submit(self) -> None:
        checks, wheres = self._batch, self._wheres
        self._batch, self._wheres = [], []
        future: Future[int] | None = None
        bad: int | None = None
        backed_up = len(self._in_flight) >= MAX_IN_FLIGHT and not _ready(self._in_flight[0])
        if self._executor is not None and backed_up:
            bad = first_bad_signature(checks)  # the workers are behind: share the work
        elif self._executor is not None:
            try:
                future = self._executor.submit(first_bad_signature, checks)
            except Exception:  # a broken or shut-down pool: the arithmetic is done here instead
                self._executor = None
        self._in_flight.append(_Batch(checks, wheres, future, bad))
        while self._in_flight and (len(self._in_flight) > MAX_IN_FLIGHT or _ready(self._in_flight[0])):
            self._settle(self._in_flight.popleft())

    @staticmethod
    def _settle(b: _Batch) -> None:
        bad = b.bad
        if bad is None:
            try:
                bad = first_bad_signature(b.checks) if b.future is None else b.future.result()
            except Exception:  # the worker died: its answer is lost, not negative; check again here
                bad = first_bad_signature(b.checks)
        if bad >= 0:
            w = b.wheres[bad]
            raise BundleError(f"{w.what}: signature does not verify", code=w.code, line=w.line, index=w.entry)

    def drain(self) -> None:
        """Wait for every queued check; raises BundleError for the first that failed."""
        if self._batch:
            self._in_flight.append(_Batch(self._batch, self._wheres, None, None))
            self._batch, self._wheres = [], []
        while self._in_flight:
            self._settle(self._in_flight.popleft())

    def close(self) -> None:
        """Forget queued checks (the executor belongs to the caller)."""
        for b in self._in_flight:
            if b.future is not None:
                b.future.cancel()
        self._in_flight.clear()
        self._batch, self._wheres = [], []


def _ready(b: _Batch) -> bool:
    return b.bad is not None or b.future is None or b.future.done()


class _QueuedKey(VerifyKey):
    """A VerifyKey whose Ed25519 check goes through a SignatureQueue. The core's rules (receipt
    binding, key validity, domain separation, signature length) still decide what is checked."""

    _queue: SignatureQueue

    def __init__(self, raw: bytes, queue: SignatureQueue) -> None:
        super().__init__(raw)
        object.__setattr__(self, "_queue", queue)

    def verify(self, label: str, message: bytes, signature: bytes) -> None:
        if len(signature) != 64:
            raise SignatureError(f"{label} signature must be 64 bytes", field="signature")
        self._queue.add(self.raw, domain(label) + message, signature)


# --- keys over time -----------------------------------------------------------------------------


class KeyHistory:
    """One identity's public keys as its trust chain reached them (`core.trust.trusted_keys`: the
    newest bundle version that follows from the anchor), verifying through a SignatureQueue."""

    def __init__(self, trusted: TrustedKeys, queue: SignatureQueue) -> None:
        self.identity = trusted.identity
        self.trusted = trusted
        self._queue = queue
        self._loaded: dict[str, VerifyKey] = {}

    def records(self, use: str) -> list[KeyRecord]:
        return self.trusted.records(use)

    def verify_key(self, kid: str, at: dt.datetime, use: str = "signing") -> VerifyKey:
        """The key `kid` if it is a `use` key valid (in its window, not revoked) at `at`; raises KeyStateError."""
        rec = self.trusted.record(kid, at, use)
        vk = self._loaded.get(kid)
        if vk is None:
            vk = _QueuedKey(rec.public, self._queue)
            self._loaded[kid] = vk
        return vk
