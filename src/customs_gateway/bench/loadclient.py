"""The benchmark's back-end clients: keep-alive HTTP/1.1 over asyncio streams, nothing else.

The load generator shares the machine with the two gateways it measures, so what it spends is
taken from them. aiohttp's client cost ~0.2 ms of CPU a request (13-14 % of a core at 620 msg/s,
issue 21); a request here is one prepared byte string written and an answer read by its
`Content-Length`. It speaks only what the gateway's local API answers with: a status line,
headers, and a body of `Content-Length` bytes or chunked. Anything else is a `LoadClientError`
(an `OSError`, so the callers' error accounting is unchanged) and the connection is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024  # an answer's status line and headers
MAX_BODY = 64 * 1024 * 1024


class LoadClientError(OSError):
    """The local API's answer could not be read (closed early, malformed, too large)."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()

    async def exchange(self, request: bytes) -> tuple[int, bytes, bool]:
        """Send one request; its status, body, and whether the connection may be used again."""
        self.writer.write(request)
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as e:
            raise LoadClientError("the connection closed before an answer") from e
        except asyncio.LimitOverrunError as e:
            raise LoadClientError("the answer's headers are too long") from e
        lines = head[:-4].split(b"\r\n")
        status_line = lines[0].split(b" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1.") or not status_line[1].isdigit():
            raise LoadClientError(f"not an HTTP/1.1 status line: {lines[0][:80]!r}")
        status = int(status_line[1])
        length: int | None = None
        chunked = False
        reusable = status_line[0] == b"HTTP/1.1"
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise LoadClientError(f"malformed header line: {line[:80]!r}")
            name = name.strip().lower()
            value = value.strip()
            if name == b"content-length":
                if not value.isdigit() or int(value) > MAX_BODY:
                    raise LoadClientError(f"bad Content-Length: {value[:40]!r}")
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = value.lower() == b"chunked"
            elif name == b"connection":
                reusable = reusable and value.lower() != b"close"
        try:
            if chunked:
                body = await self._chunked()
            elif length is not None:
                body = await self.reader.readexactly(length)
            else:  # no length: the body runs to the end of the connection
                body = await self.reader.read(-1)
                if len(body) > MAX_BODY:
                    raise LoadClientError("the body is too large")
                reusable = False
        except asyncio.IncompleteReadError as e:
            raise LoadClientError("the connection closed inside an answer's body") from e
        return status, body, reusable

    async def _chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size_line = await self.reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError as e:
                raise LoadClientError(f"bad chunk size: {size_line[:40]!r}") from e
            total += size
            if total > MAX_BODY:
                raise LoadClientError("the chunked body is too large")
            if size == 0:
                while await self.reader.readuntil(b"\r\n") != b"\r\n":  # trailers, if any
                    pass
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            if await self.reader.readexactly(2) != b"\r\n":
                raise LoadClientError("a chunk does not end with CRLF")


class LoadClient:
    """Keep-alive connections to one `http://host:port` base URL, reused by concurrent callers.

    `post(path, body, headers)` returns the answer's status and body. A connection is taken from
    the idle ones (or opened), used by one request at a time, and put back if the answer allows;
    at most `limit` are open, further requests wait for one (as aiohttp's connector limit did).
    `timeout` bounds each request once it has a connection slot (connect, send, answer)."""

    def __init__(self, base_url: str, *, timeout: float = 60.0, limit: int = 1024) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"the load client speaks plain HTTP to the local API, not {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.base_path = parts.path.rstrip("/")
        self.timeout = timeout
        self._host_header = f"{self.host}:{self.port}"
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._slots = asyncio.Semaphore(limit)
        self._prepared: dict[tuple[str, tuple[tuple[str, str], ...], int], bytes] = {}

    def _head(self, path: str, headers: dict[str, str], length: int) -> bytes:
        key = (path, tuple(headers.items()), length)
        head = self._prepared.get(key)
        if head is None:
            lines = [f"POST {self.base_path}{path} HTTP/1.1", f"Host: {self._host_header}"]
            lines += [f"{k}: {v}" for k, v in headers.items()]
            lines += [f"Content-Length: {length}", "", ""]
            head = self._prepared[key] = "\r\n".join(lines).encode("latin-1")
        return head

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        request = self._head(path, headers, len(body)) + body
        async with self._slots, asyncio.timeout(self.timeout):
            conn = self._idle.pop() if self._idle else await self._open()
            self._busy.add(conn)
            reusable = False
            try:
                status, answer, reusable = await conn.exchange(request)
            finally:
                self._busy.discard(conn)
                if reusable:
                    self._idle.append(conn)
                else:
                    conn.close()
        return status, answer

    async def _open(self) -> _Connection:
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=MAX_HEAD)
        return _Connection(reader, writer)

    async def close(self) -> None:
        conns = [*self._idle, *self._busy]
        self._idle.clear()
        self._busy.clear()
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await conn.writer.wait_closed()

    async def __aenter__(self) -> LoadClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
