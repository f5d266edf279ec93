"""The admin listener: health, readiness, the tenant API, the status page and /metrics.

Routes (all on ``admin_listen``, loopback by default):

* ``GET /healthz`` (the process is alive), ``GET /readyz`` (listeners up, config
  loaded; reports the store state), ``GET /metrics`` and ``GET /status`` (an HTML page
  for people) are open.
* ``GET /api/v1/tenants``, ``GET /api/v1/tenants/{tenant}``,
  ``POST /api/v1/tenants/{tenant}/reset`` and ``POST /api/v1/tenants/{tenant}/grant``
  need ``Authorization: Bearer <token>`` when ``admin_token_file`` is set.

Resets and grants go through :class:`~governor.runtime.Runtime`, which keeps them in
the store, so every instance and worker sees them within one flush interval and they
survive restarts. Every reset and grant, and every refused API call, writes one line
to the ``governor.audit`` logger: when, who (client address, whether a token was
presented), what, the tenant, and the result. The token itself is never logged.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import html
import json
import logging
import math
import re
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import hdrs, web

from governor.accounts.runtime import Runtime, Site, TenantUsage
from governor.errors import StoreError
from governor.observe.metrics import Metrics
from governor.sizes import format_size, parse_size
from governor.store.base import BUCKET_SECONDS

__all__ = ["STATUS_REFRESH_SECONDS", "AdminListener", "create_admin_app"]

audit = logging.getLogger("governor.audit")
log = logging.getLogger("governor")

STATUS_REFRESH_SECONDS = 5
"""How often the status page reloads itself."""

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_PLAIN = re.compile(r"[A-Za-z0-9_.:/@+\-]+")
_GRANT_EXAMPLE = '{"bytes": "500 MB"}'


def create_admin_app(
    runtime: Runtime,
    *,
    metrics: Metrics,
    ready: Callable[[], bool],
) -> web.Application:
    """The admin application: /metrics, /healthz, /readyz, /api/v1/..., /status.

    The token is the live config's (``runtime.snapshot``), read per request: a reload
    that rotates ``admin_token_file`` refuses the old token from the next request on.
    """
    admin = _Admin(runtime, ready=ready)
    app = web.Application()
    app.router.add_get("/metrics", metrics.handle)
    app.router.add_get("/healthz", admin.healthz)
    app.router.add_get("/readyz", admin.readyz)
    app.router.add_get("/status", admin.status)
    app.router.add_get("/api/v1/tenants", admin.guard("list", admin.list_tenants))
    app.router.add_get("/api/v1/tenants/{tenant}", admin.guard("show", admin.show_tenant))
    app.router.add_post("/api/v1/tenants/{tenant}/reset", admin.guard("reset", admin.reset))
    app.router.add_post("/api/v1/tenants/{tenant}/grant", admin.guard("grant", admin.grant))
    return app


class AdminListener:
    """The admin application on ``admin_listen``, which a reload may move, add or remove.

    Invariants: the application is one and the same across moves (its token is read
    per request from the live config); :meth:`move` binds the new address at once, so
    a reload whose address cannot be bound is refused before anything changed; the
    switch itself (serve on the new socket, then close the old listener, whose open
    connections finish) runs in one owned task, moves in the order they came, and
    :meth:`settled` and :meth:`stop` wait for it.
    """

    def __init__(self, app: web.Application, *, bind: Callable[[str, int], socket.socket]) -> None:
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self._bind = bind  # a listening socket on (host, port), or an error naming the key
        self.address: tuple[str, int] | None = None
        self._sock: socket.socket | None = None  # the newest: served now or once the move ran
        self._site: web.SockSite | None = None
        self._moving: asyncio.Task[None] | None = None

    @property
    def port(self) -> int | None:
        """The port of the admin listener (the new one from a move on), or None."""
        return None if self._sock is None else int(self._sock.getsockname()[1])

    async def start(self, address: tuple[str, int] | None) -> None:
        """Set the application up and, with an address, listen there."""
        await self._runner.setup()
        if address is not None:
            self._sock, self.address = self._bind(*address), address
            await self._switch(None, self._sock)

    def move(self, address: tuple[str, int] | None) -> None:
        """Listen on ``address`` (None: nowhere) instead; binds now, switches soon.

        Raises what the bind raises, with nothing changed.
        """
        if address == self.address:
            return
        sock = None if address is None else self._bind(*address)
        self.address, self._sock = address, sock
        loop = asyncio.get_running_loop()
        self._moving = loop.create_task(
            self._switch(self._moving, sock), name="governor-admin-move"
        )

    async def settled(self) -> None:
        """Return once every move asked for so far has taken effect."""
        if self._moving is not None:
            await self._moving

    async def stop(self) -> None:
        """Stop listening and close the admin connections."""
        await self.settled()
        await self._runner.cleanup()

    async def _switch(self, before: asyncio.Task[None] | None, sock: socket.socket | None) -> None:
        if before is not None:
            await before
        old, self._site = self._site, None
        try:
            if sock is not None:
                site = web.SockSite(self._runner, sock)
                await site.start()
                self._site = site
                host, port = sock.getsockname()[:2]
                where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                log.info("admin listening on http://%s", where)
            if old is not None:
                await old.stop()
        except Exception:  # a bug here must not end the process; the log says what
            log.exception("moving the admin listener failed")


class _BadRequest(Exception):
    """A request body the API cannot use; the message names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class _Admin:
    """The handlers, sharing the runtime (the live config, the token) and the readiness probe."""

    def __init__(self, runtime: Runtime, *, ready: Callable[[], bool]) -> None:
        self.runtime = runtime
        self.ready = ready

    # -- access ---------------------------------------------------------------------------

    def guard(self, action: str, handler: _Handler) -> _Handler:
        """``handler`` behind the bearer token (when one is configured)."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            presented, valid = self._credentials(request)
            if not valid:
                reason = "wrong token" if presented else "no token"
                _audit(
                    request,
                    presented=presented,
                    action=action,
                    tenant=request.match_info.get("tenant"),
                    result=f"denied ({reason})",
                )
                return _error(
                    401,
                    "unauthorized: this API needs the header 'Authorization: Bearer <token>' "
                    "with the token in admin_token_file",
                    headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="governor"'},
                )
            return await handler(request)

        return guarded

    def _credentials(self, request: web.Request) -> tuple[bool, bool]:
        """(a token was presented, the request may proceed)."""
        header = request.headers.get(hdrs.AUTHORIZATION)
        presented = header is not None
        token = self.runtime.snapshot.config.admin_token  # the live one: a reload rotates it
        if token is None:
            return presented, True
        if header is None:
            return False, False
        scheme, _, given = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return True, False
        ok = hmac.compare_digest(
            given.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8")
        )
        return True, ok

    # -- probes ---------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok\n", headers={hdrs.CACHE_CONTROL: "no-store"})

    async def readyz(self, request: web.Request) -> web.StreamResponse:
        ready = self.ready()
        body = {
            "ready": ready,
            "store": "ok" if self.runtime.store_ok else "degraded",
            "tenants": len(self.runtime.snapshot.sites),
        }
        return web.json_response(
            body, status=200 if ready else 503, headers={hdrs.CACHE_CONTROL: "no-store"}
        )

    # -- the API --------------------------------------------------------------------------

    async def list_tenants(self, request: web.Request) -> web.StreamResponse:
        rows = []
        for name in list(self.runtime.snapshot.sites):
            usage = self.runtime.usage(name)
            if usage is not None:
                rows.append(self._usage_json(usage))
        return _json({"tenants": rows, "store": "ok" if self.runtime.store_ok else "degraded"})

    async def show_tenant(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["tenant"]
        usage = self.runtime.usage(name)
        if usage is None:
            return _unknown_tenant(name)
        return _json(self._usage_json(usage))

    async def reset(self, request: web.Request) -> web.StreamResponse:
        async def act(name: str) -> tuple[TenantUsage | None, dict[str, object]]:
            usage = await self.runtime.reset(name)
            return usage, {} if usage is None else {
                "period": usage.period,
                "used_bytes": usage.used_bytes,
            }

        return await self._act(request, "reset", act)

    async def grant(self, request: web.Request) -> web.StreamResponse:
        try:
            nbytes = _grant_bytes(await request.read()) if self._known(request) else 0
        except _BadRequest as exc:
            self._audit(request, "grant", result=f"bad request: {exc.message}")
            return _error(400, exc.message, field=exc.field)

        async def act(name: str) -> tuple[TenantUsage | None, dict[str, object]]:
            usage = await self.runtime.grant(name, nbytes)
            return usage, {"bytes": nbytes} if usage is None else {
                "bytes": nbytes,
                "period": usage.period,
                "granted_bytes": usage.granted_bytes,
                "cap_bytes": usage.cap_bytes,
            }

        return await self._act(request, "grant", act)

    def _known(self, request: web.Request) -> bool:
        return self.runtime.usage(request.match_info["tenant"]) is not None

    def _audit(self, request: web.Request, action: str, **fields: object) -> None:
        _audit(
            request,
            presented=hdrs.AUTHORIZATION in request.headers,
            action=action,
            tenant=request.match_info["tenant"],
            **fields,  # type: ignore[arg-type]
        )

    async def _act(
        self,
        request: web.Request,
        action: str,
        act: Callable[[str], Awaitable[tuple[TenantUsage | None, dict[str, object]]]],
    ) -> web.StreamResponse:
        """Run a change on a tenant, audit it whatever happens, and answer with its usage."""
        name = request.match_info["tenant"]
        if not self._known(request):
            self._audit(request, action, result="no such tenant")
            return _unknown_tenant(name)
        try:
            usage, facts = await act(name)
        except StoreError as exc:
            self._audit(request, action, result=f"failed: {exc}")
            return _error(503, f"the store did not take the {action}: {exc}")
        if usage is None:  # the tenant went away in a reload meanwhile
            self._audit(request, action, result="no such tenant")
            return _unknown_tenant(name)
        self._audit(request, action, result="ok", **facts)
        return _json(self._usage_json(usage))

    def _usage_json(self, usage: TenantUsage) -> dict[str, Any]:
        site = self.runtime.snapshot.sites.get(usage.tenant)
        now = self.runtime.clock()
        return {
            "tenant": usage.tenant,
            "period": usage.period,
            "used_bytes": usage.used_bytes,
            "cap_bytes": usage.cap_bytes,
            "daily_cap_bytes": usage.daily_cap_bytes,
            "granted_bytes": usage.granted_bytes,
            "resets_at": usage.resets_at.isoformat(),
            "resets_in": max(0, math.ceil(usage.resets_at.timestamp() - now)),
            "timezone": site.config.timezone.key if site is not None else None,
            "blocked": usage.blocked,
        }

    # -- the status page --------------------------------------------------------------------

    async def status(self, request: web.Request) -> web.StreamResponse:
        runtime = self.runtime
        snap = runtime.snapshot
        now = runtime.clock()
        shown: list[tuple[Site, TenantUsage]] = []
        for name, site in snap.sites.items():
            usage = runtime.usage(name)
            if usage is not None:
                shown.append((site, usage))
        charts = await asyncio.gather(
            *(self._buckets(usage.tenant, usage.period) for _, usage in shown)
        )
        cards = [
            _tenant_card(site, usage, buckets, now)
            for (site, usage), buckets in zip(shown, charts, strict=True)
        ]
        page = _PAGE.format(
            refresh=STATUS_REFRESH_SECONDS,
            css=_CSS,
            store_class="ok" if runtime.store_ok else "degraded",
            store=(
                "store ok"
                if runtime.store_ok
                else "store degraded: counts wait in memory, totals may lag"
            ),
            generated=_esc(dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")),
            count=len(cards),
            plural="" if len(cards) == 1 else "s",
            cards="\n".join(cards),
        )
        return web.Response(
            text=page,
            content_type="text/html",
            charset="utf-8",
            headers={
                hdrs.CACHE_CONTROL: "no-store",
                "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
            },
        )

    async def _buckets(self, tenant: str, period: str) -> dict[int, int] | None:
        try:
            return await self.runtime.store.buckets(tenant, period)
        except StoreError:
            return None


# -- helpers ----------------------------------------------------------------------------------


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status, headers={hdrs.CACHE_CONTROL: "no-store"})


def _error(
    status: int,
    message: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    return web.json_response(
        body, status=status, headers={hdrs.CACHE_CONTROL: "no-store", **(headers or {})}
    )


def _unknown_tenant(name: str) -> web.Response:
    return _error(404, f"no tenant {name!r} in the running config")


def _grant_bytes(raw: bytes) -> int:
    """The bytes a grant body asks for: ``{"bytes": "500 MB"}`` or ``{"bytes": 500000000}``."""
    usage = f"the body must be a JSON object like {_GRANT_EXAMPLE}"
    if not raw.strip():
        raise _BadRequest("bytes", f"the body is empty: {usage}")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise _BadRequest("bytes", f"the body is not valid JSON ({exc}): {usage}") from None
    if not isinstance(doc, dict):
        raise _BadRequest("bytes", usage)
    unknown = sorted(str(k) for k in doc if k != "bytes")
    if unknown:
        raise _BadRequest(unknown[0], f"unknown field {unknown[0]!r}: {usage}")
    if "bytes" not in doc:
        raise _BadRequest("bytes", f"the field 'bytes' is missing: {usage}")
    try:
        nbytes = parse_size(doc["bytes"])
    except ValueError as exc:
        raise _BadRequest("bytes", f"bytes: {exc}") from None
    if nbytes <= 0:
        raise _BadRequest("bytes", "bytes: a grant must be more than 0 bytes")
    return nbytes


def _audit(
    request: web.Request,
    *,
    presented: bool,
    action: str,
    tenant: str | None,
    result: str,
    **facts: object,
) -> None:
    """One audit line: when, who, what, which tenant, the result (and the facts)."""
    fields: dict[str, object] = {
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        "client": request.remote or "unknown",
        "token": "presented" if presented else "absent",
        "action": action,
        "tenant": tenant if tenant is not None else "-",
        **facts,
        "result": result,
    }
    audit.info(" ".join(f"{key}={_logged(value)}" for key, value in fields.items()))


def _logged(value: object) -> str:
    """``value`` for a key=value log line: quoted when it holds spaces or anything odd."""
    text = str(value)
    if _PLAIN.fullmatch(text):
        return text
    return json.dumps(text, ensure_ascii=True)


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _pct(used: int, cap: int) -> float:
    if cap <= 0:
        return 100.0
    return 100.0 * used / cap


def _duration(seconds: float) -> str:
    """``"3 h 05 min"``, ``"42 s"``: the time to the reset, for people."""
    s = max(0, math.ceil(seconds))
    if s < 60:
        return f"{s} s"
    minutes, _ = divmod(s, 60)
    hours, minutes = divmod(minutes, 60)
    if hours == 0:
        return f"{minutes} min"
    return f"{hours} h {minutes:02d} min"


def _tenant_card(site: Site, usage: TenantUsage, buckets: dict[int, int] | None, now: float) -> str:
    tz = site.config.timezone
    pct = _pct(usage.used_bytes, usage.cap_bytes)
    width = min(100.0, pct)
    level = "blocked" if usage.blocked else "high" if pct >= 80 else "ok"
    state = "blocked" if usage.blocked else "open"
    resets = usage.resets_at.astimezone(tz)
    grant = (
        f'<p class="grant">includes {_esc(format_size(usage.granted_bytes))} granted for today '
        f"(daily cap {_esc(format_size(usage.daily_cap_bytes))})</p>"
        if usage.granted_bytes
        else ""
    )
    hosts = ", ".join(site.config.hosts)
    period = site.periods.current(now)
    return _CARD.format(
        name=_esc(usage.tenant),
        state=state,
        state_label="BLOCKED" if usage.blocked else "open",
        hosts=_esc(hosts),
        used_bytes=usage.used_bytes,
        cap_bytes=usage.cap_bytes,
        level=level,
        width=f"{width:.3f}",
        used=_esc(format_size(usage.used_bytes)),
        cap=_esc(format_size(usage.cap_bytes)),
        pct=f"{pct:.1f}",
        grant=grant,
        reset_in=_esc(_duration(usage.resets_at.timestamp() - now)),
        reset_iso=_esc(usage.resets_at.isoformat()),
        reset_local=_esc(resets.strftime("%Y-%m-%d %H:%M ") + (resets.tzname() or "")),
        chart=_chart(usage.tenant, period.start, period.end, buckets, now, site),
    )


def _chart(
    tenant: str,
    start: float,
    end: float,
    buckets: dict[int, int] | None,
    now: float,
    site: Site,
) -> str:
    """Today's transfer in 5-minute buckets: an inline SVG bar per non-empty bucket."""
    if buckets is None:
        return '<p class="nochart">chart unavailable: the store did not answer</p>'
    tz = site.config.timezone
    slots = max(1, math.ceil((end - start) / BUCKET_SECONDS))
    height = 100
    in_period = {b: n for b, n in buckets.items() if start - BUCKET_SECONDS < b < end and n > 0}
    peak = max(in_period.values(), default=0)
    total = sum(in_period.values())
    rects = []
    for bucket, n in sorted(in_period.items()):
        x = max(0.0, (bucket - start) / BUCKET_SECONDS)
        h = max(1.0, height * n / peak)
        t0 = dt.datetime.fromtimestamp(bucket, tz).strftime("%H:%M")
        t1 = dt.datetime.fromtimestamp(bucket + BUCKET_SECONDS, tz).strftime("%H:%M")
        rects.append(
            f'<rect class="bucket" data-start="{bucket}" data-bytes="{n}" '
            f'x="{x:.3f}" y="{height - h:.3f}" width="0.85" height="{h:.3f}">'
            f"<title>{_esc(t0)}&#8211;{_esc(t1)}: {_esc(format_size(n))}</title></rect>"
        )
    now_x = min(slots, max(0.0, (now - start) / BUCKET_SECONDS))
    ticks = []
    for i in range(5):
        at = start + (end - start) * i / 4
        label = dt.datetime.fromtimestamp(at, tz).strftime("%H:%M")
        ticks.append(f"<span>{_esc(label)}</span>")
    summary = (
        f"{len(in_period)} five-minute bucket{'' if len(in_period) == 1 else 's'}, "
        f"peak {format_size(peak)}, "
        f"{format_size(total)} in all"
        if in_period
        else "no transfer recorded yet today"
    )
    return (
        f'<figure class="chart" data-tenant="{_esc(tenant)}" data-buckets="{len(in_period)}">'
        f'<svg viewBox="0 0 {slots} {height}" preserveAspectRatio="none" role="img" '
        f'aria-label="transfer per 5 minutes today for {_esc(tenant)}">'
        f'<rect class="plot" x="0" y="0" width="{slots}" height="{height}"/>'
        f'<line class="now" x1="{now_x:.3f}" x2="{now_x:.3f}" y1="0" y2="{height}"/>'
        f"{''.join(rects)}</svg>"
        f'<div class="ticks">{"".join(ticks)}</div>'
        f"<figcaption>today, per 5 minutes ({_esc(site.config.timezone.key)}): "
        f"{_esc(summary)}</figcaption></figure>"
    )


