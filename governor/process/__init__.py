"""The process: start-up, serving, reload, workers and their supervisor, systemd."""

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""Where prometheus-client finds the workers' shared metrics folder; set by the supervisor.

Here rather than in :mod:`governor.observe.metrics` so the supervisor can name it
without importing aiohttp and the runtime.
"""
