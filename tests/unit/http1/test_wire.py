"""The pure HTTP/1.1 core: heads, framing, and the raw-block rewriting, without sockets."""

from __future__ import annotations

import ipaddress
import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from governor.errors import BadMessage
from governor.http1 import wire
from governor.http1.body import CHUNKED, LENGTH, TRAILERS_MAX, UNTIL_CLOSE, BodyReader
from governor.http1.headers import request_block, response_block
from governor.http1.heads import OWS, Limits, RequestHead, ResponseHead, trim
from governor.http1.sniff import sniff_head
from governor.http1.wire import encode_block, parse_request_head, parse_response_head
from tests.unit.http1.header_oracle import (
    client_response_headers,
    connection_tokens,
    strip_hop_by_hop,
    upstream_request_headers,
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
        (" GET / HTTP/1.1\nHost: a\n\n", 400),
        ("GET / HTTP/1.1 \nHost: a\n\n", 400),
        ("GET / HTTP/1.10\nHost: a\n\n", 400),
        ("GET / HTTP/3.0\nHost: a\n\n", 505),
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


@pytest.mark.parametrize(("error_status", "status"), [(400, 431), (502, 502)])
def test_the_whole_trailer_section_is_bounded_not_only_each_line(
    error_status: int, status: int
) -> None:
    """Many short trailer lines must not stream past every limit (20 MB were read before)."""
    line = b"T: " + b"x" * 100 + b"\r\n"
    fits = (TRAILERS_MAX - 2) // len(line)
    ok = BodyReader(CHUNKED, error_status=error_status)
    ok.feed(b"5\r\nhello\r\n0\r\n" + line * fits + b"\r\n")
    assert ok.done
    reader = BodyReader(CHUNKED, error_status=error_status)
    reader.feed(b"5\r\nhello\r\n0\r\n")
    for _ in range(fits):  # one trailer line at a time, as a client streams them
        reader.feed(line)
    with pytest.raises(BadMessage) as refused:
        reader.feed(line)
    assert refused.value.status == status
    assert "trailer section is larger than 16384 bytes" in refused.value.reason
    with pytest.raises(BadMessage) as long_line:
        BodyReader(CHUNKED).feed(b"0\r\nT: " + b"x" * TRAILERS_MAX)
    assert long_line.value.status == 431


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
        # The same names in other cases, and names that only start like them: a line is
        # dropped by its whole name, whatever its case.
        "via",
        "VIA",
        "Vias",
        "x-forwarded-for",
        "X-FORWARDED-PROTO",
        "X-Forwarded-Fort",
        "TEa",
        "Connections",
        "Keep-Alives",
        "Upgrade-Insecure-Requests",
        "Proxy-Authorization",
        "proxy-authenticate",
        "Expectation",
        "x_forwarded_for",
        "User-Agent",
        "user-agent",
        "Referer",
        "REFERER",
    ]
)
_VALUES = st.sampled_from(
    [
        "1",
        "close",
        "keep-alive, x-custom",
        "10.0.0.1",
        "a b",
        "upgrade",
        "",
        "x-custom, host",
        "vias",
        "Mozilla/5.0 (X11)",
    ]
)
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
    agents = [v for n, v in parsed.headers if n.lower() == "user-agent"]
    referers = [v for n, v in parsed.headers if n.lower() == "referer"]
    assert parsed.who() == (agents[0] if agents else None, referers[0] if referers else None)


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


_FRAMING_NAMES = st.sampled_from(
    ["Host", "host", "HOST", "Content-Length", "content-length", "Transfer-Encoding",
     "Connection", "connection", "Expect", "Upgrade", "Hostname", "X-Host", "Content-Lengthy"]
)  # fmt: skip
_FRAMING_VALUES = st.sampled_from(
    ["a.test", " a.test ", "\ta.test:80", "5", " 5\t", "chunked", "Chunked", "close", "Keep-Alive",
     "100-continue", "websocket", "", " ", "x-custom, host"]
)  # fmt: skip


