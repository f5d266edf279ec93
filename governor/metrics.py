"""Prometheus metrics (stub: the interface the app wires; the implementation follows)."""

from __future__ import annotations

from aiohttp import web

from governor.events import RequestRecord
from governor.runtime import Runtime


class Metrics:
    """Every governor metric, in a private registry."""

    def __init__(self, runtime: Runtime, *, worker: int | None = None) -> None:
        self.runtime = runtime
        self.worker = worker

    def bind_server(self, server: web.Server) -> None:
        """Count the proxy's open client connections."""

    def request_done(self, record: RequestRecord) -> None:
        """A request sink: transfer bytes, requests by outcome, upstream latency."""

    def flushed(self) -> None:
        """A flush listener: store health and per-tenant usage gauges."""

    def reloaded(self, ok: bool) -> None:
        """Count a config reload."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``GET /metrics`` in the Prometheus text format."""
        raise web.HTTPNotImplemented()
