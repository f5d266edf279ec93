"""The top-up link on a real notice, in Korean, English and JSON."""

from __future__ import annotations

import json

from tests.functional.conftest import GovernorFactory
from tests.support import RawClient, request

URL = "https://panel.example/buy?site=usmle-korea"


async def test_the_notice_links_to_where_allowance_is_bought(
    make_governor: GovernorFactory,
) -> None:
    gov = await make_governor(cap="2 KiB", tenant={"notice": {"topup_url": URL}})
    client = await RawClient.connect(gov.port)
    await client.send(request("GET", "/bytes/3000", "site.test"))
    assert (await client.response()).status == 200
    seen = {}
    for name, header in (
        ("ko", "Accept-Language: ko-KR,ko;q=0.9"),
        ("en", "Accept-Language: en"),
        ("json", "Accept: application/json"),
    ):
        await client.send(request("GET", "/", "site.test", header))
        resp = await client.response()
        assert resp.status == 503
        seen[name] = resp.body.decode()
    await client.close()
    link = 'href="https://panel.example/buy?site=usmle-korea"'
    assert link in seen["ko"]
    assert "여기에서 전송 허용량을 추가할 수 있습니다" in seen["ko"]
    assert link in seen["en"]
    assert "add allowance here" in seen["en"]
    assert json.loads(seen["json"])["topup_url"] == URL
