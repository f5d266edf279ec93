"""A plain-socket origin server that records every request exactly as it arrived.

Where the aiohttp upstream shows what a framework makes of a request, this one
shows the bytes: the request line as sent (method, target, version) and the header
lines in order. It routes the way RFC 9112 §3.2.2 tells an origin server to (and
nginx does): by an absolute-form target's authority when there is one, else by
Host. So a request that governor charged to one site but forwarded with another
site in its target is served, visibly, as the other site.

``GET /size/N`` answers N bytes; anything else answers ``site=<host> path=<path>``.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass
class Received:
    """One request as the upstream read it."""

    line: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    @property
    def site(self) -> str:
        """The site this upstream routes the request to."""
        target = self.line.split(" ")[1]
        if "://" in target:
            authority = target.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
            return authority.split(":")[0].lower()
        hosts = self.header("host")
        return hosts[0].split(":")[0].lower() if hosts else "(default)"


@dataclass
class RawUpstream:
    received: list[Received] = field(default_factory=list)
    server: asyncio.Server | None = None
    port: int = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head[:-4].decode("latin-1").split("\r\n")
                headers = [
                    (n, v.strip(" \t")) for n, _, v in (line.partition(":") for line in lines[1:])
                ]
                req = Received(lines[0], headers, b"")
                req.body = await _body(reader, req)
                self.received.append(req)
                writer.write(_answer(req))
                await writer.drain()
        writer.close()


async def _body(reader: asyncio.StreamReader, req: Received) -> bytes:
    if req.header("transfer-encoding"):
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return body
            body += chunk[:-2]
    lengths = req.header("content-length")
    return await reader.readexactly(int(lengths[0])) if lengths else b""


def _answer(req: Received) -> bytes:
    method, target, _ = req.line.split(" ")
    if target.startswith("/size/"):
        body = b"x" * int(target[len("/size/") :].split("?")[0])
    else:
        body = f"site={req.site} path={target}".encode()
    if method == "HEAD":
        body = b""
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
