"""What a scrape renders: collectors that shape the output of the metrics' registries.

:class:`ConfiguredTenantsOnly` filters the merged files of the workers (which cannot
forget a series) to the tenants configured now.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Final

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

# The gauges of a tenant's current period: only configured tenants are shown.
PERIOD_GAUGES: Final = frozenset(
    {
        "governor_usage_bytes",
        "governor_quota_bytes",
        "governor_quota_reset_timestamp_seconds",
        "governor_blocked",
        "governor_warning_level",
    }
)


class ConfiguredTenantsOnly:
    """A collector that drops period-gauge samples of tenants no longer configured.

    In multiprocess mode a label set cannot be removed from the shared files (the library
    does not implement it), so a tenant removed by a reload is filtered out at collection.
    """

    def __init__(self, inner: Collector, tenants: Callable[[], Collection[str]]) -> None:
        self._inner = inner
        self._tenants = tenants

    def collect(self) -> Iterable[Metric]:
        tenants = self._tenants()
        for metric in self._inner.collect():
            if metric.name in PERIOD_GAUGES:
                metric.samples = [s for s in metric.samples if s.labels.get("tenant") in tenants]
            yield metric
