"""One allowed request forwarded: the exchange with the upstream, the upload, the answer.

Invariants:

* Framing to the upstream is rebuilt (Content-Length or chunked), never copied.
* Errors become the client's answer here and nowhere else in the proxy: a refused
  request body (:class:`BodyRefused`) its 4xx, an upstream failure
  (:class:`UpstreamError`) 502 or 504, when no response has started.
* Every byte of the request is claimed for its tenant's meter before the
  forward ends, cancelled or not (:meth:`Request.charge`), including the rest
  of the response as the client's socket accepts it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

from governor.config import Config, TenantConfig, UpstreamURL
from governor.core.meter import Meter
from governor.core.pacing import large_size
from governor.core.policy import Decision, as_good_as_out, large_limit, left_for, refusal
from governor.errors import BodyRefused, UpstreamBroken, UpstreamError, UpstreamTimeout
from governor.http1.client import OriginConnection
from governor.http1.headers import request_block, response_block
from governor.http1.pool import OriginPool
from governor.http1.request import REASONS, Request
from governor.http1.wire import CRLF, HEAD_END, LAST_CHUNK, chunk_prefix, response_has_body
from governor.proxy.answers import send_notice
from governor.proxy.stream import ResponseStream
from governor.proxy.tunnel import Tunnel, upgrade_token

log: Final = logging.getLogger("governor.proxy")

# What a visitor sees of an upstream failure; the details go to the log only.
PUBLIC_ERRORS: Final = {
    502: "502 Bad Gateway: the site's server could not be reached",
    504: "504 Gateway Timeout: the site's server did not answer in time",
}


class Forward:
    """One request to the upstream and its response back, metered."""

    __slots__ = (
        "admission",
        "config",
        "cut",
        "meter",
        "pool",
        "request",
        "stream",
        "tenant",
        "upload",
        "wait",
    )

    def __init__(
        self,
        pool: OriginPool,
        config: Config,
        request: Request,
        tenant: TenantConfig,
        meter: Meter,
        decision: Decision,
    ) -> None:
        self.pool = pool
        self.config = config
        self.request = request
        self.tenant = tenant
        self.meter = meter
        self.cut = decision.cut
        # Exempt requests are never refused, nor any of a tenant in shadow mode.
        self.admission = decision.verdict == "allow" and tenant.enforce
        self.wait = config.timeouts.upstream_response  # for the head, and for silence mid-body
        self.upload: Upload | None = None
        self.stream = ResponseStream(request, meter, cut=decision.cut, silence=self.wait)

    async def run(self) -> None:
        """Forward the request and pass the answer on; returns once the client took it."""
        request = self.request
        request.charge()
        if request.head.expect_continue and not request.body_done:
            request.send_continue()
            request.charge()
        upgrade = upgrade_token(request.head.upgrade) is not None
        data = upstream_head(request, self.tenant.upstream, self.config, upgrade=upgrade)
        sent_at = time.monotonic()
        conn: OriginConnection | None = None
        try:
            conn = await self._exchange(data)
            request.note.upstream_seconds = time.monotonic() - sent_at
            assert conn.head is not None
            if upgrade and conn.head.status == 101:
                await self._tunnel(conn)
                conn = None  # the tunnel closed it
            elif not self._admitted(conn):
                pass  # refused with the notice; the connection is closed below, unread
            elif await self._respond(conn) and self._upload_complete():
                self.pool.release(conn)
                conn = None
        except BodyRefused as exc:  # the one place a refused request body gets its answer
            request.note.outcome = "bad_request"
            reason = REASONS.get(exc.status, "Bad Request")
            request.respond_text(exc.status, f"{exc.status} {reason}: {exc.reason}")
            request.charge()
        except UpstreamError as exc:
            request.note.outcome = "upstream_error"
            log.warning("%s %s %s: %s", self.tenant.name, request.method, request.path, exc)
            request.respond_text(exc.status, PUBLIC_ERRORS.get(exc.status, f"{exc.status} error"))
            request.charge()
        finally:
            await self._stop_upload()
            if conn is not None:
                conn.close()
            await self._settle()

    async def _exchange(self, head: bytes) -> OriginConnection:
        """Send the request and wait for the response head; one retry on a stale connection."""
        request = self.request
        upstream = self.tenant.upstream
        has_body = request.body is not None
        conn = await self.pool.acquire(upstream)
        for attempt in (0, 1):
            try:
                conn.taker = request.conn  # its reads are sized to what this client takes
                conn.begin(request.method, None if has_body else self.wait)
                conn.send(head)
                if has_body:
                    self.upload = Upload(request, conn, self.meter, cut=self.cut, wait=self.wait)
                while (waiter := conn.head_waiter()) is not None:
                    await waiter
                return conn
            except UpstreamError as exc:  # UpstreamBroken and UpstreamTimeout too
                conn.close()
                refused = await self._stop_upload()
                if not isinstance(refused, BodyRefused):  # the upload may have ended first
                    refused = request.refused()
                if refused is not None:  # why the upstream went away: the client's answer
                    raise refused from exc
                stale = conn.reused and not conn.received_any and not has_body
                if attempt == 0 and stale and not isinstance(exc, UpstreamTimeout):
                    conn = await self.pool.acquire(upstream, fresh=True)
                    continue
                raise
        raise AssertionError("unreachable")

    def _admitted(self, conn: OriginConnection) -> bool:
        """Whether the response may start; if not, the client has the notice instead.

        See :func:`governor.core.policy.refusal`: a response declaring more bytes than
        are left of the cap, or a large one once the tenant is past ``large.from``, is
        refused before its first byte. One of undeclared length may be limited instead
        (:func:`governor.core.policy.large_limit`).
        """
        head = conn.head
        assert head is not None
        tenant = self.tenant
        declared = None if head.chunked else head.content_length
        if tenant.pacing is not None:
            self._pace(declared)
        if tenant.large is None and (declared is None or not tenant.admission):
            return True  # no rule applies: the meter need not be read
        if not self.admission or not response_has_body(self.request.method, head.status):
            return True
        meter = self.meter
        used, cap = meter.used(), meter.cap
        visit = meter.visit
        left = None
        if visit is not None or tenant.day_guard is not None:  # a share or a day leaves less
            left = left_for(
                tenant,
                used=used,
                cap=cap,
                visitor_used=None if visit is None else visit.visitor_used(),
                crawlers_used=None if visit is None else visit.crawlers_used(),
                day_used=meter.day_used() if tenant.day_guard is not None else None,
            )
        why = refusal(tenant, declared=declared, used=used, cap=cap, left=left)
        if why is None:
            if declared is None:
                self.stream.limit = large_limit(tenant, used=used, cap=cap)
            return True
        request = self.request
        request.note.outcome = why
        request.charge()  # the request reached the upstream: charged as received so far
        request.meter = None  # the notice is not charged, as a blocked request's is not
        if why == "large":
            send_notice(request, self.tenant, meter, variant="large")
        elif as_good_as_out(used, cap):
            send_notice(request, self.tenant, meter)  # the tenant's own: a page or two are left
        else:
            send_notice(
                request,
                self.tenant,
                meter,
                variant="admission",
                response_bytes=declared,
                left_bytes=left,
            )
        return False

    def _pace(self, declared: int | None) -> None:
        """A large response of a tenant with ``pacing`` is paced (from ``pacing.from`` on,
        see :mod:`governor.core.pacing`); exempt requests are not."""
        visit = self.meter.visit
        pacing = self.tenant.pacing
        if not self.admission or visit is None or visit.pacer is None or pacing is None:
            return
        size = large_size(self.tenant)
        if declared is None:
            self.stream.pace(visit.pacer, pacing, after=size)  # large once past the size
        elif declared > size:
            self.stream.pace(visit.pacer, pacing, after=0)

    async def _respond(self, conn: OriginConnection) -> bool:
        """Stream the upstream's response; False when it could not be completed."""
        try:
            return await self.stream.relay(conn)
        finally:
            await self._stop_upload()
            self.request.charge()

    async def _tunnel(self, conn: OriginConnection) -> None:
        """The upstream switched protocols: answer 101 and carry bytes both ways.

        A tunnel has no end to finish: it is closed at the cap whatever ``at_cap``
        says, and it is never exempt (see :func:`governor.core.policy.decide`).
        """
        up = conn.head
        assert up is not None
        request = self.request
        block = response_block(up.block, up.connection, body=False, lows=up.lows)
        block += b"\r\nConnection: upgrade\r\nUpgrade: " + (
            request.head.upgrade or "websocket"
        ).encode("latin-1")
        request.start_response(101, up.reason, block, length=None, body=False)
        request.charge()
        tunnel = Tunnel(request, conn, self.meter, enforce=self.tenant.enforce)
        tunnel.start()
        await tunnel.wait()

    def _upload_complete(self) -> bool:
        """Whether the upstream has the whole request (so its connection may be reused)."""
        return self.request.body is None or (self.upload is not None and self.upload.complete)

    async def _stop_upload(self) -> BaseException | None:
        """Stop sending the request body (the response is done, or failed); how it ended."""
        upload = self.upload
        return None if upload is None else await upload.stop()

    async def _settle(self) -> None:
        """Charge what is left: the rest of the answer as the client's socket accepts it."""
        request = self.request
        request.charge()
        try:
            if request.conn.pending():
                await request.settle()
        finally:
            request.charge()  # cancelled too (the client left, or a stop): what it took


