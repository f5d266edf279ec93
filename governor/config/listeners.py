"""``listen`` (one address, or a list of plain and TLS listeners) and a tenant's ``tls``.

The files a TLS setting names are only placed here (resolved against the config
file's folder); reading, parsing and matching them is :mod:`governor.tls.certificates`'
job, run by ``governor check``, at start-up and on every reload.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from governor.config.addresses import read_listen
from governor.config.composer import MappingNode, Node, SequenceNode
from governor.config.model import (
    HSTS_DEFAULT,
    INTERMEDIATE_CIPHERS,
    CertPair,
    ListenConfig,
    ListenerTLS,
    TLSVersion,
)
from governor.config.nodes import Ctx, get_field, kind_of, line_of, mapping, scalar
from governor.config.values import _SWITCH, read_text
from governor.sizes import parse_duration

_LISTENER_KEYS: Final = ("address", "tls")
_TLS_KEYS: Final = ("certificates", "min_version", "max_version", "ciphers")
_PAIR_KEYS: Final = ("cert", "key")
_VERSIONS: Final[dict[str, TLSVersion]] = {"TLSv1.2": "TLSv1.2", "TLSv1.3": "TLSv1.3"}


def read_listeners(node: Node, key: str, ctx: Ctx) -> tuple[ListenConfig, ...] | None:
    """``listen``: ``host:port``, or a list of ``host:port`` and ``{address, tls}`` entries."""
    if not isinstance(node, SequenceNode):
        address = read_listen(node, key, ctx)
        return None if address is None else (ListenConfig(host=address[0], port=address[1]),)
    if not node.value:
        ctx.error(node, key, "the list is empty; give at least one address")
        return None
    listeners: list[ListenConfig] = []
    seen: dict[tuple[str, int], int] = {}
    ok = True
    for i, item in enumerate(node.value):
        item_key = f"{key}[{i}]"
        ctx.lines[item_key] = line_of(item)
        listener = _listener(item, item_key, ctx)
        if listener is None:
            ok = False
            continue
        where = (listener.host, listener.port)
        if where in seen and listener.port != 0:
            ctx.error(item, item_key, f"{listener.address} is listed twice (line {seen[where]})")
            ok = False
        seen.setdefault(where, line_of(item))
        listeners.append(listener)
    return tuple(listeners) if ok else None


def _listener(node: Node, key: str, ctx: Ctx) -> ListenConfig | None:
    if not isinstance(node, MappingNode):
        address = read_listen(node, key, ctx)
        return None if address is None else ListenConfig(host=address[0], port=address[1])
    fields = mapping(node, key, _LISTENER_KEYS, ctx)
    if fields is None:
        return None
    if "address" not in fields:
        ctx.error(node, f"{key}.address", "required key missing; e.g. address: 0.0.0.0:443")
        return None
    address = get_field(fields, "address", key, read_listen, ctx)
    tls = get_field(fields, "tls", key, read_listener_tls, ctx) if "tls" in fields else None
    if address is None or ("tls" in fields and tls is None):
        return None
    return ListenConfig(host=address[0], port=address[1], tls=tls)


def read_listener_tls(node: Node, key: str, ctx: Ctx) -> ListenerTLS | None:
    """A listener's ``tls``: ``certificates`` (a list of ``{cert, key}``), versions, ciphers."""
    fields = mapping(node, key, _TLS_KEYS, ctx)
    if fields is None:
        return None
    certs_key = f"{key}.certificates"
    entry = fields.get("certificates")
    if entry is None:
        ctx.error(node, certs_key, "required key missing; e.g. [{cert: a.pem, key: a.key}]")
        return None
    ctx.lines[certs_key] = line_of(entry[0])
    items = entry[1]
    if not isinstance(items, SequenceNode):
        ctx.error(items, certs_key, f"expected a list of {{cert, key}} pairs, got {kind_of(items)}")
        return None
    if not items.value:
        ctx.error(items, certs_key, "the list is empty; give at least one {cert, key} pair")
        return None
    pairs = [read_cert_pair(item, f"{certs_key}[{i}]", ctx) for i, item in enumerate(items.value)]
    low: TLSVersion = get_field(fields, "min_version", key, _read_version, ctx) or "TLSv1.2"
    high: TLSVersion = get_field(fields, "max_version", key, _read_version, ctx) or "TLSv1.3"
    ciphers = get_field(fields, "ciphers", key, read_text, ctx) or INTERMEDIATE_CIPHERS
    if low > high:
        ctx.error(node, f"{key}.min_version", f"{low} is above max_version {high}")
        return None
    if any(pair is None for pair in pairs):
        return None
    return ListenerTLS(
        certificates=tuple(p for p in pairs if p is not None),
        min_version=low,
        max_version=high,
        ciphers=ciphers,
    )


def _read_version(node: Node, key: str, ctx: Ctx) -> TLSVersion | None:
    text = scalar(node, key, "TLSv1.2 or TLSv1.3", ctx)
    if text is None:
        return None
    version = _VERSIONS.get(text)
    if version is None:
        ctx.error(node, key, f"{text!r}: expected TLSv1.2 or TLSv1.3")
    return version


def read_cert_pair(node: Node, key: str, ctx: Ctx) -> CertPair | None:
    """``{cert: PEM file, key: PEM file}``, relative to the config file's folder."""
    fields = mapping(node, key, _PAIR_KEYS, ctx)
    if fields is None:
        return None
    ctx.lines[key] = line_of(node)
    paths: list[Path] = []
    for name in _PAIR_KEYS:
        entry = fields.get(name)
        if entry is None:
            ctx.error(node, f"{key}.{name}", "required key missing (a PEM file)")
            continue
        text = scalar(entry[1], f"{key}.{name}", "a file path", ctx)
        if text is not None:
            ctx.lines[f"{key}.{name}"] = line_of(entry[0])
            paths.append(Path(os.path.normpath(ctx.base / os.path.expanduser(text))))
    if len(paths) != 2:
        return None
    return CertPair(cert=paths[0], key=paths[1], where=key)


def read_hsts(node: Node, key: str, ctx: Ctx) -> int | None:
    """``hsts``: ``on`` (two years), ``off`` (0), or a max-age such as ``365d``."""
    text = scalar(node, key, "on, off or a max-age such as 365d", ctx)
    if text is None:
        return None
    switch = _SWITCH.get(text.lower())
    if switch is not None:
        return HSTS_DEFAULT if switch else 0
    try:
        seconds = parse_duration(text)
    except ValueError:
        ctx.error(node, key, f"{text!r}: expected on, off or a max-age such as 365d")
        return None
    return int(seconds)


def pin_listeners(
    new: tuple[ListenConfig, ...], running: tuple[ListenConfig, ...]
) -> tuple[ListenConfig, ...] | None:
    """A reload's listeners: the new file's (its certificates, versions and ciphers apply at
    once), unless an address was added, removed or changed, or a listener went from plain to
    TLS or back: that takes a restart (None)."""
    if [(n.host, n.port, n.tls is None) for n in new] != [
        (r.host, r.port, r.tls is None) for r in running
    ]:
        return None
    return new
