"""Worker processes the event loop talks to directly: one socket per worker, no helper threads.

`concurrent.futures.ProcessPoolExecutor` moves every job through a feeder thread, a manager
thread and a result queue, each a thread hop and a GIL hand-off; on a busy 2-core machine those
hops cost more than the pickling (issue 21, docs/performance.md "Session 11": 30-50 µs of parent
CPU an envelope, and milliseconds a batch). Here the loop writes each job to a worker's socket
and a task per worker reads the answers, both as non-blocking asyncio streams. A worker runs its
jobs one at a time, in the order they were written.

A worker that dies fails the job it held, and every later job, with `WorkerDied`: the caller
decides what to do (`CryptoPool` runs the batch in a thread and starts a fresh pool next time).
Workers exit when their socket closes (`close`, or the gateway gone).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import pickle
import socket
import struct
from collections.abc import Callable
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

from .procworker import RemoteError, serve

_IDLE_EXIT_SECONDS = 0.05
_JOIN_SECONDS = 1.0


class WorkerDied(RuntimeError):
    """A worker process ended (killed, out of memory) before answering, or the pool is closed."""


def _unpickled(data: bytes) -> tuple[bool, Any]:
    try:
        ok, value = pickle.loads(data)  # noqa: S301 - our own worker, a private socket
    except Exception as e:  # e.g. an exception class that cannot be rebuilt here
        return False, RemoteError(f"an answer could not be read: {type(e).__name__}: {e}")
    return bool(ok), value


class _Worker:
    __slots__ = ("jobs", "process", "reader", "task", "writer")

    def __init__(self, process: BaseProcess, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.process = process
        self.reader = reader
        self.writer = writer
        self.jobs: collections.deque[asyncio.Future[Any]] = collections.deque()  # sent, in order
        self.task: asyncio.Task[None] | None = None


def _frame(data: bytes) -> bytes:
    """`multiprocessing.connection`'s framing, which the worker's `recv_bytes` reads."""
    if len(data) > 0x7FFFFFFF:
        return struct.pack("!iQ", -1, len(data)) + data
    return struct.pack("!i", len(data)) + data


class DirectProcessPool:
    """`processes` workers started from `context` (their `initializer(*initargs)` first). `run`
    writes a job to the worker with the fewest jobs in hand; each worker answers its jobs in
    order. Both ends of the parent's side are non-blocking streams on the event loop: a large job
    or answer never stalls it. Create it (`start`) and use it from one event loop."""

    def __init__(
        self,
        processes: int,
        context: BaseContext,
        *,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        spawning: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
    ) -> None:
        if processes < 1:
            raise ValueError("a process pool needs at least one process")
        self.processes = processes
        self._context = context
        self._initializer = initializer
        self._initargs = initargs
        self._spawning = spawning
        self._workers: list[_Worker] = []
        self._broken: str | None = None

    async def start(self) -> None:
        """Start the workers (once; `run` starts them too)."""
        if self._workers or self._broken is not None:
            return
        try:
            for _ in range(self.processes):
                ours, theirs = self._context.Pipe(duplex=True)  # a socket pair on POSIX
                with self._spawning():
                    proc = self._context.Process(  # type: ignore[attr-defined]
                        target=serve, args=(theirs, self._initializer, self._initargs), daemon=True
                    )
                    proc.start()
                theirs.close()
                sock = socket.socket(fileno=os.dup(ours.fileno()))
                ours.close()
                reader, writer = await asyncio.open_connection(sock=sock, limit=2**20)
                worker = _Worker(proc, reader, writer)
                self._workers.append(worker)
                worker.task = asyncio.create_task(self._answers(worker), name="crypto-worker-answers")
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` in a worker; its result, or the exception it raised (WorkerDied if a worker died)."""
        if not self._workers:
            await self.start()
        if self._broken is not None:
            raise WorkerDied(self._broken)
        job = pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL)
        worker = min(self._workers, key=lambda w: len(w.jobs))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        worker.jobs.append(fut)
        worker.writer.write(_frame(job))
        return await fut

    async def _answers(self, worker: _Worker) -> None:
        """Read `worker`'s answers as they come and hand each to the caller of its job."""
        reader = worker.reader
        try:
            while True:
                (size,) = struct.unpack("!i", await reader.readexactly(4))
                if size == -1:
                    (size,) = struct.unpack("!Q", await reader.readexactly(8))
                ok, value = _unpickled(await reader.readexactly(size))
                fut = worker.jobs.popleft() if worker.jobs else None
                if fut is not None and not fut.done():  # a caller cancelled meanwhile: dropped
                    if ok:
                        fut.set_result(value)
                    else:
                        fut.set_exception(value)
                # Held no longer than its caller holds it, as in the workers: the future keeps
                # the answer too (a build answer is ~750 KB a chunk), so it goes as well.
                del value, fut
        except (asyncio.IncompleteReadError, OSError):
            await asyncio.to_thread(worker.process.join, _JOIN_SECONDS)  # reap it, read its exit code
            self._break(f"a crypto worker (pid {worker.process.pid}) ended (exit code {worker.process.exitcode})")

    def _break(self, why: str) -> None:
        """A worker died: every job in hand fails, and the pool takes no more."""
        if self._broken is None:
            self._broken = why
        self.close()

    def close(self) -> None:
        """Stop the workers (their sockets close; they exit) and fail whatever is still pending."""
        if self._broken is None:
            self._broken = "the process pool is closed"
        workers, self._workers = self._workers, []
        current = asyncio.current_task()
        for w in workers:
            if w.task is not None and w.task is not current:
                w.task.cancel()
            w.writer.close()
            while w.jobs:
                fut = w.jobs.popleft()
                if not fut.done():
                    fut.set_exception(WorkerDied(self._broken))
        for w in workers:
            w.process.join(_IDLE_EXIT_SECONDS)  # an idle worker exits at once on EOF
            if w.process.is_alive():  # busy with a job nobody waits for any more
                w.process.kill()
                w.process.join(_JOIN_SECONDS)
