"""What a scrape renders: collectors that shape the output of the metrics' registries.

:class:`ConfiguredTenantsOnly` filters the merged files of the workers (which cannot
forget a series) to the tenants configured now; :class:`Pausing` lets the render thread
give the event loop's thread the interpreter lock every :data:`PAUSE_EVERY` samples.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

# Samples rendered between two pauses of the render thread (about 0.5 ms of work).
PAUSE_EVERY = 200

# The gauges of a tenant's current period: only configured tenants are shown.
PERIOD_GAUGES = frozenset(
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


class PausingSamples(list[Sample]):
    """A metric's samples that let the event loop's thread run every few hundred lines.

    The render thread otherwise keeps the interpreter lock for a whole switch interval
    (5 ms) each time it has it, and a request needs the loop several times.
    """

    def __iter__(self) -> Iterator[Sample]:
        for i, sample in enumerate(super().__iter__()):
            if i % PAUSE_EVERY == PAUSE_EVERY - 1:
                time.sleep(0)  # releases the lock: the loop's thread takes it if it waits
            yield sample


class Pausing:
    """A collector over ``inner`` whose samples pause (:class:`PausingSamples`)."""

    def __init__(self, inner: Collector) -> None:
        self._inner = inner

    def collect(self) -> Iterable[Metric]:
        for metric in self._inner.collect():
            metric.samples = PausingSamples(metric.samples)
            yield metric
