"""Nothing an upstream sends outside an exchange ever reaches a client.

The upstream here writes bytes after its response (a buggy application, or one
out of step with governor): later, on the idle pooled connection, or in the same
write as the response, or after the head of a response without a body. The next
request through the pool must get its own response, whole, on a new connection,
and governor must close the polluted one.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.functional.conftest import GovernorFactory
from tests.functional.scripted_upstream import Route, ScriptedUpstream
from tests.support import RawClient, request

INJECTED = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nINJECTED\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
FINE = Route(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfine")
LATE = 0.3  # the reproduction: the stray response comes 300 ms after the answer

CASES = {
    # (method, answer route, what the client gets)
    "late response on the idle connection": ("GET", Route(OK, INJECTED, LATE), b"ok"),
    "late bytes after a HEAD": (
        "HEAD",
        Route(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", INJECTED, LATE),
        b"",
    ),
    "late response after a 1xx and the answer": (
        "GET",
        Route(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK, INJECTED, LATE),
        b"ok",
    ),
    "in the same write as the answer": ("GET", Route(OK, INJECTED), b"ok"),
    "a body after a 204": (
        "GET",
        Route(b"HTTP/1.1 204 No Content\r\n\r\n", b"INJECTED\n" + INJECTED),
        b"",
    ),
    "a body after a HEAD's head": (
        "HEAD",
        Route(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", b"INJECTED\n"),
        b"",
    ),
}


async def until(event: asyncio.Event, what: str) -> None:
    try:
        async with asyncio.timeout(5):
            await event.wait()
    except TimeoutError:
        raise AssertionError(f"not within 5 s: {what}") from None


async def exchange(port: int, method: str, path: str) -> tuple[int, bytes, bytes]:
    """One request on a keep-alive connection: (status, body, anything after the response)."""
    client = await RawClient.connect(port)
    await client.send(request(method, path, "site.test"))
    resp = await client.response(method=method)
    leftover = bytes(client._buf)
    await client.close()
    return resp.status, resp.body, leftover


@pytest.mark.parametrize("case", list(CASES))
async def test_bytes_an_upstream_sends_outside_an_exchange_reach_nobody(
    make_governor: GovernorFactory, case: str
) -> None:
    method, route, expected = CASES[case]
    async with ScriptedUpstream({"/evil": route, "/fine": FINE}) as upstream:
        gov = await make_governor(upstream=upstream.url)
        status, body, _ = await exchange(gov.port, method, "/evil")
        assert (status, body) == (200 if method == "HEAD" or expected else 204, expected)
        if route.delay is not None:
            await until(upstream.wrote_after, "the upstream wrote its stray bytes")
        for _ in range(3):  # each on a fresh client connection, through the pool
            assert await exchange(gov.port, "GET", "/fine") == (200, b"fine", b"")
        first = upstream.connections[0]
        await until(first.closed, "governor closed the connection the stray bytes came on")
    assert [number for number, _ in upstream.requests] == [0, 1, 1, 1]


async def test_an_upstream_closing_an_idle_pooled_connection_costs_no_request(
    make_governor: GovernorFactory,
) -> None:
    route = Route(OK, delay=LATE, close_after=True)
    async with ScriptedUpstream({"/evil": route, "/fine": FINE}) as upstream:
        gov = await make_governor(upstream=upstream.url)
        assert await exchange(gov.port, "GET", "/evil") == (200, b"ok", b"")
        await until(upstream.wrote_after, "the upstream closed its side")
        assert await exchange(gov.port, "GET", "/fine") == (200, b"fine", b"")
    assert [number for number, _ in upstream.requests] == [0, 1]
