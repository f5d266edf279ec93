"""HTTP/1.1 message heads, pure: parsed strictly, each with its exact size on the wire.

No I/O and no awaits: callers hand bytes in and get back a parsed head with its
exact size on the wire, or body pieces together with how many raw bytes they
used. That is what lets the proxy charge every received byte to the one request
it belongs to, and rebuild framing on each side instead of copying it.

Strictness (RFC 9112), because a message two parsers could read two ways is how
requests are smuggled: a request is refused with :class:`BadMessage` when it has
Content-Length and Transfer-Encoding together, differing or malformed
Content-Length values, a Transfer-Encoding that is not exactly the one token
``chunked`` (or any in HTTP/1.0), obs-fold, a bare CR or LF, a control character
in a field, a bad field name, a Host that is not one valid ``host[:port]``, a
request target in no form governor serves, or an absolute-form target whose
authority differs from Host. Bodies are framed by :mod:`governor.http1.body`.

Whitespace is SP and HTAB only: values are trimmed with ``_OWS`` and compared as
bytes, never with ``str.strip()``/``str.lower()``, which would also take NBSP
(\xa0) or NEL (\x85) of a latin-1 decoded value for whitespace, or fold
non-ASCII letters, and so read a value differently from the upstream.

Leniency where nothing is ambiguous (what nginx and HAProxy both accept, RFC 9112
allows, and governor rewrites before forwarding anyway): empty lines (CRLF)
before a request line, runs of SP between the request line's parts, an
``HTTP/1.x`` version with a minor above 1 (read and forwarded as HTTP/1.1),
leading zeros in Content-Length (and chunk sizes, :mod:`governor.http1.body`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from governor.errors import BadMessage
from governor.http1.target import request_line, request_target, same_authority, split_host

Header = tuple[str, str]

CRLF: Final = b"\r\n"
HEAD_END: Final = b"\r\n\r\n"

_DIGITS: Final = re.compile(rb"0*([0-9]{1,18})")  # leading zeros, then at most 18 digits
_STATUS: Final = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9][0-9])(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?")
_OWS: Final = b" \t"


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
        self.parsed = parsed

    @property
    def headers(self) -> list[Header]:
        """Every field as a (name, value) pair, in order."""
        if self.parsed is None:
            self.parsed = _fields(self.block.split(CRLF)[1:], None)
        return self.parsed

    @property
    def user_agent(self) -> str | None:
        """The first User-Agent field's value, found in the raw block (nothing is split)."""
        return self.who()[0]

    def who(self) -> tuple[str | None, str | None]:
        """The first User-Agent and Referer values, in one pass over the raw block."""
        agent = referer = None
        for name, value in _WHO.findall(self.block):
            text = value.rstrip(_OWS).decode("latin-1")
            if len(name) == 10:  # user-agent
                agent = text if agent is None else agent
            elif referer is None:
                referer = text
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
        self.parsed = parsed

    @property
    def headers(self) -> list[Header]:
        """Every field as a (name, value) pair, in order."""
        if self.parsed is None:
            self.parsed = _fields(self.block.split(CRLF)[1:], None)
        return self.parsed


_TOKEN_CHARS: Final = (
    b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)
