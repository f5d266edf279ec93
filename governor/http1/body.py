"""HTTP/1.1 body framing, pure: which received bytes are body, and where each body ends.

No I/O and no awaits: :class:`BodyReader` is handed bytes and returns the body
pieces in them with how many raw bytes they used, so every received byte is
charged to the one message it belongs to, and bytes after a body stay for the
next message. Chunked framing is read strictly (RFC 9112 §7.1), as heads are
(:mod:`governor.http1.wire`): a malformed chunk size, extension, data end or
trailer raises :class:`~governor.errors.BadMessage`; leading zeros in a chunk
size are accepted (nothing is ambiguous about them).
"""

from __future__ import annotations

import re
from enum import IntEnum
from typing import Final

from governor.errors import BadMessage
from governor.http1.wire import CRLF

_OWS: Final = b" \t"
_CTL: Final = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_TOKEN_RE: Final = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED_RE: Final = rb'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\.)*"'
_CHUNK_LINE: Final = re.compile(
    rb"0*([0-9A-Fa-f]{1,15})"  # leading zeros, then at most 15 hex digits
    rb"(?:[ \t]*;[ \t]*"
    + _TOKEN_RE
    + rb"(?:[ \t]*=[ \t]*(?:"
    + _TOKEN_RE
    + rb"|"
    + _QUOTED_RE
    + rb"))?)*"
    rb"[ \t]*"
)

CHUNK_LINE_MAX: Final = 4096
TRAILERS_MAX: Final = 16384  # the whole trailer section: lines and their CRLFs, the last one too


class Framing(IntEnum):
    """How a body's end is known (RFC 9112 §6.3)."""

    LENGTH = 0  # Content-Length (a body without one is LENGTH 0)
    CHUNKED = 1  # Transfer-Encoding: chunked
    UNTIL_CLOSE = 2  # a response without either: the connection's end


class Chunked(IntEnum):
    """Where a chunked body's reader is in its framing (an IntEnum: compared per piece)."""

    SIZE = 0  # reading a chunk-size line
    DATA = 1  # reading a chunk's data
    DATA_END = 2  # reading the CRLF after a chunk's data
    TRAILERS = 3  # reading trailer lines, up to the empty one
    DONE = 4


# Module-level names: the hot loop reads a global, not an attribute of the enum class.
LENGTH: Final = Framing.LENGTH
CHUNKED: Final = Framing.CHUNKED
UNTIL_CLOSE: Final = Framing.UNTIL_CLOSE
_SIZE: Final = Chunked.SIZE
_DATA: Final = Chunked.DATA
_DATA_END: Final = Chunked.DATA_END
_TRAILERS: Final = Chunked.TRAILERS
_DONE: Final = Chunked.DONE


class BodyReader:
    """Reads one body's framing: which received bytes are body, and where it ends.

    ``feed(data)`` returns the body pieces found in ``data`` (chunk framing taken
    off) and how many bytes of ``data`` belong to this body; the rest belongs to
    whatever follows it on the connection. ``done`` turns True at the body's end.
    An UNTIL_CLOSE body ends only with :meth:`close`.
    """

    __slots__ = ("_line", "_remaining", "_state", "_status", "done", "framing", "raw")

    def __init__(self, framing: Framing, length: int = 0, *, error_status: int = 400) -> None:
        self.framing = framing
        self._remaining = length
        self._state = _DATA if framing == LENGTH else _SIZE
        self._line = b""
        self.raw = 0  # bytes of framing and body consumed so far
        self.done = framing == LENGTH and length == 0
        self._status = error_status  # 400 for a request body, 502 for a response body

    @property
    def left(self) -> int:
        """Body bytes still to come, by a declared length (0 for other framings)."""
        return self._remaining if self.framing == LENGTH and not self.done else 0

    def skip(self, n: int) -> None:
        """``n`` bytes of a body of declared length went by without being fed (the kernel
        moved them: :mod:`governor.http1.zerocopy`)."""
        assert self.framing == LENGTH
        assert n <= self._remaining
        self._remaining -= n
        self.raw += n
        self.done = self._remaining == 0

    def feed(self, data: bytes) -> tuple[list[bytes], int]:
        """Body pieces in ``data`` and the number of bytes of ``data`` this body used."""
        if self.done or not data:
            return [], 0
        if self.framing == LENGTH:
            n = self._remaining
            if len(data) <= n:
                self._remaining = n - len(data)
                self.done = self._remaining == 0
                self.raw += len(data)
                return [data], len(data)
            self._remaining = 0
            self.done = True
            self.raw += n
            return [data[:n]], n
        if self.framing == UNTIL_CLOSE:
            self.raw += len(data)
            return [data], len(data)
        pieces, used = self._chunked(data)
        self.raw += used
        return pieces, used

    def close(self) -> bool:
        """The connection ended: the end of an UNTIL_CLOSE body, else a truncated one.

        Returns whether the body is complete.
        """
        if self.framing == UNTIL_CLOSE:
            self.done = True
        return self.done

    def _chunked(self, data: bytes) -> tuple[list[bytes], int]:
        pieces: list[bytes] = []
        pos, size = 0, len(data)
        while pos < size and self._state != _DONE:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, size - pos)
                pieces.append(data[pos : pos + take] if take != size else data)
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = _DATA_END
            elif state in (_SIZE, _TRAILERS):
                eol = data.find(b"\n", pos)
                chunk = data[pos:] if eol < 0 else data[pos : eol + 1]
                self._line += chunk
                pos += len(chunk)
                if state == _SIZE:
                    if len(self._line) > CHUNK_LINE_MAX:
                        raise BadMessage(self._status, "a chunk size line is too long")
                elif len(self._line) > self._remaining:  # the trailer section's budget
                    raise BadMessage(
                        431 if self._status == 400 else self._status,
                        f"the trailer section is larger than {TRAILERS_MAX} bytes",
                    )
                if eol < 0:
                    break
                line, self._line = self._line, b""
                if state == _TRAILERS:
                    self._remaining -= len(line)
                if not line.endswith(CRLF) or b"\r" in line[:-2]:
                    raise BadMessage(self._status, "a bare CR or LF in the chunked framing")
                if state == _SIZE:
                    self._size_line(line[:-2])
                elif line == CRLF:
                    self._state = _DONE
                elif line[0] in _OWS or b":" not in line or _CTL.search(line):
                    raise BadMessage(self._status, "a malformed trailer field")
            else:  # _DATA_END: exactly CRLF after the chunk's data
                need = CRLF[len(self._line) :]
                got = data[pos : pos + len(need)]
                if need[: len(got)] != got:
                    raise BadMessage(self._status, "a chunk's data is not followed by CRLF")
                self._line += got
                pos += len(got)
                if len(self._line) == 2:
                    self._line = b""
                    self._state = _SIZE
        if self._state == _DONE:
            self.done = True
        return pieces, pos

    def _size_line(self, line: bytes) -> None:
        m = _CHUNK_LINE.fullmatch(line)
        if m is None:
            raise BadMessage(self._status, "a malformed chunk size or extension")
        n = int(m.group(1), 16)
        if n == 0:
            self._state = _TRAILERS
            self._remaining = TRAILERS_MAX  # for the whole trailer section, as for a head
        else:
            self._remaining = n
            self._state = _DATA
