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

Whitespace is SP and HTAB only: values are trimmed with ``OWS`` and compared as
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
from typing import Final

from governor.errors import BadMessage
from governor.http1.heads import (
    OWS,
    Header,
    Limits,
    RequestHead,
    ResponseHead,
    fields_of,
    table_of,
    trim,
)
from governor.http1.target import request_line, request_target, same_authority, split_host

CRLF: Final = b"\r\n"
HEAD_END: Final = b"\r\n\r\n"

_DIGITS: Final = re.compile(rb"0*([0-9]{1,18})")  # leading zeros, then at most 18 digits
_STATUS: Final = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9][0-9])(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?")


# Every byte but the control characters other than HTAB, CR and LF: what translate()
# deletes to find a control character (faster than a regular expression here).
_NOT_CTL: Final = bytes(c for c in range(256) if c in (9, 10, 13) or 32 <= c < 127 or c > 127)
# A whole header section of well-formed field lines (CR and LF are checked apart).
_BLOCK: Final = re.compile(rb"(?:\r\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\r\n]*)*")
# No control character (HTAB aside) in a value either: with a first line free of them
# (_CLEAN_LINE), a head passes _check_chars and _BLOCK alike, in one pass.
# The class is written as the bytes it allows (HTAB, SP to ~, and 0x80 up), and the
# repeats are possessive: the engine then tests each byte against one bitmap and never
# backtracks (nothing could match another way), 35% quicker than the negated class. (A
# strip and a translate per line cost more: 11k instructions against 8.6k for a response
# head of 9 lines, callgrind.)
_STRICT_BLOCK: Final = re.compile(
    rb"(?:\r\n[!#$%&'*+\-.^_`|~0-9A-Za-z]++:[\t\x20-\x7e\x80-\xff]*+)*+"
)
# Field lines known well-formed, lower-cased: a block of them only needs no _STRICT_BLOCK
# pass (most of a response head's parsing, for the lines a site sends again and again).
# Being well-formed is the line's own property, and lower-casing keeps it: only A-Z change,
# to letters the same classes take. Bounded (long lines are not kept), emptied when full.
_CLEAN_LINES: Final[set[bytes]] = set()
_CLEAN_LINES_MAX: Final = 4096
_CLEAN_LINE_LONGEST: Final = 256
# The bytes of a clean first line: no control character but HTAB (nor CR or LF).
_CLEAN_LINE: Final = table_of(c for c in range(256) if c == 9 or 0x20 <= c <= 0x7E or c >= 0x80)
# The Connection (and Transfer-Encoding) values nearly every head has, read.
_COMMON_TOKENS: Final = {
    v: (v.lower().decode(),)
    for v in (b"keep-alive", b"Keep-Alive", b"close", b"Close", b"upgrade", b"Upgrade", b"chunked")
}
# The values of an absent field: shared, never changed (see :func:`_add`).
_NONE: Final[list[bytes]] = []
# Valid Host values seen, as the str a head gives (see :func:`_host`); emptied when full.
_HOSTS: Final[dict[bytes, str]] = {}
_HOSTS_MAX: Final = 1024
# The status line of most responses: parsed without an expression, written unformatted.
OK_LINE: Final = b"HTTP/1.1 200 OK"


def _clean_block(block: bytes, lows: list[bytes]) -> bool:
    """Whether ``block`` holds well-formed field lines only (no control character but
    HTAB in a value); ``lows`` are its head's lines lower-cased, the first line first."""
    known = _CLEAN_LINES
    for i in range(1, len(lows)):
        if lows[i] not in known:
            break
    else:
        return True
    if _STRICT_BLOCK.fullmatch(block) is None:
        return False
    if len(known) + len(lows) > _CLEAN_LINES_MAX:
        known.clear()
    for i in range(1, len(lows)):
        low = lows[i]
        if len(low) <= _CLEAN_LINE_LONGEST:
            known.add(low)
    return True


def _check_chars(head: bytes) -> None:
    """Refuse a bare CR or LF, or a control character, anywhere in a head."""
    pairs = head.count(CRLF)
    if head.count(b"\n") != pairs or head.count(b"\r") != pairs:
        raise BadMessage(400, "a bare CR or LF in the head")
    if head.translate(None, _NOT_CTL):
        raise BadMessage(400, "a control character in the head")


def _check_fields(block: bytes, limits: Limits | None) -> None:
    """Refuse a header section with a malformed line (one not known clean)."""
    if _BLOCK.fullmatch(block) is None:
        fields_of(block.split(CRLF)[1:], limits)  # raises, naming what is wrong
        raise BadMessage(400, "a malformed header field")


def _check_limits(lines: list[bytes], size: int, limits: Limits) -> None:
    """Refuse a header section of ``size`` bytes beyond ``limits``; ``lines`` are its
    field lines after one line that is not (the request line, or b"" for a block)."""
    if len(lines) - 1 > limits.fields:
        raise BadMessage(431, "too many header fields")
    if size > limits.field and max(map(len, lines[1:])) > limits.field:
        raise BadMessage(431, "a header field is too large")


def _add(values: list[bytes], value: bytes) -> list[bytes]:
    """``values`` with ``value`` appended (a new list in place of the shared _NONE)."""
    if values is _NONE:
        return [value]
    values.append(value)
    return values


def _content_length(values: list[bytes]) -> int:
    if len(values) == 1 and values[0].isdigit() and len(values[0]) <= 18:
        return int(values[0].decode("ascii"))  # the usual case (int(str): no type call)
    seen: set[bytes] = set()
    for value in values:
        for item in value.split(b","):
            m = _DIGITS.fullmatch(item.strip(OWS))
            if m is None:
                raise BadMessage(400, "a malformed Content-Length")
            seen.add(m.group(1).lstrip(b"0") or b"0")
    if len(seen) != 1:
        raise BadMessage(400, "differing Content-Length values")
    return int(seen.pop())


def _tokens(values: list[bytes]) -> tuple[str, ...]:
    """The elements of a comma-separated list, trimmed of SP/HTAB only, ASCII lower-cased
    (``values`` are trimmed already, as the parsers read them)."""
    if len(values) == 1:
        common = _COMMON_TOKENS.get(values[0])
        if common is not None:
            return common
        if values[0].find(b",") < 0:  # one token
            token = values[0].lower()
            return (token.decode("latin-1"),) if token else ()
    return tuple(
        t.decode("latin-1")
        for t in (item.strip(OWS).lower() for v in values for item in v.split(b","))
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
    # A slice of bytes is bytes already; bytes() would be a type call (~600 instructions).
    head = buf[start:end] if isinstance(buf, bytes) else bytes(buf[start:end])
    # One lower-cased copy split into lines is all the reading below needs: the framing
    # fields are found by their first letter and a prefix, without a search per name
    # (bytes.find costs more to call than to search a head).
    lows = head.lower().split(CRLF)
    eol = len(lows[0])
    line, block = head[:eol], head[eol:]
    clean = line.translate(_CLEAN_LINE) == line and _clean_block(block, lows)
    if not clean:
        _check_chars(head)  # the refusal that names a bare CR or LF, or a control character
    if len(line) > limits.request_line:
        raise BadMessage(414, "the request line is too long")
    method_b, target_b, version = request_line(line)
    target_b, scheme, authority = request_target(method_b, target_b)
    if block:
        _check_limits(lows, len(block), limits)
        if not clean:
            _check_fields(block, limits)
    # Every line is now "name:value" with no CR or LF in it: a value runs to the line's end.
    hosts = lengths = codings = connection = expect = upgrades = _NONE
    at = eol + 2  # where the line starts in the head
    for i in range(1, len(lows)):
        low = lows[i]
        size = len(low)
        first = low[0]
        if first == 104 and low.startswith(b"host:"):  # h
            hosts = _add(hosts, trim(head[at + 5 : at + size]))
        elif first == 99:  # c
            if low.startswith(b"content-length:"):
                lengths = _add(lengths, trim(head[at + 15 : at + size]))
            elif low.startswith(b"connection:"):
                connection = _add(connection, trim(head[at + 11 : at + size]))
        elif first == 116 and low.startswith(b"transfer-encoding:"):  # t
            codings = _add(codings, trim(head[at + 18 : at + size]))
        elif first == 101 and low.startswith(b"expect:"):  # e
            expect = _add(expect, trim(head[at + 7 : at + size]))
        elif first == 117 and low.startswith(b"upgrade:"):  # u
            upgrades = _add(upgrades, trim(head[at + 8 : at + size]))
        at += size + 2
    if len(hosts) > 1:
        raise BadMessage(400, "more than one Host header")
    host = _host(hosts[0]) if hosts else None
    if version >= (1, 1) and not hosts:
        raise BadMessage(400, "no Host header")
    if authority is not None:
        assert scheme is not None
        if not hosts:  # HTTP/1.0: the target names the host; the upstream gets it as Host
            hosts = [authority]
            block += b"\r\nHost: " + authority
            lows.append(b"host: " + authority.lower())
            host = authority.decode("ascii")
        elif not same_authority(scheme, authority, hosts[0]):
            raise BadMessage(400, "the absolute URI's authority differs from the Host header")
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
        lows=lows,
    )


def _host(value: bytes) -> str:
    """A Host value as a head gives it, or BadMessage when it is not ``host[:port]``.

    A site's visitors send the same few values: those found valid are kept (a bounded
    table, emptied when full), so most requests skip the check.
    """
    host = _HOSTS.get(value)
    if host is not None:
        return host
    if split_host(value) is None:
        raise BadMessage(400, "a Host header that is not a valid host[:port]")
    if len(_HOSTS) >= _HOSTS_MAX:
        _HOSTS.clear()
    host = _HOSTS[value] = value.decode("ascii")
    return host


def parse_response_head(buf: bytes | bytearray, *, max_size: int = 65536) -> ResponseHead | None:
    """The response head at the start of ``buf``, or None while it is incomplete.

    Raises BadMessage (status 502) for a response governor cannot pass on safely.
    """
    end = buf.find(HEAD_END)
    if end < 0:
        if len(buf) > max_size:
            raise BadMessage(502, "the upstream's response head is too large")
        return None
    head = buf[:end] if isinstance(buf, bytes) else bytes(buf[:end])
    lows = head.lower().split(CRLF)  # as for a request head
    eol = len(lows[0])
    line, block = head[:eol], head[eol:]
    status, minor, reason = 200, 1, "OK"  # OK_LINE's
    try:
        m = None if line == OK_LINE else _STATUS.fullmatch(line)
        line_ok = m is not None or line == OK_LINE
        if not line_ok or not _clean_block(block, lows):
            _check_chars(head)  # the long way round, to the refusal that says what is wrong
            if not line_ok:
                raise BadMessage(502, "a malformed status line")
            _check_fields(block, None)
        lengths = codings = connection = _NONE  # all three mean the same lower-cased
        for i in range(1, len(lows)):
            low = lows[i]
            first = low[0]
            if first == 99:  # c
                if low.startswith(b"content-length:"):
                    lengths = _add(lengths, trim(low[15:]))
                elif low.startswith(b"connection:"):
                    connection = _add(connection, trim(low[11:]))
            elif first == 116 and low.startswith(b"transfer-encoding:"):  # t
                codings = _add(codings, trim(low[18:]))
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
    if m is not None:
        minor = int(m.group(1))
        status = int(m.group(2))
        reason = (m.group(3) or b"").decode("latin-1")
    version = (1, minor)
    conn = _tokens(connection) if connection else ()
    keep_alive = "close" not in conn if version >= (1, 1) else "keep-alive" in conn
    return ResponseHead(
        status=status,
        reason=reason,
        version=version,
        block=block,
        size=end + 4,
        content_length=content_length,
        chunked=chunked,
        keep_alive=keep_alive,
        connection=conn,
        lows=lows,
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
