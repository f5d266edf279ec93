"""The pure HTTP/1.1 core: heads, framing, and the raw-block rewriting, without sockets."""

from __future__ import annotations

import ipaddress
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from governor.headers import (
    client_response_headers,
    request_block,
    response_block,
    upstream_request_headers,
)
from governor.http1 import (
    CHUNKED,
    LENGTH,
    UNTIL_CLOSE,
    BadMessage,
    BodyReader,
    Limits,
    encode_block,
    parse_request_head,
    parse_response_head,
    sniff_head,
)

LIMITS = Limits()


def head(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("latin-1")


def test_a_request_head_gives_its_framing_and_exact_size() -> None:
    raw = head("POST /a?b=1 HTTP/1.1\nHost: site.test\nContent-Length: 5\nX-A:  v \n\n")
    parsed = parse_request_head(raw + b"hello", LIMITS)
    assert parsed is not None
    assert (parsed.method, parsed.target, parsed.version) == ("POST", "/a?b=1", (1, 1))
    assert (parsed.size, parsed.host, parsed.content_length) == (len(raw), "site.test", 5)
    assert (parsed.chunked, parsed.keep_alive, parsed.expect_continue) == (False, True, False)
    assert parsed.headers == [("Host", "site.test"), ("Content-Length", "5"), ("X-A", "v")]


def test_an_incomplete_head_is_none_until_its_blank_line() -> None:
    raw = head("GET / HTTP/1.1\nHost: a\n\n")
    for cut in range(len(raw)):
        assert parse_request_head(raw[:cut], LIMITS) is None
    assert parse_request_head(raw, LIMITS) is not None


@pytest.mark.parametrize(
    ("text", "keep_alive"),
    [
        ("GET / HTTP/1.1\nHost: a\n\n", True),
        ("GET / HTTP/1.1\nHost: a\nConnection: close\n\n", False),
        ("GET / HTTP/1.0\n\n", False),
        ("GET / HTTP/1.0\nConnection: Keep-Alive\n\n", True),
    ],
)
def test_keep_alive_follows_the_version_and_connection(text: str, keep_alive: bool) -> None:
    parsed = parse_request_head(head(text), LIMITS)
    assert parsed is not None
    assert parsed.keep_alive is keep_alive


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("GET / HTTP/1.1\nHost: a\nContent-Length: 3\nTransfer-Encoding: chunked\n\n", 400),
        ("GET / HTTP/1.1\nHost: a\nContent-Length: 3\nContent-Length: 4\n\n", 400),
        ("GET / HTTP/1.1\nHost: a\nContent-Length: +3\n\n", 400),
        ("GET / HTTP/1.1\nHost: a\nTransfer-Encoding: gzip, chunked\n\n", 400),
        ("GET / HTTP/1.0\nTransfer-Encoding: chunked\n\n", 400),
        ("GET / HTTP/1.1\nHost: a\nX: 1\n  folded\n\n", 400),
        ("GET / HTTP/1.1\nHost: a\nHost: b\n\n", 400),
        ("GET / HTTP/1.1\n\n", 400),
        ("GET / HTTP/1.1\nHost : a\n\n", 400),
        ("GET / HTTP/1.1\nHost: a\nX: \x01\n\n", 400),
        ("GET  / HTTP/1.1\nHost: a\n\n", 400),
        ("GET / HTTP/2.0\nHost: a\n\n", 505),
        ("GET /" + "a" * 9000 + " HTTP/1.1\nHost: a\n\n", 414),
        ("GET / HTTP/1.1\nHost: a\nX: " + "a" * 9000 + "\n\n", 431),
        ("GET / HTTP/1.1\nHost: a\n" + "X: 1\n" * 101 + "\n", 431),
    ],
)
def test_ambiguous_or_oversized_heads_are_refused(text: str, status: int) -> None:
    with pytest.raises(BadMessage) as caught:
        parse_request_head(head(text), LIMITS)
    assert caught.value.status == status


