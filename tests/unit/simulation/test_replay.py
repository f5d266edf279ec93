"""The replay: the decision code on a virtual clock, as configured and with the cap only."""

from __future__ import annotations

import dataclasses
import datetime as dt
from zoneinfo import ZoneInfo

from governor.config import CrawlerConfig, LargeConfig, PacingConfig, TenantConfig
from governor.simulation.replay import kinds_of, simulate, without_features
from governor.simulation.traffic import Hit
from tests.unit.core.test_policy import tenant as utc_tenant

SEOUL = ZoneInfo("Asia/Seoul")
MIDNIGHT = dt.datetime(2026, 3, 10, tzinfo=SEOUL).timestamp()
CAP = 1_000_000  # tenant()'s daily cap (tests.unit.core.test_policy.CAP)
BOT = "Mozilla/5.0 (compatible; Googlebot/2.1)"


def tenant(**options: object) -> TenantConfig:
    """A 1 MB-a-day tenant in Seoul."""
    return dataclasses.replace(utc_tenant(**options), timezone=SEOUL, daily_cap=CAP)


def day(*streams: list[Hit]) -> list[Hit]:
    return sorted((h for s in streams for h in s), key=lambda h: h.time)


def pages(
    n: int, size: int = 1000, *, client: str = "10.0.0.", agent: str | None = None
) -> list[Hit]:
    """``n`` pages spread over the day, from 100 visitors."""
    step = 86_400 / n
    return [
        Hit(MIDNIGHT + i * step, f"{client}{i % 100}", agent, f"/t/{i}", size) for i in range(n)
    ]


def test_the_cap_only_run_refuses_everything_after_the_cap_and_counts_what_crossed() -> None:
    t = tenant()
    hits = pages(1500)  # 1.5 MB asked of a 1 MB cap
    configured, bare = simulate(t, hits)
    assert bare.served == CAP  # 1000 pages of 1000 bytes: exactly the cap
    assert sum(c.refused for c in bare.categories.values()) == 500
    assert bare.capped_at is not None
    assert bare.capped_at == MIDNIGHT + 999 * 86_400 / 1500  # at the 1000th page
    assert len(bare.categories["pages"].minutes) > 400  # dark from 16:00 on
    assert configured.served == bare.served  # no feature set: the same run


def test_a_scraper_and_a_crawler_are_held_to_their_shares_and_pages_stay_up() -> None:
    t = tenant(
        client_share=0.1,
        crawlers=CrawlerConfig(0.2),
        large=LargeConfig(50_000, 0.7),
    )
    scraper = [Hit(MIDNIGHT + 3600 + i, "10.9.9.9", None, f"/f/{i}", 20_000) for i in range(30)]
    crawler = pages(400, 1000, client="10.8.0.", agent=BOT)
    videos = [
        Hit(MIDNIGHT + 50_000 + i * 600, f"10.7.0.{i}", None, "/v", 100_000) for i in range(8)
    ]
    hits = day(pages(500), scraper, crawler, videos)  # 0.5 + 0.6 + 0.4 + 0.8 MB asked
    configured, bare = simulate(t, hits)
    c = configured.categories
    assert len(c["pages"].minutes) == 0
    assert bare.categories["pages"].refused > 0
    assert c["heaviest visitor"].served <= CAP * 0.1
    assert c["heaviest visitor"].reasons.keys() <= {"client_share", "admission"}
    assert c["crawlers"].served <= CAP * 0.2 + 1000
    assert c["large files"].reasons["large"] > 0
    assert configured.served <= CAP


def test_pacing_spreads_a_large_download_over_ticks() -> None:
    t = tenant(pacing=PacingConfig(0.5, 1000), large=LargeConfig(100_000, 0.99))
    first = [Hit(MIDNIGHT + 60, "10.0.0.1", None, "/a", 600_000)]  # to 60%: not paced
    late = [Hit(MIDNIGHT + 86_400 - 200, "10.0.0.2", None, "/b", 300_000)]  # 200 s to go
    configured, bare = simulate(t, day(first, late))
    assert sum(c.paced for c in configured.categories.values()) == 1
    assert configured.served == 900_000  # paced, never refused: all of it, within the cap
    assert without_features(t).pacing is None
    assert bare.categories["large files"].paced == 0


def test_each_hit_has_one_kind_for_every_run() -> None:
    t = tenant()
    hits = day(pages(10), [Hit(MIDNIGHT + 5, "10.5.5.5", None, "/x", 3_000_000)])
    hits.append(Hit(MIDNIGHT + 99_000, "10.1.1.1", BOT, "/y", 10))
    kinds = kinds_of(t, hits)
    assert kinds.count("heaviest visitor") == 1  # the 3 MB visitor
    assert kinds[-1] == "crawlers"  # the built-in agents when crawlers is not set
    assert kinds.count("pages") == 10
