"""Where a request goes: its request line (method, target, version) and ``host[:port]``.

Pure, no I/O; :mod:`governor.http1.wire` reads heads with it. A Host value or an
absolute-form target's authority follows RFC 9110 §7.2 and RFC 3986 §3.2.2 (an IP
literal or a reg-name, ASCII only); the ordinary name of letters, digits, dots and
hyphens, with or without a port, is split without the regular expression.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import unquote

from governor.errors import BadMessage
from governor.http1.heads import TOKEN_CHARS, table_of

_TOKEN: Final = table_of(TOKEN_CHARS)  # a method's bytes
_TARGET: Final = table_of(c for c in range(256) if c > 0x20 and c != 0x7F)  # a target's
_REQUEST_LINE: Final = re.compile(rb"([^ ]+) +([^ ]+) +([^ ]+)")  # runs of SP allowed (RFC 9112 §3)
_HIGHER_MINOR: Final = re.compile(rb"HTTP/1\.[2-9]")
_ANY_VERSION: Final = re.compile(rb"HTTP/[0-9]\.[0-9]")
# An absolute-form target: scheme (any case), authority, then a path or query (or nothing).
_ABSOLUTE: Final = re.compile(rb"([A-Za-z][A-Za-z0-9+.\-]*)://([^/?#]*)([/?].*)?", re.DOTALL)

# host [ ":" port ] (RFC 9110 §7.2, RFC 3986 §3.2.2): an IP literal or a reg-name, ASCII only.
_HOST: Final = re.compile(
    rb"(\[[0-9A-Fa-f:.]+\]|(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})+)(?::([0-9]*))?"
)
# The bytes of a DNS name (and of an IPv4 address): a Host of only these, with an optional
# ":port", is split without the expression.
_NAME_CHARS: Final = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-"
DEFAULT_PORTS: Final = {b"http": 80, b"https": 443}


def path_of(target: str) -> str:
    """A target's path as logs and the top consumers show it: its query dropped, its
    percent-escapes decoded (UTF-8, invalid sequences replaced). ``unquote`` is only
    called for a path with an escape in it: it is interpreted Python, a call of it
    costs more than the test (~2k instructions per request, callgrind)."""
    path = target.partition("?")[0]
    return unquote(path, "utf-8", "replace") if "%" in path else path


def split_host(value: bytes) -> tuple[bytes, bytes] | None:
    """A Host value (or authority) as (host, port), or None when it is not ``host[:port]``.

    ``port`` is b"" when absent or empty. An empty label (``..`` as nginx refuses
    it, or a leading dot) is refused: no DNS name has one, and the tenant lookup
    (which walks labels for wildcards) must not read a name the upstream would not.
    """
    name, _, port = value.partition(b":")
    # find(), not `in`, here and in wire.py: `x in some_bytes` first tries x as an int and
    # builds the TypeError it then discards, a formatted message per test (perf: ~1% of a request).
    if name and not name.translate(None, _NAME_CHARS) and (not port or port.isdigit()):
        if name.find(b"..") >= 0 or name[:1] == b"." or not _port_ok(port):  # no expression
            return None
        return name, port
    m = _HOST.fullmatch(value)
    if m is None or m.group(1).find(b"..") >= 0 or m.group(1)[:1] == b".":
        return None
    port = m.group(2) or b""
    return (m.group(1), port) if _port_ok(port) else None


def _port_ok(port: bytes) -> bool:
    """An absent or empty port, or digits naming a TCP port, 1 to 65535 (leading zeros
    allowed, as RFC 3986 allows them; 99999999 and 0 name no port an upstream serves)."""
    if not port:
        return True
    digits = port.lstrip(b"0")
    return 0 < len(digits) <= 5 and int(digits) <= 65535


def same_authority(scheme: bytes, authority: bytes, host: bytes) -> bool:
    """Whether an absolute-form target's authority names what Host names (as HAProxy checks).

    Names compare case-insensitively; an empty or absent port is the scheme's default.
    """
    a, h = split_host(authority), split_host(host)
    if a is None or h is None:
        return False
    (name_a, port_a), (name_h, port_h) = a, h
    default = DEFAULT_PORTS[scheme]
    return name_a.lower() == name_h.lower() and int(port_a or default) == int(port_h or default)


def request_target(method: bytes, target: bytes) -> tuple[bytes, bytes | None, bytes | None]:
    """The target to forward, and for absolute-form its scheme and authority.

    Origin-form (``/...``) passes as it is; ``*`` only with OPTIONS; CONNECT's
    authority-form as it is (the proxy refuses CONNECT). Absolute-form (any scheme
    case, RFC 9110 §4.2.3) must be http or https with a valid authority and no
    userinfo, and becomes origin-form: the upstream gets the path, never the host.
    """
    if target[:1] == b"/":
        return target, None, None
    if target == b"*":
        if method != b"OPTIONS":
            raise BadMessage(400, "the asterisk target is for OPTIONS only")
        return target, None, None
    if method == b"CONNECT":
        return target, None, None
    m = _ABSOLUTE.fullmatch(target)
    if m is None:
        raise BadMessage(400, "a request target that is neither a path nor an absolute URI")
    scheme = m.group(1).lower()
    if scheme not in DEFAULT_PORTS:
        raise BadMessage(400, "an absolute URI whose scheme is not http or https")
    authority = m.group(2)
    if authority.find(b"@") >= 0:
        raise BadMessage(400, "an absolute URI with userinfo")
    if split_host(authority) is None:
        raise BadMessage(400, "an absolute URI with a malformed authority")
    rest = m.group(3) or b""
    return (rest if rest[:1] == b"/" else b"/" + rest), scheme, authority


def request_line(line: bytes) -> tuple[bytes, bytes, tuple[int, int]]:
    """The method, target and version of a request line."""
    parts = line.split(b" ")
    if len(parts) != 3 or not all(parts):
        m = _REQUEST_LINE.fullmatch(line)
        if m is None:
            raise BadMessage(400, "a malformed request line")
        parts = list(m.groups())
    method, target, version_b = parts
    if method.translate(_TOKEN) != method:
        raise BadMessage(400, "a malformed method")
    if target.translate(_TARGET) != target:
        raise BadMessage(400, "a malformed request target")
    if version_b == b"HTTP/1.1":
        return method, target, (1, 1)
    if version_b == b"HTTP/1.0":
        return method, target, (1, 0)
    if _HIGHER_MINOR.fullmatch(version_b):
        return method, target, (1, 1)  # RFC 9112 §2.6: served (and forwarded) as HTTP/1.1
    if _ANY_VERSION.fullmatch(version_b):
        raise BadMessage(505, "only HTTP/1.x is served")
    raise BadMessage(400, "a malformed HTTP version")