def test_a_bare_lf_is_refused() -> None:
    with pytest.raises(BadMessage) as caught:
        parse_request_head(b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", LIMITS)
    assert caught.value.status == 400


def test_a_response_head_and_its_framing() -> None:
    raw = head("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\nConnection: close\n\n")
    parsed = parse_response_head(raw)
    assert parsed is not None
    assert (parsed.status, parsed.reason, parsed.chunked, parsed.keep_alive) == (
        200,
        "OK",
        True,
        False,
    )
    with pytest.raises(BadMessage) as caught:
        parse_response_head(head("HTTP/1.1 200 OK\nContent-Length: x\n\n"))
    assert caught.value.status == 502


CHUNKED_BODY = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n"


@given(st.lists(st.integers(min_value=1, max_value=len(CHUNKED_BODY)), max_size=8))
def test_a_chunked_body_reads_the_same_however_it_is_split(cuts: list[int]) -> None:
    data = CHUNKED_BODY + b"NEXT REQUEST"
    bounds = sorted({0, *cuts, len(data)})
    reader = BodyReader(CHUNKED)
    body, used = b"", 0
    for start, end in itertools.pairwise(bounds):
        pieces, n = reader.feed(data[start:end])
        body += b"".join(pieces)
        used += n
        if reader.done:
            break
    assert reader.done
    assert body == b"hello world"
    assert used == reader.raw == len(CHUNKED_BODY)  # the next request's bytes are left alone


@pytest.mark.parametrize(
    "body",
    [b"z\r\nhello\r\n0\r\n\r\n", b"5\r\nhelloXX0\r\n\r\n", b"5\nhello\r\n0\r\n\r\n", b"5 5\r\n"],
)
def test_malformed_chunked_framing_is_refused(body: bytes) -> None:
    reader = BodyReader(CHUNKED)
    with pytest.raises(BadMessage):
        reader.feed(body)


def test_length_and_close_delimited_bodies() -> None:
    reader = BodyReader(LENGTH, 4)
    assert reader.feed(b"abcdef") == ([b"abcd"], 4)
    assert reader.done
    until_close = BodyReader(UNTIL_CLOSE)
    assert until_close.feed(b"xyz") == ([b"xyz"], 3)
    assert not until_close.done
    assert until_close.close()


_NAMES = st.sampled_from(
    [
        "Host",
        "Connection",
        "Keep-Alive",
        "TE",
        "Upgrade",
        "Via",
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "X-Forwarded-Host",
        "Content-Length",
        "Expect",
        "X-Custom",
        "Accept",
        "Proxy-Connection",
        "Trailer",
        "Content_Length",
        "X_Custom",
    ]
)
_VALUES = st.sampled_from(["1", "close", "keep-alive, x-custom", "10.0.0.1", "a b", "upgrade", ""])
_FIELDS = st.lists(st.tuples(_NAMES, _VALUES), max_size=10)


@given(_FIELDS, st.booleans(), st.booleans())
def test_the_request_block_rewrite_equals_the_reference(
    fields: list[tuple[str, str]], trusted: bool, upgrade: bool
) -> None:
    """The raw-block fast path and the (name, value) reference agree, field for field."""

    nets = (ipaddress.ip_network("127.0.0.0/8"),) if trusted else ()
    raw = b"GET / HTTP/1.0" + encode_block(fields) + b"\r\n\r\n"
    try:
        parsed = parse_request_head(raw, Limits(fields=1000))
    except BadMessage:
        return  # e.g. two Host fields: refused, nothing to forward
    assert parsed is not None
    fast = request_block(
        parsed.block,
        parsed.connection,
        host=parsed.host,
        peer="127.0.0.1",
        trusted=nets,
        upgrade=upgrade,
    )
    reference = upstream_request_headers(
        parsed.headers, peer="127.0.0.1", trusted=nets, upgrade=upgrade
    )
    expected = [(n, v) for n, v in reference if n.lower() != "content-length"]
    assert fast == encode_block(expected)


@given(_FIELDS)
def test_the_response_block_rewrite_equals_the_reference(fields: list[tuple[str, str]]) -> None:
    raw = b"HTTP/1.1 200 OK" + encode_block(fields) + b"\r\n\r\n"
    try:
        parsed = parse_response_head(raw)
    except BadMessage:
        return  # e.g. a malformed Content-Length: refused, nothing to rewrite
    assert parsed is not None
    reference = client_response_headers(parsed.headers)
    assert response_block(parsed.block, parsed.connection, body=False) == encode_block(reference)
    no_length = [(n, v) for n, v in reference if n.lower() != "content-length"]
    assert response_block(parsed.block, parsed.connection, body=True) == encode_block(no_length)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"GET /a?b HTTP/1.1\r\nHost: a.test\r\nX: y\r\n\r\n", ("GET", "/a?b", "a.test")),
        (b"GET / HTTP/1.1\r\nhost:a.test:8080 \r\nX: " + b"y" * 99, ("GET", "/", "a.test:8080")),
        (b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", ("GET", "/", "[::1]:80")),
        (b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n", ("GET", "/", None)),
        (b"GET / HTTP/1.1\r\nHost: a.te", ("GET", "/", None)),  # the line may go on
        (b"GET / HTTP/1.1\r\nHost: a test\r\n\r\n", ("GET", "/", None)),
        (b"GET / HTTP/1.1\r\nHost: \xa0a.test\r\n\r\n", ("GET", "/", None)),
        (b"\x16\x03\x01\x00\x10junk\r\n\r\n", ("-", "-", None)),
    ],
)
def test_sniff_head_names_a_refused_heads_tenant_only_when_unambiguous(
    raw: bytes, expected: tuple[str, str, str | None]
) -> None:
    assert sniff_head(raw) == expected
