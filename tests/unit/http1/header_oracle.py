"""The pair-based header rewrite: the oracle the raw-block rewrite in governor is held to.

governor rewrites a head's raw header block in one pass (``request_block``,
``response_block`` in :mod:`governor.http1.headers`); these functions do the same on
(name, value) pairs, the plain way, so the tests can compare the two on any input.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from governor.config import Network
from governor.core.clients import is_trusted
from governor.http1.headers import (
    _FORWARDED,
    _OWS,
    HOP_BY_HOP,
    NOT_NOMINABLE,
    VIA,
)
from governor.http1.heads import Header


def connection_tokens(headers: Iterable[Header]) -> frozenset[str]:
    """Lower-cased header names listed in every ``Connection`` header."""
    tokens: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            tokens.update(t.strip(_OWS).lower() for t in value.split(",") if t.strip(_OWS))
    return frozenset(tokens)


def strip_hop_by_hop(
    headers: Sequence[Header], *, keep: frozenset[str] = frozenset()
) -> list[Header]:
    """``headers`` without hop-by-hop ones and those named in Connection (except ``keep``).

    Host stays whatever Connection names.
    """
    drop = (HOP_BY_HOP | connection_tokens(headers)) - keep - NOT_NOMINABLE
    return [(n, v) for n, v in headers if n.lower() not in drop]


def upstream_request_headers(
    headers: Sequence[Header],
    *,
    peer: str | None,
    trusted: Sequence[Network],
    scheme: str = "http",
    upgrade: bool = False,
) -> list[Header]:
    """The headers to send upstream for a client's request headers.

    Fields with an underscore in their name are dropped, as nginx does by default:
    CGI-style upstreams read ``Content_Length`` as ``Content-Length``, a way to
    smuggle a second framing header past governor.

    Host is kept as the client sent it. With ``upgrade`` the ``Upgrade`` header and
    ``Connection: upgrade`` are kept for the WebSocket handshake.
    """
    keep = frozenset({"upgrade"}) if upgrade else frozenset()
    out = strip_hop_by_hop(headers, keep=keep)
    from_trusted = is_trusted(peer, trusted)
    prior_xff: list[str] = []
    prior_proto: str | None = None
    prior_host: str | None = None
    prior_via: list[str] = []
    host: str | None = None
    kept: list[Header] = []
    for name, value in out:
        low = name.lower()
        if low == "host":
            host = value
        if low == "content-length":
            continue  # framing: rebuilt by the proxy from the body it forwards
        if "_" in low:
            continue  # like nginx: CGI-style upstreams read "_" as "-" (Content_Length)
        if low not in _FORWARDED and low != "expect":
            kept.append((name, value))
            continue
        if low == "via":
            prior_via.append(value)
        elif from_trusted and low == "x-forwarded-for":
            prior_xff.append(value)
        elif from_trusted and low == "x-forwarded-proto" and prior_proto is None:
            prior_proto = value
        elif from_trusted and low == "x-forwarded-host" and prior_host is None:
            prior_host = value
    xff = ", ".join([*prior_xff, peer or "unknown"])
    kept.append(("X-Forwarded-For", xff))
    kept.append(("X-Forwarded-Proto", prior_proto or scheme))
    if prior_host or host:
        kept.append(("X-Forwarded-Host", prior_host or host or ""))
    kept.append(("Via", ", ".join([*prior_via, VIA])))
    if upgrade:
        kept.append(("Connection", "upgrade"))
    return kept


def client_response_headers(headers: Sequence[Header]) -> list[Header]:
    """The upstream's response headers as governor sends them on to the client.

    Content-Length is kept (the server side enforces it); Transfer-Encoding is
    dropped and re-applied by the server side when the body is chunked.
    """
    return strip_hop_by_hop(headers)
