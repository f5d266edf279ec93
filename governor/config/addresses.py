"""Readers of the config values that name places: hosts, networks, addresses, URLs, the store.

Each returns the value, or None after reporting why (see :mod:`governor.config.values`).
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
from pathlib import Path
from typing import Final, Literal
from urllib.parse import urlsplit

from governor.config.composer import Node
from governor.config.model import (
    Network,
    UpstreamURL,
)
from governor.config.nodes import Ctx, Hosts, items_of, scalar
from governor.config.store_url import mask_password, store_url_problem

_REDIS_SCHEMES: Final = (
    "redis://",
    "rediss://",
    "unix://",
    "redis+sentinel://",
    "redis+cluster://",
)
_LABEL: Final = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME: Final = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}", re.ASCII)  # one match for all labels
# An upstream's name may hold underscores too: Docker Compose and Kubernetes service names
# do, and resolvers take them (RFC 2181 §11); a visitor's Host stays letters-digits-hyphens.
_SERVICE_LABEL: Final = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_SERVICE_NAME: Final = re.compile(rf"(?:{_SERVICE_LABEL}\.)*{_SERVICE_LABEL}", re.ASCII)
_PORT: Final = re.compile(r"[0-9]{1,5}", re.ASCII)
_SCHEMES: Final[dict[str, Literal["http", "https"]]] = {"http": "http", "https": "https"}


def read_store(node: Node, key: str, ctx: Ctx) -> str | None:
    text = scalar(node, key, "a store URL", ctx)
    if text is None:
        return None
    store = read_resolve_store(text, ctx.base)
    if store is None:
        ctx.error(
            node,
            key,
            f"{mask_password(text)!r} is not a supported store; expected "
            "sqlite:///relative/path.db, sqlite:////absolute/path.db, or a redis://, "
            "rediss://, unix://, redis+sentinel:// or redis+cluster:// URL",
        )
        return None
    problem = store_url_problem(store)
    if problem is not None:
        ctx.error(node, key, problem)
        return None
    return store


def read_resolve_store(text: str, base: Path) -> str | None:
    """The store URL with a relative sqlite path made absolute; None if unsupported."""
    if text.startswith(_REDIS_SCHEMES):
        return text
    prefix = "sqlite:///"
    rest = text.removeprefix(prefix)
    if not text.startswith(prefix) or not rest.strip() or rest.endswith("/") or "\0" in rest:
        return None
    return prefix + os.path.normpath(base / rest)


# --- network things -------------------------------------------------------------


_IPV4_CHARACTERS: Final = frozenset("0123456789.")


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    # An IPv6 literal has a colon, an IPv4 one only digits and dots: a host name, the
    # common case by far, skips the parser (and the exception it raises).
    if ":" not in text and not _IPV4_CHARACTERS.issuperset(text):
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _is_hostname(name: str, *, service: bool = False) -> bool:
    """Letters-digits-hyphens labels (underscores too for a ``service`` name), and a last
    label that is not all digits."""
    pattern = _SERVICE_NAME if service else _HOSTNAME
    return (
        0 < len(name) <= 253
        and pattern.fullmatch(name) is not None
        and not name.rpartition(".")[2].isdigit()
    )


def _host(text: str) -> str:
    """A tenant host, normalised (lower case, no trailing dot, IPv6 unbracketed); or ValueError."""
    host = text.lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host = host.removesuffix(".")
    addr = _ip(host)
    if addr is not None:
        return addr.compressed
    if ":" in host:
        raise ValueError(f"{text!r}: a host may not carry a port")
    name = host.removeprefix("*.")
    if not _is_hostname(name):
        raise ValueError(
            f"{text!r} is not a valid host; expected a host name (letters, digits, hyphens; "
            "optionally a leading '*.' wildcard) or an IP address"
        )
    return host


def read_hosts(node: Node, key: str, ctx: Ctx) -> Hosts | None:
    """The tenant's valid hosts as (node, key path, normalised host); the rest are problems."""
    items = items_of(node, key, ("a host name", "host names"), ctx)
    if items is None:
        return None
    if not items:
        ctx.error(node, key, "at least one host is required")
        return None
    hosts: Hosts = []
    for item, item_key, text in items:
        try:
            hosts.append((item, item_key, _host(text)))
        except ValueError as exc:
            ctx.error(item, item_key, str(exc))
    return hosts


