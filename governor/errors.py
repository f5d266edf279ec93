"""The one error tree of governor.

Every error governor raises on purpose derives from :class:`GovernorError`.
Library and socket errors (sqlite3, redis, the upstream's OSError) are translated
into this tree at the edge that meets them, once, so the rest of the code handles
only these::

    GovernorError
    ├── ConfigError            a configuration file is invalid (lists every problem)
    ├── StartError             something the config names cannot be used (names the key)
    ├── SpoolBusy              another live process holds the spool file (accounts/spool.py)
    ├── AdminCallError         `governor reset`/`grant` could not do what was asked (cli.py)
    ├── StoreError             503: the usage store failed or is unreachable
    ├── ProtocolError          a message governor will not read (its status per instance)
    │   ├── BadMessage         raised by the wire parser: 4xx for a client's request,
    │   │                      502 for an upstream's response (mapped by the client)
    │   └── BodyRefused        a request body governor stopped reading midway (400/408/413),
    │                          raised by Request.read, answered once in proxy/forward.py
    └── UpstreamError          502: the upstream could not be reached or broke the protocol
        ├── UpstreamTimeout    504: no response headers within the configured timeout
        └── UpstreamBroken     502: the upstream broke off a response after its head

Where each edge maps: the client side's parse errors become answers in
:mod:`governor.http1.connection`; every upstream failure (connect, socket loss,
a response governor cannot read) becomes an :class:`UpstreamError` in
:func:`upstream_error` (at the end of this module), which the upstream side
(``http1/client.py``, ``http1/pool.py``) calls.

:class:`UpstreamBroken` is also a :class:`ConnectionError`: code that stops on a
broken socket (a tunnel forwarding bytes, an upload) stops on it alike, as it did
before it joined this tree.

Each error knows the HTTP status it maps to when it ends a client request.

One deliberate exception outside the tree: :class:`CapReached` (``at_cap: cut`` ends a
response at the cap) is a ``ConnectionAbortedError``, so the code that stops on a client
gone stops on it alike.

This module is never compiled (governor.build): mypyc makes native classes of what it
compiles, and a native class cannot inherit from ``ConnectionError`` and its kin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


class GovernorError(Exception):
    """The root of every error governor raises on purpose."""

    status: int = 500


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in a configuration file: where, which key, and what."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        key = f" {self.key}:" if self.key else ""
        return f"{where}:{key} {self.message}"


class ConfigError(GovernorError):
    """A configuration file is invalid; ``problems`` lists everything found wrong."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class StartError(GovernorError):
    """Something the config names cannot be used: a port, a file, the store.

    Raised at start-up (and by a reload that would need it), never with a bare OS error:
    ``problem`` places it like a :class:`ConfigError`'s, ``FILE:LINE: key: what``.
    """

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(str(problem))


class StoreError(GovernorError):
    """The usage store failed or cannot be reached."""

    status = 503


class UpstreamError(GovernorError):
    """The upstream refused, failed, or broke the protocol."""

    status = 502


class UpstreamTimeout(UpstreamError):
    """The upstream sent no response headers within the configured timeout."""

    status = 504


class ProtocolError(GovernorError):
    """A peer sent a message governor will not read; ``status`` is the answer it gets."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class BadMessage(ProtocolError):
    """A message governor refuses to read: answered with ``status``, then the connection closes."""


class BodyRefused(ProtocolError):
    """governor stopped reading a request body: malformed framing, too large, or too slow.

    Raised by :meth:`governor.http1.request.Request.read`; ``status`` (400, 408, 413) and
    ``reason`` are the answer the client gets, if no response has started.
    """


class UpstreamBroken(UpstreamError, ConnectionError):
    """The upstream broke off a response mid-body, or sent one governor cannot read."""


class CapReached(ConnectionAbortedError):
    """``at_cap: cut``: the tenant reached its cap mid-response; the client is cut off.

    Also a response of undeclared length that passed ``large.size`` (see
    :class:`governor.proxy.stream.ResponseStream`'s ``limit``).
    """


Stage = Literal["connect", "head", "body", "lost"]


def upstream_error(exc: BaseException | None, stage: Stage) -> UpstreamError:
    """What a failure met on the upstream's socket is in governor's error tree.

    The one place it is decided: ``connect`` (an OSError or timeout while connecting),
    ``head`` (a response head governor cannot read: nothing was passed on, a 502),
    ``body`` (a body's framing broke after the head went on), ``lost`` (the socket
    closed, ``exc`` its OSError or None for an EOF, before the response's end).
    """
    if isinstance(exc, UpstreamError):
        return exc
    if stage == "connect":
        if isinstance(exc, TimeoutError):
            return UpstreamError("connecting to the upstream timed out")
        return UpstreamError(f"cannot connect to the upstream: {exc}")
    if isinstance(exc, BadMessage):
        return UpstreamError(exc.reason) if stage == "head" else UpstreamBroken(exc.reason)
    return UpstreamBroken(f"the upstream closed the connection ({exc or 'EOF'})")
