"""A raw-socket request-smuggling corpus: what governor answers, and what reaches the upstream.

Each case is bytes a hostile client writes on one connection. For every one we
assert the statuses the client reads, that governor closes the connection (where
the next request would start cannot be trusted), and what the real upstream saw:
nothing, or exactly the well-formed requests that preceded the bad one, each
with governor's own framing (one Content-Length or chunked, never both, one Host).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import pytest

from governor.process.instance import Governor
from tests.functional.conftest import GovernorFactory
from tests.functional.upstream_app import Seen
from tests.support import eventually

H = b"Host: site.test\r\n"
GOOD = b"GET /bytes/5 HTTP/1.1\r\n" + H + b"\r\n"
SMUGGLED = b"GET /smuggled HTTP/1.1\r\n" + H + b"\r\n"


def post(*headers: bytes, body: bytes = b"", target: bytes = b"/upload") -> bytes:
    return (
        b"POST "
        + target
        + b" HTTP/1.1\r\n"
        + H
        + b"".join(h + b"\r\n" for h in headers)
        + (b"\r\n" + body)
    )


@dataclass(frozen=True)
class Case:
    id: str
    data: bytes
    statuses: tuple[int, ...]  # every status the client reads, in order
    upstream: int = 0  # requests the upstream saw (the good ones before the bad one)


# Head framing: refused with 400 before anything is forwarded.
HEADS = [
    Case(
        "cl-and-te",
        post(b"Content-Length: 4", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
        (400,),
    ),
    Case(
        "te-and-cl",
        post(b"Transfer-Encoding: chunked", b"Content-Length: 4", body=b"0\r\n\r\n"),
        (400,),
    ),
    Case(
        "te-and-cl-0",
        post(b"Transfer-Encoding: chunked", b"Content-Length: 0", body=b"0\r\n\r\n" + SMUGGLED),
        (400,),
    ),
    Case("cl-differ", post(b"Content-Length: 5", b"Content-Length: 6", body=b"hello!"), (400,)),
    Case("cl-list-differ", post(b"Content-Length: 5, 6", body=b"hello!"), (400,)),
    Case("cl-plus", post(b"Content-Length: +5", body=b"hello"), (400,)),
    Case("cl-negative", post(b"Content-Length: -1", body=b"hello"), (400,)),
    Case("cl-hex", post(b"Content-Length: 0x5", body=b"hello"), (400,)),
    Case("cl-suffix", post(b"Content-Length: 5a", body=b"hello"), (400,)),
    Case("cl-exponent", post(b"Content-Length: 1e1", body=b"0123456789"), (400,)),
    Case("cl-empty", post(b"Content-Length: ", body=b"hello"), (400,)),
    Case("cl-inner-space", post(b"Content-Length: 1 0", body=b"0123456789"), (400,)),
    Case("cl-huge", post(b"Content-Length: 99999999999999999999", body=b"x"), (400,)),
    Case("te-gzip", post(b"Transfer-Encoding: gzip", body=b"0\r\n\r\n"), (400,)),
    Case("te-gzip-chunked", post(b"Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"), (400,)),
    Case("te-chunked-gzip", post(b"Transfer-Encoding: chunked, gzip", body=b"0\r\n\r\n"), (400,)),
    Case(
        "te-chunked-twice",
        post(b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
        (400,),
    ),
    Case("te-identity", post(b"Transfer-Encoding: identity", body=b"hello"), (400,)),
    Case("te-xchunked", post(b"Transfer-Encoding: xchunked", body=b"0\r\n\r\n"), (400,)),
    Case("te-quoted", post(b'Transfer-Encoding: "chunked"', body=b"0\r\n\r\n"), (400,)),
    Case("te-vertical-tab", post(b"Transfer-Encoding: chunked\x0b", body=b"0\r\n\r\n"), (400,)),
    Case("te-space-before-colon", post(b"Transfer-Encoding : chunked", body=b"0\r\n\r\n"), (400,)),
    Case(
        "te-in-http-1.0",
        b"POST /upload HTTP/1.0\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        (400,),
    ),
    Case("te-obs-fold", post(b"X-A: a", b" Transfer-Encoding: chunked", body=b"0\r\n\r\n"), (400,)),
    Case("obs-fold", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n  b\r\n\r\n", (400,)),
    Case("obs-fold-tab", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n\tb\r\n\r\n", (400,)),
    Case("bare-lf-in-head", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\nX-B: b\r\n\r\n", (400,)),
    Case("bare-lf-request-line", b"GET / HTTP/1.1\n" + H + b"\r\n", (400,)),
    Case("bare-cr-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n", (400,)),
    Case("nul-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", (400,)),
    Case("escape-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: \x1b[31m\r\n\r\n", (400,)),
    Case("space-in-name", b"GET / HTTP/1.1\r\n" + H + b"X A: b\r\n\r\n", (400,)),
    Case("empty-name", b"GET / HTTP/1.1\r\n" + H + b": b\r\n\r\n", (400,)),
    Case("no-colon", b"GET / HTTP/1.1\r\n" + H + b"X-A b\r\n\r\n", (400,)),
    Case("no-host", b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n", (400,)),
    Case("two-hosts-same", b"GET / HTTP/1.1\r\n" + H + H + b"\r\n", (400,)),
    Case("two-hosts-differ", b"GET / HTTP/1.1\r\n" + H + b"Host: other.test\r\n\r\n", (400,)),
    Case("empty-host", b"GET / HTTP/1.1\r\nHost: \r\n\r\n", (400,)),
    Case("host-with-space", b"GET / HTTP/1.1\r\nHost: site.test x\r\n\r\n", (400,)),
    Case("request-line-tab", b"GET\t/ HTTP/1.1\r\n" + H + b"\r\n", (400,)),
    Case("bad-method", b"G(T / HTTP/1.1\r\n" + H + b"\r\n", (400,)),
    Case("bad-version", b"GET / HTTP/1.x\r\n" + H + b"\r\n", (400,)),
    Case("http-2-line", b"GET / HTTP/2.0\r\n" + H + b"\r\n", (505,)),
    Case("http-1-two-digit-minor", b"GET / HTTP/1.10\r\n" + H + b"\r\n", (400,)),
    Case("request-line-leading-space", b" GET / HTTP/1.1\r\n" + H + b"\r\n", (400,)),
    Case("request-line-trailing-space", b"GET / HTTP/1.1 \r\n" + H + b"\r\n", (400,)),
    Case("empty-line-bare-lf-first", b"\nGET / HTTP/1.1\r\n" + H + b"\r\n", (400,)),
    Case("request-line-too-long", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n", (414,)),
    Case(
        "header-too-long", b"GET / HTTP/1.1\r\n" + H + b"X-A: " + b"a" * 9000 + b"\r\n\r\n", (431,)
    ),
    Case(
        "too-many-headers",
        b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-%d: v\r\n" % i for i in range(101)) + b"\r\n",
        (431,),
    ),
    Case(
        "head-too-large",
        b"GET / HTTP/1.1\r\n"
        + H
        + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 8000) for i in range(9))
        + b"\r\n",
        (431,),
    ),
]

# Only SP and HTAB are whitespace (never NBSP \xa0 or NEL \x85, which str.strip() takes),
# and a Transfer-Encoding is exactly the one token "chunked": no empty list elements.
TE_CHUNKED = b"0\r\n\r\n" + SMUGGLED
UNICODE_AND_LISTS = [
    Case("te-nbsp-before", post(b"Transfer-Encoding: \xa0chunked", body=TE_CHUNKED), (400,)),
    Case("te-nbsp-after", post(b"Transfer-Encoding: chunked\xa0", body=TE_CHUNKED), (400,)),
    Case("te-nel-after", post(b"Transfer-Encoding: chunked\x85", body=TE_CHUNKED), (400,)),
    Case("te-nel-before", post(b"Transfer-Encoding: \x85chunked", body=TE_CHUNKED), (400,)),
    Case("te-leading-comma", post(b"Transfer-Encoding: ,chunked", body=TE_CHUNKED), (400,)),
    Case("te-trailing-comma", post(b"Transfer-Encoding: chunked,", body=TE_CHUNKED), (400,)),
    Case("te-empty-elements", post(b"Transfer-Encoding: chunked, ,", body=TE_CHUNKED), (400,)),
    Case(
        "te-and-empty-te",
        post(b"Transfer-Encoding: chunked", b"Transfer-Encoding:", body=TE_CHUNKED),
        (400,),
    ),
    Case("cl-nbsp", post(b"Content-Length: \xa05", body=b"hello"), (400,)),
    Case("host-nbsp-before", b"GET / HTTP/1.1\r\nHost: \xa0site.test\r\n\r\n", (400,)),
    Case("host-nbsp-after", b"GET / HTTP/1.1\r\nHost: site.test\xa0\r\n\r\n", (400,)),
    Case("host-nel-after", b"GET / HTTP/1.1\r\nHost: site.test\x85\r\n\r\n", (400,)),
    Case("host-userinfo", b"GET / HTTP/1.1\r\nHost: u@site.test\r\n\r\n", (400,)),
    Case("host-bad-port", b"GET / HTTP/1.1\r\nHost: site.test:80x\r\n\r\n", (400,)),
    Case("host-two-ports", b"GET / HTTP/1.1\r\nHost: site.test:80:81\r\n\r\n", (400,)),
    Case("host-double-dot", b"GET / HTTP/1.1\r\nHost: a..site.test\r\n\r\n", (400,)),
    Case("host-leading-dot", b"GET / HTTP/1.1\r\nHost: .site.test\r\n\r\n", (400,)),
    Case("host-utf8", b"GET / HTTP/1.1\r\nHost: s\xc3\xa9.site.test\r\n\r\n", (400,)),
    Case("host-path", b"GET / HTTP/1.1\r\nHost: site.test/x\r\n\r\n", (400,)),
    Case("host-list", b"GET / HTTP/1.1\r\nHost: site.test, site.test\r\n\r\n", (400,)),
    Case("host-open-bracket", b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", (400,)),
]

# Request targets: origin-form starts with "/", "*" is for OPTIONS, absolute-form is
# http or https (any case) naming the Host's authority (else 400, as HAProxy answers).
TARGETS = [
    Case("target-not-a-path", b"GET bytes/5 HTTP/1.1\r\n" + H + b"\r\n", (400,)),
    Case("target-asterisk-for-get", b"GET * HTTP/1.1\r\n" + H + b"\r\n", (400,)),
    Case("target-ftp", b"GET ftp://site.test/bytes/5 HTTP/1.1\r\n" + H + b"\r\n", (400,)),
    Case("target-other-host", b"GET http://other.test/ HTTP/1.1\r\n" + H + b"\r\n", (400,)),
    Case(
        "target-other-host-upper-scheme",
        b"GET HTTP://other.test/ HTTP/1.1\r\n" + H + b"\r\n",
        (400,),
    ),
    Case("target-other-port", b"GET http://site.test:81/ HTTP/1.1\r\n" + H + b"\r\n", (400,)),
    Case("target-userinfo", b"GET http://u@site.test/ HTTP/1.1\r\n" + H + b"\r\n", (400,)),
    Case("target-no-authority", b"GET http:///bytes/5 HTTP/1.1\r\n" + H + b"\r\n", (400,)),
    Case("target-fragment-authority", b"GET http://site.test#x HTTP/1.1\r\n" + H + b"\r\n", (400,)),
    Case(
        "target-http-1.0-other-host",
        b"GET http://other.test/ HTTP/1.0\r\n" + H + b"\r\n",
        (400,),
    ),
]

# Pipelines: the good requests before the bad one are answered and forwarded, once each;
# the bad one and everything after it are not.
PIPELINES = [
    Case(
        "good-then-cl-te",
        GOOD
        + post(b"Content-Length: 4", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n" + SMUGGLED),
        (200, 400),
        1,
    ),
    Case(
        "good-then-obs-fold",
        GOOD + b"GET / HTTP/1.1\r\n" + H + b"X: a\r\n b\r\n\r\n" + SMUGGLED,
        (200, 400),
        1,
    ),
    Case(
        "cl-body-then-garbage",
        post(b"Content-Length: 5", body=b"hello") + b"GARBAGE\r\n\r\n",
        (200, 400),
        1,
    ),
    Case(
        "chunked-body-then-two-hosts",
        post(b"Transfer-Encoding: chunked", body=b"5\r\nhello\r\n0\r\n\r\n")
        + b"GET / HTTP/1.1\r\n"
        + H
        + H
        + b"\r\n",
        (200, 400),
        1,
    ),
]

# Request bodies whose chunked framing is malformed: the connection closes, and no
# complete request body ever reaches the upstream.
BODIES = [
    ("chunk-size-not-hex", b"zz\r\nhello\r\n0\r\n\r\n"),
    ("chunk-size-negative", b"-5\r\nhello\r\n0\r\n\r\n"),
    ("chunk-size-0x", b"0x5\r\nhello\r\n0\r\n\r\n"),
    ("chunk-size-overflow", b"10000000000000005\r\nhello\r\n0\r\n\r\n"),
    ("chunk-size-space-inside", b"5 5\r\nhello\r\n0\r\n\r\n"),
    ("chunk-ext-no-name", b"5;=x\r\nhello\r\n0\r\n\r\n"),
    ("chunk-ext-open-quote", b'5;a="x\r\nhello\r\n0\r\n\r\n'),
    ("chunk-ext-space-in-name", b"5;a b\r\nhello\r\n0\r\n\r\n"),
    ("chunk-size-bare-lf", b"5\nhello\r\n0\r\n\r\n"),
    ("chunk-data-no-crlf", b"5\r\nhelloXX\r\n0\r\n\r\n"),
    ("chunk-data-too-long", b"3\r\nhello\r\n0\r\n\r\n"),
    ("last-chunk-bare-lf", b"5\r\nhello\r\n0\n\n"),
    ("trailer-obs-fold", b"5\r\nhello\r\n0\r\nX: a\r\n b\r\n\r\n"),
]


def statuses_in(raw: bytes) -> list[int]:
    """The status of each response in ``raw``, walking them by their Content-Length."""
    out: list[int] = []
    rest = raw
    while rest:
        end = rest.find(b"\r\n\r\n")
        assert end > 0, f"not a response: {rest[:200]!r}"
        head = rest[:end].decode("latin-1").split("\r\n")
        version, status, _ = head[0].split(" ", 2)
        assert version == "HTTP/1.1", head[0]
        lengths = [
            v for n, _, v in (h.partition(":") for h in head[1:]) if n.lower() == "content-length"
        ]
        assert len(lengths) == 1, head  # every answer here is Content-Length framed
        out.append(int(status))
        rest = rest[end + 4 + int(lengths[0]) :]
    return out


async def exchange(gov: Governor, data: bytes) -> tuple[list[int], bytes, bool]:
    """Send ``data`` at once; read until governor closes (bounded): (statuses, bytes, closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gov.port)
    writer.write(data)
    await writer.drain()
    got = bytearray()
    closed = False
    try:
        async with asyncio.timeout(5):
            while chunk := await reader.read(65536):
                got += chunk
            closed = True
    except TimeoutError:
        pass
    except ConnectionResetError:
        closed = True
    writer.close()
    return statuses_in(bytes(got)), bytes(got), closed


