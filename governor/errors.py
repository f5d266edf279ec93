"""The one error tree of governor.

Every error governor raises on purpose derives from :class:`GovernorError`.
Library errors (aiohttp, sqlite3, redis) are translated into this tree at the
edge that meets them, once, so the rest of the code handles only these::

    GovernorError
    ├── ConfigError            a configuration file is invalid (lists every problem)
    ├── StartError             something the config names cannot be used (names the key)
    ├── StoreError             the usage store failed or is unreachable
    └── UpstreamError          502: the upstream could not be reached or broke the protocol
        └── UpstreamTimeout    504: no response headers within the configured timeout

Each error knows the HTTP status it maps to when it ends a client request.
"""

from __future__ import annotations

from dataclasses import dataclass


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


class BodyRefused(GovernorError):
    """governor stopped reading a request body: malformed framing, too large, or too slow.

    ``status`` (400, 408, 413) and ``reason`` are the answer the client gets, if no
    response has started.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
