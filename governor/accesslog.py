"""The access log (stub: the interface the app wires; the implementation follows)."""

from __future__ import annotations

from governor.config import Config
from governor.events import RequestRecord


class AccessLog:
    """One line per answered request, plain or JSON, written off the event loop."""

    def request_done(self, record: RequestRecord) -> None:
        """A request sink: queue the line."""

    def close(self) -> None:
        """Write what is queued and release the file."""


def open_access_log(config: Config) -> AccessLog | None:
    """The access log the config asks for, or None for ``access_log: off``."""
    return None
