"""The request handler: resolve the tenant → decide → forward → stream and meter.

Invariants:

* A request whose tenant is at its cap never reaches the upstream (exempt paths
  and clients aside); an unknown host never reaches any upstream.
* Bodies stream in both directions with backpressure: at most one read buffer
  per direction is held, whatever the body's size.
* Every byte charged to a tenant is a byte that crossed the client socket:
  egress from aiohttp's writer count, ingress from the connection's receive
  count (:mod:`governor.wire`). Governor's own answers (notice, 421, 502, 504)
  are not charged.
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
import time
from collections.abc import AsyncIterator, Callable
from typing import cast

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from governor import notice
from governor.config import TenantConfig
from governor.errors import UpstreamError
from governor.events import NOTE_KEY, RequestNote
from governor.headers import (
    Header,
    client_address,
    client_response_headers,
    is_trusted,
    upstream_request_headers,
)
from governor.ledger import is_blocked
from governor.meter import Meter
from governor.runtime import NEAR_CAP, Runtime, Site
from governor.tunnel import tunnel, upgrade_token
from governor.upstream import STREAM_ERRORS, ResponseDeadline, open_response, target_url
from governor.wire import CountingRequestHandler, RequestIngress

log = logging.getLogger("governor.proxy")

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
SERVER = "governor"  # on governor's own answers; proxied responses keep the upstream's
# How long the rest of a request body nobody read is read and dropped after the
# response, so the connection stays in step and the client reads the response
# (closing on unread data would reset it). Like aiohttp's own lingering, but here,
# where the bytes can be charged to the request they belong to.
LINGER = 10.0
# What a visitor sees of an upstream failure; the details go to the log only.
PUBLIC_ERRORS = {
    502: "502 Bad Gateway: the site's server could not be reached",
    504: "504 Gateway Timeout: the site's server did not answer in time",
}


def _text(status: int, text: str) -> web.Response:
    resp = web.Response(status=status, text=text + "\n", content_type="text/plain")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Server"] = SERVER
    return resp


def _drop(nbytes: int) -> None:
    """Charge nobody (the body of a request governor answered itself)."""


async def _linger(
    request: web.BaseRequest, ingress: RequestIngress, charge: Callable[[int], None]
) -> None:
    """Read and drop what is left of the request body after the response was sent.

    Every byte is charged with ``charge``, so nothing is left for the connection's
    next request to claim. A client still sending after :data:`LINGER` seconds is
    disconnected.
    """
    content = request.content
    try:
        async with asyncio.timeout(LINGER):
            while await content.readany():
                charge(ingress.claim())
    except TimeoutError:
        request.protocol.force_close()
    except ConnectionError:
        pass
    charge(ingress.claim())


def _ingress(request: web.BaseRequest) -> RequestIngress:
    """The byte claim of a request; call when its handler starts, before any await."""
    return RequestIngress(
        cast(CountingRequestHandler, request.protocol),
        body_fed=request.content.total_bytes,
        content_length=request.content_length,
        chunked="chunked" in request.headers.get("Transfer-Encoding", "").lower(),
    )


async def _answer(
    request: web.BaseRequest, ingress: RequestIngress, resp: web.StreamResponse
) -> web.StreamResponse:
    """Send one of governor's own answers, then drop the request body nobody will read."""
    ingress.claim()  # not charged to anybody
    if request.can_read_body and not request.content.is_eof():
        try:
            await resp.prepare(request)
            await resp.write_eof()
        except ConnectionError:
            return resp
        await _linger(request, ingress, _drop)
    return resp


def _decoded(raw: tuple[tuple[bytes, bytes], ...]) -> list[Header]:
    return [(n.decode("latin-1"), v.decode("latin-1")) for n, v in raw]


def is_exempt(tenant: TenantConfig, path: str, client: str) -> bool:
    """Whether a request is always proxied: an exempt path prefix or an exempt client."""
    if tenant.exempt_paths and ".." not in path.split("/"):
        clean = posixpath.normpath(path) + ("/" if path.endswith("/") else "")
        if any(clean.startswith(p) for p in tenant.exempt_paths):
            return True
    return bool(tenant.exempt_clients) and is_trusted(client, tenant.exempt_clients)


