"""Which requests pass a blocked tenant: exempt paths and exempt clients, pure.

Invariant: an exemption is only granted to a path every upstream reads the same
way. A prefix matches on a segment boundary (``/robots.txt`` matches
``/robots.txt``, ``/robots.txt/x`` and ``/robots.txt?x``, never
``/robots.txtbig``); a path that some upstream could resolve out of the prefix
(``\\`` taken for ``/`` by WHATWG URL parsers, ``..;`` by Tomcat, ``//`` merged
by nginx before ``..`` is resolved, ``%2F`` decoded by some applications) is not
exempt at all. A WebSocket upgrade is never exempt: its tunnel can carry any
number of bytes on one request, so it follows the tenant's cap.
"""

from __future__ import annotations

import functools
import re
from typing import Final

from governor.config import TenantConfig
from governor.core.clients import is_trusted


def is_exempt(tenant: TenantConfig, target: str, client: str, *, upgrade: bool = False) -> bool:
    """Whether a request is always proxied: an exempt path prefix or an exempt client.

    An upgrade (a WebSocket) is never exempt: a tunnel carries any number of bytes
    on one request, so it follows the tenant's cap whatever its path or client.
    """
    if upgrade:
        return False
    if tenant.exempt_paths and _exempt_path(tenant.exempt_paths, target):
        return True
    return bool(tenant.exempt_clients) and is_trusted(client, tenant.exempt_clients)


def _exempt_path(prefixes: tuple[str, ...], target: str) -> bool:
    path = exemption_path(target)
    if path is None:
        return False
    for prefix in prefixes:
        clean = _clean_prefix(prefix)
        if clean is None:
            continue
        if clean.endswith("/"):
            if path.startswith(clean):
                return True
        elif path == clean or path.startswith(clean + "/"):  # on a segment boundary only
            return True
    return False


@functools.lru_cache(maxsize=1024)
def _clean_prefix(prefix: str) -> str | None:
    """A configured exempt prefix in the form request paths are compared in."""
    return exemption_path(prefix)


_UNRESERVED: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE: Final = re.compile(r"%([0-9A-Fa-f]{2})")
# pchar and "/" (RFC 3986), where an escape may only stand for printable ASCII other
# than "/", "\\" and "%" (upper case: escapes kept are upper-cased first).
_SAFE_PATH: Final = re.compile(
    r"(?:[!$&'()*+,\-./0-9:;=@A-Z_a-z~]|%(?!2F|5C|25)(?:2[1-9A-F]|[3-6][0-9A-F]|7[0-9A-E]))*"
)


def exemption_path(target: str) -> str | None:
    """The path an exempt prefix is matched against, or None if no prefix may match it.

    An exemption is a privilege, so it is only granted to a path that every
    upstream reads the same way (nginx, Express, Werkzeug, Tomcat, IIS, a WHATWG
    URL parser): the query is set aside and percent-encoded unreserved characters
    decoded (``%2E`` is ``.``, ``%72`` is ``r``). Then a path with ``\\``, ``#``,
    an encoded ``/``, ``\\`` or ``%``, a non-ASCII or control character, an empty
    segment (``//``: nginx merges them), or a dot-segment (``.``, ``..``, also
    ``..;x`` as Tomcat reads it and ``...`` as Windows does) is not exempt at all,
    rather than resolved one way here while the upstream resolves it another.
    """
    path = target.partition("?")[0]
    if not path.startswith("/"):
        return None
    if "%" in path:
        path = _ESCAPE.sub(_unreserved, path)
    if _SAFE_PATH.fullmatch(path) is None:
        return None
    *inner, last = path.split("/")[1:]
    if any(not segment.partition(";")[0].strip(".") for segment in inner):
        return None  # an empty segment or a dot-segment before the last
    if last and not last.partition(";")[0].strip("."):
        return None  # a last segment of dots (or of parameters only)
    return path


def _unreserved(m: re.Match[str]) -> str:
    """One escape: the character if it is unreserved, else the escape in upper case."""
    char = chr(int(m.group(1), 16))
    return char if char in _UNRESERVED else "%" + m.group(1).upper()