# Every byte but the control characters other than HTAB, CR and LF: what translate()
# deletes to find a control character (faster than a regular expression here).
_NOT_CTL: Final = bytes(c for c in range(256) if c in (9, 10, 13) or 32 <= c < 127 or c > 127)
# A whole header section of well-formed field lines (CR and LF are checked apart).
_BLOCK: Final = re.compile(rb"(?:\r\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\r\n]*)*")
# No control character (HTAB aside) in a value either: with a first line free of them
# (_CLEAN_LINE), a head passes _check_chars and _BLOCK alike, in one pass.
# The class is written as the bytes it allows (HTAB, SP to ~, and 0x80 up), and the
# repeats are possessive: the engine then tests each byte against one bitmap and never
# backtracks (nothing could match another way), 35% quicker than the negated class.
_STRICT_BLOCK: Final = re.compile(
    rb"(?:\r\n[!#$%&'*+\-.^_`|~0-9A-Za-z]++:[\t\x20-\x7e\x80-\xff]*+)*+"
)
_CLEAN_LINE: Final = re.compile(rb"[\t\x20-\x7e\x80-\xff]*+")
_WHO: Final = re.compile(rb"\r\n(user-agent|referer):[ \t]*([^\r]*)", re.IGNORECASE)
# The framing fields, each found by its lower-cased "CRLF name:" in the lower-cased
# block (see :func:`_values`).
_HOST_AT: Final = b"\r\nhost:"
_LENGTH_AT: Final = b"\r\ncontent-length:"
_CODING_AT: Final = b"\r\ntransfer-encoding:"
_CONNECTION_AT: Final = b"\r\nconnection:"
_EXPECT_AT: Final = b"\r\nexpect:"
_UPGRADE_AT: Final = b"\r\nupgrade:"
_NONE: Final[list[bytes]] = []  # what _values gives for a field that is absent; never changed


def _check_chars(head: bytes) -> None:
    """Refuse a bare CR or LF, or a control character, anywhere in a head."""
    pairs = head.count(CRLF)
    if head.count(b"\n") != pairs or head.count(b"\r") != pairs:
        raise BadMessage(400, "a bare CR or LF in the head")
    if head.translate(None, _NOT_CTL):
        raise BadMessage(400, "a control character in the head")


def _check_block(block: bytes, limits: Limits | None, *, well_formed: bool = False) -> None:
    """Refuse a header section with a malformed line, or one beyond ``limits``
    (``well_formed``: its lines are known good already, only the limits are left)."""
    if limits is not None:
        if block.count(CRLF) > limits.fields:
            raise BadMessage(431, "too many header fields")
        if len(block) > limits.field and max(map(len, block.split(CRLF))) > limits.field:
            raise BadMessage(431, "a header field is too large")
    if not well_formed and _BLOCK.fullmatch(block) is None:
        _fields(block.split(CRLF)[1:], limits)  # raises, naming what is wrong
        raise BadMessage(400, "a malformed header field")


def _fields(lines: list[bytes], limits: Limits | None) -> list[Header]:
    """Header lines as (name, value) strings, checked one by one."""
    if limits is not None and len(lines) > limits.fields:
        raise BadMessage(431, "too many header fields")
    out: list[Header] = []
    append = out.append
    field_max = limits.field if limits is not None else 1 << 30
    for line in lines:
        name, sep, value = line.partition(b":")
        if not sep or not name or name.translate(None, _TOKEN_CHARS):
            if line[:1] in (b" ", b"\t"):
                raise BadMessage(400, "obs-fold (a header line starting with whitespace)")
            raise BadMessage(400, "a malformed header field name")
        if len(line) > field_max:
            raise BadMessage(431, "a header field is too large")
        append((name.decode("ascii"), value.strip(_OWS).decode("latin-1")))
    return out


def _values(block: bytes, low: bytes, marker: bytes) -> list[bytes]:
    """The values, in order and trimmed of SP/HTAB, of every field of ``block`` whose
    lower-cased line starts with ``marker`` (``b"\\r\\nname:"``); ``low`` is the block
    lower-cased (``block`` itself where values may be lower-cased too).

    The block has passed the strict check (every line ``name:value``, no bare CR or LF),
    so a field's value is what runs to the next CR. A search for a literal in C: a tenth
    of what a regular expression's ``findall`` and a dict of its matches cost.
    """
    at = low.find(marker)
    if at < 0:
        return _NONE
    found: list[bytes] = []
    size = len(marker)
    while at >= 0:
        start = at + size
        end = low.find(b"\r", start)
        if end < 0:
            end = len(low)
        found.append(block[start:end].strip(_OWS))
        at = low.find(marker, end)
    return found


