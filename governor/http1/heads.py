"""Parsed HTTP/1.1 message heads: what :mod:`governor.http1.wire` reads a head into.

A head keeps its header section as received (``block``) and the same lines lower-cased
(``lows``), so that the proxy finds, drops and reads fields by a prefix of a line,
without splitting every field into a (name, value) pair (:attr:`RequestHead.headers`
does that on demand).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from governor.errors import BadMessage

Header = tuple[str, str]

OWS: Final = b" \t"  # whitespace in a field: SP and HTAB only (see governor.http1.wire)
_CRLF: Final = b"\r\n"
TOKEN_CHARS: Final = (
    b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)


def trim(value: bytes) -> bytes:
    """``value.strip(OWS)``; the usual ``name: value`` (one SP before, nothing after) is
    sliced without the call (a method call mypyc has no primitive for: ~700 instructions)."""
    n = len(value)
    if n > 1 and value[0] == 32 and value[1] not in (32, 9) and value[n - 1] not in (32, 9):
        return value[1:]
    return value.strip(OWS)


def table_of(allowed: Iterable[int]) -> bytes:
    """A ``bytes.translate`` table that changes every byte but ``allowed``: then
    ``s.translate(table) == s`` exactly when ``s`` has no other byte. One call of a C
    loop (a primitive of the compiled build), where an expression costs a match object."""
    keep = frozenset(allowed)
    return bytes(c if c in keep else (c + 1) % 256 for c in range(256))


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """How large a request head may be; beyond them the request is refused."""

    request_line: int = 8192  # 414 URI Too Long
    field: int = 8192  # one header line: 431
    head: int = 65536  # the whole head: 431
    fields: int = 100  # header lines: 431


@dataclass(slots=True, kw_only=True)
class RequestHead:
    """A parsed request head and what it says about framing.

    ``block`` is the header section as received: each field line preceded by its
    CRLF, without the final blank line. It is what the proxy forwards (less the
    hop-by-hop lines), so an ordinary request is never split into (name, value)
    pairs at all; :attr:`headers` does that on demand. (One exception: an HTTP/1.0
    request in absolute-form without Host gets a Host line made of the target's
    authority, so that what the upstream sees is what the tenant was chosen by.)

    ``target`` is in origin-form (``/path?query``), ``*`` (OPTIONS) or, for
    CONNECT, as sent: an absolute-form target is rewritten to origin-form.
    """

    method: str
    target: str
    version: tuple[int, int]
    block: bytes
    size: int  # bytes on the wire, CRLFCRLF (and any empty lines before the request) included
    host: str | None  # a valid host[:port], as sent (the tenant is chosen by it)
    content_length: int | None
    chunked: bool
    keep_alive: bool
    expect_continue: bool
    upgrade: str | None  # the Upgrade header, when Connection names it
    connection: tuple[str, ...]  # the Connection header's tokens, lower-cased
    lows: list[bytes]  # the head's lines lower-cased, the first line first (see lines_of)
    parsed: list[Header] | None = None

    def __init__(  # written out: compiled, where the one @dataclass makes is interpreted
        self,
        *,
        method: str,
        target: str,
        version: tuple[int, int],
        block: bytes,
        size: int,
        host: str | None,
        content_length: int | None,
        chunked: bool,
        keep_alive: bool,
        expect_continue: bool,
        upgrade: str | None,
        connection: tuple[str, ...],
        lows: list[bytes] | None = None,
        parsed: list[Header] | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.block = block
        self.size = size
        self.host = host
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.upgrade = upgrade
        self.connection = connection
        self.lows = lines_of(block) if lows is None else lows
        self.parsed = parsed

    @property
    def headers(self) -> list[Header]:
        """Every field as a (name, value) pair, in order."""
        if self.parsed is None:
            self.parsed = fields_of(self.block.split(_CRLF)[1:], None)
        return self.parsed

    @property
    def user_agent(self) -> str | None:
        """The first User-Agent field's value, found in the lines (no field split in pairs)."""
        return self.who()[0]

    def who(self) -> tuple[str | None, str | None]:
        """The first User-Agent and Referer values, in one pass over the lines."""
        agent = referer = None
        block, lows = self.block, self.lows
        at = 0  # where the line's CRLF is in the block
        for i in range(1, len(lows)):
            low = lows[i]
            size = len(low)
            if agent is None and low.startswith(b"user-agent:"):
                agent = trim(block[at + 13 : at + 2 + size]).decode("latin-1")
            elif referer is None and low.startswith(b"referer:"):
                referer = trim(block[at + 10 : at + 2 + size]).decode("latin-1")
            at += 2 + size
        return agent, referer

    @property
    def has_body(self) -> bool:
        """Whether a body follows the head."""
        return self.chunked or bool(self.content_length)


@dataclass(slots=True, kw_only=True)
class ResponseHead:
    """A parsed response head from an upstream; ``block`` as in :class:`RequestHead`."""

    status: int
    reason: str
    version: tuple[int, int]
    block: bytes
    size: int
    content_length: int | None
    chunked: bool
    keep_alive: bool
    connection: tuple[str, ...]
    lows: list[bytes]
    parsed: list[Header] | None = None

    def __init__(  # written out, as RequestHead's
        self,
        *,
        status: int,
        reason: str,
        version: tuple[int, int],
        block: bytes,
        size: int,
        content_length: int | None,
        chunked: bool,
        keep_alive: bool,
        connection: tuple[str, ...],
        lows: list[bytes] | None = None,
        parsed: list[Header] | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.version = version
        self.block = block
        self.size = size
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.connection = connection
        self.lows = lines_of(block) if lows is None else lows
        self.parsed = parsed

    @property
    def headers(self) -> list[Header]:
        """Every field as a (name, value) pair, in order."""
        if self.parsed is None:
            self.parsed = fields_of(self.block.split(_CRLF)[1:], None)
        return self.parsed


def fields_of(lines: list[bytes], limits: Limits | None) -> list[Header]:
    """Header lines as (name, value) strings, checked one by one."""
    if limits is not None and len(lines) > limits.fields:
        raise BadMessage(431, "too many header fields")
    out: list[Header] = []
    append = out.append
    field_max = limits.field if limits is not None else 1 << 30
    for line in lines:
        name, sep, value = line.partition(b":")
        if not sep or not name or name.translate(None, TOKEN_CHARS):
            if line[:1] in (b" ", b"\t"):
                raise BadMessage(400, "obs-fold (a header line starting with whitespace)")
            raise BadMessage(400, "a malformed header field name")
        if len(line) > field_max:
            raise BadMessage(431, "a header field is too large")
        append((name.decode("ascii"), value.strip(OWS).decode("latin-1")))
    return out


def lines_of(block: bytes) -> list[bytes]:
    """A block's lines lower-cased as a head keeps them (``lows``): b"" first (where a
    head has its first line), then each field line."""
    return block.lower().split(_CRLF)