def read_networks(node: Node, key: str, ctx: Ctx) -> tuple[Network, ...] | None:
    items = items_of(
        node, key, ("a CIDR network or IP address", "CIDR networks or IP addresses"), ctx
    )
    if items is None:
        return None
    networks: list[Network] = []
    for item, item_key, text in items:
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            ctx.error(item, item_key, f"{text!r} is not an IP address or CIDR network")
    return tuple(networks) if len(networks) == len(items) else None


def read_exempt_paths(node: Node, key: str, ctx: Ctx) -> tuple[str, ...] | None:
    items = items_of(node, key, ("a path", "paths"), ctx)
    if items is None:
        return None
    bad = [(item, k, text) for item, k, text in items if not text.startswith("/")]
    for item, item_key, text in bad:
        ctx.error(item, item_key, f"{text!r} must start with '/'")
    return None if bad else tuple(text for _, _, text in items)


def read_listen(node: Node, key: str, ctx: Ctx) -> tuple[str, int] | None:
    text = scalar(node, key, "host:port", ctx)
    if text is None:
        return None
    try:
        return _split_listen(text)
    except ValueError as exc:
        ctx.error(node, key, str(exc))
        return None


def _split_listen(text: str) -> tuple[str, int]:
    """``("127.0.0.1", 8080)`` from ``127.0.0.1:8080``; ``("::1", 8080)`` from ``[::1]:8080``."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not host:port; e.g. 127.0.0.1:8080 or [::1]:8080")
    if host.startswith("[") and host.endswith("]"):
        addr = _ip(host[1:-1])
        if addr is None or addr.version != 6:
            raise ValueError(f"{text!r}: {host} is not an IPv6 address")
        host = addr.compressed
    elif ":" in host:
        raise ValueError(f"{text!r}: an IPv6 address must be in brackets, e.g. [::1]:8080")
    elif _ip(host) is None and not _is_hostname(host.lower()):
        raise ValueError(f"{text!r}: {host!r} is not a valid host name or IP address")
    if not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    return host, int(port)


def read_upstream(node: Node, key: str, ctx: Ctx) -> UpstreamURL | None:
    text = scalar(node, key, "an http:// or https:// URL", ctx)
    if text is None:
        return None
    try:
        return _parse_upstream(text)
    except ValueError as exc:
        ctx.error(node, key, str(exc))
        return None


@functools.lru_cache(maxsize=4096)
def _parse_upstream(text: str) -> UpstreamURL:
    """``http[s]://host[:port][/base]`` -> UpstreamURL; or ValueError.

    Cached: many tenants share an upstream, and then share one (frozen) value too.
    """
    if any(c.isspace() or not c.isprintable() for c in text):
        raise ValueError(f"{text!r}: a URL may not contain spaces or control characters")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid URL: {exc}") from None
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise ValueError(f"{text!r}: expected an http:// or https:// URL")
    if "?" in text or "#" in text:
        raise ValueError(f"{text!r}: an upstream may not have a query or a fragment")
    if "@" in parts.netloc:
        raise ValueError(f"{text!r}: an upstream may not carry credentials")
    host = (parts.hostname or "").removesuffix(".")
    if _ip(host) is None and not _is_hostname(host, service=True):
        raise ValueError(f"{text!r}: expected a host name or IP address after {scheme}://")
    if port == 0:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    base_path = parts.path.rstrip("/")
    return UpstreamURL(
        url=f"{scheme}://{parts.netloc.lower()}{base_path}",
        scheme=scheme,
        host=host,
        port=port or (443 if scheme == "https" else 80),
        base_path=base_path,
    )


# --- sections -------------------------------------------------------------------


def read_webhook(node: Node, key: str, ctx: Ctx) -> str | None:
    text = scalar(node, key, "an http:// or https:// URL", ctx)
    if text is None:
        return None
    try:
        _parse_upstream(text)
    except ValueError as exc:
        ctx.error(node, key, str(exc).replace("upstream", "webhook URL"))
        return None
    return text


def read_link(node: Node, key: str, ctx: Ctx) -> str | None:
    """A link shown to visitors (``notice.topup_url``): an http:// or https:// URL with a
    host; a query and a fragment are allowed, spaces and control characters are not."""
    text = scalar(node, key, "an http:// or https:// URL", ctx)
    if text is None:
        return None
    parts = urlsplit(text)
    bad = any(c.isspace() or not c.isprintable() for c in text)
    if parts.scheme not in ("http", "https") or not parts.hostname or bad or len(text) > 2000:
        ctx.error(node, key, f"{text!r}: expected an http:// or https:// URL with a host")
        return None
    return text
