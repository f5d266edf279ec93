"""The upstream edge: one pooled client session, and aiohttp's errors mapped once.

Invariants: bodies pass byte for byte (no automatic decompression, no added
Accept-Encoding, User-Agent or Content-Type, no cookie jar shared between
tenants); every aiohttp client error that can end a request before the
response headers becomes an :class:`~governor.errors.UpstreamError` (502) or
:class:`~governor.errors.UpstreamTimeout` (504) here, and nowhere else.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from yarl import URL

from governor.config import Timeouts, UpstreamURL
from governor.errors import UpstreamError, UpstreamTimeout
from governor.headers import Header

# aiohttp adds these unless told not to; a proxy must not.
_SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")

READ_BUFSIZE = 2**16

# Errors of a broken upstream while a body streams; callers catch these and abort.
STREAM_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientError,
    asyncio.TimeoutError,
    ConnectionError,
)


def create_session(timeouts: Timeouts) -> aiohttp.ClientSession:
    """The client session all tenants share: pooled keep-alive connections per upstream."""
    connector = aiohttp.TCPConnector(
        limit=0,
        keepalive_timeout=30.0,
        ttl_dns_cache=60,
    )
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=_SKIP_AUTO_HEADERS,
        timeout=aiohttp.ClientTimeout(
            total=None,
            sock_connect=timeouts.upstream_connect,
            sock_read=timeouts.upstream_response,
        ),
        read_bufsize=READ_BUFSIZE,
        trust_env=False,
    )


def target_url(upstream: UpstreamURL, raw_path: str) -> URL:
    """The upstream URL for a request's raw path and query, without re-encoding."""
    origin = f"{upstream.scheme}://{upstream.host}:{upstream.port}"
    if ":" in upstream.host:
        origin = f"{upstream.scheme}://[{upstream.host}]:{upstream.port}"
    return URL(origin + upstream.base_path + raw_path, encoded=True)


class ResponseDeadline:
    """The deadline for the upstream's response headers.

    It starts when the request is fully sent (at once for a request without a
    body), so a long upload is not mistaken for a silent upstream.
    """

    __slots__ = ("_cm", "_seconds")

    def __init__(self, seconds: float, *, body: bool) -> None:
        self._seconds = seconds
        loop = asyncio.get_running_loop()
        self._cm = asyncio.timeout_at(None if body else loop.time() + seconds)

    def start(self) -> None:
        """The request body is sent: the upstream now has ``seconds`` to answer."""
        self._cm.reschedule(asyncio.get_running_loop().time() + self._seconds)

    def expired(self) -> bool:
        """Whether the deadline passed."""
        return self._cm.expired()

    def scope(self) -> asyncio.Timeout:
        """The timeout context to wrap the wait for the response head in."""
        return self._cm


@asynccontextmanager
async def open_response(
    session: aiohttp.ClientSession,
    *,
    method: str,
    url: URL,
    headers: Sequence[Header],
    body: Any,
    deadline: ResponseDeadline,
) -> AsyncIterator[aiohttp.ClientResponse]:
    """Send the request upstream and yield the response once its headers arrived.

    Raises UpstreamError or UpstreamTimeout when no response head can be had.
    The connection is released (or closed, if the body was not read to its end)
    when the block exits.
    """
    try:
        async with deadline.scope():
            resp = await session.request(
                method,
                url,
                headers=list(headers),
                data=body,
                allow_redirects=False,
                compress=None,
                chunked=None,
            )
    except aiohttp.ConnectionTimeoutError as exc:
        raise UpstreamError("connecting to the upstream timed out") from exc
    except TimeoutError as exc:
        raise UpstreamTimeout("the upstream sent no response headers in time") from exc
    except aiohttp.ClientConnectorError as exc:
        raise UpstreamError(f"cannot connect to the upstream: {exc.os_error}") from exc
    except (aiohttp.ClientError, ConnectionError) as exc:
        raise UpstreamError(f"the upstream failed: {exc!r}") from exc
    try:
        yield resp
    finally:
        resp.release()
