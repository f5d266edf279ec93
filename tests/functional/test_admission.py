"""Admission: a response declaring more bytes than are left of the cap is refused before
its first byte, with the notice; everything else goes on. Over real sockets, counted
against what the raw client received."""

from __future__ import annotations

from pathlib import Path

from governor.process.instance import Governor
from tests.functional.conftest import GovernorFactory
from tests.functional.test_metering import used
from tests.functional.upstream_app import Seen, pattern
from tests.support import RawClient, request, write_config

MiB = 2**20
ON = {"admission": "on"}  # the default; tests/support's configs turn it off for older tests


async def fetch(gov: Governor, method: str, path: str) -> tuple[int, bytes, int, str | None]:
    """(status, body, bytes the client received, Content-Length) of one request."""
    client = await RawClient.connect(gov.port)
    try:
        await client.send(request(method, path, "site.test"))
        resp = await client.response(method=method)
    finally:
        await client.close()
    return resp.status, resp.body, resp.received, resp.header("Content-Length")


async def test_a_download_larger_than_what_is_left_is_refused_before_its_first_byte(
    make_governor: GovernorFactory, seen: Seen
) -> None:
    gov = await make_governor(cap="1 MiB", defaults=ON)
    status, body, received, _ = await fetch(gov, "GET", "/bytes/100000")
    assert status == 200
    assert used(gov) == received  # 100 KB and its head, of 1 MiB
    hits = seen.hits
    status, body, _, _ = await fetch(gov, "GET", f"/bytes/{16 * MiB}")
    assert status == 503
    # A notice for this file, not a byte of it; the site itself is not at its cap.
    assert b"This file is larger than what is left today" in body
    assert b"16.0 MiB" in body
    assert seen.hits == hits + 1  # it was asked for: the refusal is of the response
    assert used(gov) == received  # the notice is not charged, and nothing of the file
    # The site stays up: what fits is served, on a fresh upstream connection.
    status, body, more, _ = await fetch(gov, "GET", "/bytes/1000")
    assert (status, body) == (200, pattern(1000))
    assert used(gov) == received + more


async def test_a_download_never_finishes_past_the_cap_with_admission(
    make_governor: GovernorFactory, tmp_path: Path, upstream_url: str
) -> None:
    """Without admission, at_cap: finish lets a 16 MiB download finish on a 1 MiB cap."""
    (tmp_path / "off").mkdir()
    off = await make_governor(write_config(tmp_path / "off", upstream=upstream_url, cap="1 MiB"))
    status, _, received, _ = await fetch(off, "GET", f"/bytes/{16 * MiB}")
    assert status == 200
    assert used(off) == received > 16 * MiB
    on = await make_governor(cap="1 MiB", defaults=ON)
    status, _, _, _ = await fetch(on, "GET", f"/bytes/{16 * MiB}")
    assert status == 503
    assert used(on) == 0


async def test_what_does_not_declare_a_length_or_has_no_body_is_admitted(
    make_governor: GovernorFactory,
) -> None:
    gov = await make_governor(cap="100 KiB", defaults=ON)
    # Chunked: its size is not known before it starts; at_cap: finish finishes it.
    status, body, received, _ = await fetch(gov, "GET", "/chunked/200000")
    assert (status, body) == (200, pattern(200000))
    assert used(gov) == received
    gov2 = await make_governor(cap="100 KiB", defaults=ON)
    # HEAD: the length it declares is not sent.
    status, body, received, length = await fetch(gov2, "HEAD", "/bytes/200000")
    assert (status, body, length) == (200, b"", "200000")
    assert used(gov2) == received


async def test_an_exempt_path_is_never_refused(make_governor: GovernorFactory) -> None:
    gov = await make_governor(cap="10 KiB", defaults=ON, tenant={"exempt_paths": ["/bytes/"]})
    status, body, received, _ = await fetch(gov, "GET", "/bytes/50000")
    assert (status, body) == (200, pattern(50000))
    assert used(gov) == received  # counted, as exempt requests are


async def test_a_tenant_counting_ingress_only_is_admitted_any_response(
    make_governor: GovernorFactory,
) -> None:
    gov = await make_governor(cap="10 KiB", defaults=ON, tenant={"count": "ingress"})
    status, body, _, _ = await fetch(gov, "GET", "/bytes/50000")
    assert (status, body) == (200, pattern(50000))


async def test_when_the_site_is_as_good_as_out_the_refusal_is_its_own_notice(
    make_governor: GovernorFactory,
) -> None:
    """From 90% of the cap on, a page that no longer fits gets the tenant's notice (the
    demo's 15th view): a page or two are left, the site is as good as at its cap."""
    gov = await make_governor(cap="100 KiB", defaults=ON)
    status, _, received, _ = await fetch(gov, "GET", "/bytes/95000")
    assert status == 200
    assert received > 0.9 * 100 * 1024
    status, body, _, _ = await fetch(gov, "GET", "/bytes/20000")
    assert status == 503
    assert b"Daily data limit reached" in body
    assert used(gov) == received
