"""The /status page: its HTML over a real socket, and what a real browser renders of it.

The browser tests run headless Chromium (Debian package ``chromium``) against an
in-process governor whose fake clock lays today's traffic out over several 5-minute
buckets. They read the rendered layout through the DevTools protocol (the bars'
widths against the meters, the chart's bars and their heights), take a screenshot,
and check that the page refreshes by itself. Without Chromium they are skipped.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from governor.accounts.flusher import Flusher
from governor.accounts.runtime import Runtime
from governor.admin.api import STATUS_REFRESH_SECONDS, create_admin_app
from governor.config import load_config
from governor.core.ledger import Batch
from governor.observe.metrics import Metrics
from governor.process.instance import Governor
from governor.store.memory import MemoryStore
from tests.functional.chromium import browser, dump_dom, needs_chromium
from tests.functional.conftest import GovernorFactory
from tests.functional.upstream_app import Seen
from tests.support import FakeClock, RawClient, free_port, request, seoul, write_config

TOKEN = "status-page-token-0123456789"


async def fetch(port: int, path: str, host: str) -> int:
    client = await RawClient.connect(port)
    await client.send(request("GET", path, host))
    resp = await client.response()
    await client.close()
    return resp.status


# -- the HTML, without a browser --------------------------------------------------------------


async def test_the_page_is_self_contained_and_open_without_the_token(
    make_governor: GovernorFactory, tmp_path: Path, seen: Seen
) -> None:
    (tmp_path / "token").write_text(TOKEN)
    gov = await make_governor(
        cap="100 KiB", admin_listen=f"127.0.0.1:{free_port()}", admin_token_file="token"
    )
    assert await fetch(gov.port, "/bytes/30000", "site.test") == 200
    await gov.flusher.flush()
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{gov.admin_port}/status") as resp,
    ):
        assert resp.status == 200
        assert resp.content_type == "text/html"
        assert resp.charset == "utf-8"
        assert resp.headers["Cache-Control"] == "no-store"
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
        page = await resp.text()
    assert f'<meta http-equiv="refresh" content="{STATUS_REFRESH_SECONDS}">' in page
    # No external assets of any kind, and no script at all.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<script" not in page
    assert "<link" not in page
    assert 'data-tenant="site"' in page
    assert "29.4 KiB" in page  # 30000 bytes and headers, for people
    assert 'of <span class="cap">100.0 KiB</span>' in page
    assert "resets in <strong>12 h 00 min</strong>" in page
    assert 'class="bucket"' in page


async def test_every_tenant_string_is_escaped(
    tmp_path: Path, upstream_url: str, clock: FakeClock, aiohttp_client: Any
) -> None:
    evil = "<script>alert('x')</script>&\"q\""
    config = load_config(write_config(tmp_path, upstream=upstream_url))
    tenant = dataclasses.replace(
        config.tenants[0], name=evil, hosts=('"><img src=x onerror=alert(1)>',)
    )
    config = dataclasses.replace(config, tenants=(tenant,))
    store = MemoryStore(clock=clock)
    await store.open()
    key = (evil, "2024-02-21")
    await store.flush(Batch("f1", {key: 4096}, at=clock()), [key])
    runtime = Runtime(config, store=store, clock=clock)
    await Flusher(runtime).flush()
    app = create_admin_app(runtime, metrics=Metrics(runtime), ready=lambda: True)
    client = await aiohttp_client(app)
    resp = await client.get("/status")
    page = await resp.text()
    assert resp.status == 200
    assert "<script>" not in page
    assert "<img" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;&quot;q&quot;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert 'data-bytes="4096"' in page
    resp = await client.get("/api/v1/tenants")
    assert (await resp.json())["tenants"][0]["tenant"] == evil


# -- in a real browser -------------------------------------------------------------------------


@dataclass
class Scene:
    gov: Governor
    url: str
    buckets: dict[str, int]  # tenant -> how many 5-minute buckets it has today
    clock: FakeClock


@pytest.fixture
async def scene(
    tmp_path: Path, upstream_url: str, clock: FakeClock, seen: Seen
) -> AsyncIterator[Scene]:
    """Three tenants: site blocked, blog at about a quarter, idle at zero; traffic
    spread over today's morning, one flush per moment so each lands in its own bucket."""
    (tmp_path / "token").write_text(TOKEN)
    path = write_config(
        tmp_path,
        upstream=upstream_url,
        cap="100 KiB",
        admin_listen=f"127.0.0.1:{free_port()}",
        admin_token_file="token",
        flush_interval="10s",  # the test flushes by hand
        others={
            "blog": {"hosts": ["blog.test"], "upstream": upstream_url, "daily_cap": "1 MiB"},
            "idle": {"hosts": ["idle.test"], "upstream": upstream_url, "daily_cap": "1 GiB"},
        },
    )
    gov = Governor(load_config(path), clock=clock)
    await gov.start()
    schedule = [  # (hour, minute, site requests of 20000 bytes, blog requests of 100000)
        (8, 0, 1, 1),
        (9, 5, 2, 0),
        (10, 40, 1, 0),
        (11, 55, 2, 2),
    ]
    try:
        for hour, minute, site, blog in schedule:
            clock.set(seoul(2024, 2, 21, hour, minute))
            for _ in range(site):
                assert await fetch(gov.port, "/bytes/20000", "site.test") == 200
            for _ in range(blog):
                assert await fetch(gov.port, "/bytes/100000", "blog.test") == 200
            await gov.flusher.flush()
        clock.set(seoul(2024, 2, 21, 12, 0))
        await gov.flusher.flush()
        assert await fetch(gov.port, "/bytes/10", "site.test") == 503
        yield Scene(
            gov=gov,
            url=f"http://127.0.0.1:{gov.admin_port}/status",
            buckets={"site": 4, "blog": 2, "idle": 0},
            clock=clock,
        )
    finally:
        await gov.stop()


