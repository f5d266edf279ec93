"""The blocked notice as a visitor's browser shows it: the example template and the built-in one.

Two tenants at their cap, one on ``config/notice.html`` and one on the built-in page,
and the "large files paused", "your share is used" (429) and "crawlers paused" notices
of three more, are opened in headless Chromium at a
phone's width with Korean and with English as the browser's language. The page must
carry the visitor's language, hold no comment, wrap Korean between words only, and never
paint a full usage bar green.
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Any

from tests.functional.chromium import browser, needs_chromium, png_pixel
from tests.functional.conftest import GovernorFactory
from tests.support import RawClient, request, write_config

REPO = Path(__file__).resolve().parents[2]

NOTICE_PROBE = r"""
(() => {
  const comments = document.createTreeWalker(document, NodeFilter.SHOW_COMMENT);
  const words = [];
  const texts = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = texts.nextNode(); node; node = texts.nextNode()) {
    for (const m of node.data.matchAll(/\S*[\uac00-\ud7a3]\S*/g)) {
      const range = document.createRange();
      range.setStart(node, m.index);
      range.setEnd(node, m.index + m[0].length);
      const lines = new Set([...range.getClientRects()].map((r) => Math.round(r.top)));
      words.push({ word: m[0], lines: lines.size });
    }
  }
  const bars = [...document.querySelectorAll("meter, progress")].map((bar) => {
    const r = bar.getBoundingClientRect();
    return { tag: bar.tagName, x: r.x + r.width / 2, y: r.y + r.height / 2, width: r.width };
  });
  return {
    lang: document.documentElement.lang,
    comment: comments.nextNode() !== null,
    words,
    bars,
    width: document.documentElement.clientWidth,
  };
})()
"""


async def exhaust(port: int, host: str, refused: int = 503) -> None:
    client = await RawClient.connect(port)
    for status in (200, refused):
        await client.send(request("GET", "/bytes/2000", host))
        assert (await client.response()).status == status
    await client.close()


@needs_chromium
async def test_chromium_shows_each_notice_in_the_visitors_language_and_script(
    make_governor: GovernorFactory, upstream_url: str, tmp_path: Path
) -> None:
    shutil.copy(REPO / "config" / "notice.html", tmp_path / "notice.html")
    gov = await make_governor(
        cap="1 KiB",
        tenant={"hosts": ["127.0.0.1"], "notice": {"template": "notice.html"}},
        others={
            "builtin": {"hosts": ["localhost"], "upstream": upstream_url, "daily_cap": "1 KiB"}
        },
    )
    await exhaust(gov.port, "127.0.0.1")
    await exhaust(gov.port, "localhost")
    (tmp_path / "large").mkdir()
    large = await make_governor(  # large files paused from the start: any file over 1 KiB
        write_config(
            tmp_path / "large",
            upstream=upstream_url,
            tenant={"hosts": ["localhost"], "large": {"size": "1 KiB", "from": "0%"}},
        )
    )
    (tmp_path / "visitor").mkdir()
    visitor = await make_governor(  # a visitor's share of 0.1% (about 1 KiB): one page uses it
        write_config(
            tmp_path / "visitor",
            upstream=upstream_url,
            cap="1 MiB",
            tenant={"hosts": ["localhost"], "client_share": "0.1%"},
        )
    )
    await exhaust(visitor.port, "localhost", refused=429)
    (tmp_path / "crawler").mkdir()
    crawler = await make_governor(  # headless Chromium is a crawler here, with no budget
        write_config(
            tmp_path / "crawler",
            upstream=upstream_url,
            tenant={"hosts": ["localhost"], "crawlers": {"share": "0%", "agents": ["Headless"]}},
        )
    )
    pages = {
        "example": f"http://127.0.0.1:{gov.port}/",
        "builtin": f"http://localhost:{gov.port}/",
        "large": f"http://localhost:{large.port}/bytes/5000",
        "visitor": f"http://localhost:{visitor.port}/bytes/100",
        "crawler": f"http://localhost:{crawler.port}/bytes/100",
    }
    seen: dict[tuple[str, str], Any] = {}
    async with browser("about:blank", tmp_path / "profile") as page:
        await page.call(  # a phone's width
            "Emulation.setDeviceMetricsOverride",
            width=360,
            height=800,
            deviceScaleFactor=1,
            mobile=False,
        )
        user_agent = (await page.call("Browser.getVersion"))["userAgent"]
        for lang, accept in (("ko", "ko-KR,ko;q=0.9,en;q=0.5"), ("en", "en-US,en;q=0.9")):
            await page.call(
                "Emulation.setUserAgentOverride", userAgent=user_agent, acceptLanguage=accept
            )
            for which, url in pages.items():
                await page.load("Page.navigate", url=url)
                probe = await page.evaluate(NOTICE_PROBE)
                for bar in probe["bars"]:  # the colour the bar is painted, from a screenshot
                    clip = {"x": bar["x"] - 1, "y": bar["y"] - 1, "width": 2, "height": 2}
                    shot = await page.call(
                        "Page.captureScreenshot", format="png", clip={**clip, "scale": 1}
                    )
                    bar["rgb"] = png_pixel(base64.b64decode(shot["data"]), 0, 0)
                seen[which, lang] = probe

    for (which, lang), probe in seen.items():
        where = f"{which} notice in {lang}"
        assert probe["width"] <= 360, where
        assert probe["lang"] == lang, where
        assert not probe["comment"], f"{where}: an HTML comment reached the visitor"
        korean = probe["words"]
        assert korean or (which != "example" and lang == "en"), where
        broken = [w["word"] for w in korean if w["lines"] != 1]
        assert not broken, f"{where}: Korean words broken across lines: {broken}"
        for bar in probe["bars"]:
            assert bar["width"] > 100, where
            r, g, b = bar["rgb"]
            assert not (g > r + 40 and g > b + 40), f"{where}: a green {bar['tag']} at the cap"
    assert seen["example", "ko"]["bars"], "the example shows its usage bar"
    assert {"큰", "파일은"} <= {w["word"] for w in seen["large", "ko"]["words"]}
    assert {"전송량을", "사용하셨습니다"} <= {w["word"] for w in seen["visitor", "ko"]["words"]}
    assert "크롤러와" in {w["word"] for w in seen["crawler", "ko"]["words"]}
