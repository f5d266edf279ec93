"""A raw-socket HTTP/1.1 client that counts every byte it sends and receives: the reference
the byte-exact metering tests compare governor's counts against, so it parses nothing it
does not have to and never hides a byte (no decoding, no pooling, no retries)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass
class RawResponse:
    """A response read off a raw socket, with the exact number of bytes received."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    received: int  # every byte read from the socket for this response
    complete: bool  # the body ended as its framing said (False: truncated)
    head: bytes = b""

    def header(self, name: str) -> str | None:
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None


@dataclass
class RawClient:
    """An HTTP/1.1 client on a plain socket, counting every byte both ways."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    sent: int = 0
    received: int = 0
    _buf: bytearray = field(default_factory=bytearray)

    @classmethod
    async def connect(
        cls, port: int, host: str = "127.0.0.1", *, source: str | None = None
    ) -> RawClient:
        """Connect to ``host:port``, from the address ``source`` when given (127.0.0.0/8)."""
        local = None if source is None else (source, 0)
        reader, writer = await asyncio.open_connection(host, port, local_addr=local)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        self.sent += len(data)
        await self.writer.drain()

    async def _fill(self) -> bool:
        data = await self.reader.read(65536)
        if not data:
            return False
        self.received += len(data)
        self._buf += data
        return True

    async def _read_until(self, marker: bytes) -> bytes | None:
        while True:
            i = self._buf.find(marker)
            if i != -1:
                out = bytes(self._buf[: i + len(marker)])
                del self._buf[: i + len(marker)]
                return out
            if not await self._fill():
                return None

    async def _read_exact(self, n: int) -> bytes | None:
        while len(self._buf) < n:
            if not await self._fill():
                return None
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def response(self, *, method: str = "GET") -> RawResponse:
        """Read one response, framed by its headers (no body for HEAD, 1xx, 204, 304)."""
        start = self.received - len(self._buf)
        while True:
            head = await self._read_until(b"\r\n\r\n")
            assert head is not None, "connection closed before a response head"
            status = int(head.split(b" ", 2)[1])
            if status != 100:
                break
        lines = head.decode("latin-1").split("\r\n")
        headers = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers.append((name.strip(), value.strip()))
        resp = RawResponse(status, headers, b"", 0, True, head)
        te = (resp.header("Transfer-Encoding") or "").lower()
        cl = resp.header("Content-Length")
        body = bytearray()
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            pass
        elif "chunked" in te:
            while True:
                size_line = await self._read_until(b"\r\n")
                if size_line is None:
                    resp.complete = False
                    break
                size = int(size_line.split(b";")[0], 16)
                chunk = await self._read_exact(size + 2)
                if chunk is None:
                    resp.complete = False
                    body += self._buf
                    break
                if size == 0:
                    break
                body += chunk[:-2]
        elif cl is not None:
            data = await self._read_exact(int(cl))
            if data is None:
                resp.complete = False
                body += self._buf
                self._buf.clear()
            else:
                body += data
        else:
            while await self._fill():
                pass
            body += self._buf
            self._buf.clear()
        resp.body = bytes(body)
        resp.received = self.received - len(self._buf) - start
        return resp

    async def read_to_eof(self) -> int:
        """Read until the server closes; returns the bytes read."""
        n = 0
        while True:
            data = await self.reader.read(65536)
            if not data:
                return n
            self.received += len(data)
            n += len(data)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def request(method: str, path: str, host: str, *headers: str, body: bytes = b"") -> bytes:
    """A raw request in canonical form."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *headers]
    if body and not any(
        h.lower().startswith(("content-length", "transfer-encoding")) for h in headers
    ):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