class _DomReader(HTMLParser):
    """Per tenant section: its state, the meter's fill style, and the chart's bars."""

    def __init__(self) -> None:
        super().__init__()
        self.tenants: dict[str, dict[str, Any]] = {}
        self._current: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        classes = a.get("class", "").split()
        if tag == "section" and "tenant" in classes:
            self._current = {"state": a["data-state"], "bars": [], "fill": None, "text": []}
            self.tenants[a["data-tenant"]] = self._current
        elif self._current is not None and "fill" in classes:
            self._current["fill"] = a.get("style", "")
        elif self._current is not None and tag == "rect" and "bucket" in classes:
            self._current["bars"].append(int(a["data-bytes"]))

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self._current["text"].append(data)


@needs_chromium
async def test_chromium_renders_every_tenant_its_bar_state_and_chart(
    scene: Scene, tmp_path: Path
) -> None:
    dom = await dump_dom(scene.url, tmp_path / "profile")
    reader = _DomReader()
    reader.feed(dom)
    assert list(reader.tenants) == ["site", "blog", "idle"]
    site, blog, idle = (reader.tenants[n] for n in ("site", "blog", "idle"))
    assert site["state"] == "blocked"
    assert "BLOCKED" in "".join(site["text"])
    assert blog["state"] == idle["state"] == "open"
    assert site["fill"] == "width: 100.000%"
    assert idle["fill"] == "width: 0.000%"
    for name, tenant in reader.tenants.items():
        assert len(tenant["bars"]) == scene.buckets[name], name
    assert all(n > 0 for n in site["bars"] + blog["bars"])
    assert "no transfer recorded yet today" in "".join(idle["text"])


CDP_PROBE = """
(async () => {
  if (document.readyState !== "complete") {
    await new Promise((resolve) => addEventListener("load", resolve));
  }
  return [...document.querySelectorAll("section.tenant")].map((s) => {
    const box = (el) => el.getBoundingClientRect();
    const svg = box(s.querySelector("figure.chart svg"));
    return {
      tenant: s.dataset.tenant,
      used: Number(s.dataset.usedBytes),
      cap: Number(s.dataset.capBytes),
      name: s.querySelector(".name").innerText,
      badge: s.querySelector(".badge").innerText,
      badgeColor: getComputedStyle(s.querySelector(".badge")).backgroundColor,
      numbers: s.querySelector(".numbers").innerText,
      meter: box(s.querySelector(".meter")).width,
      fill: box(s.querySelector(".fill")).width,
      svg: { width: svg.width, height: svg.height },
      bars: [...s.querySelectorAll("rect.bucket")].map((r) => ({
        bytes: Number(r.dataset.bytes),
        start: Number(r.dataset.start),
        x: box(r).x - svg.x,
        width: box(r).width,
        height: box(r).height,
      })),
    };
  });
})()
"""


