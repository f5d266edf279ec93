"""Client addresses against configured networks, pure.

It lives in core because both a decision (an exempt client) and the HTTP layer (a
trusted proxy's X-Forwarded-For) ask the same question, and core imports no HTTP.
Invariant: anything that is not an IP address is in no network.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from governor.config import Network


def is_trusted(addr: str | None, networks: Sequence[Network]) -> bool:
    """Whether ``addr`` lies in one of ``networks`` (False for a missing or bad address)."""
    if not addr or not networks:
        return False
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(ip in net for net in networks)