@given(st.lists(st.tuples(_FRAMING_NAMES, _FRAMING_VALUES), max_size=8), st.booleans())
def test_the_framing_fields_are_read_as_the_fields_say(
    fields: list[tuple[str, str]], response: bool
) -> None:
    """What a head's framing says equals what its fields, taken one by one, say (the
    fields found by the first letter and a prefix of each lower-cased line)."""
    first = b"HTTP/1.1 200 OK" if response else b"POST / HTTP/1.1"
    raw = first + encode_block(fields) + b"\r\n\r\n"

    def values(name: str) -> list[str]:
        return [v.strip(" \t") for n, v in fields if n.lower() == name]

    try:
        head = parse_response_head(raw) if response else parse_request_head(raw, Limits())
    except BadMessage as exc:  # refused: then what the fields say is a reason to refuse
        lengths, codings = values("content-length"), values("transfer-encoding")
        hosts = values("host")
        assert (
            (lengths and codings)
            or len(set(lengths)) > 1
            or not all(length.isdigit() for length in lengths)
            or (codings and [c.lower() for c in codings] != ["chunked"])
            or (not response and (len(hosts) != 1 or not re.fullmatch(r"[\w.:-]+", hosts[0])))
        ), exc
        return
    assert head is not None
    lengths = values("content-length")
    if isinstance(head, ResponseHead) and head.chunked:
        assert head.content_length is None
    else:
        assert head.content_length == (int(lengths[0]) if lengths else None)
    assert head.chunked == bool(values("transfer-encoding"))
    tokens = tuple(t.strip(" \t").lower() for v in values("connection") for t in v.split(","))
    assert head.connection == tuple(t for t in tokens if t)
    if isinstance(head, RequestHead):
        assert head.host == values("host")[0]
        assert head.expect_continue == ([v.lower() for v in values("expect")] == ["100-continue"])
        upgrading = bool(values("upgrade")) and "upgrade" in head.connection
        assert head.upgrade == (values("upgrade")[0] if upgrading else None)


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


def parsed(raw: bytes) -> RequestHead:
    got = parse_request_head(raw, LIMITS)
    assert got is not None
    return got


def refused(raw: bytes) -> int:
    with pytest.raises(BadMessage) as caught:
        parse_request_head(raw, LIMITS)
    return caught.value.status


@pytest.mark.parametrize(
    "value",
    [
        b"\xa0chunked",
        b"chunked\xa0",
        b"\x85chunked",
        b"chunked\x85",
        b",chunked",
        b"chunked,",
        b"chunked, ,",
        b" , chunked",
        b"chunked,chunked",
        b"gzip, chunked",
        b"chunked;q=1",
        b'"chunked"',
        b"\x0bchunked",
    ],
)
def test_a_transfer_encoding_that_is_not_exactly_chunked_is_refused(value: bytes) -> None:
    raw = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: " + value + b"\r\n\r\n"
    assert refused(raw) == 400


@pytest.mark.parametrize("value", [b"chunked", b"Chunked", b"CHUNKED", b"\tchunked \t"])
def test_chunked_in_any_case_with_sp_or_htab_around_it_is_chunked(value: bytes) -> None:
    raw = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: " + value + b"\r\n\r\n"
    assert parsed(raw).chunked


@pytest.mark.parametrize(
    "value",
    [
        b"\xa0a.test",
        b"a.test\xa0",
        b"a.test\x85",
        b"u@a.test",
        b"a.test:80x",
        b"a.test:80:80",
        b"a..test",
        b".a.test",
        b":80",
        b"\xc3\xa9.test",
        b"a.test/x",
        b"a.test, a.test",
        b"[::1",
        b"::1",
        b"a.test:8%30",
    ],
)
def test_a_host_that_is_not_a_valid_host_port_is_refused(value: bytes) -> None:
    assert refused(b"GET / HTTP/1.1\r\nHost: " + value + b"\r\n\r\n") == 400


@pytest.mark.parametrize(
    "value",
    ["a.test", "A.Test.", "a.test:", "a.test:8080", "[::1]:80", "127.0.0.1", "a-b_c.test"],
)
def test_valid_hosts_are_read_as_sent(value: str) -> None:
    raw = f"GET / HTTP/1.1\r\nHost: \t{value} \r\n\r\n".encode()
    assert parsed(raw).host == value


