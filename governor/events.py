"""What happened to each request, reported once it is fully answered.

The proxy notes who a request was for and how it ended (:class:`RequestNote`, kept
on the request); aiohttp calls :class:`RecordingAccessLogger` after the response
is written, with its size and duration, and that turns note and response into one
:class:`RequestRecord` for every sink (metrics, the access log). Sinks are
synchronous and must not block: they count, or queue a line for a writer thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

log = logging.getLogger("governor.events")

Outcome = Literal["proxied", "blocked", "exempt", "upstream_error", "unknown_host", "bad_request"]


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
    bytes_in: int = 0
    upstream_seconds: float | None = None


NOTE_KEY: web.RequestKey[RequestNote] = web.RequestKey("governor_note", RequestNote)


class RecordingAccessLogger(AbstractAccessLogger):
    """aiohttp's access-log hook, used to report each request once it is answered."""

    @property
    def enabled(self) -> bool:
        return True

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        note = request.get(NOTE_KEY)
        if not isinstance(note, RequestNote) or not note.sinks:
            return
        record = RequestRecord(
            time=note.started,
            tenant=note.tenant,
            client=note.client or (request.remote or ""),
            method=request.method,
            path=request.path,
            status=response.status,
            bytes_out=response.body_length,
            bytes_in=note.bytes_in,
            duration=time,
            outcome=note.outcome,
            upstream_seconds=note.upstream_seconds,
        )
        for sink in note.sinks:
            try:
                sink.request_done(record)
            except Exception:  # a sink's bug must not break the client's connection
                log.exception("a request sink failed")