def _content_length(values: list[bytes]) -> int:
    if len(values) == 1 and values[0].isdigit() and len(values[0]) <= 18:
        return int(values[0])  # the usual case: one plain number
    seen: set[bytes] = set()
    for value in values:
        for item in value.split(b","):
            m = _DIGITS.fullmatch(item.strip(_OWS))
            if m is None:
                raise BadMessage(400, "a malformed Content-Length")
            seen.add(m.group(1).lstrip(b"0") or b"0")
    if len(seen) != 1:
        raise BadMessage(400, "differing Content-Length values")
    return int(seen.pop())


def _tokens(values: list[bytes]) -> tuple[str, ...]:
    """The elements of a comma-separated list, trimmed of SP/HTAB only, ASCII lower-cased
    (``values`` are trimmed already, as :func:`_values` gives them)."""
    if len(values) == 1 and values[0].find(b",") < 0:  # "keep-alive", "close": one token
        token = values[0].lower()
        return (token.decode("latin-1"),) if token else ()
    return tuple(
        t.decode("latin-1")
        for t in (item.strip(_OWS).lower() for v in values for item in v.split(b","))
        if t
    )


def _empty_lines(buf: bytes | bytearray) -> int:
    """How many bytes of empty lines (CRLF) come before a request line (RFC 9112 §2.2)."""
    start = 0
    while buf.startswith(CRLF, start):
        start += 2
    return start


def parse_request_head(buf: bytes | bytearray, limits: Limits) -> RequestHead | None:
    """The request head at the start of ``buf``, or None while it is incomplete.

    Raises BadMessage for a head governor will not read (the connection must then
    close, since where the next request starts is unknown).
    """
    start = _empty_lines(buf) if buf[:2] == CRLF else 0
    end = buf.find(HEAD_END, start)
    if end < 0:
        first = buf.find(CRLF, start)
        if first < 0 and len(buf) - start > limits.request_line:
            raise BadMessage(414, "the request line is too long")
        if len(buf) > limits.head:
            raise BadMessage(431, "the request head is too large")
        return None
    if end + 4 > limits.head:
        raise BadMessage(431, "the request head is too large")
    head = bytes(buf[start:end])
    eol = head.find(CRLF)
    line, block = (head, b"") if eol < 0 else (head[:eol], head[eol:])
    clean = _CLEAN_LINE.fullmatch(line) is not None and _STRICT_BLOCK.fullmatch(block) is not None
    if not clean:
        _check_chars(head)  # the refusal that names a bare CR or LF, or a control character
    if len(line) > limits.request_line:
        raise BadMessage(414, "the request line is too long")
    method_b, target_b, version = request_line(line)
    target_b, scheme, authority = request_target(method_b, target_b)
    if block:
        _check_block(block, limits, well_formed=clean)
    low = block.lower()
    hosts = _values(block, low, _HOST_AT)
    lengths = _values(block, low, _LENGTH_AT)
    codings = _values(block, low, _CODING_AT)
    connection = _values(block, low, _CONNECTION_AT)
    expect = _values(block, low, _EXPECT_AT)
    upgrades = _values(block, low, _UPGRADE_AT)
    if len(hosts) > 1:
        raise BadMessage(400, "more than one Host header")
    if hosts and split_host(hosts[0]) is None:
        raise BadMessage(400, "a Host header that is not a valid host[:port]")
    if version >= (1, 1) and not hosts:
        raise BadMessage(400, "no Host header")
    if authority is not None:
        assert scheme is not None
        if not hosts:  # HTTP/1.0: the target names the host; the upstream gets it as Host
            hosts = [authority]
            block += b"\r\nHost: " + authority
        elif not same_authority(scheme, authority, hosts[0]):
            raise BadMessage(400, "the absolute URI's authority differs from the Host header")
    host = hosts[0].decode("ascii") if hosts else None
    chunked = False
    if codings:
        if version < (1, 1):
            raise BadMessage(400, "Transfer-Encoding in an HTTP/1.0 request")
        if lengths:
            raise BadMessage(400, "both Content-Length and Transfer-Encoding")
        if len(codings) != 1 or codings[0].lower() != b"chunked":
            raise BadMessage(400, "a Transfer-Encoding other than exactly chunked")
        chunked = True
    content_length = _content_length(lengths) if lengths else None
    conn = _tokens(connection) if connection else ()
    keep_alive = "close" not in conn if version >= (1, 1) else "keep-alive" in conn
    upgrade = None
    if upgrades and "upgrade" in conn and version >= (1, 1):
        upgrade = upgrades[0].decode("latin-1")
    return RequestHead(
        method=method_b.decode("ascii"),
        target=target_b.decode("latin-1"),
        version=version,
        block=block,
        size=end + 4,
        host=host,
        content_length=content_length,
        chunked=chunked,
        keep_alive=keep_alive,
        expect_continue=version >= (1, 1) and [e.lower() for e in expect] == [b"100-continue"],
        upgrade=upgrade,
        connection=conn,
    )