_CSS = """
:root { color-scheme: light dark; --fg:#1d2430; --muted:#5d6778; --bg:#f4f6f9; --card:#fff;
  --line:#dde2ea; --ok:#2f9e62; --high:#d98a00; --blocked:#d23b3b; --chart:#3a6fd8; }
@media (prefers-color-scheme: dark) { :root { --fg:#e6e9ef; --muted:#9aa4b5; --bg:#12161d;
  --card:#1b212b; --line:#2c3442; --chart:#6d9bff; } }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px; font: 15px/1.45 system-ui, -apple-system, "Segoe UI",
  Roboto, "DejaVu Sans", sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: 12px 24px;
  margin: 0 auto 20px; max-width: 1100px; }
h1 { font-size: 22px; margin: 0; }
.meta { color: var(--muted); font-size: 13px; }
.store { font-size: 13px; padding: 2px 10px; border-radius: 999px; font-weight: 600; }
.store.ok { background: color-mix(in srgb, var(--ok) 18%, transparent); color: var(--ok); }
.store.degraded { background: color-mix(in srgb, var(--high) 20%, transparent);
  color: var(--high); }
main { display: grid; gap: 16px; max-width: 1100px; margin: 0 auto; }
.tenant { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  padding: 16px 20px; }
.tenant h2 { font-size: 18px; margin: 0; display: flex; align-items: center; gap: 10px; }
.hosts { color: var(--muted); font-size: 13px; margin: 2px 0 12px; overflow-wrap: anywhere; }
.badge { font-size: 12px; letter-spacing: .04em; padding: 2px 9px; border-radius: 999px;
  font-weight: 700; }
.badge.open { background: color-mix(in srgb, var(--ok) 18%, transparent); color: var(--ok); }
.badge.blocked { background: var(--blocked); color: #fff; }
.meter { position: relative; height: 22px; border-radius: 6px; background: var(--line);
  overflow: hidden; }
.fill { height: 100%; border-radius: 6px 0 0 6px; }
.fill.ok { background: var(--ok); } .fill.high { background: var(--high); }
.fill.blocked { background: var(--blocked); }
.numbers { display: flex; flex-wrap: wrap; justify-content: space-between; gap: 4px 16px;
  margin: 8px 0 0; font-variant-numeric: tabular-nums; }
.numbers strong { font-size: 16px; }
.grant { margin: 4px 0 0; color: var(--muted); font-size: 13px; }
.chart { margin: 14px 0 0; }
.chart svg { display: block; width: 100%; height: 90px; }
.chart .plot { fill: color-mix(in srgb, var(--line) 45%, transparent); }
.chart .bucket { fill: var(--chart); }
.chart .now { stroke: var(--muted); stroke-width: 1; vector-effect: non-scaling-stroke;
  stroke-dasharray: 3 3; }
.ticks { display: flex; justify-content: space-between; color: var(--muted); font-size: 12px;
  font-variant-numeric: tabular-nums; }
figcaption { color: var(--muted); font-size: 12px; margin-top: 2px; }
.nochart { color: var(--muted); font-size: 13px; }
footer { max-width: 1100px; margin: 20px auto 0; color: var(--muted); font-size: 12px; }
"""

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{refresh}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>governor status</title>
<style>{css}</style>
</head>
<body>
<header>
<h1>governor status</h1>
<span class="store {store_class}" id="store">{store}</span>
<span class="meta">{count} tenant{plural} · as of {generated} UTC</span>
</header>
<main>
{cards}
</main>
<footer>Refreshes every {refresh} s. Bars show today's transfer against each tenant's cap
(the daily cap plus today's grants); the chart shows today's transfer per 5 minutes.</footer>
</body>
</html>
"""

_CARD = """<section class="tenant" data-tenant="{name}" data-state="{state}" \
data-used-bytes="{used_bytes}" data-cap-bytes="{cap_bytes}">
<h2><span class="name">{name}</span><span class="badge {state}">{state_label}</span></h2>
<p class="hosts">{hosts}</p>
<div class="meter" role="meter" aria-valuemin="0" aria-valuemax="{cap_bytes}" \
aria-valuenow="{used_bytes}"><div class="fill {level}" style="width: {width}%"></div></div>
<div class="numbers"><span><strong class="used">{used}</strong> of <span class="cap">{cap}</span>
(<span class="pct">{pct}%</span>)</span>
<span class="reset">resets in <strong>{reset_in}</strong> at \
<time datetime="{reset_iso}">{reset_local}</time></span></div>
{grant}
{chart}
</section>"""
