"""``host[:port]``: the quick split of an ordinary name agrees with the expression."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from governor.http1.target import _HOST, same_authority, split_host


def by_expression(value: bytes) -> tuple[bytes, bytes] | None:
    """What split_host gave before its quick path: the expression alone."""
    m = _HOST.fullmatch(value)
    if m is None or b".." in m.group(1) or m.group(1)[:1] == b".":
        return None
    port = m.group(2) or b""
    if (port and not 1 <= int(port[-6:]) <= 65535) or len(port.lstrip(b"0")) > 5:
        return None  # not a TCP port
    return m.group(1), port


# Bytes a Host is made of, and those that make it something else.
_PIECES = st.sampled_from(
    [
        b"a",
        b"Z",
        b"0",
        b"9",
        b".",
        b"-",
        b":",
        b"[",
        b"]",
        b"%",
        b"%41",
        b"_",
        b"~",
        b" ",
        b"\xa0",
        b"@",
        b"/",
        b"\t",
        b"\x00",
    ]
)


@given(st.lists(_PIECES, max_size=12).map(b"".join))
def test_the_quick_split_agrees_with_the_expression(value: bytes) -> None:
    assert split_host(value) == by_expression(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"a.test", (b"a.test", b"")),
        (b"a.test:8080", (b"a.test", b"8080")),
        (b"a.test:", (b"a.test", b"")),
        (b"127.0.0.1:80", (b"127.0.0.1", b"80")),
        (b"[::1]:80", (b"[::1]", b"80")),
        (b"a%41.test", (b"a%41.test", b"")),
        (b"a..test", None),
        (b".a.test", None),
        (b"a.test:80:80", None),
        (b"a.test:8o", None),
        (b":80", None),
        (b"", None),
        (b"a test", None),
        (b"a.test:65535", (b"a.test", b"65535")),
        (b"a.test:000080", (b"a.test", b"000080")),
        (b"a.test:65536", None),
        (b"a.test:0", None),
        (b"a.test:99999999", None),
        (b"[::1]:70000", None),
        (b"a.test:" + b"9" * 5000, None),  # past int()'s digit limit: refused, not raised
    ],
)
def test_host_values(value: bytes, expected: tuple[bytes, bytes] | None) -> None:
    assert split_host(value) == expected


def test_an_authority_and_a_host_compare_by_name_and_port() -> None:
    assert same_authority(b"http", b"A.test", b"a.TEST:80")
    assert same_authority(b"https", b"a.test:443", b"a.test")
    assert not same_authority(b"http", b"a.test:8080", b"a.test")
    assert not same_authority(b"http", b"a..test", b"a..test")
