"""What a head governor refused to read says of itself, to charge its tenant for it."""

from __future__ import annotations

import re
from typing import Final

from governor.http1.target import split_host
from governor.http1.wire import HEAD_END

_SNIFF_LINE: Final = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}) ([\x21-\x7e]{1,2048})")
_SNIFF_HOST: Final = re.compile(rb"\r\nhost:[ \t]*([^\r\n]*?)[ \t]*(?=\r\n)", re.IGNORECASE)


def sniff_head(buf: bytes | bytearray) -> tuple[str, str, str | None]:
    """What a head governor refused to read says of itself, as far as it can be told.

    Returns the method and target of its request line (``"-"`` when unreadable) and
    its Host when the head names exactly one valid ``host[:port]`` (:func:`split_host`)
    in a complete field line: the tenant it was meant for, to charge what crossed the
    wire for it. Never used to route anything.
    """
    end = buf.find(HEAD_END)
    head = bytes(buf[: end + 2]) if end >= 0 else bytes(buf)
    line = _SNIFF_LINE.match(head)
    method, target = ("-", "-") if line is None else (line[1].decode(), line[2].decode())
    hosts = _SNIFF_HOST.findall(head)
    valid = len(hosts) == 1 and split_host(hosts[0]) is not None
    return method, target, hosts[0].decode("ascii") if valid else None