class Proxy:
    """The handler of every client request."""

    def __init__(self, runtime: Runtime, session: aiohttp.ClientSession) -> None:
        self.runtime = runtime
        self.session = session

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Answer one client request."""
        ingress = _ingress(request)
        note = RequestNote(sinks=self.runtime.request_sinks)
        request[NOTE_KEY] = note
        try:
            return await self._handle(request, ingress, note)
        finally:
            note.bytes_in = ingress.taken

    async def _handle(
        self, request: web.BaseRequest, ingress: RequestIngress, note: RequestNote
    ) -> web.StreamResponse:
        runtime = self.runtime
        snap = runtime.snapshot
        host = request.headers.get("Host")
        if host is None and request.version >= (1, 1):
            return await _answer(request, ingress, _text(400, "400 Bad Request: no Host header"))
        site = snap.index.lookup(host)
        if site is None:
            note.outcome = "unknown_host"
            shown = (host or "")[:200]
            text = f"421 Misdirected Request: no site is served here for host {shown!r}"
            return await _answer(request, ingress, _text(421, text))
        tenant = site.config
        raw_headers = _decoded(request.raw_headers)
        client = client_address(request.remote, raw_headers, snap.config.trusted_proxies)
        note.tenant = tenant.name
        note.client = client
        exempt = is_exempt(tenant, request.path, client)
        meter = Meter(
            ledger=runtime.ledger,
            tenant=tenant,
            periods=site.periods,
            clock=runtime.clock,
            grants=runtime.grants,
        )
        used, cap = meter.used(), meter.cap
        if not exempt and (
            is_blocked(used, cap) or (tenant.on_store_failure == "closed" and not runtime.store_ok)
        ):
            note.outcome = "blocked"
            return await _answer(request, ingress, self._notice(request, site, meter))
        note.outcome = "exempt" if exempt else "proxied"
        if used >= cap * NEAR_CAP:
            runtime.nudge()
        exchange = _Exchange(self, request, ingress, site, meter, note, exempt=exempt)
        return await exchange.run(raw_headers)

    def _notice(self, request: web.BaseRequest, site: Site, meter: Meter) -> web.Response:
        period = meter.period()
        facts = notice.NoticeFacts(
            tenant=site.config.name,
            host=request.headers.get("Host", ""),
            used_bytes=meter.used(),
            cap_bytes=meter.cap,
            resets_at=period.resets_at(site.config.timezone),
            now=self.runtime.clock(),
        )
        rendered = notice.render_notice(
            facts,
            status=site.config.notice.status,
            template=site.config.notice.template,
            accept=request.headers.get("Accept"),
            accept_language=request.headers.get("Accept-Language"),
            method=request.method,
        )
        resp = web.Response(status=rendered.status, body=rendered.body)
        resp.headers.update(rendered.headers)  # Content-Length too: a HEAD's is the GET's
        resp.headers["Server"] = SERVER
        return resp


class _Exchange:
    """One proxied request: the upload, the upstream response, and their metering."""

    def __init__(
        self,
        proxy: Proxy,
        request: web.BaseRequest,
        ingress: RequestIngress,
        site: Site,
        meter: Meter,
        note: RequestNote,
        *,
        exempt: bool,
    ) -> None:
        self.proxy = proxy
        self.note = note
        self.request = request
        self.ingress = ingress
        self.site = site
        self.meter = meter
        self.exempt = exempt
        self.cut = site.config.at_cap == "cut" and not exempt
        self.writer = request.writer
        self.charged_out = 0
        self.chunked = False
        # Set while nobody is waiting on the request body; the upload and the
        # lingering read must never wait on it at the same time.
        self.body_idle = asyncio.Event()
        self.body_idle.set()

    def charge_out(self, upto: int | None = None) -> None:
        """Charge what the writer handed the client socket (up to ``upto``)."""
        sent = self.writer.output_size if upto is None else upto
        self.meter.egress(sent - self.charged_out)
        self.charged_out = sent

    async def run(self, raw_headers: list[Header]) -> web.StreamResponse:
        request, meter, ingress = self.request, self.meter, self.ingress
        snap = self.proxy.runtime.snapshot
        meter.ingress(ingress.claim())
        has_body = request.can_read_body
        deadline = ResponseDeadline(snap.config.timeouts.upstream_response, body=has_body)
        body: AsyncIterator[bytes] | None = None
        if has_body:
            expect = request.headers.get("Expect", "").lower() == "100-continue"
            if expect and request.version >= (1, 1):
                await self.writer.write(CONTINUE)
                self.charge_out()
            body = self._upload(deadline)
        upgrade = upgrade_token(request) is not None
        headers = upstream_request_headers(
            raw_headers, peer=request.remote, trusted=snap.config.trusted_proxies, upgrade=upgrade
        )
        tenant = self.site.config
        sent_at = time.monotonic()
        try:
            async with open_response(
                self.proxy.session,
                method=request.method,
                url=target_url(tenant.upstream, request.raw_path),
                headers=headers,
                body=body,
                deadline=deadline,
            ) as up:
                self.note.upstream_seconds = time.monotonic() - sent_at
                if upgrade and up.status == 101:
                    # A tunnel has no end to finish: it is closed at the cap either way.
                    return await tunnel(request, up, meter, self.charge_out, cut=not self.exempt)
                response_class = web.StreamResponse if self.cut else _Coalesced
                resp = response_class(
                    status=up.status,
                    reason=up.reason,
                    headers=CIMultiDict(client_response_headers(_decoded(up.raw_headers))),
                )
                complete = await self._respond(resp, up)
        except UpstreamError as exc:
            self.note.outcome = "upstream_error"
            log.warning("%s %s %s: %s", tenant.name, request.method, request.path, exc)
            resp = _text(exc.status, PUBLIC_ERRORS.get(exc.status, f"{exc.status} error"))
            complete = True
        finally:
            meter.ingress(ingress.claim())
        if complete and has_body and not request.content.is_eof():
            # The upstream answered without reading the whole body (a 413, a redirect).
            await self.body_idle.wait()
            if not resp.prepared:
                try:
                    await resp.prepare(request)
                    await resp.write_eof()
                except ConnectionError:
                    return resp
            await _linger(request, ingress, meter.ingress)
        return resp

    async def _upload(self, deadline: ResponseDeadline) -> AsyncIterator[bytes]:
        """The request body, streamed upstream by aiohttp's writer task."""
        content, meter, ingress = self.request.content, self.meter, self.ingress
        while True:
            self.body_idle.clear()
            try:
                chunk = await content.readany()
            finally:
                self.body_idle.set()
            meter.ingress(ingress.claim())
            if not chunk:
                break
            if self.cut and meter.blocked():
                _abort(self.request)
                return
            yield chunk
        deadline.start()

    async def _respond(self, resp: web.StreamResponse, up: aiohttp.ClientResponse) -> bool:
        """Stream the upstream's response; False when it could not be completed."""
        request, meter = self.request, self.meter
        try:
            await resp.prepare(request)
        except ConnectionError:
            up.close()
            return False
        self.charge_out()
        self.chunked = resp.headers.get("Transfer-Encoding") == "chunked"
        content = up.content
        try:
            ready = b"" if self.cut else content.read_nowait(-1)
        except STREAM_ERRORS:
            ready = b""  # the loop below meets the error and aborts
        if not ready and not content.at_eof():
            # A slow first byte (server-sent events, a long poll): the headers go now.
            send_headers = getattr(self.writer, "send_headers", None)
            if send_headers is not None:
                send_headers()
        while True:
            try:
                chunk, ready = (ready, b"") if ready else (await content.readany(), b"")
            except STREAM_ERRORS as exc:
                log.warning("%s: the upstream broke off mid-body: %r", meter.tenant, exc)
                up.close()
                _abort(request)
                return False
            if not chunk:
                break
            stop_after = False
            if self.cut:
                room = self._room()
                if room <= 0:
                    up.close()
                    _abort(request)
                    return False
                if len(chunk) > room:
                    chunk = chunk[:room]
                    stop_after = True
            before = self.writer.output_size
            try:
                await resp.write(chunk)
            except ConnectionError:
                # The client is gone: what the failed write handed over never reached it.
                self.charge_out(before)
                up.close()
                return False
            self.charge_out()
            if stop_after:
                up.close()
                _abort(request)
                return False
        before = self.writer.output_size
        try:
            await resp.write_eof()
        except ConnectionError:
            self.charge_out(before)
            return False
        self.charge_out()
        return True

    def _room(self) -> int:
        """Body bytes that still fit under the cap, after the chunk framing they need."""
        remaining = self.meter.remaining()
        if not self.chunked or remaining <= 0:
            return remaining
        return max(0, remaining - len(f"{remaining:x}") - 4)  # "<hex>\r\n" ... "\r\n"


class _Coalesced(web.StreamResponse):
    """A proxied response whose headers leave with its first body bytes: one write, not two.

    (``at_cap: cut`` keeps aiohttp's immediate headers, so the cut can count them first.)
    """

    _send_headers_immediately = False


def _abort(request: web.BaseRequest) -> None:
    """End the client connection without a clean end of body, so a client sees truncation."""
    transport = request.transport
    if transport is not None:
        transport.close()
