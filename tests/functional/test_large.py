"""Large first: from ``large.from`` of the cap on, responses above ``large.size`` get the
"large" notice (or, without a declared length, are cut once they pass it), and pages go
on. Over real sockets, counted against what the raw client received."""

from __future__ import annotations

from governor.process.instance import Governor
from tests.functional.conftest import GovernorFactory
from tests.functional.test_metering import used
from tests.functional.upstream_app import Seen, pattern
from tests.support import RawClient, request

KiB = 1024
LARGE = {"large": {"size": "100 KiB", "from": "50%"}}


async def fetch(gov: Governor, path: str, *headers: str) -> tuple[int, bytes, int, str | None]:
    """(status, body, bytes the client received, Retry-After) of one GET."""
    client = await RawClient.connect(gov.port)
    try:
        await client.send(request("GET", path, "site.test", *headers))
        resp = await client.response()
    finally:
        await client.close()
    return resp.status, resp.body, resp.received, resp.header("Retry-After")


async def test_large_files_go_first_and_pages_go_on(
    make_governor: GovernorFactory, seen: Seen
) -> None:
    gov = await make_governor(cap="1 MiB", tenant=LARGE)
    total = 0
    for size in (200_000, 400_000):  # large, but before 50% of the cap: served
        status, body, received, _ = await fetch(gov, f"/bytes/{size}")
        assert (status, body) == (200, pattern(size))
        total += received
    assert used(gov) == total > 2**20 // 2
    hits = seen.hits
    status, body, _, retry_after = await fetch(
        gov, "/bytes/200000", "Accept-Language: ko-KR,ko;q=0.9"
    )
    assert status == 503
    assert "큰 파일은 잠시 내려받을 수 없습니다" in body.decode()
    assert retry_after is not None
    assert int(retry_after) > 0
    assert seen.hits == hits + 1
    assert used(gov) == total  # the notice is not charged
    status, body, received, _ = await fetch(gov, "/bytes/50000")  # a page: served
    assert (status, body) == (200, pattern(50_000))
    assert used(gov) == total + received


async def test_a_response_of_undeclared_length_is_cut_once_it_passes_large_size(
    make_governor: GovernorFactory,
) -> None:
    gov = await make_governor(cap="1 MiB", tenant=LARGE)
    status, _, total, _ = await fetch(gov, "/bytes/600000")  # to past 50%
    assert status == 200
    client = await RawClient.connect(gov.port)
    await client.send(request("GET", "/chunked/300000", "site.test"))
    resp = await client.response()
    await client.read_to_eof()
    await client.close()
    assert resp.status == 200
    assert not resp.complete  # cut: the connection closed partway
    assert used(gov) == total + client.received
    # What passed: large.size of body, its head and its chunks' framing, no more.
    assert 100 * KiB < client.received < 100 * KiB + 1000
