"""The states of a client connection, and the changes between them (h11's ``_state.py``,
without its engine): one table, so a change governor did not plan is a bug raised
where it happens, not a connection quietly stuck. Pure: no I/O.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final


class State(IntEnum):
    """Where a client connection is; ``ClientConnection._enter`` alone changes it.

    An IntEnum: it hashes and compares as an int, on the per-request path.
    """

    NEW = 0  # accepted; no request head yet (a first request gets a grace on shutdown)
    IDLE = 1  # between requests, waiting for the next head (timeouts.keepalive)
    HEAD = 2  # a head's first bytes arrived; the rest is due (timeouts.request_header)
    BUSY = 3  # a request in flight: the connection's task answers it
    TUNNEL = 4  # switched protocols: every byte goes to the tunnel
    FLUSHING = 5  # governor closed it: the transport sends what it holds (timeouts.send)
    CLOSED = 6  # the connection is lost


NEW: Final[State] = State.NEW
IDLE: Final[State] = State.IDLE
HEAD: Final[State] = State.HEAD
BUSY: Final[State] = State.BUSY
TUNNEL: Final[State] = State.TUNNEL
FLUSHING: Final[State] = State.FLUSHING
CLOSED: Final[State] = State.CLOSED
WAITING: Final = frozenset((NEW, IDLE, HEAD))  # for a head: the connection's timer is a deadline
# The changes a connection may make (h11's _state.py, without its engine): a change not
# listed is a bug in governor, raised where it happens.
_NEXT: Final[dict[State, frozenset[State]]] = {
    NEW: frozenset((HEAD, BUSY, FLUSHING, CLOSED)),
    IDLE: frozenset((HEAD, BUSY, FLUSHING, CLOSED)),
    HEAD: frozenset((BUSY, FLUSHING, CLOSED)),
    BUSY: frozenset((IDLE, TUNNEL, FLUSHING, CLOSED)),
    TUNNEL: frozenset((FLUSHING, CLOSED)),
    FLUSHING: frozenset((CLOSED,)),
    CLOSED: frozenset(),
}


# On shutdown, a connection that has not sent its first request yet is given this long
# to send it (a client that just connected is about to); Go's http.Server does the same.
FIRST_REQUEST_GRACE: Final = 5.0


def deadline(
    state: State, since: float, *, keepalive: float, header_timeout: float, stopping: bool
) -> float | None:
    """When a connection in ``state`` since ``since`` is closed if nothing comes (None: never).

    A head has ``header_timeout`` (a 408 then); an idle connection ``keepalive``, and
    on shutdown (``stopping``) none, or :data:`FIRST_REQUEST_GRACE` for a first request.
    """
    if state is HEAD:
        return since + header_timeout
    if state is IDLE or state is NEW:
        wait = keepalive
        if stopping:  # no next request is waited for; a first one briefly
            wait = min(wait, FIRST_REQUEST_GRACE if state is NEW else 0.0)
        return since + wait
    return None


def check(old: State, new: State) -> None:
    """Raise RuntimeError unless a connection may go from ``old`` to ``new``."""
    if new not in _NEXT[old]:
        raise RuntimeError(f"a client connection cannot go from {old.name} to {new.name}")


def body_due(now: float, grace_end: float, rate: int, got: int) -> float | None:
    """When a request body that delivered ``got`` bytes by ``now`` is looked at again, or
    None when it is behind ``rate`` bytes a second since ``grace_end`` (see Timeouts)."""
    if got < (now - grace_end) * rate:
        return None
    return max(grace_end + got / rate, now + 0.1)
