"""What happened to each request, reported once it is fully answered.

The proxy notes who a request was for and how it ended (:class:`RequestNote`,
kept on the request); when the connection is done with the request, the request
calls :func:`report` with its own figures, which makes one :class:`RequestRecord`
for every sink (metrics, the access log). Sinks are synchronous and must not
block: they count, or queue a line for a writer thread. This module takes plain
values and imports nothing of the HTTP layer, so the layer can import it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

log: Final = logging.getLogger("governor.events")

Outcome = Literal[
    "proxied",
    "blocked",
    "admission",
    "large",
    "client_share",
    "crawler",
    "paced",
    "would_block",
    "redirect",
    "exempt",
    "upstream_error",
    "unknown_host",
    "bad_request",
]


@dataclass(slots=True)
class RequestRecord:
    """One answered request, as the access log and the metrics see it."""

    time: float  # Unix time the request started
    tenant: str | None
    client: str
    method: str
    path: str
    status: int
    bytes_out: int  # written to the client: status line, headers, body
    bytes_in: int  # received from the client for this request
    duration: float  # seconds, until the response was written
    outcome: Outcome
    upstream_seconds: float | None  # until the upstream's response headers, when proxied
    agent: str | None = None  # the request's User-Agent (a tenant's requests)
    referer: str | None = None  # its Referer (a tenant's requests; not in the access log)
    listener: str = ""  # scheme://address of the listener ("" for a connection refused)

    def __init__(  # written out: compiled, where the one @dataclass makes is interpreted
        self,
        time: float,
        tenant: str | None,
        client: str,
        method: str,
        path: str,
        status: int,
        bytes_out: int,
        bytes_in: int,
        duration: float,
        outcome: Outcome,
        upstream_seconds: float | None,
        agent: str | None = None,
        referer: str | None = None,
        listener: str = "",
    ) -> None:
        self.time = time
        self.tenant = tenant
        self.client = client
        self.method = method
        self.path = path
        self.status = status
        self.bytes_out = bytes_out
        self.bytes_in = bytes_in
        self.duration = duration
        self.outcome = outcome
        self.upstream_seconds = upstream_seconds
        self.agent = agent
        self.referer = referer
        self.listener = listener


class RequestSink(Protocol):
    """Something told about every answered request."""

    def request_done(self, record: RequestRecord) -> None: ...


@dataclass(slots=True)
class RequestNote:
    """What the proxy knows of a request, filled in as it is handled."""

    sinks: Sequence[RequestSink]
    started: float = field(default_factory=time.time)
    tenant: str | None = None
    client: str = ""
    outcome: Outcome = "bad_request"
    upstream_seconds: float | None = None
    agent: str | None = None
    referer: str | None = None
    listener: str = ""  # scheme://address of the listener it came in on

    def __init__(  # written out, as RequestRecord's
        self,
        sinks: Sequence[RequestSink],
        started: float | None = None,  # now, when not given
        tenant: str | None = None,
        client: str = "",
        outcome: Outcome = "bad_request",
        upstream_seconds: float | None = None,
        agent: str | None = None,
        referer: str | None = None,
        listener: str = "",
    ) -> None:
        self.sinks = sinks
        self.started = time.time() if started is None else started
        self.tenant = tenant
        self.client = client
        self.outcome = outcome
        self.upstream_seconds = upstream_seconds
        self.agent = agent
        self.referer = referer
        self.listener = listener


@dataclass(slots=True, frozen=True)
class Refusal:
    """A request governor answered itself on the listener, without a handler.

    Its head could not be read (400, 414, 431, 505), came too slowly (408), or
    declared a body over ``body_max`` (413). ``host`` is the Host it named, when
    it named exactly one well-formed Host: the tenant it was for. ``received`` is
    every byte of it read off the socket, ``sent`` the answer handed to it.
    """

    status: int
    reason: str
    peer: str | None
    host: str | None
    method: str
    path: str
    received: int
    sent: int
    started: float = field(default_factory=time.time)


def report_refusal(sinks: Sequence[RequestSink], refusal: Refusal, tenant: str | None) -> None:
    """Tell every sink about a request the listener refused (``tenant`` it was charged to)."""
    record = RequestRecord(
        time=refusal.started,
        tenant=tenant,
        client=refusal.peer or "",
        method=refusal.method,
        path=refusal.path,
        status=refusal.status,
        bytes_out=refusal.sent,
        bytes_in=refusal.received,
        duration=0.0,
        outcome="bad_request",
        upstream_seconds=None,
    )
    _tell(sinks, record)


def _tell(sinks: Sequence[RequestSink], record: RequestRecord) -> None:
    for sink in sinks:
        try:
            sink.request_done(record)
        except Exception:  # a sink's bug must not break the client's connection
            log.exception("a request sink failed")


def report(
    note: RequestNote,
    *,
    method: str,
    path: str,
    status: int,
    bytes_out: int,
    bytes_in: int,
    duration: float,
) -> None:
    """Tell every sink about a request the connection is done with (its figures given)."""
    if not note.sinks:
        return
    record = RequestRecord(
        time=note.started,
        tenant=note.tenant,
        client=note.client,
        method=method,
        path=path,
        status=status,
        bytes_out=bytes_out,
        bytes_in=bytes_in,
        duration=duration,
        outcome=note.outcome,
        agent=note.agent,
        referer=note.referer,
        upstream_seconds=note.upstream_seconds,
        listener=note.listener,
    )
    _tell(note.sinks, record)
