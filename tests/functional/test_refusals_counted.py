"""Governor's own answers to a tenant's requests are charged like the rest of its traffic.

The rule (README, "How counting works"): what crossed the visitor's socket for a
tenant's request is the tenant's, in its ``count`` directions, governor's own
answers included (400, 408, 413, 414, 431, 502, 504, 405); not charged are the
notice with the blocked request behind it, and requests whose head names no
tenant. Each test counts both directions on a raw socket and compares.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from governor.process.instance import Governor
from tests.functional.conftest import GovernorFactory
from tests.functional.test_access_log import lines
from tests.support import RawClient, free_port, request


def used(gov: Governor, tenant: str = "site") -> int:
    site = gov.runtime.snapshot.tenants[tenant]
    key = (tenant, site.periods.current(gov.runtime.clock()).key)
    return gov.runtime.ledger.used(key)


async def exchange(gov: Governor, data: bytes) -> RawClient:
    """Send ``data``, read until governor closes; the client holds both counts."""
    client = await RawClient.connect(gov.port)
    await client.send(data)
    await client.read_to_eof()
    await client.close()
    return client


REFUSED_HEADS = {
    "bad field name": b"GET / HTTP/1.1\r\nHost: site.test\r\nBad Name: x\r\n\r\n",
    "CL with TE": (
        b"POST / HTTP/1.1\r\nHost: site.test\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "request line too long": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: site.test\r\n\r\n",
    "head too large": b"GET / HTTP/1.1\r\nHost: site.test\r\n"
    + b"".join(b"X-More-%d: %s\r\n" % (i, b"m" * 7000) for i in range(10))
    + b"\r\n",
    "body over body_max": request("POST", "/echo", "site.test", body=b"x" * 2000),
    "malformed chunk in the first bytes": (
        b"POST /echo HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    ),
}


@pytest.mark.parametrize("name", list(REFUSED_HEADS))
async def test_a_refused_request_and_its_answer_are_charged_to_its_tenant(
    make_governor: GovernorFactory, name: str
) -> None:
    gov = await make_governor(tenant={"count": "both"}, limits={"body_max": "1 KiB"})
    client = await exchange(gov, REFUSED_HEADS[name])
    assert client.received > 0  # an answer came: 400, 413, 414 or 431
    assert used(gov) == client.sent + client.received


async def test_only_the_tenants_count_directions_are_charged(
    make_governor: GovernorFactory,
) -> None:
    gov = await make_governor(tenant={"count": "ingress"})
    client = await exchange(gov, REFUSED_HEADS["bad field name"])
    assert used(gov) == client.sent


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: nobody.test\r\nBad Name: x\r\n\r\n",  # no tenant claims it
        b"GET / HTTP/1.1\r\nHost: site.test\r\nHost: site.test\r\n\r\n",  # which Host?
        b"GET / HTTP/1.1\r\nHost: site.test\x00\r\n\r\n",  # not a well-formed Host
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",  # TLS
    ],
)
async def test_a_refused_head_naming_no_tenant_is_charged_to_nobody(
    make_governor: GovernorFactory, data: bytes
) -> None:
    gov = await make_governor(tenant={"count": "both"})
    client = await exchange(gov, data)
    assert client.received > 0
    assert gov.runtime.ledger.pending_bytes() == 0
    assert used(gov) == 0


async def test_a_slow_head_answered_408_is_charged(make_governor: GovernorFactory) -> None:
    gov = await make_governor(tenant={"count": "both"}, timeouts={"request_header": "300ms"})
    client = await RawClient.connect(gov.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: site.test\r\nX-Slow: ")
    resp = await client.response()
    await client.read_to_eof()
    await client.close()
    assert resp.status == 408
    assert used(gov) == client.sent + client.received


async def test_a_502_is_charged_with_the_request_behind_it(
    make_governor: GovernorFactory,
) -> None:
    gov = await make_governor(
        upstream=f"http://127.0.0.1:{free_port()}", tenant={"count": "both"}
    )  # nothing listens there
    client = await RawClient.connect(gov.port)
    await client.send(request("GET", "/", "site.test"))
    resp = await client.response()
    await client.close()
    assert resp.status == 502
    assert used(gov) == client.sent + resp.received


async def test_a_body_refused_midway_is_charged_with_its_answer(
    make_governor: GovernorFactory,
) -> None:
    gov = await make_governor(tenant={"count": "both"}, limits={"body_max": "1 KiB"})
    client = await RawClient.connect(gov.port)
    head = b"POST /echo HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\r\n"
    await client.send(head + b"400\r\n" + b"x" * 1024 + b"\r\n")
    await client.send(b"400\r\n" + b"y" * 1024 + b"\r\n")
    resp = await client.response()
    await client.read_to_eof()
    await client.close()
    assert resp.status == 413
    assert used(gov) == client.sent + client.received


async def test_the_notice_and_the_blocked_request_are_not_charged(
    make_governor: GovernorFactory,
) -> None:
    gov = await make_governor(cap="1 KiB", tenant={"count": "both"})
    client = await RawClient.connect(gov.port)
    await client.send(request("GET", "/bytes/2000", "site.test"))
    first = await client.response()
    charged = used(gov)
    await client.send(request("GET", "/bytes/10", "site.test"))
    notice = await client.response()
    await client.close()
    assert first.status == 200
    assert notice.status != 200
    assert used(gov) == charged


async def test_a_refused_request_gets_an_access_log_line(
    make_governor: GovernorFactory, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    gov = await make_governor(access_log=str(log), log_format="json")
    client = await exchange(gov, REFUSED_HEADS["bad field name"])
    (line,) = await lines(log, 1)
    record = json.loads(line)
    assert record["tenant"] == "site"
    assert (record["method"], record["path"], record["status"]) == ("GET", "/", 400)
    assert (record["bytes_in"], record["bytes_out"]) == (client.sent, client.received)
    assert record["outcome"] == "bad_request"
