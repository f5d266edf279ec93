"""The request handler: resolve the tenant → decide → notice | forward.

Invariants:

* A request whose tenant is at its cap never reaches the upstream (exempt paths
  and clients aside, see :mod:`governor.core.exemption`; a WebSocket upgrade is never
  exempt); an unknown host never reaches any upstream.
* Bodies stream in both directions with backpressure: at most a read buffer or
  two per direction is held, whatever the body's size.
* Every byte that crossed the client socket for a tenant's request is charged
  to the tenant (in its ``count`` directions): the request's head and body as
  received (:meth:`governor.http1.request.Request.claim`) and the response as the socket accepted it
  (a write that failed, or bytes still held when the client left, are not
  charged), governor's own answers included (400, 408, 413, 414, 431, 502, 504
  ...). Two exceptions: a blocked request and its notice (the notice is the
  operator's message, and a blocked tenant's count stops where its served
  traffic left it; a notice for a response refused by admission is not charged
  either, though the request that reached the upstream is), and a request whose
  head names no tenant (421, or a head too broken to name its Host), which is
  nobody's.

The forward itself (:mod:`governor.proxy.forward`) and the response's way back
(:mod:`governor.proxy.stream`) live apart; this module only resolves and decides.
"""

from __future__ import annotations

from governor.accounts.runtime import Runtime, Tenant
from governor.core.meter import Meter
from governor.core.policy import decide
from governor.core.shares import counts_visits, visit_of
from governor.http1.headers import client_address
from governor.http1.pool import OriginPool
from governor.http1.request import Request
from governor.observe.events import Refusal
from governor.proxy.answers import ACME, redirect, send_notice
from governor.proxy.forward import Forward
from governor.proxy.tunnel import upgrade_token


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
        tenant = snap.index.lookup(head.host)
        if head.method == "CONNECT":
            request.respond_text(405, "405 Method Not Allowed: governor is not a forward proxy")
            if tenant is not None:
                note.tenant = tenant.config.name
                request.meter = self._meter(tenant)
                request.charge()
            return
        if tenant is None:
            note.outcome = "unknown_host"
            shown = (head.host or "")[:200]
            request.respond_text(
                421, f"421 Misdirected Request: no tenant is served here for host {shown!r}"
            )
            return
        settings = tenant.config
        trusted = snap.config.trusted_proxies
        peer = request.peer or ""
        client = client_address(peer, head.headers, trusted) if trusted else peer
        note.tenant = settings.name
        note.client = client
        agent, note.referer = head.who()
        note.agent = agent
        if settings.https_redirect or settings.hsts:
            if request.conn.scheme == "http":
                if settings.https_redirect and not head.target.startswith(ACME):
                    note.outcome = "redirect"
                    meter = self._meter(tenant)
                    if not (settings.enforce and meter.blocked()):  # as a notice is not
                        request.meter = meter
                    redirect(request)
                    return
            elif settings.hsts:
                request.hsts = b"\r\nStrict-Transport-Security: max-age=%d" % settings.hsts
        meter = self._meter(tenant)
        used, cap = meter.used(), meter.cap
        visitor_used = crawlers_used = 0
        crawler = False
        if counts_visits(settings):
            period = meter.key()[1]
            visit = visit_of(
                runtime.shares, settings, agent=agent, client=client, cap=cap, period=period
            )
            if visit is not None:
                meter.visit = visit  # its charges count to the visitor, the crawlers too
                crawler = visit.crawler
                visitor_used = visit.visitor_used() or 0
                crawlers_used = visit.crawlers_used() or 0
        decision = decide(
            settings,
            used=used,
            cap=cap,
            store_ok=runtime.store_ok,
            target=head.target,
            client=client,
            upgrade=upgrade_token(head.upgrade) is not None,
            visitor_used=visitor_used,
            crawler=crawler,
            crawlers_used=crawlers_used,
            day_used=meter.day_used() if settings.day_guard is not None else 0,
        )
        if decision.verdict == "block":
            reason = decision.reason
            if reason == "client_share" or reason == "crawler":
                note.outcome = reason
                send_notice(request, settings, meter, variant=reason)
            elif reason == "day":  # a weekly or monthly tenant's day_guard: blocked today
                note.outcome = "blocked"
                send_notice(request, settings, meter, variant="day")
            else:
                note.outcome = "blocked"
                send_notice(request, settings, meter)
            return
        if decision.would_block is not None:
            note.outcome = "would_block"  # shadow mode: proxied, would have been refused
        else:
            note.outcome = "exempt" if decision.verdict == "exempt" else "proxied"
        request.meter = meter
        if decision.nudge:
            runtime.nudge()
        await Forward(self.pool, snap.config, request, settings, meter, decision).run()

    def _meter(self, tenant: Tenant) -> Meter:
        runtime = self.runtime
        return Meter(
            ledger=runtime.ledger,
            tenant=tenant.config,
            periods=tenant.periods,
            clock=runtime.clock,
            grants=runtime.grants,
            days=tenant.days,
        )

    def charge_handshake(self, name: str | None, received: int, sent: int) -> Meter | None:
        """Charge a TLS handshake to the tenant its SNI ``name`` is a host of, and return
        the meter that takes the connection's last bytes (its close_notify).

        Nobody's when the name is no tenant's (or absent: a client that connects by
        address), and not charged while the tenant is blocked: a blocked tenant's count
        stops where its served traffic left it, as for the notice.
        """
        tenant = self.runtime.snapshot.index.lookup(name)
        if tenant is None:
            return None
        meter = self._meter(tenant)
        if tenant.config.enforce and meter.blocked():
            return None
        meter.charge(received, sent)
        return meter

    def charge_refusal(self, refusal: Refusal) -> str | None:
        """Charge a request the listener refused to the tenant its head names.

        Returns the tenant's name, or None when the head names no tenant.
        """
        tenant = self.runtime.snapshot.index.lookup(refusal.host)
        if tenant is None:
            return None
        self._meter(tenant).charge(refusal.received, refusal.sent)
        return tenant.config.name
