"""The request handler: resolve the tenant → decide → forward → stream and meter.

Invariants:

* A request whose tenant is at its cap never reaches the upstream (exempt paths
  and clients aside, see :mod:`governor.core.exemption`; a WebSocket upgrade is never
  exempt); an unknown host never reaches any upstream.
* Bodies stream in both directions with backpressure: at most a read buffer or
  two per direction is held, whatever the body's size.
* Every byte that crossed the client socket for a tenant's request is charged
  to the tenant (in its ``count`` directions): the request's head and body as
  received (:mod:`governor.http1.server`) and the response as the socket accepted it
  (a write that failed, or bytes still held when the client left, are not
  charged), governor's own answers included (400, 408, 413, 414, 431, 502, 504
  ...). Two exceptions: a blocked request and its notice (the notice is the
  operator's message, and a blocked tenant's count stops where its served
  traffic left it), and a request whose head names no tenant (421, or a head too
  broken to name its Host), which is nobody's.
* Framing to the upstream is rebuilt (Content-Length or chunked), never copied.
"""

from __future__ import annotations

import asyncio
import logging
import time

from governor.accounts.runtime import NEAR_CAP, Runtime, Site
from governor.config import UpstreamURL
from governor.core.exemption import is_exempt
from governor.core.ledger import is_blocked
from governor.core.meter import Meter
from governor.errors import UpstreamBroken, UpstreamError, UpstreamTimeout
from governor.http1.client import OriginConnection
from governor.http1.headers import (
    Header,
    client_address,
    request_block,
    response_block,
)
from governor.http1.pool import OriginPool
from governor.http1.request import REASONS, SERVER, Request
from governor.http1.wire import CRLF, HEAD_END, LAST_CHUNK, chunk_prefix, response_has_body
from governor.observe.events import Refusal
from governor.proxy import notice
from governor.proxy.tunnel import Tunnel, upgrade_token

log = logging.getLogger("governor.proxy")

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# What a visitor sees of an upstream failure; the details go to the log only.
PUBLIC_ERRORS = {
    502: "502 Bad Gateway: the site's server could not be reached",
    504: "504 Gateway Timeout: the site's server did not answer in time",
}


def _text(request: Request, status: int, text: str) -> None:
    """One of governor's own plain-text answers."""
    body = (text + "\n").encode()
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Cache-Control", "no-store"),
        ("Server", SERVER),
    ]
    if request.method == "HEAD":
        headers.append(("Content-Length", str(len(body))))
    request.respond(status, headers, body, send_body=request.method != "HEAD")


def _host_header(upstream: UpstreamURL) -> str:
    host = f"[{upstream.host}]" if ":" in upstream.host else upstream.host
    default = 443 if upstream.scheme == "https" else 80
    return host if upstream.port == default else f"{host}:{upstream.port}"


class Proxy:
    """The handler of every client request."""

    def __init__(self, runtime: Runtime, pool: OriginPool) -> None:
        self.runtime = runtime
        self.pool = pool

    async def handle(self, request: Request) -> None:
        """Answer one client request."""
        runtime = self.runtime
        snap = runtime.snapshot
        note = request.note
        head = request.head
        site = snap.index.lookup(head.host)
        if head.method == "CONNECT":
            _text(request, 405, "405 Method Not Allowed: governor is not a forward proxy")
            if site is not None:
                note.tenant = site.config.name
                meter = self._meter(site)
                meter.ingress(request.claim_in())
                meter.egress(request.handed)
                note.charge_in = meter.ingress
            return
        if site is None:
            note.outcome = "unknown_host"
            shown = (head.host or "")[:200]
            _text(
                request, 421, f"421 Misdirected Request: no site is served here for host {shown!r}"
            )
            return
        tenant = site.config
        trusted = snap.config.trusted_proxies
        peer = request.peer or ""
        client = client_address(peer, head.headers, trusted) if trusted else peer
        note.tenant = tenant.name
        note.client = client
        upgrade = upgrade_token(head.upgrade) is not None
        exempt = is_exempt(tenant, head.target, client, upgrade=upgrade)
        meter = self._meter(site)
        used, cap = meter.used(), meter.cap
        if not exempt and (
            is_blocked(used, cap) or (tenant.on_store_failure == "closed" and not runtime.store_ok)
        ):
            note.outcome = "blocked"
            self._notice(request, site, meter)
            return
        note.outcome = "exempt" if exempt else "proxied"
        note.charge_in = meter.ingress
        if used >= cap * NEAR_CAP:
            runtime.nudge()
        await _Exchange(self, request, site, meter, exempt=exempt).run()

    def _meter(self, site: Site) -> Meter:
        runtime = self.runtime
        return Meter(
            ledger=runtime.ledger,
            tenant=site.config,
            periods=site.periods,
            clock=runtime.clock,
            grants=runtime.grants,
        )

    def charge_refusal(self, refusal: Refusal) -> str | None:
        """Charge a request the listener refused to the tenant its head names.

        Returns the tenant's name, or None when the head names no tenant.
        """
        site = self.runtime.snapshot.index.lookup(refusal.host)
        if site is None:
            return None
        meter = self._meter(site)
        meter.ingress(refusal.received)
        meter.egress(refusal.sent)
        return site.config.name

    def _notice(self, request: Request, site: Site, meter: Meter) -> None:
        period = meter.period()
        facts = notice.NoticeFacts(
            tenant=site.config.name,
            host=request.head.host or "",
            used_bytes=meter.used(),
            cap_bytes=meter.cap,
            resets_at=period.resets_at(site.config.timezone),
            now=self.runtime.clock(),
        )
        get = _header(request.headers, "accept")
        rendered = notice.render_notice(
            facts,
            status=site.config.notice.status,
            template=site.config.notice.template,
            accept=get,
            accept_language=_header(request.headers, "accept-language"),
            method=request.method,
        )
        headers = [*rendered.headers, ("Server", SERVER)]
        request.respond(rendered.status, headers, rendered.body, send_body=request.method != "HEAD")


