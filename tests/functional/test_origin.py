"""The upstream pool's contract, over real loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from governor.config import UpstreamURL
from governor.http1.pool import OriginPool


async def test_a_connection_goes_back_to_the_pool_reading() -> None:
    """An exchange may leave reading paused (its body's last piece met a full client
    socket); the pool must take the connection back reading, or the next exchange on it
    would never see its response."""

    served_all = asyncio.Event()  # the server side saw the pool close the connection

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        served_all.set()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    upstream = UpstreamURL(
        url=f"http://127.0.0.1:{port}", scheme="http", host="127.0.0.1", port=port, base_path=""
    )
    pool = OriginPool(connect_timeout=2.0)
    try:
        for round_ in range(2):
            conn = await pool.acquire(upstream)
            assert conn.reused is (round_ == 1)
            conn.begin("GET", 2.0)
            conn.send(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
            head = await conn.response_head()
            assert head.status == 200
            assert b"".join(conn.read_nowait()) == b"ok"
            conn.pause_reading()  # as a full client socket does during a download
            pool.release(conn)
            assert conn.transport is not None
            assert conn.transport.is_reading()
    finally:
        await pool.close()
        async with asyncio.timeout(5):
            await served_all.wait()
        server.close()
        await server.wait_closed()


async def test_a_pooled_connection_with_bytes_not_yet_delivered_is_not_reused() -> None:
    """Bytes the upstream wrote on an idle connection may sit in the socket, not yet
    delivered by the event loop, when the pool hands the connection out: the pool must
    look (without reading) and take a new connection instead, or those bytes would be
    read as the next request's response."""
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]
    upstream = UpstreamURL(
        url=f"http://127.0.0.1:{port}", scheme="http", host="127.0.0.1", port=port, base_path=""
    )
    pool = OriginPool(connect_timeout=2.0)
    accepted: list[socket.socket] = []
    try:
        conn = await pool.acquire(upstream)
        server_side, _ = await loop.sock_accept(listener)
        accepted.append(server_side)
        conn.begin("GET", 2.0)
        conn.send(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
        await loop.sock_recv(server_side, 65536)
        await loop.sock_sendall(server_side, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await conn.response_head()
        assert b"".join(conn.read_nowait()) == b"ok"
        pool.release(conn)
        # No await between the stray write and the acquire: the loop cannot deliver it.
        server_side.send(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nINJECTED\n")
        again = await pool.acquire(upstream)
        assert again is not conn
        assert conn.closed
        other, _ = await loop.sock_accept(listener)  # the new connection, to a new socket
        accepted.append(other)
    finally:
        await pool.close()
        for sock in accepted:
            sock.close()
        listener.close()