@pytest.mark.parametrize(
    ("line", "target"),
    [
        ("GET HTTP://a.test/x?y HTTP/1.1", "/x?y"),
        ("GET hTtP://A.TEST:80/ HTTP/1.1", "/"),
        ("GET https://a.test:443 HTTP/1.1", "/"),
        ("GET http://a.test?q HTTP/1.1", "/?q"),
        ("GET http://a.test: HTTP/1.1", "/"),
        ("OPTIONS * HTTP/1.1", "*"),
        ("GET //x/y HTTP/1.1", "//x/y"),
        ("CONNECT a.test:443 HTTP/1.1", "a.test:443"),
    ],
)
def test_request_targets_are_forwarded_in_origin_form(line: str, target: str) -> None:
    head_ = parsed(f"{line}\r\nHost: a.test\r\n\r\n".encode())
    assert head_.target == target
    assert head_.host == "a.test"


@pytest.mark.parametrize(
    "line",
    [
        "GET http://b.test/ HTTP/1.1",
        "GET http://a.test:81/ HTTP/1.1",
        "GET https://a.test:80/ HTTP/1.1",
        "GET http://a.test./ HTTP/1.1",
        "GET ftp://a.test/ HTTP/1.1",
        "GET ws://a.test/ HTTP/1.1",
        "GET http://u@a.test/ HTTP/1.1",
        "GET http:/// HTTP/1.1",
        "GET http:a.test/ HTTP/1.1",
        "GET http://a.test#f HTTP/1.1",
        "GET a.test/ HTTP/1.1",
        "GET * HTTP/1.1",
    ],
)
def test_targets_in_no_served_form_or_naming_another_host_are_refused(line: str) -> None:
    assert refused(f"{line}\r\nHost: a.test\r\n\r\n".encode()) == 400


def test_an_http_1_0_absolute_target_without_host_gives_the_upstream_its_host() -> None:
    head_ = parsed(b"GET http://A.test:8080/x HTTP/1.0\r\n\r\n")
    assert (head_.host, head_.target) == ("A.test:8080", "/x")
    assert head_.headers == [("Host", "A.test:8080")]


