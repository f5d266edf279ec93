"""A graceful stop fails no request: SIGTERM under a hammer of new connections.

A connection the kernel completed (the client's ``connect`` returned and its request
is sent) but governor had not yet accepted sits in the listen backlog; closing the
listener resets it. So on SIGTERM governor stops taking new handshakes, accepts every
connection already queued, serves each with ``Connection: close``, and only then closes
the listener. A client whose ``connect`` is refused was never taken in (it may try
another instance): that is not a failure. Anything else short of a complete 200 is.

``/readyz`` answers 503 from the moment SIGTERM arrives, and ``timeouts.shutdown_delay``
keeps serving (every response saying ``Connection: close``) for that long first, so a
load balancer sees the change before the listener goes.

Real ``governor serve`` processes, real signals, loopback sockets, a real upstream.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from governor.store import open_store
from tests.functional.conftest import GovernorFactory
from tests.functional.processes import Served, ServeFactory, governor
from tests.functional.test_workers import Start, supervise  # noqa: F401 - the fixture
from tests.functional.upstream_app import Seen
from tests.support import RawClient, free_port, request, write_config

CLIENTS = 8
PATH = "/bytes/2000"


@dataclass
class Hammer:
    """What the clients saw: complete responses, refusals, and failures."""

    received: int = 0  # bytes of complete 200 responses, heads included
    done: int = 0
    refused: int = 0  # connect() refused: the listener was gone, nothing was sent
    failures: list[str] = field(default_factory=list)
    closes: int = 0  # responses that said Connection: close
    busy: asyncio.Event = field(default_factory=asyncio.Event)  # set after ``warm`` responses


async def hammer(port: int, seen: Hammer, *, clients: int = CLIENTS, warm: int = 200) -> None:
    """``clients`` loops of one request per fresh connection, until the connect is refused."""

    async def one() -> None:
        for _ in range(100_000):  # bounded; the refusal after the stop ends it long before
            try:
                client = await asyncio.wait_for(RawClient.connect(port), 15)
            except ConnectionRefusedError:
                seen.refused += 1
                return
            except OSError as exc:  # reset mid-handshake, or no answer at all
                seen.failures.append(f"connect: {exc!r}")
                return
            try:
                await client.send(request("GET", PATH, "site.test"))
                resp = await client.response()
            except (OSError, AssertionError) as exc:  # reset, or closed before a response
                seen.failures.append(f"{exc!r} after {client.received} bytes")
                return
            finally:
                await client.close()
            if resp.status != 200 or not resp.complete:
                seen.failures.append(f"status {resp.status}, complete {resp.complete}")
                return
            seen.received += client.received
            seen.done += 1
            seen.closes += (resp.header("Connection") or "").lower() == "close"
            if seen.done >= warm:
                seen.busy.set()

    await asyncio.gather(*(one() for _ in range(clients)))


async def stored(config: Path) -> int:
    code, out, err = await governor("usage", "-c", str(config), "--json")
    assert code == 0, err
    return int(json.loads(out)[0]["used_bytes"])


async def sigterm_under_hammer(proc: asyncio.subprocess.Process, port: int) -> Hammer:
    """Hammer, SIGTERM once the hammer is warm, and return what the clients saw."""
    seen = Hammer()
    loop = asyncio.get_running_loop()
    task = loop.create_task(hammer(port, seen))
    busy = loop.create_task(seen.busy.wait())
    async with asyncio.timeout(20):
        await asyncio.wait([busy, task], return_when=asyncio.FIRST_COMPLETED)
    busy.cancel()
    assert not task.done(), seen.failures
    proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(40):
        await task
    return seen


async def test_sigterm_under_a_hammer_of_new_connections_fails_nothing_and_loses_nothing(
    serve: ServeFactory, tmp_path: Path, upstream_url: str, seen: Seen
) -> None:
    path = write_config(tmp_path, upstream=upstream_url, flush_interval="30s")
    served = await serve(path)
    load = await sigterm_under_hammer(served.proc, served.port)
    assert await served.proc.wait() == 0
    assert load.failures == []
    assert load.done >= 200
    assert load.refused == CLIENTS  # every client ended on a refused connect, none on a reset
    # The final flush wrote every byte the clients received, and nothing else.
    assert await stored(path) == load.received


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT is Linux's")
async def test_sigterm_to_workers_under_a_hammer_fails_nothing_and_loses_nothing(
    supervise: Start,  # noqa: F811 - the fixture
    tmp_path: Path,
    upstream_url: str,
    seen: Seen,
) -> None:
    path = write_config(tmp_path, upstream=upstream_url, flush_interval="30s", workers=2)
    sup = await supervise(path)
    load = await sigterm_under_hammer(sup.proc, sup.port)
    assert await sup.proc.wait() == 0
    await sup.until_eof()
    assert load.failures == [], "".join(sup.log)
    assert load.done >= 200
    assert load.refused == CLIENTS
    assert await stored(path) == load.received


async def readyz(port: int) -> int:
    client = await RawClient.connect(port)
    await client.send(request("GET", "/readyz", "localhost"))
    resp = await client.response()
    await client.close()
    return resp.status


async def test_readyz_fails_at_sigterm_and_shutdown_delay_keeps_serving_with_connection_close(
    serve: ServeFactory, tmp_path: Path, upstream_url: str, seen: Seen
) -> None:
    admin = f"127.0.0.1:{free_port()}"
    path = write_config(
        tmp_path,
        upstream=upstream_url,
        admin_listen=admin,
        timeouts={"shutdown_delay": "2s"},
    )
    served: Served = await serve(path)
    admin_port = int(admin.rsplit(":", 1)[1])
    assert await readyz(admin_port) == 200
    kept = await RawClient.connect(served.port)  # a keep-alive client from before the stop
    await kept.send(request("GET", PATH, "site.test"))
    first = await kept.response()
    assert first.status == 200
    assert first.header("Connection") is None
    busy = await RawClient.connect(served.port)  # a request in flight across the stop
    await busy.send(request("GET", "/hang", "site.test"))
    await asyncio.wait_for(seen.hanging.wait(), 5)
    served.proc.send_signal(signal.SIGTERM)
    await served.wait_for("stopping")
    assert await readyz(admin_port) == 503  # at once, while the proxy still serves
    seen.release.set()
    late = await busy.response()
    assert (late.status, late.body) == (200, b"late")
    assert (late.header("Connection") or "").lower() == "close"
    assert await busy.reader.read() == b""  # and the connection ends after it
    await busy.close()
    # Within the delay: new connections are still served, and told to close.
    fresh = await RawClient.connect(served.port)
    await fresh.send(request("GET", PATH, "site.test"))
    resp = await fresh.response()
    assert (resp.status, resp.complete) == (200, True)
    assert (resp.header("Connection") or "").lower() == "close"
    await fresh.close()
    # The keep-alive connection's next request is answered, with Connection: close.
    await kept.send(request("GET", PATH, "site.test"))
    again = await kept.response()
    assert (again.status, again.complete) == (200, True)
    assert (again.header("Connection") or "").lower() == "close"
    await kept.close()
    assert await served.proc.wait() == 0
    assert any("shutdown_delay" in line for line in served.log)


async def test_a_client_that_connected_but_has_not_sent_yet_is_served_through_the_stop(
    serve: ServeFactory, tmp_path: Path, upstream_url: str, seen: Seen
) -> None:
    path = write_config(tmp_path, upstream=upstream_url)
    served = await serve(path)
    idle = await RawClient.connect(served.port)  # keep-alive, idle: closed by the drain
    await idle.send(request("GET", PATH, "site.test"))
    assert (await idle.response()).status == 200
    early = await RawClient.connect(served.port)  # connected; its request comes late
    served.proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(10):
        assert await idle.reader.read() == b""  # the drain has begun
    await idle.close()
    await early.send(request("GET", PATH, "site.test"))
    resp = await early.response()
    assert (resp.status, resp.complete) == (200, True)
    assert (resp.header("Connection") or "").lower() == "close"
    await early.close()
    assert await served.proc.wait() == 0


def read_all(sock: socket.socket) -> bytes:
    """Everything ``sock`` receives until the server closes it (the server has finished)."""
    sock.settimeout(10)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


async def test_connections_still_queued_in_the_backlog_at_the_stop_are_served(
    make_governor: GovernorFactory, seen: Seen
) -> None:
    gov = await make_governor()
    # The kernel completes these handshakes and queues the connections; the event loop
    # does not run between here and the stop, so governor has accepted none of them.
    queued = [socket.create_connection(("127.0.0.1", gov.port)) for _ in range(5)]
    for sock in queued:
        sock.sendall(request("GET", PATH, "site.test"))
    await gov.stop()
    received = 0
    for sock in queued:
        with sock:
            data = read_all(sock)
        received += len(data)
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), data[:200]
        assert b"\r\nConnection: close" in head
        assert len(body) == 2000
    assert seen.hits == 5
    usage = gov.runtime.usage("site")  # after the final flush: the store's total
    assert usage is not None
    assert usage.used_bytes == received


async def test_a_connection_accepted_just_before_the_stop_is_drained_and_counted(
    make_governor: GovernorFactory, seen: Seen
) -> None:
    """The loop calls a new connection's connection_made soon after accepting it, not at
    once: a stop that begins in between must still wait for that connection's request and
    flush its bytes. The order is forced: the connection is adopted by a task created just
    before the stop's, so its connection_made is queued ahead of the rest of the stop."""
    gov = await make_governor()
    server = gov._server  # white box: the listener's protocol factory, to adopt a socket
    assert server is not None
    listening = server._servers[0][2]
    with socket.create_server(("127.0.0.1", 0)) as side:
        client = socket.create_connection(side.getsockname())
        accepted, _ = side.accept()
    with client:
        client.sendall(request("GET", PATH, "site.test"))
        accepted.setblocking(False)
        loop = asyncio.get_running_loop()
        adopt = loop.create_task(loop.connect_accepted_socket(listening.protocol, accepted))
        stop = loop.create_task(gov.stop())  # its first step runs before connection_made
        async with asyncio.timeout(20):
            await asyncio.gather(adopt, stop)
        data = await asyncio.to_thread(read_all, client)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), data[:200]
    assert len(body) == 2000
    assert seen.hits == 1
    usage = gov.runtime.usage("site")  # what this process counted (flushed or not) ...
    assert usage is not None
    assert usage.used_bytes == len(data)
    store = open_store(gov.config.store)  # ... and what its final flush wrote
    await store.open()
    try:
        key = ("site", usage.period)
        assert await store.totals([key]) == {key: len(data)}
    finally:
        await store.close()
