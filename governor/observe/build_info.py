"""``governor_build_info{version, build, python}``: always 1; which governor is running.

``build`` is ``mypyc`` when the hot modules run compiled and ``python`` when they run as
pure Python (see :mod:`governor.build`), so a dashboard can tell a fleet's builds apart.
"""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Gauge

from governor.build import governor_version, running


def register_build_info(registry: CollectorRegistry) -> None:
    gauge = Gauge(
        "governor_build_info",
        "Always 1: the version, the build (mypyc or python) and the Python running.",
        ["version", "build", "python"],
        multiprocess_mode="livemax",
        registry=registry,
    )
    gauge.labels(governor_version(), running().kind, platform.python_version()).set(1)
