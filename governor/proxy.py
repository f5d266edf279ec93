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

import logging
import posixpath
from collections.abc import AsyncIterator, Callable
from typing import cast

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from governor import notice
from governor.config import TenantConfig
from governor.errors import UpstreamError
from governor.headers import (
    Header,
    client_address,
    client_response_headers,
    is_trusted,
    upstream_request_headers,
)
from governor.meter import Meter
from governor.runtime import Runtime, Site
from governor.tunnel import tunnel, upgrade_token
from governor.upstream import STREAM_ERRORS, ResponseDeadline, open_response, target_url
from governor.wire import CountingRequestHandler

log = logging.getLogger("governor.proxy")

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
SERVER = "governor"  # on governor's own answers; proxied responses keep the upstream's


def _text(status: int, text: str, *, close: bool = False) -> web.Response:
    resp = web.Response(status=status, text=text + "\n", content_type="text/plain")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Server"] = SERVER
    if close:
        resp.force_close()
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
        runtime = self.runtime
        snap = runtime.snapshot
        conn = cast(CountingRequestHandler, request.protocol)
        host = request.headers.get("Host")
        if host is None and request.version >= (1, 1):
            conn.claim_in()
            return _text(400, "400 Bad Request: the request has no Host header", close=True)
        site = snap.index.lookup(host)
        if site is None:
            conn.claim_in()
            shown = (host or "")[:200]
            return _text(
                421,
                f"421 Misdirected Request: no site is served here for host {shown!r}",
                close=request.can_read_body,
            )
        tenant = site.config
        raw_headers = _decoded(request.raw_headers)
        peer = request.remote
        trusted = snap.config.trusted_proxies
        client = client_address(peer, raw_headers, trusted)
        exempt = is_exempt(tenant, request.path, client)
        meter = Meter(
            ledger=runtime.ledger, tenant=tenant, periods=site.periods, clock=runtime.clock
        )
        if not exempt and meter.blocked():
            conn.claim_in()
            return self._notice(request, site, meter)
        meter.ingress(conn.claim_in())
        return await self._forward(request, site, meter, raw_headers, exempt=exempt)

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
        if request.can_read_body:
            # The unread body would otherwise be charged to the connection's next request.
            resp.force_close()
        return resp

    async def _forward(
        self,
        request: web.BaseRequest,
        site: Site,
        meter: Meter,
        raw_headers: list[Header],
        *,
        exempt: bool,
    ) -> web.StreamResponse:
        tenant = site.config
        snap = self.runtime.snapshot
        conn = cast(CountingRequestHandler, request.protocol)
        writer = request.writer
        charged_out = 0

        def charge_out(upto: int | None = None) -> None:
            nonlocal charged_out
            sent = writer.output_size if upto is None else upto
            meter.egress(sent - charged_out)
            charged_out = sent

        cut = tenant.at_cap == "cut" and not exempt
        has_body = request.can_read_body
        deadline = ResponseDeadline(snap.config.timeouts.upstream_response, body=has_body)
        body: AsyncIterator[bytes] | None = None
        if has_body:
            if request.headers.get("Expect", "").lower() == "100-continue":
                await writer.write(CONTINUE)
                charge_out(None)
            body = self._request_body(request, conn, meter, deadline, cut=cut)
        upgrade = upgrade_token(request) is not None
        headers = upstream_request_headers(
            raw_headers, peer=request.remote, trusted=snap.config.trusted_proxies, upgrade=upgrade
        )
        try:
            async with open_response(
                self.session,
                method=request.method,
                url=target_url(tenant.upstream, request.raw_path),
                headers=headers,
                body=body,
                deadline=deadline,
            ) as up:
                if upgrade and up.status == 101:
                    # A tunnel has no end to finish: it is closed at the cap either way.
                    return await tunnel(request, up, meter, charge_out, cut=not exempt)
                resp = web.StreamResponse(
                    status=up.status,
                    reason=up.reason,
                    headers=CIMultiDict(client_response_headers(_decoded(up.raw_headers))),
                )
                try:
                    await resp.prepare(request)
                except ConnectionError:
                    up.close()
                    return resp
                charge_out(None)
                await self._stream_body(request, resp, up, meter, charge_out, cut=cut)
                return resp
        except UpstreamError as exc:
            meter.ingress(conn.claim_in())
            log.warning("%s %s %s: %s", tenant.name, request.method, request.path, exc)
            return _text(exc.status, f"{exc.status} {exc}", close=has_body)
        finally:
            meter.ingress(conn.claim_in())

    async def _request_body(
        self,
        request: web.BaseRequest,
        conn: CountingRequestHandler,
        meter: Meter,
        deadline: ResponseDeadline,
        *,
        cut: bool,
    ) -> AsyncIterator[bytes]:
        content = request.content
        while True:
            chunk = await content.readany()
            meter.ingress(conn.claim_in())
            if not chunk:
                break
            if cut and meter.blocked():
                _abort(request)
                return
            yield chunk
        deadline.start()

    async def _stream_body(
        self,
        request: web.BaseRequest,
        resp: web.StreamResponse,
        up: aiohttp.ClientResponse,
        meter: Meter,
        charge_out: Callable[[int | None], None],
        *,
        cut: bool,
    ) -> None:
        content = up.content
        writer = request.writer
        while True:
            try:
                chunk = await content.readany()
            except STREAM_ERRORS as exc:
                log.warning("%s: the upstream broke off mid-body: %r", meter.tenant, exc)
                up.close()
                _abort(request)
                return
            if not chunk:
                break
            stop_after = False
            if cut:
                remaining = meter.remaining()
                if remaining <= 0:
                    up.close()
                    _abort(request)
                    return
                if len(chunk) > remaining:
                    chunk = chunk[:remaining]
                    stop_after = True
            before = writer.output_size
            try:
                await resp.write(chunk)
            except ConnectionError:
                # The client is gone: what the failed write handed over never reached it.
                charge_out(before)
                up.close()
                return
            charge_out(None)
            if stop_after:
                up.close()
                _abort(request)
                return
        before = writer.output_size
        try:
            await resp.write_eof()
        except ConnectionError:
            charge_out(before)
            return
        charge_out(None)


def _abort(request: web.BaseRequest) -> None:
    """End the client connection without a clean end of body, so a client sees truncation."""
    transport = request.transport
    if transport is not None:
        transport.close()