def well_formed(headers: list[tuple[str, str]]) -> bool:
    """One Host, and at most one framing header: governor's own."""
    names = [n.lower() for n, _ in headers]
    return (
        names.count("host") == 1
        and names.count("content-length") + names.count("transfer-encoding") <= 1
        and all("\r" not in v and "\n" not in v for _, v in headers)
    )


@pytest.mark.parametrize(
    "case", HEADS + UNICODE_AND_LISTS + TARGETS + PIPELINES, ids=lambda c: c.id
)
async def test_ambiguous_or_malformed_request(
    make_governor: GovernorFactory, seen: Seen, case: Case
) -> None:
    gov = await make_governor()
    statuses, raw, closed = await exchange(gov, case.data)
    assert statuses == list(case.statuses), raw[:300]
    assert closed, "the connection stays open after a request that cannot be read"
    assert b"Connection: close" in raw.split(b"\r\n\r\n")[-2]  # the last answer says so
    assert seen.hits == case.upstream, seen.paths
    assert "/smuggled" not in seen.paths
    assert all(well_formed(h) for h in seen.headers), seen.headers
    # And the listener is still fine for the next, honest visitor.
    statuses, _, _ = await exchange(
        gov, GOOD.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    )
    assert statuses == [200]


@pytest.mark.parametrize(("body_id", "body"), BODIES, ids=[b[0] for b in BODIES])
async def test_malformed_chunked_body_with_the_head(
    make_governor: GovernorFactory, seen: Seen, body_id: str, body: bytes
) -> None:
    """Head and bad body in one write: refused before anything is forwarded."""
    gov = await make_governor()
    data = post(b"Transfer-Encoding: chunked", body=body) + SMUGGLED
    statuses, raw, closed = await exchange(gov, data)
    assert closed, body_id
    assert statuses == [400], raw[:300]
    assert seen.hits == 0, seen.paths  # nothing of it reached the upstream


@pytest.mark.parametrize(("body_id", "body"), BODIES, ids=[b[0] for b in BODIES])
async def test_malformed_chunked_body_after_the_head_was_forwarded(
    make_governor: GovernorFactory, seen: Seen, body_id: str, body: bytes
) -> None:
    """The head went upstream first (bodies stream): the bad body is never completed there."""
    gov = await make_governor()
    reader, writer = await asyncio.open_connection("127.0.0.1", gov.port)
    writer.write(post(b"Transfer-Encoding: chunked"))
    await writer.drain()
    await eventually(lambda: seen.hits > 0, what="the head reaching the upstream")
    writer.write(body + SMUGGLED)
    got = bytearray()
    async with asyncio.timeout(5):
        with contextlib.suppress(ConnectionResetError):
            while chunk := await reader.read(65536):
                got += chunk
    writer.close()
    assert statuses_in(bytes(got)) == [400], bytes(got[:300])
    assert seen.uploads == []  # the upstream never got a complete body
    assert seen.paths == ["/upload"]  # and never the request smuggled after it
    assert all(well_formed(h) for h in seen.headers), seen.headers
