"""The status page: an HTML page for people, one card per tenant with today's chart.

Everything it shows comes from the runtime (usage) and the store (buckets); the page's
HTML and CSS are package data under ``governor/admin/static/``, read once at import.
Every value put into the page is escaped here, and the page loads nothing from anywhere
(its Content-Security-Policy says so).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import math
from importlib import resources

from aiohttp import hdrs, web

from governor.accounts.runtime import Runtime, Tenant, TenantUsage
from governor.errors import StoreError
from governor.sizes import format_size
from governor.store.base import BUCKET_SECONDS

STATUS_REFRESH_SECONDS = 5
"""How often the status page reloads itself."""

_STATIC = resources.files("governor.admin") / "static"
_CSS = (_STATIC / "status.css").read_text(encoding="utf-8")
_PAGE = (_STATIC / "status.html").read_text(encoding="utf-8")
_CARD = (_STATIC / "card.html").read_text(encoding="utf-8").removesuffix("\n")


class StatusPage:
    """``GET /status``: the handler, sharing the runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``GET /status``: every tenant's card, read from this process's accounts."""
        runtime = self.runtime
        snap = runtime.snapshot
        now = runtime.clock()
        shown: list[tuple[Tenant, TenantUsage]] = []
        for name, tenant in snap.tenants.items():
            usage = runtime.usage(name)
            if usage is not None:
                shown.append((tenant, usage))
        charts = await asyncio.gather(
            *(self._buckets(usage.tenant, usage.period) for _, usage in shown)
        )
        cards = [
            _tenant_card(tenant, usage, buckets, now)
            for (tenant, usage), buckets in zip(shown, charts, strict=True)
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


def _tenant_card(
    tenant: Tenant, usage: TenantUsage, buckets: dict[int, int] | None, now: float
) -> str:
    tz = tenant.config.timezone
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
    hosts = ", ".join(tenant.config.hosts)
    period = tenant.periods.current(now)
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
        chart=_chart(usage.tenant, period.start, period.end, buckets, now, tenant),
    )


def _chart(
    name: str,
    start: float,
    end: float,
    buckets: dict[int, int] | None,
    now: float,
    tenant: Tenant,
) -> str:
    """Today's transfer in 5-minute buckets: an inline SVG bar per non-empty bucket."""
    if buckets is None:
        return '<p class="nochart">chart unavailable: the store did not answer</p>'
    tz = tenant.config.timezone
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
        f'<figure class="chart" data-tenant="{_esc(name)}" data-buckets="{len(in_period)}">'
        f'<svg viewBox="0 0 {slots} {height}" preserveAspectRatio="none" role="img" '
        f'aria-label="transfer per 5 minutes today for {_esc(name)}">'
        f'<rect class="plot" x="0" y="0" width="{slots}" height="{height}"/>'
        f'<line class="now" x1="{now_x:.3f}" x2="{now_x:.3f}" y1="0" y2="{height}"/>'
        f"{''.join(rects)}</svg>"
        f'<div class="ticks">{"".join(ticks)}</div>'
        f"<figcaption>today, per 5 minutes ({_esc(tenant.config.timezone.key)}): "
        f"{_esc(summary)}</figcaption></figure>"
    )
