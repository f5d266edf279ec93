"""Loopback ports for tests: one free port to hand to a server, or one held by "another
program". A free port can be taken by someone else before it is bound: tests bind it at once."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def held_port(backlog: int = 1) -> Iterator[int]:
    """A port another program listens on (and never accepts from) while the block runs."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        sock.listen(backlog)
        yield int(sock.getsockname()[1])
