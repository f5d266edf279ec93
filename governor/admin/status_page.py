"""The status page: an HTML page for people: a summary, then a page of tenant cards with charts.

Everything it shows comes from the runtime (usage) and the store (buckets); the page's
HTML and CSS are package data under ``governor/admin/static/``, read once at import.
Every value put into the page is escaped here, and the page loads nothing from anywhere
(its Content-Security-Policy says so).
"""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
import html
import itertools
import math
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from typing import Final

from aiohttp import hdrs, web

from governor.accounts.runtime import Runtime, Snapshot, Tenant, TenantUsage
from governor.config import TenantConfig
from governor.core.top import DIMENSIONS
from governor.errors import StoreError
from governor.observe.activity import Activity
from governor.observe.forecast import forecast_line
from governor.observe.refusals import REFUSED, Refusals
from governor.sizes import format_size
from governor.store.base import BUCKET_SECONDS, TopRow

STATUS_REFRESH_SECONDS: Final = 5
"""How often the status page reloads itself."""

_STATIC: Final = resources.files("governor.admin") / "static"
_CSS: Final = (_STATIC / "status.css").read_text(encoding="utf-8")
_PAGE: Final = (_STATIC / "status.html").read_text(encoding="utf-8")
_CARD: Final = (_STATIC / "card.html").read_text(encoding="utf-8").removesuffix("\n")


TOP_SHOWN: Final = 5  # items per top list on a tenant's own page

PAGE_SIZE: Final = 50
"""Tenants per page of the status page (the top ``PAGE_SIZE`` by share of cap come first)."""


class Names:
    """A config's tenant names, for search and cursors: built once per config, in a thread.

    Search scans one lower-cased string of every name in C (``str.find``), so a query
    over 100,000 names costs a few milliseconds and a Python step per match shown only.
    Building it costs the config (15 ms at 100,000 tenants): :meth:`ready` does it in a
    worker thread, once per config, before the first use.
    """

    def __init__(self) -> None:
        self._of: tuple[object, ...] | None = None  # the config's tenants this is built for
        self._names: list[str] = []
        self._lower = ""
        self._starts: list[int] = []  # offset of each name in _lower
        self._position: dict[str, int] = {}

    async def ready(self, snap: Snapshot) -> None:
        """Built for ``snap``'s config (in a worker thread when it is not yet)."""
        if self._of is not snap.config.tenants:
            await asyncio.to_thread(self._build, snap.config.tenants)

    def _build(self, tenants: tuple[TenantConfig, ...]) -> None:
        names = [t.name for t in tenants]
        lower = "\n".join(names).lower() + "\n"
        starts = list(itertools.accumulate((len(n) + 1 for n in names), initial=0))
        position = {n: i for i, n in enumerate(names)}
        # Swapped in together, last the config they were built for.
        self._names, self._lower, self._starts, self._position = names, lower, starts, position
        self._of = tenants

    def names(self, snap: Snapshot) -> list[str]:
        """Every tenant's name, in config order (after :meth:`ready`)."""
        self._check(snap)
        return self._names

    def position(self, snap: Snapshot, name: str) -> int | None:
        """Where ``name`` is in config order, or None (after :meth:`ready`)."""
        self._check(snap)
        return self._position.get(name)

    def _check(self, snap: Snapshot) -> None:
        if self._of is not snap.config.tenants:
            raise RuntimeError("Names used before ready() for this config")

    def search(self, snap: Snapshot, query: str, start: int, stop: int) -> tuple[list[str], int]:
        """Names ``[start, stop)`` among those containing ``query`` (any case), and about
        how many there are (occurrences of the text: a name holding it twice counts twice).
        After :meth:`ready`."""
        self._check(snap)
        text, q = self._lower, query.lower()
        if not q or "\n" in q:
            return [], 0
        found: list[str] = []
        at, seen = 0, 0
        while len(found) < stop - start:
            hit = text.find(q, at)
            if hit < 0:
                break
            i = bisect.bisect_right(self._starts, hit) - 1
            if seen >= start:
                found.append(self._names[i])
            seen += 1
            at = self._starts[i + 1]  # the next name: one match per name
        return found, text.count(q)


