"""The direct process pool: answers come back to their callers, jobs beyond the workers wait their
turn, failures come back as themselves, and a dead worker fails what it held, never hangs it."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
import weakref
from collections.abc import AsyncIterator, Callable

import pytest

from customs_gateway.service.crypto_pool import _main_module_hidden
from customs_gateway.service.procpool import DirectProcessPool, WorkerDied
from customs_gateway.service.procworker import RemoteError
from tests.fresh import fresh_python
from tests.gateway.test_crypto_workers import _alive


def _square(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def _nap(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def _fail(message: str) -> None:
    raise ValueError(message)


def _unpicklable() -> Callable[[], int]:
    return lambda: 1


@pytest.fixture
async def pool() -> AsyncIterator[DirectProcessPool]:
    p = DirectProcessPool(2, multiprocessing.get_context("forkserver"), spawning=_main_module_hidden)
    await p.start()
    try:
        yield p
    finally:
        p.close()


async def test_every_caller_gets_its_own_answer_and_extra_jobs_wait_their_turn(pool: DirectProcessPool) -> None:
    answers = await asyncio.gather(*(pool.run(_square, i) for i in range(50)))  # 50 jobs, 2 workers
    assert [a for a, _ in answers] == [i * i for i in range(50)]
    assert {pid for _, pid in answers} <= set(pool.pids)
    assert len({pid for _, pid in answers}) == 2  # both workers took jobs


async def test_a_job_that_raises_raises_the_same_in_the_caller(pool: DirectProcessPool) -> None:
    with pytest.raises(ValueError, match="refused in the worker"):
        await pool.run(_fail, "refused in the worker")
    with pytest.raises(RemoteError, match="pickle"):  # an answer that cannot cross: its text does
        await pool.run(_unpicklable)
    assert (await pool.run(_square, 3))[0] == 9  # the worker goes on


async def test_a_killed_worker_fails_its_job_and_the_queue_and_the_pool_takes_no_more(
    pool: DirectProcessPool,
) -> None:
    held = [asyncio.ensure_future(pool.run(_nap, 5.0)) for _ in range(2)]
    queued = asyncio.ensure_future(pool.run(_square, 2))
    await asyncio.sleep(0.3)  # both workers are napping, the third job waits
    victim = pool.pids[0]
    os.kill(victim, signal.SIGKILL)
    started = time.monotonic()
    for fut in (*held, queued):
        with pytest.raises(WorkerDied, match="ended"):
            await fut
    assert time.monotonic() - started < 3.0  # failed when the worker died, not when the nap ended
    with pytest.raises(WorkerDied):
        await pool.run(_square, 1)


async def test_a_cancelled_caller_leaves_the_worker_usable(pool: DirectProcessPool) -> None:
    slow = asyncio.ensure_future(pool.run(_nap, 0.3))
    await asyncio.sleep(0.05)
    slow.cancel()
    answers = await asyncio.gather(*(pool.run(_square, i) for i in range(6)))
    assert [a for a, _ in answers] == [i * i for i in range(6)]


async def test_close_ends_the_workers_and_fails_what_waits() -> None:
    p = DirectProcessPool(1, multiprocessing.get_context("forkserver"), spawning=_main_module_hidden)
    await p.start()
    pids = p.pids
    assert len(pids) == 1 and _alive(pids[0])
    busy = asyncio.ensure_future(p.run(_nap, 5.0))
    waiting = asyncio.ensure_future(p.run(_square, 2))
    await asyncio.sleep(0.3)
    p.close()
    for fut in (busy, waiting):
        with pytest.raises(WorkerDied, match="closed"):
            await fut
    assert not any(_alive(pid) for pid in pids)
    with pytest.raises(WorkerDied):
        await p.run(_square, 1)


async def test_a_pool_needs_a_process() -> None:
    with pytest.raises(ValueError, match="at least one process"):
        DirectProcessPool(0, multiprocessing.get_context("forkserver"))


class _Answer:
    """A job's answer that a weak reference can watch."""


def _answer() -> _Answer:
    return _Answer()


async def test_the_pool_keeps_no_answer_once_its_caller_has_it(pool: DirectProcessPool) -> None:
    # A build answer is ~750 KB a chunk: the pool's reader must not hold the last one (nor the
    # future that carried it) while it waits for the next (the 1,000,000-queued memory row).
    answer = await pool.run(_answer)
    watch = weakref.ref(answer)
    del answer
    await asyncio.sleep(0)  # the event loop's handle that resumed us lets go of the future
    assert watch() is None


def test_the_workers_modules_import_no_event_loop_web_or_logging_library() -> None:
    # The fork server imports these two before forking each worker; anything they import is
    # memory in it and in every worker (docs/performance.md, session 13).
    probe = (
        "import sys\n"
        "import customs_gateway.service.crypto_workers, customs_gateway.service.procworker\n"
        "heavy = ('asyncio', 'aiohttp', 'structlog', 'rich', 'jinja2', 'asyncpg')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    assert fresh_python(probe) == ""
