"""The admin listener (stub: the interface the app wires; the implementation follows)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from governor.metrics import Metrics
from governor.runtime import Runtime


def create_admin_app(
    runtime: Runtime,
    *,
    token: str | None,
    metrics: Metrics,
    ready: Callable[[], bool],
) -> web.Application:
    """The admin application: /metrics, /healthz, /readyz, /api/v1/..., /status."""
    app = web.Application()
    app.router.add_get("/metrics", metrics.handle)
    return app