class StatusPage:
    """``GET /status``: the handler, sharing the runtime and the activity of this process.

    Never one card per configured tenant: a summary (tenants configured, active, blocked,
    near their cap), then one page of :data:`PAGE_SIZE` cards: by default the tenants with
    the highest share of their cap (``?page=`` for the next ones; idle tenants follow in
    config order), or the names containing ``?q=``, or one tenant (``?tenant=NAME``).
    What a render costs follows what it shows, not the config.
    """

    def __init__(
        self,
        runtime: Runtime,
        activity: Activity | None = None,
        names: Names | None = None,
        refusals: Refusals | None = None,
        forecast: Callable[[str, str], float | None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.activity = activity if activity is not None else Activity()
        self.names = names if names is not None else Names()
        self.refusals = refusals
        self.forecast = forecast  # (tenant, period) -> when its allowance runs out, or None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``GET /status``: the summary and one page of cards, from this process's accounts."""
        runtime = self.runtime
        snap = runtime.snapshot
        now = runtime.clock()
        query = request.query
        page = _page_number(query.get("page"))
        start, stop = (page - 1) * PAGE_SIZE, page * PAGE_SIZE
        q = query.get("q", "").strip()
        more = False
        status = 200
        if "tenant" in query:
            name = query["tenant"]
            picked = [name] if name in snap.tenants else []
            view = f"tenant {_esc(name)}" if picked else f"no tenant {_esc(name)!s} is configured"
            status = 200 if picked else 404
        elif q:
            await self.names.ready(snap)
            picked, total = self.names.search(snap, q, start, stop + 1)
            more = len(picked) > PAGE_SIZE
            picked = picked[:PAGE_SIZE]
            view = f"tenants whose name holds {_esc(q)!s} (about {total}), page {page}"
        else:
            await self.names.ready(snap)
            picked = self._ranked(snap, start, stop + 1)
            more = len(picked) > PAGE_SIZE
            picked = picked[:PAGE_SIZE]
            view = (
                f"the top {PAGE_SIZE} tenants by share of their cap"
                if page == 1
                else f"tenants by share of their cap, page {page}"
            )
        shown: list[tuple[Tenant, TenantUsage]] = []
        for name in picked:
            usage = runtime.usage(name)
            tenant = snap.tenants.get(name)
            if usage is not None and tenant is not None:
                shown.append((tenant, usage))
        charts = await asyncio.gather(
            *(self._buckets(usage.tenant, usage.period) for _, usage in shown)
        )
        cards = [
            _tenant_card(tenant, usage, buckets, now, self.refusals, self._forecast(usage))
            for (tenant, usage), buckets in zip(shown, charts, strict=True)
        ]
        if "tenant" in query and shown:  # one tenant: what used its allowance, too
            cards.append(await self._top(shown[0][1]))
        for i, (_, usage) in enumerate(shown):  # shadow mode at the cap: since when
            if usage.would_block:
                since = await runtime.would_block_since(usage)
                cards[i] = cards[i].replace("{since}", _esc(_since(since)))
        activity = self.activity
        text = _PAGE.format(
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
            configured=len(snap.tenants),
            active=activity.active,
            blocked=activity.blocked,
            near=activity.near,
            q=_esc(q),
            view=view,
            cards="\n".join(cards),
            pages=_pages(page, more, q if "tenant" not in query else None),
        )
        return web.Response(
            text=text,
            status=status,
            content_type="text/html",
            charset="utf-8",
            headers={
                hdrs.CACHE_CONTROL: "no-store",
                "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
            },
        )

    def _ranked(self, snap: Snapshot, start: int, stop: int) -> list[str]:
        """Names ``[start, stop)`` by share of cap: the active first, then the idle in
        config order (skipping the active ones: the cost follows the page's depth)."""
        activity = self.activity
        names = [u.tenant for u in activity.ranked(start, stop) if u.tenant in snap.tenants]
        if len(names) < stop - start:
            skip = max(0, start - activity.active)

            def idle(name: str) -> bool:
                entry = activity.get(name)
                return entry is None or not entry.active

            rest = filter(idle, self.names.names(snap))
            names.extend(itertools.islice(rest, skip, skip + stop - start - len(names)))
        return names

    def _forecast(self, usage: TenantUsage) -> str:
        """``<p class="forecast">At this rate it runs out at 17:04 KST, ...</p>``, or nothing."""
        at = None if self.forecast is None else self.forecast(usage.tenant, usage.period)
        if at is None or usage.blocked:
            return ""
        if math.isinf(at):
            return '<p class="forecast">At this rate it lasts until the reset.</p>'
        line = forecast_line(at, usage.resets_at)
        return f'<p class="forecast">{_esc(line[0].upper() + line[1:])}.</p>'

    async def _top(self, usage: TenantUsage) -> str:
        """The tenant's top five by visitor, path, User-Agent and referrer, this period."""
        try:
            lists = [
                (d, await self.runtime.store.top(usage.tenant, usage.period, d, TOP_SHOWN))
                for d in DIMENSIONS
            ]
        except StoreError:
            return '<section class="top"><p>Top consumers: the store did not answer.</p></section>'
        return _top_section(lists, usage.used_bytes)

    async def _buckets(self, tenant: str, period: str) -> dict[int, int] | None:
        try:
            return await self.runtime.store.buckets(tenant, period)
        except StoreError:
            return None


def _page_number(raw: str | None) -> int:
    try:
        return max(1, min(int(raw or "1"), 1_000_000))
    except ValueError:
        return 1


def _pages(page: int, more: bool, q: str | None) -> str:
    """Links to the previous and next page (and back to the top), keeping the search."""
    if q is None:
        return '<a href="/status">all tenants</a>'
    search = f"q={urllib.parse.quote(q)}&amp;" if q else ""
    links = []
    if page > 1:
        links.append(f'<a rel="prev" href="/status?{search}page={page - 1}">previous</a>')
    if more:
        links.append(f'<a rel="next" href="/status?{search}page={page + 1}">next</a>')
    if page > 1 or q:
        links.append('<a href="/status">top</a>')
    return "".join(links)


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


_TOP_TITLES: Final = {
    "client": "Visitors",
    "path": "Paths",
    "agent": "User-Agents",
    "referrer": "Referrers",
}


def _top_section(lists: Sequence[tuple[str, list[TopRow]]], total: int) -> str:
    """What used the allowance this period, a short table per dimension."""
    parts = ['<section class="top"><h3>What used the allowance this period</h3>']
    for dimension, rows in lists:
        parts.append(f'<table data-by="{dimension}"><caption>{_TOP_TITLES[dimension]}</caption>')
        if not rows:
            parts.append('<tr><td colspan="3">nothing recorded yet</td></tr>')
        for item, nbytes, requests in rows:
            parts.append(
                f"<tr><td>{_esc(item)}</td><td>{_esc(format_size(nbytes))} "
                f"({_pct(nbytes, total):.1f}%)</td><td>{requests:,} req</td></tr>"
            )
        parts.append("</table>")
    parts.append("</section>")
    return "".join(parts)


def _since(when: dt.datetime | None) -> str:
    """``since 17:05 KST`` (to the 5-minute bucket), or ``now`` when it is not known."""
    if when is None:
        return "now"
    return f"since {when:%H:%M} {when.tzname() or ''}".rstrip()


def _refused(counts: Mapping[str, int]) -> str:
    """``<p class="refused">This period: 12 large files paused, ...</p>``, or nothing."""
    if not counts:
        return ""
    parts = [f"{counts[o]:,} {REFUSED[o]}" for o in REFUSED if counts.get(o)]
    return f'<p class="refused">This period (this process): {_esc(", ".join(parts))}</p>'


def _tenant_card(
    tenant: Tenant,
    usage: TenantUsage,
    buckets: dict[int, int] | None,
    now: float,
    refusals: Refusals | None = None,
    forecast: str = "",
) -> str:
    tz = tenant.config.timezone
    pct = _pct(usage.used_bytes, usage.cap_bytes)
    width = min(100.0, pct)
    level = "blocked" if usage.blocked else "high" if pct >= 80 else "ok"
    state = "blocked" if usage.blocked else "shadow" if usage.would_block else "open"
    shadow = ""
    if not usage.enforced:
        shadow = (
            '<p class="shadow">Shadow mode (enforce: false): would be blocked {since}; '
            "nothing is refused.</p>"
            if usage.would_block
            else '<p class="shadow">Shadow mode (enforce: false): counted and reported, '
            "never refused.</p>"
        )
    resets = usage.resets_at.astimezone(tz)
    grant = (
        f'<p class="grant">includes {_esc(format_size(usage.granted_bytes))} granted for today '
        f"(daily cap {_esc(format_size(usage.daily_cap_bytes))})</p>"
        if usage.granted_bytes
        else ""
    )
    hosts = ", ".join(tenant.config.hosts)
    period = tenant.periods.current(now)
    refused = "" if refusals is None else _refused(refusals.of(usage.tenant, period.key))
    return _CARD.format(
        name=_esc(usage.tenant),
        state=state,
        state_label="BLOCKED" if usage.blocked else "WOULD BLOCK" if usage.would_block else "open",
        hosts=_esc(hosts),
        used_bytes=usage.used_bytes,
        cap_bytes=usage.cap_bytes,
        level=level,
        width=f"{width:.3f}",
        used=_esc(format_size(usage.used_bytes)),
        cap=_esc(format_size(usage.cap_bytes)),
        pct=f"{pct:.1f}",
        grant=grant,
        refused=refused,
        forecast=forecast,
        shadow=shadow,
        reset_in=_esc(_duration(usage.resets_at.timestamp() - now)),
        reset_iso=_esc(usage.resets_at.isoformat()),
        reset_local=_esc(resets.strftime("%Y-%m-%d %H:%M ") + (resets.tzname() or "")),
        chart=_chart(usage.tenant, period.start, period.end, buckets, now, tenant),
    )


# A chart's bar per this many seconds, and what a bar's time looks like, by period.
_STEPS: Final = {"day": (BUCKET_SECONDS, "%H:%M", "5 minutes"), "week": (3600, "%a %H:%M", "hour"),
          "month": (86400, "%m-%d", "day")}  # fmt: skip
_WHEN: Final = {"day": "today", "week": "this week", "month": "this month"}


def _chart(
    name: str,
    start: float,
    end: float,
    buckets: dict[int, int] | None,
    now: float,
    tenant: Tenant,
) -> str:
    """The period's transfer as an inline SVG bar per non-empty step: 5 minutes of a day,
    an hour of a week, a day of a month (the store keeps 5-minute buckets; they add up)."""
    if buckets is None:
        return '<p class="nochart">chart unavailable: the store did not answer</p>'
    tz = tenant.config.timezone
    kind = tenant.config.period
    step, fmt, per = _STEPS[kind]
    slots = max(1, math.ceil((end - start) / step))
    height = 100
    in_period: dict[int, int] = {}
    for b, n in buckets.items():
        if start - BUCKET_SECONDS < b < end and n > 0:
            slot = max(0, int((b - start) // step))
            in_period[slot] = in_period.get(slot, 0) + n
    peak = max(in_period.values(), default=0)
    total = sum(in_period.values())
    rects = []
    for slot, n in sorted(in_period.items()):
        first = start + slot * step
        h = max(1.0, height * n / peak)
        t0 = dt.datetime.fromtimestamp(first, tz).strftime(fmt)
        t1 = dt.datetime.fromtimestamp(first + step, tz).strftime(fmt)
        rects.append(
            f'<rect class="bucket" data-start="{int(first)}" data-bytes="{n}" '
            f'x="{slot}" y="{height - h:.3f}" width="0.85" height="{h:.3f}">'
            f"<title>{_esc(t0)}&#8211;{_esc(t1)}: {_esc(format_size(n))}</title></rect>"
        )
    now_x = min(slots, max(0.0, (now - start) / step))
    ticks = []
    for i in range(5):
        at = start + (end - start) * i / 4
        label = dt.datetime.fromtimestamp(at, tz).strftime(fmt)
        ticks.append(f"<span>{_esc(label)}</span>")
    when = _WHEN[kind]
    noun = {"5 minutes": "five-minute bucket", "hour": "hour", "day": "day"}[per]
    summary = (
        f"{len(in_period)} {noun}{'' if len(in_period) == 1 else 's'}, "
        f"peak {format_size(peak)}, "
        f"{format_size(total)} in all"
        if in_period
        else f"no transfer recorded yet {when}"
    )
    return (
        f'<figure class="chart" data-tenant="{_esc(name)}" data-buckets="{len(in_period)}">'
        f'<svg viewBox="0 0 {slots} {height}" preserveAspectRatio="none" role="img" '
        f'aria-label="transfer per {per} {when} for {_esc(name)}">'
        f'<rect class="plot" x="0" y="0" width="{slots}" height="{height}"/>'
        f'<line class="now" x1="{now_x:.3f}" x2="{now_x:.3f}" y1="0" y2="{height}"/>'
        f"{''.join(rects)}</svg>"
        f'<div class="ticks">{"".join(ticks)}</div>'
        f"<figcaption>{when}, per {per} ({_esc(tenant.config.timezone.key)}): "
        f"{_esc(summary)}</figcaption></figure>"
    )
