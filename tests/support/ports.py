"""Loopback ports for tests: one free port to hand to a server, or one held by "another
program". A free port can be taken by someone else before it is bound: tests bind it at once."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

HOST = "127.0.0.1"


_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, and that this process has
    not handed out before: the kernel may give the same port to two binds in a row once the
    first socket is closed, and a test that asks for three ports (governor's, the admin
    listener's, the site's) must get three (CI once saw governor and the site given one)."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no port left that this process has not handed out ({len(_handed_out)})")


@contextlib.contextmanager
def held_port(backlog: int = 1) -> Iterator[int]:
    """A port another program listens on (and never accepts from) while the block runs."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        sock.listen(backlog)
        yield int(sock.getsockname()[1])
