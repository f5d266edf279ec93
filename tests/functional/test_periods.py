"""Weekly and monthly periods over real sockets and an injected clock: the period's key in
the ledger, the notice's words and Retry-After, the roll-over at the start of a month in the
tenant's zone (a month with a DST change), and a daily cap as a guard within a month."""

from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

from governor.process.instance import Governor
from tests.functional.conftest import GovernorFactory
from tests.support import FakeClock, RawClient, request

NEW_YORK = ZoneInfo("America/New_York")


def ny(y: int, m: int, d: int, hh: int = 0, mm: int = 0, ss: int = 0) -> dt.datetime:
    return dt.datetime(y, m, d, hh, mm, ss, tzinfo=NEW_YORK)


async def get(gov: Governor, path: str, *headers: str) -> tuple[int, str, str | None]:
    client = await RawClient.connect(gov.port)
    await client.send(request("GET", path, "site.test", *headers))
    resp = await client.response()
    await client.close()
    return resp.status, resp.body.decode("utf-8", "replace"), resp.header("Retry-After")


def key_of(gov: Governor) -> str:
    tenant = gov.runtime.snapshot.tenants["site"]
    return tenant.periods.current(gov.runtime.clock()).key


async def test_a_monthly_tenant_rolls_over_at_the_first_in_its_zone(
    make_governor: GovernorFactory, clock: FakeClock
) -> None:
    clock.set(ny(2024, 3, 31, 23, 0))  # March 2024 in New York: 743 hours (DST on the 10th)
    gov = await make_governor(
        cap="5 KiB",
        tenant={"period": "month", "cap": "5 KiB", "timezone": "America/New_York"},
    )  # daily_cap 5 KiB too: a guard no lower than the cap
    assert key_of(gov) == "2024-03-01"
    status, _, _ = await get(gov, "/bytes/6000")
    assert status == 200
    status, body, retry_after = await get(gov, "/", "Accept-Language: en")
    assert status == 503
    assert "Monthly data limit reached" in body
    assert "Used this month" in body
    assert retry_after == "3600"  # to 2024-04-01 00:00 New York time
    status, body, _ = await get(gov, "/", "Accept-Language: ko")
    assert "월간 데이터 전송 한도에 도달했습니다" in body
    status, body, _ = await get(gov, "/", "Accept: application/json")
    doc = json.loads(body)
    assert (doc["error"], doc["period"]) == ("monthly_transfer_limit_exceeded", "month")
    assert doc["resets_at"] == "2024-04-01T00:00:00-04:00"
    clock.set(ny(2024, 4, 1, 0, 0, 1))
    assert key_of(gov) == "2024-04-01"
    status, _, _ = await get(gov, "/bytes/100")
    assert status == 200  # a new month, a new count
    usage = gov.runtime.usage("site")
    assert usage is not None
    assert (usage.period, usage.resets_at.isoformat()) == (
        "2024-04-01",
        "2024-05-01T00:00:00-04:00",
    )


async def test_a_daily_cap_guards_each_day_of_a_month(
    make_governor: GovernorFactory, clock: FakeClock
) -> None:
    clock.set(ny(2024, 11, 2, 22, 0))  # the day before New York leaves DST (a 25-hour day)
    tenant = {"period": "month", "cap": "1 MiB", "timezone": "America/New_York"}
    gov = await make_governor(cap="4 KiB", tenant=tenant)  # daily_cap 4 KiB: the guard
    status, _, _ = await get(gov, "/bytes/5000")
    assert status == 200
    status, body, retry_after = await get(gov, "/", "Accept-Language: en")
    assert status == 503
    assert "Today&#x27;s data limit reached" in body
    assert retry_after == "7200"  # to midnight, New York time, not to the month's end
    clock.set(ny(2024, 11, 3, 0, 0, 1))  # the next day: open again, the month goes on
    status, _, _ = await get(gov, "/bytes/100")
    assert status == 200
    assert key_of(gov) == "2024-11-01"
    usage = gov.runtime.usage("site")
    assert usage is not None
    assert usage.used_bytes > 5000  # the month's count holds both days
