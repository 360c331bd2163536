"""The worker's side of `procpool.DirectProcessPool`: what runs inside each worker process.

Apart from the pool on purpose: a worker is forked from a fork server that imports this module
and `crypto_workers` beforehand, and neither imports asyncio, aiohttp or structlog, so no worker
(nor its fork server) holds them (docs/performance.md, session 13: the memory row).
"""

from __future__ import annotations

import pickle
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any


class RemoteError(RuntimeError):
    """A job raised an exception that could not be sent back as itself (its text is kept)."""


def serve(conn: Connection, initializer: Callable[..., object] | None, initargs: tuple[Any, ...]) -> None:
    """A worker's whole life: run each job read from `conn`, write back its result or exception."""
    if initializer is not None:
        initializer(*initargs)
    while True:
        try:
            job = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the pool closed its end, or the gateway is gone
        try:
            data = _answer(job)
        finally:
            del job
        try:
            conn.send_bytes(data)
        except OSError:
            return  # the pool closed while this job ran: nobody waits for the answer
        # Nothing of a job outlives it: an idle worker holds no batch (a build answer of 200
        # envelopes is ~2.5 MB; held, it showed in the 1,000,000-queued memory row).
        del data


def _answer(job: bytes) -> bytes:
    fn, args = pickle.loads(job)  # noqa: S301 - from our own parent process, over a private socket
    try:
        answer: tuple[bool, Any] = (True, fn(*args))
    except Exception as e:  # every failure goes back to the caller, as itself
        answer = (False, e)
    try:
        return pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # an unpicklable result or exception: its text instead
        return pickle.dumps((False, RemoteError(traceback.format_exc())), protocol=pickle.HIGHEST_PROTOCOL)