@pytest.mark.parametrize(
    ("raw", "version"),
    [
        (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", (1, 1)),
        (b"GET / HTTP/1.9\r\nHost: a\r\n\r\n", (1, 1)),
        (b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", (1, 1)),
        (b"GET  /   HTTP/1.0\r\n\r\n", (1, 0)),
    ],
)
def test_unambiguous_leniency_as_nginx_and_haproxy(raw: bytes, version: tuple[int, int]) -> None:
    head_ = parsed(raw + b"NEXT")
    assert head_.version == version
    assert head_.target == "/"
    assert head_.size == len(raw)  # empty lines before the request are its bytes too
    assert head_.keep_alive is (version == (1, 1))


def test_content_length_may_have_any_number_of_leading_zeros() -> None:
    for value in (b"0" * 50 + b"5", b"0" * 60, b"007, 7", b"0" * 30 + b"999999999999999999"):
        raw = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: " + value + b"\r\n\r\n"
        assert parsed(raw).content_length == int(value.split(b",")[0])
    for value in (b"1" + b"0" * 18, b"0" * 10 + b"9" * 19, b"0x5", b"\xa05"):
        raw = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: " + value + b"\r\n\r\n"
        assert refused(raw) == 400


def test_chunk_sizes_may_have_any_number_of_leading_zeros() -> None:
    reader = BodyReader(CHUNKED)
    body = b"0" * 40 + b"5\r\nhello\r\n" + b"0" * 40 + b"\r\n\r\n"
    pieces, used = reader.feed(body)
    assert (b"".join(pieces), used, reader.done) == (b"hello", len(body), True)
    with pytest.raises(BadMessage):
        BodyReader(CHUNKED).feed(b"0" * 10 + b"1" + b"0" * 15 + b"\r\n")  # 16 digits


@pytest.mark.parametrize(
    "connection", ["host", "Host", "close, host", "x, HOST", "\thost\t", "keep-alive,host"]
)
def test_connection_never_removes_host(connection: str) -> None:
    fields = [("Host", "a.test"), ("Connection", connection), ("X", "1")]
    raw = b"GET / HTTP/1.1" + encode_block(fields) + b"\r\n\r\n"
    head_ = parsed(raw)
    block = request_block(
        head_.block, head_.connection, host=head_.host, peer="127.0.0.1", trusted=()
    )
    assert block.startswith(b"\r\nHost: a.test\r\n")
    assert [n for n, _ in strip_hop_by_hop(head_.headers)][:1] == ["Host"]
    assert (b"\r\nX: 1" in block) is ("x" not in connection.lower().split(", "))


def test_only_sp_and_htab_are_whitespace_in_lists() -> None:
    head_ = parsed(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: \xa0close, \x85host\r\n\r\n")
    assert head_.keep_alive  # "\xa0close" is not "close"
    assert head_.connection == ("\xa0close", "\x85host")
    assert connection_tokens([("Connection", "\xa0close,\tx ")]) == {"\xa0close", "x"}


def test_the_user_agent_is_read_from_the_raw_block_without_splitting_it() -> None:
    head = parse_request_head(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-User-Agent: no\r\nuSer-AGENT:  curl/8 x \t\r\n"
        b"User-Agent: second\r\n\r\n",
        Limits(),
    )
    assert head is not None
    assert head.user_agent == "curl/8 x"  # the first, trimmed; not X-User-Agent
    assert head.parsed is None  # the fields were not split into pairs for it
    bare = parse_request_head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Limits())
    assert bare is not None
    assert bare.user_agent is None


@given(
    st.binary(max_size=8)
    | st.lists(st.sampled_from([b" ", b"\t", b"a", b"\x00", b":"])).map(b"".join)
)
def test_trim_is_a_strip_of_sp_and_htab(value: bytes) -> None:
    """The fast path (one SP before, nothing after) and the call agree on every value."""
    assert trim(value) == value.strip(OWS)
    assert trim(b" " + value.strip(OWS)) == value.strip(OWS)


# Field lines near the edge of well-formed: case, whitespace, control characters, bare CR
# or LF, a missing or empty name, obs-fold, bytes above 0x7f.
_EDGE_LINES = st.lists(
    st.sampled_from(
        [b"X-A: b", b"x-a: b", b"X-A: B", b"X-A:\tb", b"X-A: b\x01", b"X-A: b\x7f", b"X-A: \x80",
         b"X-A : b", b"X A: b", b": b", b"X-A b", b" X-A: b", b"\tfolded", b"X-A: b\rc",
         b"X-A: b\nc", b"X-\x00: b", b"Server: o", b"SERVER: O", b"X-A: " + b"v" * 300,
         b"X-A: " + b"v" * 299 + b"\x0b"]
    ),
    max_size=5,
)  # fmt: skip


def _verdict(raw: bytes, response: bool) -> object:
    try:
        head = parse_response_head(raw) if response else parse_request_head(raw, Limits())
    except BadMessage as exc:
        return exc.status, exc.reason
    assert head is not None
    return head.block, head.size, head.lows


@given(st.lists(_EDGE_LINES, min_size=1, max_size=4), st.booleans())
def test_field_lines_known_clean_change_no_verdict(
    heads: list[list[bytes]], response: bool
) -> None:
    """A head reads the same, refusal and all, whatever heads came before it: lines found
    well-formed are kept (lower-cased) so that a head made of them skips the block's
    expression, and a kept line never lets a malformed one through."""
    first = b"HTTP/1.1 200 OK" if response else b"GET / HTTP/1.1\r\nHost: a.test"
    raws = [first + b"".join(b"\r\n" + line for line in lines) + b"\r\n\r\n" for lines in heads]
    wire._CLEAN_LINES.clear()
    cold = []
    for raw in raws:
        wire._CLEAN_LINES.clear()
        cold.append(_verdict(raw, response))
    warm = [_verdict(raw, response) for raw in raws + raws]
    assert warm == cold + cold
