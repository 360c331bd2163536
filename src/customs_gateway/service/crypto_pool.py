"""The crypto workers' pool, on the gateway's side: `CryptoPool` runs the batch functions of
`crypto_workers` in worker processes (chunked, one chunk per worker) or in a thread.

The processes are a `procpool.DirectProcessPool` forked from a `forkserver` that imports only
`crypto_workers` and `procworker` (no asyncio, aiohttp or structlog: less memory in the fork
server and every worker), started before any key is loaded. The pool runs a batch in a thread
when it is off (`[performance] crypto_processes = 0`), the batch is small, or the pool broke (a
worker was killed); the next batch starts a fresh pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import multiprocessing
import os
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.process import ProcessPoolExecutor
from typing import Any, TypeVar

import structlog

from . import crypto_workers, procworker
from .crypto_workers import warm, watch_gateway
from .procpool import DirectProcessPool, WorkerDied

log = structlog.get_logger("customs_gateway.crypto")

T = TypeVar("T")
R = TypeVar("R")

#: Below this many envelopes a batch runs in a thread unless its caller says otherwise: a
#: process hop costs more CPU than it saves (see `CryptoPool.map`).
MIN_PROCESS_BATCH = 8


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """While a worker is being started, `__main__` is a bare module.

    multiprocessing re-runs the parent's main *script* in every worker it starts with spawn or
    forkserver, unless it is guarded by `if __name__ == "__main__"`. Our workers need nothing from
    it (their functions live in `crypto_workers`), and an unguarded script that embeds a gateway (a
    test runner, an operator's tool) would otherwise run again inside each worker."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


class MainlessProcessPool(ProcessPoolExecutor):
    """A ProcessPoolExecutor whose workers never import the parent's main module."""

    def _spawn_process(self) -> None:
        with _main_module_hidden():
            super()._spawn_process()  # type: ignore[misc]


class CryptoPool:
    """Runs batch functions in worker processes (chunked, one per worker) or in a thread."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="crypto")
        self._procs: DirectProcessPool | None = None
        self.batches_in_processes = 0
        self.batches_in_threads = 0
        self.batches_inline = 0

    def _pool(self) -> DirectProcessPool:
        if self._procs is None:
            ctx = multiprocessing.get_context("forkserver")
            # Workers fork from a server that has already imported the worker side (fast start)
            # and has never seen a key: it is started here, by the first pool, from a clean state.
            ctx.set_forkserver_preload([crypto_workers.__name__, procworker.__name__])
            self._procs = DirectProcessPool(
                self.processes,
                ctx,
                initializer=watch_gateway,
                initargs=(os.getpid(),),
                spawning=_main_module_hidden,
            )
        return self._procs

    async def start(self) -> None:
        """Start the workers ahead of traffic (optional: they start on first use otherwise)."""
        if self.processes > 0:
            pool = self._pool()
            await pool.start()
            await asyncio.gather(*(pool.run(warm) for _ in range(self.processes)))

    async def map(
        self,
        fn: Callable[[Any, dt.datetime, Sequence[T]], list[R]],
        keys: Any,
        now: dt.datetime,
        items: Sequence[T],
        *,
        processes_from: int = MIN_PROCESS_BATCH,
        inline_below: int = 0,
    ) -> list[R]:
        """`fn(keys, now, items)` over the items, in order, split across the workers.

        A batch smaller than `processes_from` runs in a thread of this process: cheaper in CPU,
        but it holds this process's GIL while it runs. A caller whose process is busy with other
        threads (the sender: event loop and SQLite writer) passes 1, trading CPU for latency.
        A batch smaller than `inline_below` runs right here, on the calling (event-loop) thread,
        with no hand-off at all: for work cheaper than the hop (judging a receipt, about 60 us)."""
        if len(items) < inline_below:
            self.batches_inline += 1
            return fn(keys, now, items)
        if self.processes > 0 and len(items) >= max(1, processes_from):
            n = min(self.processes, len(items))
            size = -(-len(items) // n)
            chunks = [items[i : i + size] for i in range(0, len(items), size)]
            pool = self._pool()
            try:
                parts = await asyncio.gather(*(pool.run(fn, keys, now, c) for c in chunks))
            except WorkerDied:
                # A worker died (killed by an operator or the OOM killer): start a fresh pool
                # next time and do this batch here; nothing was committed from the lost one.
                log.warning("crypto.pool_broken", processes=self.processes)
                self._discard(pool)
            else:
                self.batches_in_processes += 1
                return [r for part in parts for r in part]
        self.batches_in_threads += 1
        return await asyncio.get_running_loop().run_in_executor(self._threads, fn, keys, now, items)

    def _discard(self, pool: DirectProcessPool | None = None) -> None:
        """Close the pool (`pool`: only if it is still the current one; a batch that failed on
        a broken pool must not close the fresh pool another batch has started meanwhile)."""
        if self._procs is not None and (pool is None or pool is self._procs):
            self._procs.close()
            self._procs = None

    def close(self) -> None:
        self._discard()
        self._threads.shutdown(wait=False)
