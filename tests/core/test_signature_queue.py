"""The offline verifiers' SignatureQueue: batches to an executor, shares the work when the
executor is behind, and still reports the first bad signature in file order."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from customs_gateway.core import audit_keys
from customs_gateway.core.audit_format import BundleError
from customs_gateway.core.audit_keys import MAX_IN_FLIGHT, SignatureQueue, _Where
from customs_gateway.core.keys import SigningKey, domain

KEY = SigningKey(bytes(range(32)))
BATCH = 64  # small batches: the queue fills in a few tens of ms, well before a gate opens


@pytest.fixture(autouse=True)
def _small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_keys, "BATCH", BATCH)


class GatedPool(ThreadPoolExecutor):
    """A pool whose work waits for a gate: it is 'behind' until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.gate = threading.Event()
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1

        def gated() -> Any:
            self.gate.wait(10)
            return fn(*args, **kwargs)

        return super().submit(gated)


def _add(queue: SignatureQueue, n: int, line: int, bad: bool = False) -> None:
    msg = f"message {line}".encode()
    sig = KEY.sign("document", msg)
    if bad:
        sig = bytes([sig[0] ^ 1]) + sig[1:]
    queue.where = _Where(line, line, "audit.document_signature", f"document on line {line}")
    queue.add(KEY.public_raw, domain("document") + msg, sig)


def _fill(queue: SignatureQueue, batches: int, bad_lines: set[int]) -> None:
    line = 0
    for _ in range(batches):
        for _ in range(BATCH):
            line += 1
            _add(queue, 1, line, bad=line in bad_lines)


def test_a_backed_up_executor_shares_the_work_and_the_first_failure_in_file_order_wins() -> None:
    pool = GatedPool()
    queue = SignatureQueue(pool)
    opener = threading.Timer(0.3, pool.gate.set)  # the workers catch up later
    opener.start()
    first_bad = BATCH + 5  # in the second batch, checked by the (late) executor
    later_bad = MAX_IN_FLIGHT * BATCH + 7  # in the batch checked here while the executor is behind
    try:
        with pytest.raises(BundleError) as e:
            _fill(queue, MAX_IN_FLIGHT + 2, {first_bad, later_bad})
            queue.drain()
        assert e.value.line == first_bad and e.value.code == "audit.document_signature"
        assert pool.submitted <= MAX_IN_FLIGHT + 1  # the batch after the full queue was checked here
    finally:
        opener.cancel()
        pool.gate.set()
        pool.shutdown()


def test_every_good_signature_passes_with_or_without_sharing() -> None:
    pool = GatedPool()
    queue = SignatureQueue(pool)
    threading.Timer(0.2, pool.gate.set).start()
    _fill(queue, MAX_IN_FLIGHT + 2, set())
    queue.drain()
    # Eight batches went to the workers; those after found them behind and were checked here.
    assert MAX_IN_FLIGHT <= pool.submitted < MAX_IN_FLIGHT + 2
    pool.shutdown()
    queue = SignatureQueue(None)
    _fill(queue, 3, set())
    queue.drain()


def test_a_bad_signature_checked_here_is_reported_after_the_executors_batches_pass() -> None:
    pool = GatedPool()
    queue = SignatureQueue(pool)
    threading.Timer(0.2, pool.gate.set).start()
    only_bad = MAX_IN_FLIGHT * BATCH + 3
    with pytest.raises(BundleError) as e:
        _fill(queue, MAX_IN_FLIGHT + 2, {only_bad})
        queue.drain()
    assert e.value.line == only_bad
    pool.shutdown()