def parse_response_head(buf: bytes | bytearray, *, max_size: int = 65536) -> ResponseHead | None:
    """The response head at the start of ``buf``, or None while it is incomplete.

    Raises BadMessage (status 502) for a response governor cannot pass on safely.
    """
    end = buf.find(HEAD_END)
    if end < 0:
        if len(buf) > max_size:
            raise BadMessage(502, "the upstream's response head is too large")
        return None
    head = bytes(buf[:end])
    try:
        eol = head.find(CRLF)
        line, block = (head, b"") if eol < 0 else (head[:eol], head[eol:])
        m = _STATUS.fullmatch(line)  # no control character in a line it matches
        if m is None or _STRICT_BLOCK.fullmatch(block) is None:  # the long way round, to
            _check_chars(head)  # the refusal that says what is wrong
            if m is None:
                raise BadMessage(502, "a malformed status line")
            _check_block(block, None)
        low = block.lower()  # the three values mean the same lower-cased
        lengths = _values(low, low, _LENGTH_AT)
        codings = _values(low, low, _CODING_AT)
        connection = _values(low, low, _CONNECTION_AT)
        chunked = False
        if codings:
            tokens = _tokens(codings)
            if not tokens or tokens[-1] != "chunked":
                raise BadMessage(502, "a response body without a final chunked coding")
            if tokens != ("chunked",):
                raise BadMessage(502, "a Transfer-Encoding other than chunked")
            chunked = True
        content_length = _content_length(lengths) if lengths and not chunked else None
    except BadMessage as exc:
        raise BadMessage(502, f"the upstream's response: {exc.reason}") from None
    version = (1, int(m.group(1)))
    conn = _tokens(connection) if connection else ()
    keep_alive = "close" not in conn if version >= (1, 1) else "keep-alive" in conn
    reason = (m.group(3) or b"").decode("latin-1")
    return ResponseHead(
        status=int(m.group(2)),
        reason=reason,
        version=version,
        block=block,
        size=end + 4,
        content_length=content_length,
        chunked=chunked,
        keep_alive=keep_alive,
        connection=conn,
    )


def response_has_body(method: str, status: int) -> bool:
    """Whether a response to ``method`` with ``status`` carries a body (RFC 9112 §6.3)."""
    return not (method == "HEAD" or status < 200 or status in (204, 304))


def encode_head(first_line: str, headers: list[Header]) -> bytes:
    """A message head: the first line, the fields, and the blank line."""
    return first_line.encode("latin-1") + encode_block(headers) + HEAD_END


def encode_block(headers: Sequence[Header]) -> bytes:
    """Header fields as a ``block``: each line preceded by CRLF."""
    return "".join(f"\r\n{name}: {value}" for name, value in headers).encode("latin-1")


def chunk_prefix(size: int) -> bytes:
    """The framing before a chunk of ``size`` bytes (the chunk is followed by CRLF)."""
    return b"%x\r\n" % size


LAST_CHUNK: Final = b"0\r\n\r\n"
