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
# (see governor.http1.wire). Lines are dropped with one regular-expression pass instead
# of splitting every field into a pair; the semantics are those of the functions
# of the pair-based oracle in tests/unit/http1/header_oracle.py, which the tests hold the
# block versions to.

_HOP_BY_HOP_B: Final = tuple(sorted(n.encode() for n in HOP_BY_HOP))
_FORWARDED_B: Final = (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"via")
# Connection tokens that are hop-by-hop options, not names of other fields, and
# names governor keeps whatever Connection says.
_OPTIONS: Final = frozenset({"close", "keep-alive", "upgrade"}) | NOT_NOMINABLE


def _line_dropper(names: Iterable[bytes], *, underscored: bool = False) -> re.Pattern[bytes]:
    """A pattern matching whole field lines (with their leading CRLF) named ``names``.

    With ``underscored`` it also matches every field whose name has an underscore.
    """
    alternatives = b"|".join(re.escape(n) for n in names)
    if underscored:
        alternatives += rb"|[^:\r_]*_[^:\r]*"
    return re.compile(rb"\r\n(?:" + alternatives + rb"):[^\r]*", re.IGNORECASE)


_DROP_RESPONSE_BODY: Final = _line_dropper((*_HOP_BY_HOP_B, b"content-length"))
_DROP_RESPONSE: Final = _line_dropper(_HOP_BY_HOP_B)
_DROP_REQUEST: Final = _line_dropper(
    (*_HOP_BY_HOP_B, b"content-length", b"expect", *_FORWARDED_B), underscored=True
)
_DROP_REQUEST_UPGRADE: Final = _line_dropper(
    (*(n for n in _HOP_BY_HOP_B if n != b"upgrade"), b"content-length", b"expect", *_FORWARDED_B),
    underscored=True,
)
_FORWARDED_VALUES: Final = re.compile(
    rb"\r\n(x-forwarded-for|x-forwarded-proto|x-forwarded-host|via):[ \t]*([^\r]*)",
    re.IGNORECASE,
)


def _drop_named(block: bytes, connection: Sequence[str]) -> bytes:
    """``block`` without the fields the Connection header names (beyond its options)."""
    named = [t.encode("latin-1") for t in connection if t not in _OPTIONS]
    if not named:
        return block
    return _line_dropper(named).sub(b"", block)


def response_block(block: bytes, connection: Sequence[str], *, body: bool) -> bytes:
    """An upstream response's block as governor passes it on (see client_response_headers).

    With ``body`` Content-Length goes too: the client side frames the body itself.
    """
    out = (_DROP_RESPONSE_BODY if body else _DROP_RESPONSE).sub(b"", block)
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
) -> bytes:
    """A client request's block as governor sends it upstream (see upstream_request_headers).

    Content-Length and Transfer-Encoding go: the caller adds the framing it sends.
    """
    from_trusted = is_trusted(peer, trusted)
    prior_xff: list[str] = []
    prior_proto: str | None = None
    prior_host: str | None = None
    prior_via: list[str] = []
    for name, value in _FORWARDED_VALUES.findall(block):
        low = name.lower()
        text = value.rstrip(b" \t").decode("latin-1")
        if low == b"via":
            prior_via.append(text)
        elif not from_trusted:
            continue
        elif low == b"x-forwarded-for":
            prior_xff.append(text)
        elif low == b"x-forwarded-proto" and prior_proto is None:
            prior_proto = text
        elif low == b"x-forwarded-host" and prior_host is None:
            prior_host = text
    out = (_DROP_REQUEST_UPGRADE if upgrade else _DROP_REQUEST).sub(b"", block)
    if connection:
        out = _drop_named(out, [t for t in connection if t != "upgrade" or not upgrade])
    xff = ", ".join([*prior_xff, peer or "unknown"])
    tail = f"\r\nX-Forwarded-For: {xff}\r\nX-Forwarded-Proto: {prior_proto or scheme}"
    if prior_host or host:
        tail += f"\r\nX-Forwarded-Host: {prior_host or host}"
    tail += f"\r\nVia: {', '.join([*prior_via, VIA])}"
    if upgrade:
        tail += "\r\nConnection: upgrade"
    return out + tail.encode("latin-1")
