"""Large files between two real gateways (issue 19, item 7): the file rows of `customs-gateway bench`.

- `file_ceiling`: one core, no I/O — STREAM encryption (`core.filecrypt`) + SHA-256 + decryption
  + SHA-256 of the same bytes, in MB/s (10^6 bytes a second).
- `file_transfer`: one file end to end between two `serve` processes — uploaded with `POST
  /v1/files` (streamed), named by a `training-material` document, delivered (ciphertext pushed,
  checked by the receiver), downloaded on the receiver and its SHA-256 compared — in MB/s, while
  a sampler reads VmRSS of both gateways (each with its crypto workers) from `/proc/PID/status`.
- `CuttingProxy`: a TCP relay between the sender and the receiver's peer port that counts the
  bytes the sender sends and can cut every connection at once (a connection cut midway), for
  the resume row: bytes sent twice = bytes relayed − bytes a whole transfer needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from ..core import filecrypt
from ..startup.config import load_config
from .benchmark import cpu_and_wait_seconds, descendants, machine_busy_seconds, sample_body

MB = 1_000_000
MIB = 1 << 20
_PIECE = MIB


def file_block(index: int, seed: bytes = b"customs-gateway bench file") -> bytes:
    """MiB `index` of the benchmark file: reproducible, incompressible, no two blocks alike."""
    head = hashlib.sha256(seed + index.to_bytes(8, "big")).digest()
    return head + _BASE[len(head) :]


_BASE = hashlib.shake_256(b"customs-gateway bench file body").digest(_PIECE)


def file_ceiling(size: int) -> dict[str, Any]:
    """STREAM-encrypt, hash, decrypt and hash `size` bytes on this thread (one core); MB/s."""
    key = bytes(range(32))
    enc, dec = filecrypt.Encryptor(key), filecrypt.Decryptor(key)
    h_in, h_out = hashlib.sha256(), hashlib.sha256()
    t0 = time.perf_counter()
    done = 0
    for i in range(-(-size // _PIECE)):
        piece = file_block(i)[: size - done]
        done += len(piece)
        h_in.update(piece)
        for sealed in enc.feed(piece):
            for plain in dec.feed(sealed):
                h_out.update(plain)
    for plain in dec.feed(enc.finish()):
        h_out.update(plain)
    h_out.update(dec.finish())
    took = time.perf_counter() - t0
    if h_in.digest() != h_out.digest():
        raise RuntimeError("the ceiling's round trip changed the bytes")
    return {"bytes": size, "seconds": round(took, 3), "mb_per_second": round(size / MB / took, 1)}


class RssSampler:
    """Peak VmRSS (KiB) of each gateway with its descendants, sampled every `every` seconds."""

    def __init__(self, pids: dict[str, int], every: float = 0.05) -> None:
        self.pids = pids
        self.every = every
        self.peak: dict[str, int] = dict.fromkeys(pids, 0)
        self._tree: dict[str, list[int]] = {}
        self._task: asyncio.Task[None] | None = None

    def now(self) -> dict[str, int]:
        """Each gateway's resident set now (its own process plus its crypto workers), KiB."""
        return {name: sum(_vmrss_kib(p) for p in self._tree.get(name, [pid])) for name, pid in self.pids.items()}

    def refresh(self) -> None:
        self._tree = {name: [pid, *descendants(pid)] for name, pid in self.pids.items()}

    async def _run(self) -> None:
        last_refresh = 0.0
        while True:
            if time.monotonic() - last_refresh > 1.0:
                self.refresh()
                last_refresh = time.monotonic()
            for name, kib in self.now().items():
                self.peak[name] = max(self.peak[name], kib)
            await asyncio.sleep(self.every)

    def start(self) -> None:
        self.refresh()
        self.peak = self.now()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _vmrss_kib(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def file_digest(size: int) -> str:
    """SHA-256 (hex) of the benchmark file of `size` bytes (worked out before the clock starts,
    as a back-end that sends a file from its disk knows its digest)."""
    digest = hashlib.sha256()
    for i in range(-(-size // _PIECE)):
        digest.update(file_block(i)[: size - i * _PIECE])
    return digest.hexdigest()


async def _file_body(size: int, sent: list[int]) -> AsyncIterator[bytes]:
    done = 0
    for i in range(-(-size // _PIECE)):
        piece = file_block(i)[: size - done]
        done += len(piece)
        sent[0] = done
        yield piece


class _Compare:
    """Checks a download byte for byte against the benchmark file as it streams in."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.at = 0
        self.same = True
        self._block: tuple[int, bytes] = (-1, b"")

    def feed(self, data: bytes) -> None:
        done = 0
        while done < len(data):
            i, off = divmod(self.at, _PIECE)
            if self._block[0] != i:
                self._block = (i, file_block(i)[: self.size - i * _PIECE] if i * _PIECE < self.size else b"")
            block = self._block[1]
            n = min(len(data) - done, len(block) - off)
            if n <= 0 or data[done : done + n] != block[off : off + n]:
                self.same = False
                return
            done += n
            self.at += n


async def file_transfer(
    sender_url: str,
    sender_token: str,
    receiver_url: str,
    receiver_token: str,
    peer: str,
    size: int,
    *,
    on_submitted: Any = None,
    timeout: float = 3600,
    pids: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Upload `size` bytes to the sender, send them in a `training-material` document, wait until
    delivered, download on the receiver and compare it byte for byte (and the digest the gateways
    state with the one worked out beforehand); timings in seconds, MB/s end to end.
    `on_submitted(message_id, file_id)` (a coroutine function) runs once the message is queued.
    With `pids` (name -> gateway pid), the CPU each gateway used (and waited for) in each phase."""
    up_h = {"Authorization": f"Bearer {sender_token}"}
    down_h = {"Authorization": f"Bearer {receiver_token}"}
    want, sent = file_digest(size), [0]
    meter = _PhaseCpu(pids or {})
    t0 = time.perf_counter()
    timeouts = aiohttp.ClientTimeout(total=timeout, sock_read=600)
    async with aiohttp.ClientSession(timeout=timeouts) as session:
        headers = {**up_h, "Content-Type": "application/pdf", "Upload-Length": str(size)}
        async with session.post(
            sender_url + "/v1/files?filename=bench-guide.pdf", data=_file_body(size, sent), headers=headers
        ) as r:
            up = await r.json(content_type=None)
            if r.status != 201 or up.get("sha256") != want:
                raise RuntimeError(f"upload: HTTP {r.status} {up}")
        fid = up["file_id"]
        t_up = time.perf_counter()
        meter.mark("upload")
        body = sample_body("training-material")
        body["files"] = [{**body["files"][0], "file_id": fid}]
        async with session.post(
            sender_url + "/v1/messages", json={"type": "training-material", "to": peer, "body": body}, headers=up_h
        ) as r:
            res = await r.json(content_type=None)
            if r.status != 202:
                raise RuntimeError(f"submit: HTTP {r.status} {res}")
        mid = res["id"]
        if on_submitted is not None:
            await on_submitted(mid, fid)
        while True:
            async with session.get(sender_url + f"/v1/messages/{mid}", headers=up_h) as r:
                status = (await r.json(content_type=None)).get("status") if r.status == 200 else None
            if status in ("delivered", "acknowledged"):
                break
            if status in ("refused", "expired") or time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"the file's message ended {status}")
            await asyncio.sleep(0.01)
        t_delivered = time.perf_counter()
        meter.mark("delivery")
        got = _Compare(size)
        async with session.get(receiver_url + f"/v1/inbox/{mid}/files/{fid}", headers=down_h) as r:
            if r.status != 200 or r.headers.get("Digest-SHA256") != want:
                raise RuntimeError(f"download: HTTP {r.status}")
            async for piece in r.content.iter_chunked(_PIECE):
                got.feed(piece)
        t_end = time.perf_counter()
        meter.mark("download")
    if got.at != size or not got.same:
        raise RuntimeError("the downloaded file is not the one sent")
    took = t_end - t0
    return {
        "bytes": size,
        "file_id": fid,
        "message_id": mid,
        "seconds": round(took, 2),
        "upload_seconds": round(t_up - t0, 2),
        "deliver_seconds": round(t_delivered - t_up, 2),
        "download_seconds": round(t_end - t_delivered, 2),
        "mb_per_second": round(size / MB / took, 1),
        "sha256": want,
        **({"cpu_seconds": meter.phases} if pids else {}),
    }


class _PhaseCpu:
    """CPU seconds each gateway (with its workers) ran, and waited runnable, phase by phase; the
    load generator's own CPU; and the whole machine's busy CPU (other load shows there)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.phases: dict[str, dict[str, Any]] = {}
        self._last = self._now()

    def _now(self) -> dict[str, Any]:
        times = os.times()
        return {
            **{name: cpu_and_wait_seconds(pid) for name, pid in self.pids.items()},
            "bench": (times.user + times.system, 0.0),
            "machine": (machine_busy_seconds(), 0.0),
        }

    def mark(self, phase: str) -> None:
        if not self.pids:
            return
        now = self._now()
        self.phases[phase] = {
            name: {
                "run": round(run - self._last[name][0], 2),
                **({"waited": round(wait - self._last[name][1], 2)} if name in self.pids else {}),
            }
            for name, (run, wait) in now.items()
        }
        self._last = now


def peer_offset(config_path: Path, file_id: str) -> int:
    """The ciphertext bytes a stopped-or-running receiver holds of `file_id` (its record on disk)."""
    config = load_config(config_path, env={})
    try:
        return int(json.loads((config.files_dir() / "peer" / f"{file_id}.json").read_bytes())["offset"])
    except (OSError, ValueError, KeyError):
        return 0


class CuttingProxy:
    """A TCP relay to `target_port` on loopback that counts the bytes relayed each way and can
    cut every open connection at once (both sides see the connection reset)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.up = 0  # client -> target bytes
        self.down = 0
        self.cuts = 0
        #: Cut every connection as soon as this many bytes were relayed upstream (None: never).
        self.cut_at: int | None = None
        self.relayed_at_cut = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            t_reader, t_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, t_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, upstream: bool) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    if upstream:
                        self.up += len(data)
                        if self.cut_at is not None and self.up >= self.cut_at:
                            self.cut_at, self.relayed_at_cut = None, self.up
                            self.cut()  # in the data path: no race with a fast transfer
                            return
                    else:
                        self.down += len(data)
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError):
                dst.close()

        try:
            await asyncio.gather(pipe(reader, t_writer, True), pipe(t_reader, writer, False))
        finally:
            self._writers -= {writer, t_writer}

    def cut(self) -> None:
        """Reset every open connection now (what arrived stays arrived; in-flight bytes are lost)."""
        self.cuts += 1
        for w in list(self._writers):
            w.transport.abort()

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
