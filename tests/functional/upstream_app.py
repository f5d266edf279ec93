"""A real upstream site for functional tests, served by aiohttp on a loopback port.

It records what reached it, so tests can prove that blocked and misdirected
requests never did, and what it was sent (headers, body sizes).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web


def pattern(n: int) -> bytes:
    """``n`` deterministic bytes, so a test can check the body it got."""
    block = bytes(range(256)) * 256
    reps, rest = divmod(n, len(block))
    return block * reps + block[:rest]


@dataclass
class Seen:
    """What the upstream saw."""

    hits: int = 0
    paths: list[str] = field(default_factory=list)
    headers: list[list[tuple[str, str]]] = field(default_factory=list)
    uploads: list[int] = field(default_factory=list)
    peers: list[object] = field(default_factory=list)
    stream_cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    hanging: asyncio.Event = field(default_factory=asyncio.Event)


SEEN: web.AppKey[Seen] = web.AppKey("seen", Seen)


def make_upstream() -> web.Application:
    app = web.Application()
    app[SEEN] = Seen()

    @web.middleware
    async def record(request: web.Request, handler):  # type: ignore[no-untyped-def]
        seen = request.app[SEEN]
        seen.hits += 1
        seen.paths.append(request.path_qs)
        seen.headers.append([(k, v) for k, v in request.headers.items()])
        assert request.transport is not None
        seen.peers.append(request.transport.get_extra_info("peername"))
        return await handler(request)

    app.middlewares.append(record)

    async def sized(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        return web.Response(body=pattern(n), content_type="application/octet-stream")

    async def chunked(request: web.Request) -> web.StreamResponse:
        n = int(request.match_info["n"])
        resp = web.StreamResponse()
        resp.content_type = "application/octet-stream"
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        data = pattern(n)
        for i in range(0, n, 8192):
            await resp.write(data[i : i + 8192])
        await resp.write_eof()
        return resp

    async def status(request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        return web.Response(status=code, headers={"ETag": '"v1"'})

    async def upload(request: web.Request) -> web.Response:
        n = 0
        async for chunk in request.content.iter_any():
            n += len(chunk)
        request.app[SEEN].uploads.append(n)
        return web.json_response({"received": n})

    async def echo(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        async for chunk in request.content.iter_any():
            await resp.write(chunk)
        await resp.write_eof()
        return resp

    async def early(request: web.Request) -> web.Response:
        return web.Response(status=413, text="too big")  # without reading the body

    async def headers(request: web.Request) -> web.Response:
        resp = web.json_response({"headers": [[k, v] for k, v in request.headers.items()]})
        resp.headers["Connection"] = "close, X-Secret-Hop"
        resp.headers["X-Secret-Hop"] = "must not reach the client"
        resp.headers["Keep-Alive"] = "timeout=5"
        resp.headers["X-End-To-End"] = "kept"
        return resp

    async def die(request: web.Request) -> web.StreamResponse:
        n = int(request.match_info["n"])
        resp = web.StreamResponse(headers={"Content-Length": str(2 * n)})
        await resp.prepare(request)
        await resp.write(pattern(n))
        await resp.drain()
        assert request.transport is not None
        request.transport.close()
        return resp

    async def die_chunked(request: web.Request) -> web.StreamResponse:
        n = int(request.match_info["n"])
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(pattern(n))
        await resp.drain()
        assert request.transport is not None
        request.transport.close()
        return resp

    async def slow_body(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)  # the head now, the body when released
        await request.app[SEEN].release.wait()
        await resp.write(b"data: late\n\n")
        await resp.write_eof()
        return resp

    async def delay(request: web.Request) -> web.Response:
        """Answer after ``ms`` milliseconds: a site that takes its time (the delay is the point)."""
        await asyncio.sleep(int(request.match_info["ms"]) / 1000)  # a slow upstream, on purpose
        return web.Response(text="slow but sure")

    async def hang(request: web.Request) -> web.Response:
        request.app[SEEN].hanging.set()
        await request.app[SEEN].release.wait()
        return web.Response(text="late")

    async def forever(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        block = pattern(65536)
        try:
            for _ in range(100_000):  # bounded: 6.5 GB at most
                await resp.write(block)
        except (ConnectionError, asyncio.CancelledError):
            request.app[SEEN].stream_cancelled.set()
            raise
        return resp

    async def stream(request: web.Request) -> web.StreamResponse:
        blocks = int(request.match_info["blocks"])
        block = pattern(65536)
        resp = web.StreamResponse(headers={"Content-Length": str(blocks * len(block))})
        await resp.prepare(request)
        for _ in range(blocks):
            await resp.write(block)
        await resp.write_eof()
        return resp

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            if msg.type == WSMsgType.TEXT:
                await sock.send_str("echo:" + msg.data)
            elif msg.type == WSMsgType.BINARY:
                await sock.send_bytes(msg.data)
        return sock

    async def json_info(request: web.Request) -> web.Response:
        return web.Response(
            text=json.dumps({"path": request.path_qs}), content_type="application/json"
        )

    app.router.add_route("*", "/bytes/{n}", sized)
    app.router.add_get("/chunked/{n}", chunked)
    app.router.add_get("/status/{code}", status)
    app.router.add_route("*", "/upload", upload)
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/headers", headers)
    app.router.add_post("/early", early)
    app.router.add_get("/die/{n}", die)
    app.router.add_get("/die-chunked/{n}", die_chunked)
    app.router.add_get("/hang", hang)
    app.router.add_get("/delay/{ms}", delay)
    app.router.add_get("/slow-body", slow_body)
    app.router.add_get("/forever", forever)
    app.router.add_get("/stream/{blocks}", stream)
    app.router.add_get("/ws", ws)
    app.router.add_route("*", "/{tail:.*}", json_info)
    return app