class Upload:
    """The request body streamed to the upstream, in a task of its own: an upstream
    may answer before the body's end (an early 413 or redirect)."""

    __slots__ = ("complete", "conn", "cut", "meter", "request", "task", "wait")

    def __init__(
        self, request: Request, conn: OriginConnection, meter: Meter, *, cut: bool, wait: float
    ) -> None:
        self.request = request
        self.conn = conn
        self.meter = meter
        self.cut = cut  # stop at the cap (the tenant's bytes in count, for ``count: both``)
        self.wait = wait  # for the response head, from the body's end
        self.complete = False  # the whole body went upstream
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        """Send the body; the response deadline starts at its end."""
        request, conn = self.request, self.conn
        chunked = request.head.chunked
        try:
            while True:
                piece = await request.read()
                request.charge()
                if not piece:
                    break
                if self.cut and self.meter.blocked():
                    request.conn.abort()
                    conn.close()
                    return
                if chunked:
                    conn.send_lines([chunk_prefix(len(piece)), piece, CRLF])
                else:
                    conn.send(piece)
                await conn.drain()
            if chunked:
                conn.send(LAST_CHUNK)
        except UpstreamBroken:
            return  # the response side meets the error (or an early response)
        except ConnectionError:
            conn.close()  # the client left mid-body
            return
        except BodyRefused:
            conn.close()  # the upstream must not take what came as the whole body
            raise  # to the exchange (see Forward._exchange), which answers it
        self.complete = True
        conn.start_deadline(self.wait)

    async def stop(self) -> BaseException | None:
        """Cancel the upload if it still runs; the exception it ended with, if it failed."""
        task = self.task
        if not task.done():
            task.cancel()
            await asyncio.wait([task])
        return None if task.cancelled() else task.exception()


def upstream_head(
    request: Request, upstream: UpstreamURL, config: Config, *, upgrade: bool
) -> bytes:
    """The request head for the upstream: its own framing, hop-by-hop fields dropped."""
    head = request.head
    block = request_block(
        head.block,
        head.connection,
        host=head.host,
        peer=request.peer,
        trusted=config.trusted_proxies,
        scheme=request.conn.scheme,
        upgrade=upgrade,
        lows=head.lows,
    )
    target = "*" if head.target == "*" else upstream.base_path + head.target
    first = f"{head.method} {target} HTTP/1.1"
    if head.host is None:  # unreachable: no tenant without a Host; never forward without
        first += f"\r\nHost: {_host_header(upstream)}"
    if head.chunked:
        framing = b"\r\nTransfer-Encoding: chunked"
    elif head.content_length is not None:
        framing = b"\r\nContent-Length: %d" % head.content_length
    else:
        framing = b""
    return b"".join((first.encode("latin-1"), block, framing, HEAD_END))


def _host_header(upstream: UpstreamURL) -> str:
    host = f"[{upstream.host}]" if ":" in upstream.host else upstream.host
    default = 443 if upstream.scheme == "https" else 80
    return host if upstream.port == default else f"{host}:{upstream.port}"
