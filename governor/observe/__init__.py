"""What happened, for operators: request events, Prometheus metrics, the access log, webhooks."""

from typing import Final

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
"""Where prometheus-client finds the workers' shared metrics folder; set by the supervisor.

Here rather than in :mod:`governor.observe.metrics` so the supervisor can name it
without importing prometheus-client, aiohttp and the runtime.
"""