class CapReached(ConnectionAbortedError):
    """``at_cap: cut``: the tenant reached its cap mid-response; the client is cut off."""


def _header(headers: list[Header], low: str) -> str | None:
    for name, value in headers:
        if name.lower() == low:
            return value
    return None


class _Exchange:
    """One proxied request: the upload, the upstream response, and their metering."""

    def __init__(
        self, proxy: Proxy, request: Request, site: Site, meter: Meter, *, exempt: bool
    ) -> None:
        self.proxy = proxy
        self.request = request
        self.site = site
        self.meter = meter
        self.exempt = exempt
        self.cut = site.config.at_cap == "cut" and not exempt
        self.charged_out = 0
        self.sent_all = False
        self.timeouts = proxy.runtime.snapshot.config.timeouts

    def charge_out(self) -> None:
        """Charge what the client's socket accepted since the last charge."""
        if self.request.handed == self.charged_out:
            return  # all charged already (the common case: nothing waits in the transport)
        sent = self.request.sent()
        if sent > self.charged_out:
            self.meter.egress(sent - self.charged_out)
            self.charged_out = sent

    def in_flight(self) -> int:
        """Response bytes handed to the client's transport and not charged yet."""
        return self.request.handed - self.charged_out

    async def run(self) -> None:
        request, meter = self.request, self.meter
        head = request.head
        snap = self.proxy.runtime.snapshot
        meter.ingress(request.claim_in())
        has_body = request.body is not None
        if has_body and head.expect_continue and not request.body_done:
            request.conn.write(CONTINUE)
            request.handed += len(CONTINUE)
            self.charge_out()
        upgrade = upgrade_token(head.upgrade) is not None
        upstream = self.site.config.upstream
        block = request_block(
            head.block,
            head.connection,
            host=head.host,
            peer=request.peer,
            trusted=snap.config.trusted_proxies,
            upgrade=upgrade,
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
        data = b"".join((first.encode("latin-1"), block, framing, HEAD_END))
        sent_at = time.monotonic()
        conn: OriginConnection | None = None
        try:
            conn = await self._exchange(upstream, data, has_body)
            request.note.upstream_seconds = time.monotonic() - sent_at
            up = conn.head
            assert up is not None
            if upgrade and up.status == 101:
                await self._tunnel(conn)
                conn = None
                return
            if await self._respond(conn) and (self.sent_all or not has_body):
                self.proxy.pool.release(conn)
                conn = None
        except UpstreamError as exc:
            refused = request.conn.body_error
            if refused is not None:  # the upload stopped: broken framing, too large, too slow
                request.note.outcome = "bad_request"
                reason = REASONS.get(refused.status, "Bad Request")
                _text(request, refused.status, f"{refused.status} {reason}: {refused.reason}")
                self.charge_out()
                return
            request.note.outcome = "upstream_error"
            log.warning("%s %s %s: %s", self.site.config.name, head.method, request.path, exc)
            _text(request, exc.status, PUBLIC_ERRORS.get(exc.status, f"{exc.status} error"))
            self.charge_out()
        finally:
            await self._stop_upload()
            if conn is not None:
                conn.close()
            meter.ingress(request.claim_in())
            try:
                if request.conn.pending():
                    await request.settle()  # the rest is charged as the socket accepts it
            finally:
                self.charge_out()  # cancelled too (the client left, or a stop): what it took

    async def _exchange(
        self, upstream: UpstreamURL, head: bytes, has_body: bool
    ) -> OriginConnection:
        """Send the request and wait for the response head; one retry on a stale connection."""
        pool = self.proxy.pool
        wait = self.timeouts.upstream_response
        conn = await pool.acquire(upstream)
        for attempt in (0, 1):
            uploader: asyncio.Task[None] | None = None
            try:
                conn.taker = self.request.conn  # its reads are sized to what this client takes
                conn.begin(self.request.method, None if has_body else wait)
                conn.send(head)
                if has_body:
                    uploader = asyncio.get_running_loop().create_task(self._upload(conn))
                await conn.response_head()
                self.uploader = uploader
                return conn
            except (UpstreamBroken, UpstreamError) as exc:
                conn.close()
                if uploader is not None:
                    uploader.cancel()
                    await asyncio.wait([uploader])
                stale = conn.reused and not conn.received_any and not has_body
                if attempt == 0 and stale and not isinstance(exc, UpstreamTimeout):
                    conn = await pool.acquire(upstream, fresh=True)
                    continue
                if isinstance(exc, UpstreamError):
                    raise
                raise UpstreamError(f"the upstream failed: {exc}") from exc
        raise AssertionError("unreachable")

    uploader: asyncio.Task[None] | None = None

    async def _upload(self, conn: OriginConnection) -> None:
        """The request body, streamed upstream; the response deadline starts at its end."""
        request, meter = self.request, self.meter
        chunked = request.head.chunked
        try:
            while True:
                piece = await request.read()
                meter.ingress(request.claim_in())
                if not piece:
                    break
                if self.cut and meter.blocked():
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
        self.sent_all = True
        conn.start_deadline(self.timeouts.upstream_response)

    async def _tunnel(self, conn: OriginConnection) -> None:
        up = conn.head
        assert up is not None
        request = self.request
        block = response_block(up.block, up.connection, body=False)
        block += b"\r\nConnection: upgrade\r\nUpgrade: " + (
            request.head.upgrade or "websocket"
        ).encode("latin-1")
        request.start_response(101, up.reason, block, length=None, body=False)
        self.charge_out()
        # A tunnel has no end to finish: it is closed at the cap either way, and it is
        # never exempt (see is_exempt), whatever its path.
        tunnel = Tunnel(request, conn, self.meter, self)
        tunnel.start()
        await tunnel.wait()

    async def _respond(self, conn: OriginConnection) -> bool:
        """Stream the upstream's response; False when it could not be completed."""
        request, meter = self.request, self.meter
        up = conn.head
        assert up is not None
        try:
            return await self._stream(conn)
        finally:
            await self._stop_upload()
            meter.ingress(request.claim_in())

    async def _stop_upload(self) -> None:
        """Stop sending the request body (the response is done, or failed)."""
        uploader = self.uploader
        if uploader is not None and not uploader.done():
            uploader.cancel()
            await asyncio.wait([uploader])

    async def _stream(self, conn: OriginConnection) -> bool:
        request = self.request
        up = conn.head
        assert up is not None
        if not response_has_body(request.method, up.status):
            block = response_block(up.block, up.connection, body=False)
            request.start_response(up.status, up.reason, block, length=None, body=False)
            request.end()
            self.charge_out()
            return True
        length = up.content_length
        first = b"" if self.cut else conn.read_nowait()  # cut: each piece meets the cap
        try:
            block = response_block(up.block, up.connection, body=True)
            request.start_response(up.status, up.reason, block, length=length, first=first)
        except ConnectionError:
            return False
        self.charge_out()
        if conn.at_eof:  # the whole body came with the head (a small response)
            return self._end()
        return await self._splice(conn, self.timeouts.upstream_response)

    async def _splice(self, conn: OriginConnection, silence: float) -> bool:
        """The rest of the body, passed on from the upstream's protocol callbacks."""
        request = self.request
        client = request.conn
        client.on_writable = conn.resume_reading
        try:
            await conn.splice(self, silence)
        except UpstreamBroken as exc:
            log.warning("%s: the upstream broke off mid-body: %r", self.meter.tenant, exc)
            client.abort()
            return False
        except ConnectionError:
            return False
        finally:
            client.on_writable = None
            self.charge_out()
        return self._end()

    def _end(self) -> bool:
        """Complete the response (the last chunk, for a chunked one)."""
        try:
            self.request.end()
        except ConnectionError:
            return False
        self.charge_out()
        return True

    def body_data(self, data: bytes) -> bool:
        """A piece of the spliced response body: pass it on; True while the client is full.

        With ``at_cap: cut``, only what fits under the cap goes on; then the client's
        connection is closed and :class:`CapReached` ends the splice.
        """
        request = self.request
        over = False
        if self.cut:
            room = self._room()
            if room <= 0:
                request.conn.abort()
                raise CapReached
            if len(data) > room:
                data, over = data[:room], True
        request.write(data)
        self.charge_out()
        if over:
            request.conn.abort()
            raise CapReached
        return request.conn.write_paused()

    def _room(self) -> int:
        """Body bytes that still fit under the cap, after the chunk framing they need
        (bytes handed to the client and not yet accepted count against it)."""
        remaining = self.meter.remaining() - self.in_flight()
        if not self.request.chunked_out or remaining <= 0:
            return remaining
        return max(0, remaining - len(f"{remaining:x}") - 4)  # "<hex>\r\n" ... "\r\n"
