"""Header rewriting between client and upstream, pure.

Invariant: hop-by-hop headers (RFC 9110 §7.6.1), and every header a ``Connection``
header names, never cross governor in either direction; framing headers are
rebuilt by the HTTP layer on each side, never copied. Host is never removed: a
``Connection: host`` would otherwise send the upstream a request without the Host
the tenant was chosen by (an upstream then serves its default site).

Whitespace is SP and HTAB only (``_OWS``): ``str.strip()`` would also take NBSP or
NEL for whitespace and read a value differently from the upstream.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Final

from governor.config import Network
from governor.core.clients import is_trusted
from governor.http1.heads import lines_of

Header = tuple[str, str]

HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

_OWS: Final = " \t"

# Never dropped for being named in Connection: the upstream must get the Host the
# tenant was chosen by.
NOT_NOMINABLE: Final = frozenset({"host"})

# Set by governor itself on the way to the upstream; a client's copy is replaced.
_FORWARDED: Final = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "via"})

VIA: Final = "1.1 governor"
# What request_block adds when the request carried no forwarding fields (nearly every one),
# by (peer, scheme, host): a pure function of those, kept. Bounded, emptied when full.
_TAILS: Final[dict[tuple[str | None, str, str | None], bytes]] = {}
_TAILS_MAX: Final = 1024


def client_address(peer: str | None, headers: Sequence[Header], trusted: Sequence[Network]) -> str:
    """The visitor's address: the peer, or, behind trusted proxies, the first untrusted hop.

    X-Forwarded-For is read right to left and only while each hop is trusted, so a
    client cannot choose the address it is judged by.
    """
    addr = peer or ""
    if not is_trusted(addr, trusted):
        return addr
    hops: list[str] = []
    for name, value in headers:
        if name.lower() == "x-forwarded-for":
            hops.extend(h.strip(_OWS) for h in value.split(","))
    for hop in reversed(hops):
        if not hop:
            continue
        addr = hop
        if not is_trusted(hop, trusted):
            break
    return addr


# --- The same rewriting on a head's raw header block (the proxy's hot path) ---------
#
# A ``block`` is a header section as received, each field line preceded by its CRLF
# (see governor.http1.wire). Lines are dropped in one pass over the head's lower-cased
# lines (``lows``, which the parser made), each tested by its first letter and a
# prefix, instead of splitting every field into a pair; the semantics are those of
# the functions of the pair-based oracle in tests/unit/http1/header_oracle.py, which
# the tests hold the block versions to.

_HOP_BY_HOP_B: Final = tuple(sorted(n.encode() for n in HOP_BY_HOP))
_FORWARDED_B: Final = (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"via")
# Connection tokens that are hop-by-hop options, not names of other fields, and
# names governor keeps whatever Connection says.
_OPTIONS: Final = frozenset({"close", "keep-alive", "upgrade"}) | NOT_NOMINABLE


def _by_letter(names: Iterable[bytes]) -> dict[int, tuple[bytes, ...]]:
    """``names`` as the lines they start (``b"name:"``), by their first letter."""
    table: dict[int, list[bytes]] = {}
    for name in names:
        table.setdefault(name[0], []).append(name + b":")
    return {letter: tuple(starts) for letter, starts in table.items()}


_RESPONSE_BODY_DROPS: Final = _by_letter((*_HOP_BY_HOP_B, b"content-length"))
_RESPONSE_DROPS: Final = _by_letter(_HOP_BY_HOP_B)
_REQUEST_DROPS: Final = _by_letter((*_HOP_BY_HOP_B, b"content-length", b"expect", *_FORWARDED_B))
_REQUEST_UPGRADE_DROPS: Final = _by_letter(
    (*(n for n in _HOP_BY_HOP_B if n != b"upgrade"), b"content-length", b"expect", *_FORWARDED_B)
)
# A field whose name has an underscore (dropped from requests, see the oracle), found
# by one search, made only when the block has an underscore at all (a one-argument
# translate, a primitive of the compiled build: 250 against 820 ns for a browser's block,
# though callgrind counts more instructions, the search's memchr being vectorized); the
# lines themselves then go in a second pass.
_NO_UNDERSCORE: Final = bytes(c if c != 0x5F else 0x60 for c in range(256))
_UNDERSCORED: Final = re.compile(rb"\r\n[^:\r_]*_")
_UNDERSCORED_LINES: Final = re.compile(rb"\r\n[^:\r_]*_[^:\r]*:[^\r]*")


def _line_dropper(names: Iterable[bytes]) -> re.Pattern[bytes]:
    """A pattern matching whole field lines (with their leading CRLF) named ``names``."""
    alternatives = b"|".join(re.escape(n) for n in names)
    return re.compile(rb"\r\n(?:" + alternatives + rb"):[^\r]*", re.IGNORECASE)


def _drop_named(block: bytes, connection: Sequence[str]) -> bytes:
    """``block`` without the fields the Connection header names (beyond its options)."""
    named = [t.encode("latin-1") for t in connection if t not in _OPTIONS]
    if not named:
        return block
    return _line_dropper(named).sub(b"", block)


def _starting(low: bytes, table: dict[int, tuple[bytes, ...]]) -> int:
    """The length of the entry of ``table`` that the lower-cased line ``low`` starts with
    (its name and colon), or 0."""
    starts = table.get(low[0])
    if starts is not None:
        for start in starts:
            if low.startswith(start):
                return len(start)
    return 0


def _without(block: bytes, lows: list[bytes], table: dict[int, tuple[bytes, ...]]) -> bytes:
    """``block`` without the lines ``table`` names (``lows``: its lines, lower-cased, after
    one that is not in the block, as a head keeps them)."""
    parts: list[bytes] | None = None
    kept = at = 0  # where what is kept since the last dropped line starts; this line's CRLF
    for i in range(1, len(lows)):
        low = lows[i]
        end = at + 2 + len(low)
        if _starting(low, table):
            if parts is None:
                parts = []
            parts.append(block[kept:at])
            kept = end
        at = end
    if parts is None:
        return block
    parts.append(block[kept:])
    return b"".join(parts)


def response_block(
    block: bytes, connection: Sequence[str], *, body: bool, lows: list[bytes] | None = None
) -> bytes:
    """An upstream response's block as governor passes it on (see client_response_headers).

    With ``body`` Content-Length goes too: the client side frames the body itself.
    ``lows``: the head's lines lower-cased (:attr:`ResponseHead.lows`), or read here.
    """
    if lows is None:
        lows = lines_of(block)
    out = _without(block, lows, _RESPONSE_BODY_DROPS if body else _RESPONSE_DROPS)
    return _drop_named(out, connection) if connection else out


def request_block(
    block: bytes,
    connection: Sequence[str],
    *,
    host: str | None,
    peer: str | None,
    trusted: Sequence[Network],
    scheme: str = "http",
    upgrade: bool = False,
    lows: list[bytes] | None = None,
) -> bytes:
    """A client request's block as governor sends it upstream (see upstream_request_headers).

    Content-Length and Transfer-Encoding go: the caller adds the framing it sends.
    ``lows``: the head's lines lower-cased (:attr:`RequestHead.lows`), or read here.
    """
    if lows is None:
        lows = lines_of(block)
    from_trusted = is_trusted(peer, trusted)
    prior_xff: list[str] = []
    prior_proto: str | None = None
    prior_host: str | None = None
    prior_via: list[str] = []
    table = _REQUEST_UPGRADE_DROPS if upgrade else _REQUEST_DROPS
    parts: list[bytes] = []
    kept = at = 0  # as in _without, which this is, with the forwarding fields read on the way
    for i in range(1, len(lows)):
        low = lows[i]
        end = at + 2 + len(low)
        size = _starting(low, table)
        if size:
            parts.append(block[kept:at])
            kept = end
            first = low[0]
            if first == 120 or first == 118:  # x-forwarded-*, via
                text = block[at + 2 + size : end].strip(b" \t").decode("latin-1")
                if size == 4:  # via:
                    prior_via.append(text)
                elif not from_trusted:
                    pass
                elif size == 16:  # x-forwarded-for:
                    prior_xff.append(text)
                elif size == 18 and prior_proto is None:  # x-forwarded-proto:
                    prior_proto = text
                elif size == 17 and prior_host is None:  # x-forwarded-host:
                    prior_host = text
        at = end
    if parts:
        parts.append(block[kept:])
        out = b"".join(parts)
    else:
        out = block
    if out.translate(_NO_UNDERSCORE) != out and _UNDERSCORED.search(out) is not None:
        out = _UNDERSCORED_LINES.sub(b"", out)
    if connection:
        out = _drop_named(out, [t for t in connection if t != "upgrade" or not upgrade])
    if prior_xff or prior_proto or prior_host or prior_via or upgrade:
        return out + _tail(
            peer, scheme, host, prior_xff, prior_proto, prior_host, prior_via, upgrade
        )
    key = (peer, scheme, host)  # nothing forwarded before governor: nearly every request
    tail = _TAILS.get(key)
    if tail is None:
        if len(_TAILS) >= _TAILS_MAX:
            _TAILS.clear()
        tail = _TAILS[key] = _tail(peer, scheme, host, [], None, None, [], False)
    return out + tail


def _tail(
    peer: str | None,
    scheme: str,
    host: str | None,
    prior_xff: list[str],
    prior_proto: str | None,
    prior_host: str | None,
    prior_via: list[str],
    upgrade: bool,
) -> bytes:
    """The forwarding fields governor adds to a request it sends upstream."""
    xff = ", ".join([*prior_xff, peer or "unknown"])
    tail = f"\r\nX-Forwarded-For: {xff}\r\nX-Forwarded-Proto: {prior_proto or scheme}"
    if prior_host or host:
        tail += f"\r\nX-Forwarded-Host: {prior_host or host}"
    tail += f"\r\nVia: {', '.join([*prior_via, VIA])}"
    if upgrade:
        tail += "\r\nConnection: upgrade"
    return tail.encode("latin-1")