@needs_chromium
async def test_in_chromium_the_bars_are_proportional_and_the_page_refreshes_itself(
    scene: Scene, tmp_path: Path
) -> None:
    async with browser(scene.url, tmp_path / "profile") as page:
        tenants = {t["tenant"]: t for t in await page.evaluate(CDP_PROBE)}
        assert list(tenants) == ["site", "blog", "idle"]
        for name, t in tenants.items():
            assert t["name"] == name
            # The fill is as wide, against its meter, as the usage is against the cap.
            expected = min(1.0, t["used"] / t["cap"])
            assert t["meter"] > 500
            assert abs(t["fill"] / t["meter"] - expected) < 0.005, (name, t)
            # One chart bar per 5-minute bucket, each visible, as tall as its share of
            # the tenant's peak bucket, and placed in time order.
            bars = t["bars"]
            assert len(bars) == scene.buckets[name], name
            if bars:
                peak = max(b["bytes"] for b in bars)
                for b in bars:
                    assert b["width"] >= 2
                    assert abs(b["height"] / t["svg"]["height"] - b["bytes"] / peak) < 0.02
                assert [b["x"] for b in bars] == sorted(b["x"] for b in bars)
                assert bars[-1]["x"] < t["svg"]["width"] / 2  # before noon
        site, blog, idle = tenants["site"], tenants["blog"], tenants["idle"]
        assert site["badge"] == "BLOCKED"
        assert blog["badge"] == idle["badge"] == "open"
        assert site["badgeColor"] != blog["badgeColor"]
        assert 0.2 < blog["fill"] / blog["meter"] < 0.4
        assert idle["fill"] == 0
        assert "100.0 KiB" in site["numbers"]
        assert "resets in 12 h 00 min" in site["numbers"]
        assert "1.0 MiB" in blog["numbers"]
        # The chart of site spans the day: 08:00 is a third of the way along.
        first = site["bars"][0]
        assert abs(first["x"] / site["svg"]["width"] - 8 / 24) < 0.01

        shot = base64.b64decode((await page.call("Page.captureScreenshot", format="png"))["data"])
        assert shot.startswith(b"\x89PNG\r\n\x1a\n")
        (tmp_path / "status.png").write_bytes(shot)
        if os.environ.get("GOVERNOR_STATUS_SCREENSHOT"):  # to look at it
            Path(os.environ["GOVERNOR_STATUS_SCREENSHOT"]).write_bytes(shot)

        # A grant reopens site; the page shows it after its own refresh.
        usage = await scene.gov.runtime.grant("site", 1024 * 1024)
        assert usage is not None
        assert not usage.blocked
        await page.evaluate("window.__before_refresh = true")
        await page.event("Page.loadEventFired", within=STATUS_REFRESH_SECONDS * 3)
        assert await page.evaluate("window.__before_refresh === undefined")
        tenants = {t["tenant"]: t for t in await page.evaluate(CDP_PROBE)}
        assert tenants["site"]["badge"] == "open"
        assert tenants["site"]["fill"] / tenants["site"]["meter"] < 0.2


# -- many tenants: a summary and a page at a time ----------------------------------------------


async def test_many_tenants_a_summary_the_top_by_share_pages_search_and_one_tenant(
    tmp_path: Path, upstream_url: str, clock: FakeClock, aiohttp_client: Any
) -> None:
    others = {
        f"t{i:03d}": {"hosts": [f"t{i:03d}.test"], "upstream": upstream_url, "daily_cap": 1000}
        for i in range(1, 120)
    }
    config = load_config(write_config(tmp_path, upstream=upstream_url, cap="1000", others=others))
    store = MemoryStore(clock=clock)
    await store.open()
    runtime = Runtime(config, store=store, clock=clock)
    # Three busy tenants (counted here): t050 blocked, t007 at 85%, t100 at 10%; the rest idle.
    for name, nbytes in {"t050": 1000, "t007": 850, "t100": 100}.items():
        runtime.ledger.add((name, "2024-02-21"), nbytes)
    metrics = Metrics(runtime)
    flusher = Flusher(runtime)
    flusher.listeners.append(metrics.flushed)
    await flusher.flush()
    client = await aiohttp_client(create_admin_app(runtime, metrics=metrics, ready=lambda: True))

    async def page(query: str) -> tuple[int, list[str], str]:
        resp = await client.get(f"/status{query}")
        text = await resp.text()
        reader = _DomReader()
        reader.feed(text)
        return resp.status, list(reader.tenants), text

    status, shown, text = await page("")
    assert status == 200
    assert len(shown) == 50  # never one card per configured tenant
    assert shown[:3] == ["t050", "t007", "t100"]  # the top by share of cap first
    assert shown[3:6] == ["site", "t001", "t002"]  # then the idle ones, in config order
    assert '<span data-count="configured">120</span>' in text
    assert '<span data-count="active">3</span>' in text
    assert '<span data-count="blocked">1</span>' in text
    assert '<span data-count="near">1</span>' in text
    assert 'href="/status?page=2"' in text

    _, second, text = await page("?page=2")
    assert len(second) == 50
    assert not set(second) & set(shown)
    _, third, text = await page("?page=3")
    assert len(third) == 20  # 120 in all, each once
    assert set(shown) | set(second) | set(third) == {"site", *others}
    assert 'rel="next"' not in text

    _, found, text = await page("?q=T11")  # any case
    assert found == [f"t11{i}" for i in range(10)]
    _, one, _ = await page("?tenant=t007")
    assert one == ["t007"]
    status, none, text = await page("?tenant=nope")
    assert (status, none) == (404, [])
    assert "no tenant nope" in text


async def test_the_tenants_api_pages_with_limit_and_after(
    tmp_path: Path, upstream_url: str, clock: FakeClock, aiohttp_client: Any
) -> None:
    others = {
        f"t{i}": {"hosts": [f"t{i}.test"], "upstream": upstream_url, "daily_cap": 1000}
        for i in range(1, 5)
    }
    config = load_config(write_config(tmp_path, upstream=upstream_url, others=others))
    store = MemoryStore(clock=clock)
    await store.open()
    runtime = Runtime(config, store=store, clock=clock)
    client = await aiohttp_client(
        create_admin_app(runtime, metrics=Metrics(runtime), ready=lambda: True)
    )
    whole = await (await client.get("/api/v1/tenants")).json()
    assert [row["tenant"] for row in whole["tenants"]] == ["site", "t1", "t2", "t3", "t4"]
    assert "next" not in whole
    names: list[str] = []
    query = "?limit=2"
    while True:
        doc = await (await client.get(f"/api/v1/tenants{query}")).json()
        names += [row["tenant"] for row in doc["tenants"]]
        if "next" not in doc:
            break
        query = f"?limit=2&after={doc['next']}"
    assert names == ["site", "t1", "t2", "t3", "t4"]
    for bad in ("?limit=0", "?limit=many", "?limit=501", "?after=nope"):
        resp = await client.get(f"/api/v1/tenants{bad}")
        assert resp.status == 400, bad
        assert (await resp.json())["field"] in {"limit", "after"}


async def test_a_card_says_what_its_tenant_refused_this_period(
    make_governor: GovernorFactory,
) -> None:
    tenant = {"large": {"size": "10 KiB", "from": "0%"}, "crawlers": {"share": "1%"}}
    gov = await make_governor(cap="1 MiB", tenant=tenant, admin_listen=f"127.0.0.1:{free_port()}")
    for _ in range(2):
        assert await fetch(gov.port, "/bytes/20000", "site.test") == 503  # large: paused
    assert await fetch(gov.port, "/bytes/100", "site.test") == 200
    url = f"http://127.0.0.1:{gov.admin_port}/status"
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as resp:
            page = await resp.text()
        assert "This period (this process): 2 large files paused</p>" in page
        client = await RawClient.connect(gov.port)
        await client.send(request("GET", "/bytes/20000", "site.test", "User-Agent: GPTBot/1.2"))
        assert (await client.response()).status == 503  # a crawler: from large.from, none
        await client.close()
        async with session.get(url) as resp:
            page = await resp.text()
    assert "2 large files paused, 1 crawlers paused</p>" in page
