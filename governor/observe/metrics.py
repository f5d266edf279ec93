"""Prometheus metrics: every governor metric, in a private registry, served at ``GET /metrics``.

Labels are bounded by the config: ``tenant`` is a configured tenant's name (or ``""`` for a
request no tenant claims), ``direction``, ``outcome`` and ``result`` are fixed sets. No label
ever carries a host, a path, a URL or a client address.

The per-request cost is a dict lookup and a few increments: the labelled children of each
tenant are made once (``.labels()``) and reused; nothing is done per chunk.

Work follows traffic, not the config. A config of up to :data:`ALL_TENANTS_UP_TO` tenants
exports every tenant (idle ones at zero); a larger one exports a tenant's series only
while it is active in its current period (a request here, or a non-zero total or grant
learned by a flush), and makes no prometheus child for an idle tenant. Each flush
updates the tenants it changed (the flush listener's argument), period ends are found
in a heap (:mod:`governor.observe.activity`), and a tenant idle in its new period loses
its series (one process; with workers its values roll over, the shared files keep it).
A scrape brings the values up to date on the loop, then renders in a thread, so requests
are served while it writes (the serving process gives the loop the interpreter lock
back within half a millisecond: :mod:`governor.process.serve`).

One process (no supervisor): the metrics live in a private :class:`CollectorRegistry`
(never the global one), which ``/metrics`` serves.

Workers (``workers > 1``): the supervisor gives every worker the same fresh, empty
directory in ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client reads it when it is first
imported, so every value of the process is then kept in a memory-mapped file of that
directory, one set of files per pid). ``/metrics``, answered by whichever worker the
admin listener's ``SO_REUSEPORT`` picked, merges every process's files with
:class:`~prometheus_client.multiprocess.MultiProcessCollector`, so every scrape shows
the same fleet-wide totals. Counters and histograms are summed over every process that
ever ran in this supervisor's life (a dead worker's requests still happened); gauges
are merged by the ``multiprocess_mode`` documented at each one, and the ``live*``
modes forget a worker once the supervisor has reaped it (``mark_process_dead``).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
from collections.abc import Collection, Iterable, Sized
from dataclasses import dataclass, field
from typing import Final, Protocol, get_args

from aiohttp import hdrs, web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from governor.accounts.runtime import Runtime, Tenant, TenantUsage
from governor.config import Config
from governor.observe import MULTIPROC_ENV
from governor.observe.activity import Activity
from governor.observe.events import Outcome, RequestRecord
from governor.observe.exposition import ConfiguredTenantsOnly
from governor.observe.forecast import Forecasts
from governor.observe.latency import LatencyTally
from governor.observe.refusals import Refusals


class Connections(Protocol):
    """What the metrics read of the client listener: the connections it holds."""

    @property
    def connections(self) -> Sized: ...


# Outcomes a request with no tenant can have, and (every other) those of a tenant's.
NO_TENANT_OUTCOMES: Final[tuple[Outcome, ...]] = ("unknown_host", "bad_request")
TENANT_OUTCOMES: Final[tuple[Outcome, ...]] = tuple(
    o for o in get_args(Outcome) if o not in NO_TENANT_OUTCOMES
)

# Time to the upstream's response headers; the default upstream_response timeout is 60 s.
UPSTREAM_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# One store round trip (or two); store_timeout is 500 ms by default.
FLUSH_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# Up to this many configured tenants, every one has its series (idle ones at zero); above
# it, only tenants active in their current period do (see governor.observe.activity).
ALL_TENANTS_UP_TO: Final = 1000


def multiprocess_dir(worker: int | None) -> str | None:
    """The directory shared by the supervisor's workers, or None for a process of its own."""
    path = os.environ.get(MULTIPROC_ENV)
    if worker is None or not path or not os.path.isdir(path):
        return None
    return path


@dataclass(slots=True)
class _RequestSeries:
    """The labelled children one request touches, made once per tenant.

    Requests add to plain numbers; :meth:`publish` moves them into the children,
    at each scrape and each flush, so a request costs a few additions, not a
    prometheus-client call per series (in multiprocess mode each is a file write).
    """

    tenant: str = ""  # "": requests no tenant claimed
    requests: dict[str, Counter] = field(default_factory=dict)  # by outcome
    egress: Counter | None = None
    ingress: Counter | None = None
    latency: LatencyTally | None = None  # upstream response times, unpublished
    counted: dict[str, int] = field(default_factory=dict)  # requests by outcome, unpublished
    bytes_out: int = 0
    bytes_in: int = 0

    def publish(self, requests: Counter) -> None:
        """Move what requests added since the last call into the prometheus children."""
        if self.counted:
            for outcome, n in self.counted.items():
                child = self.requests.get(outcome)
                if child is None:
                    child = self.requests[outcome] = requests.labels(self.tenant, outcome)
                child.inc(n)
            self.counted.clear()
        if self.bytes_out and self.egress is not None:
            self.egress.inc(self.bytes_out)
        if self.bytes_in and self.ingress is not None:
            self.ingress.inc(self.bytes_in)
        self.bytes_out = self.bytes_in = 0
        if self.latency is not None:
            self.latency.publish()


@dataclass(slots=True)
class _PeriodSeries:
    """A tenant's current-period gauges."""

    usage: Gauge
    quota: Gauge
    resets: Gauge
    blocked: Gauge
    warning: Gauge
    forecast: Gauge


class Metrics:
    """Every governor metric, in a private registry."""

    def __init__(self, runtime: Runtime, *, worker: int | None = None) -> None:
        self.runtime = runtime
        self.worker = worker
        self.multiprocess_dir = multiprocess_dir(worker)
        # Where the metrics are registered. Single process: also what /metrics serves.
        # Multiprocess: never served (it holds this process's values only).
        self.registry = CollectorRegistry()
        reg = self.registry
        self._server: Connections | None = None
        self._store_errors_seen = runtime.store_errors

        self.transfer = Counter(
            "governor_transfer_bytes",
            "Bytes that crossed the client socket for requests of a tenant "
            "(egress: sent to visitors, ingress: received), whatever the tenant is charged.",
            ["tenant", "direction"],
            registry=reg,
        )
        self.requests = Counter(
            "governor_requests",
            'Answered requests by outcome; tenant is "" for a host no tenant claims.',
            ["tenant", "outcome"],
            registry=reg,
        )
        self.upstream_seconds = Histogram(
            "governor_upstream_response_seconds",
            "Seconds from sending a request upstream to the upstream's response headers.",
            ["tenant"],
            buckets=UPSTREAM_BUCKETS,
            registry=reg,
        )
        # The period gauges: every worker refreshes them at its flushes, right after
        # reading the fleet's totals back from the store, so the most recent write is the
        # freshest view of the shared store. They legitimately drop (the daily reset, an
        # admin reset, a cap lowered by a reload, a grant's period over), which "max"
        # would hide until every worker refreshed (a dead worker's file: for ever).
        self.usage = Gauge(
            "governor_usage_bytes",
            "Bytes charged to the tenant in its current period.",
            ["tenant"],
            multiprocess_mode="livemostrecent",
            registry=reg,
        )
        self.quota = Gauge(
            "governor_quota_bytes",
            "The tenant's allowance for its current period: daily_cap plus today's grant.",
            ["tenant"],
            multiprocess_mode="livemostrecent",
            registry=reg,
        )
        self.resets = Gauge(
            "governor_quota_reset_timestamp_seconds",
            "Unix time at which the tenant's current period ends and its count restarts.",
            ["tenant"],
            multiprocess_mode="livemostrecent",
            registry=reg,
        )
        self.blocked = Gauge(
            "governor_blocked",
            "1 while the tenant is at its cap and visitors get the notice, else 0.",
            ["tenant"],
            multiprocess_mode="livemostrecent",
            registry=reg,
        )
        self.warning = Gauge(
            "governor_warning_level",
            "The highest warn_at share of the cap the tenant has crossed this period, else 0.",
            ["tenant"],
            multiprocess_mode="livemostrecent",
            registry=reg,
        )
        # 0 as soon as any live worker's last flush failed: its counts are at risk.
        self.forecast = Gauge(
            "governor_quota_exhaustion_forecast_timestamp_seconds",
            "Unix time the tenant's allowance runs out at the current rate; +Inf when not "
            "before its reset.",
            ["tenant"],
            multiprocess_mode="livemostrecent",
            registry=reg,
        )
        # The exhaustion forecasts (set by the instance; None: every forecast is +Inf).
        self.forecasts: Forecasts | None = None
        self.store_up = Gauge(
            "governor_store_up",
            "1 if the last flush to the store succeeded (in every worker), else 0.",
            multiprocess_mode="livemin",
            registry=reg,
        )
        self.store_errors = Counter(
            "governor_store_errors",
            "Flushes to the store that failed.",
            registry=reg,
        )
        # Each worker's own unflushed counts; summed, and a dead worker's are gone.
        self.pending = Gauge(
            "governor_store_pending_bytes",
            "Counted bytes not yet written to the store.",
            multiprocess_mode="livesum",
            registry=reg,
        )
        self.unflushed_since = Gauge(
            "governor_store_unflushed_since_timestamp_seconds",
            "Unix time since which flushes fail (counts not reaching the store); 0 when they work.",
            multiprocess_mode="livemax",
            registry=reg,
        )
        self.flush_seconds = Histogram(
            "governor_store_flush_seconds",
            "Seconds each flush to the store took (failed ones included).",
            buckets=FLUSH_BUCKETS,
            registry=reg,
        )
        self.connections = Gauge(
            "governor_active_connections",
            "Open client connections of the proxy listener.",
            multiprocess_mode="livesum",
            registry=reg,
        )
        self.reloads = Counter(
            "governor_config_reloads",
            "Config reloads by result (one per process: each worker reloads on SIGHUP).",
            ["result"],
            registry=reg,
        )
        self._reloads_ok = self.reloads.labels(result="ok")
        self._reloads_error = self.reloads.labels(result="error")

        self._series: dict[str, _RequestSeries] = {}
        self._periods: dict[str, _PeriodSeries] = {}
        self._fresh: set[str] = set()  # tenants with requests since the last derive
        self._unpublished: dict[str, _RequestSeries] = {}  # series with counts to publish
        # The tenants whose period gauges are exported, and when each one's period ends.
        self.activity = Activity()
        self.refusals = Refusals(self._period_of)  # this period's refusals, for /status
        self._all = False  # a small config: every configured tenant is exported
        self._request_series("")
        self.reconfigure(runtime.snapshot.config)

        if self.multiprocess_dir is None:
            self.exposed: CollectorRegistry = self.registry
        else:
            self.exposed = CollectorRegistry()
            merged = MultiProcessCollector(None, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
            self.exposed.register(
                ConfiguredTenantsOnly(merged, lambda: self.runtime.snapshot.tenants)
            )

    # --- wiring ---------------------------------------------------------------------

    def bind_server(self, server: Connections) -> None:
        """Count the proxy's open client connections."""
        self._server = server
        self._refresh_live()

    def request_done(self, record: RequestRecord) -> None:
        """A request sink: transfer bytes, requests by outcome, upstream latency.

        Kept as plain numbers until the next scrape or flush (:meth:`_publish`). A
        tenant's first request of a period makes it active: its series appear then.
        """
        tenant = record.tenant or ""
        series = self._series.get(tenant)
        if series is None:
            series = self._request_series(tenant)
        counted = series.counted
        counted[record.outcome] = counted.get(record.outcome, 0) + 1
        self._unpublished[tenant] = series
        if not tenant:
            return  # no tenant: not anybody's transfer
        self.refusals.note(record)
        self._fresh.add(tenant)
        series.bytes_out += record.bytes_out
        series.bytes_in += record.bytes_in
        if record.upstream_seconds is not None and series.latency is not None:
            series.latency.add(record.upstream_seconds)

    def _period_of(self, name: str) -> str | None:
        tenant = self.runtime.snapshot.tenants.get(name)
        return None if tenant is None else tenant.periods.current(self.runtime.clock()).key

    def _publish(self) -> None:
        """Move the counts of the tenants with requests since the last call into prometheus."""
        unpublished, self._unpublished = self._unpublished, {}
        for series in unpublished.values():
            series.publish(self.requests)

    def flushed(self, changed: Collection[str]) -> None:
        """A flush listener: store health, and the period gauges of the tenants that changed.

        ``changed`` names the tenants whose total, grant or period the flush changed;
        nothing is done for the others (see :mod:`governor.observe.activity`).
        """
        runtime = self.runtime
        self.store_up.set(1 if runtime.store_ok else 0)
        errors = runtime.store_errors - self._store_errors_seen
        if errors > 0:
            self.store_errors.inc(errors)
        self._store_errors_seen = runtime.store_errors
        self.flush_seconds.observe(runtime.last_flush_seconds)
        forecast = [] if self.forecasts is None else self.forecasts.observed
        self._derive(itertools.chain(changed, forecast))
        self._refresh_live()

    def reconfigure(self, config: Config) -> None:
        """A reload's fan-out: new tenants appear, removed ones go, caps change.

        Costs the tenants exported (and, for a config of at most
        :data:`ALL_TENANTS_UP_TO` tenants, every one of them), never a large config's.
        """
        tenants = self.runtime.snapshot.tenants  # the runtime holds ``config`` now
        self._all = len(tenants) <= ALL_TENANTS_UP_TO
        for name in [n for n in self._periods if n not in tenants]:
            self._drop_period(name)
        names: list[str] = list(self._periods)
        if self._all:
            names.extend(n for n in tenants if n not in self._periods)
        self._derive(names)

    def reloaded(self, ok: bool) -> None:
        """Count a config reload (its settings came through :meth:`reconfigure`)."""
        (self._reloads_ok if ok else self._reloads_error).inc()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``GET /metrics`` in the Prometheus text format (OpenMetrics when asked for).

        The values are brought up to date on the event loop (a cost that follows the
        traffic since the last scrape), then rendered in a thread: prometheus-client
        reads every value under its own locks, so requests go on being served and
        counted while a large scrape is written out.
        """
        self._refresh_live()
        accept = ",".join(request.headers.getall(hdrs.ACCEPT, []))
        encoder, content_type = choose_encoder(accept)
        registry: Collector = self.exposed
        wanted = request.query.getall("name[]", [])
        if wanted:
            registry = self.exposed.restricted_registry(wanted)
        body = await asyncio.to_thread(encoder, registry)
        response = web.Response(body=body, headers={hdrs.CONTENT_TYPE: content_type})
        response.enable_compression()
        return response

    # --- internals ------------------------------------------------------------------

    def _request_series(self, tenant: str) -> _RequestSeries:
        """The children of one tenant ("": no tenant), made at zero so rates start at once."""
        series = _RequestSeries(tenant=tenant)
        outcomes = TENANT_OUTCOMES if tenant else NO_TENANT_OUTCOMES
        for outcome in outcomes:
            series.requests[outcome] = self.requests.labels(tenant, outcome)
        if tenant:
            series.egress = self.transfer.labels(tenant, "egress")
            series.ingress = self.transfer.labels(tenant, "ingress")
            series.latency = LatencyTally(self.upstream_seconds.labels(tenant))
        self._series[tenant] = series
        return series

    def _derive(self, names: Iterable[str]) -> None:
        """Set the period gauges of ``names`` (and of tenants with requests since the last
        call) that are active or exported; an idle tenant of a large config costs nothing."""
        runtime = self.runtime
        tenants = runtime.snapshot.tenants
        fresh, self._fresh = self._fresh, set()
        for name in dict.fromkeys(itertools.chain(names, fresh)):
            tenant = tenants.get(name)
            usage = runtime.usage(name)
            if tenant is None or usage is None:
                continue
            active = name in fresh or usage.used_bytes > 0 or usage.granted_bytes > 0
            if active or self._all or name in self.activity:
                self._show(tenant, usage, active=active or usage.blocked)

    def _show(self, tenant: Tenant, usage: TenantUsage, *, active: bool) -> None:
        name = usage.tenant
        if name not in self._series:
            self._request_series(name)
        period = self._periods.get(name)
        if period is None:
            period = self._periods[name] = _PeriodSeries(
                usage=self.usage.labels(name),
                quota=self.quota.labels(name),
                resets=self.resets.labels(name),
                blocked=self.blocked.labels(name),
                warning=self.warning.labels(name),
                forecast=self.forecast.labels(name),
            )
        period.usage.set(usage.used_bytes)
        period.quota.set(usage.cap_bytes)
        period.resets.set(usage.resets_at.timestamp())
        period.blocked.set(1 if usage.blocked else 0)
        crossed = [
            share for share in tenant.config.warn_at if usage.used_bytes >= share * usage.cap_bytes
        ]
        period.warning.set(max(crossed, default=0.0))
        at = None if self.forecasts is None else self.forecasts.of(name, usage.period)
        period.forecast.set(math.inf if at is None else at)
        self.activity.note(usage, active=active)

    def _sweep(self) -> None:
        """Period ends: a tenant still active (or exported) rolls over; an idle one goes."""
        runtime = self.runtime
        tenants = runtime.snapshot.tenants
        for name in self.activity.due(runtime.clock()):
            tenant = tenants.get(name)
            usage = runtime.usage(name)
            if tenant is None or usage is None:
                self._drop_period(name)
                continue
            active = usage.used_bytes > 0 or usage.granted_bytes > 0 or usage.blocked
            if active or self._all or self.multiprocess_dir is not None:
                # Shared files cannot forget a series: its values roll over instead.
                self._show(tenant, usage, active=active)
            else:
                self._drop_period(name)
                self._drop_series(name)

    def _drop_period(self, name: str) -> None:
        """Forget a tenant's period gauges (removed by a reload, or idle in a new period)."""
        self.activity.drop(name)
        if self._periods.pop(name, None) is None:
            return
        if self.multiprocess_dir is None:  # shared files: filtered at collection instead
            gauges = (
                self.usage,
                self.quota,
                self.resets,
                self.blocked,
                self.warning,
                self.forecast,
            )
            for gauge in gauges:
                gauge.remove(name)

    def _drop_series(self, name: str) -> None:
        """Forget an idle tenant's request series (one process only: published already)."""
        series = self._series.pop(name, None)
        if series is None:
            return
        for outcome in series.requests:
            self.requests.remove(name, outcome)
        for direction in ("egress", "ingress"):
            self.transfer.remove(name, direction)
        self.upstream_seconds.remove(name)

    def _refresh_live(self) -> None:
        """The values read at scrape time (and, for the other workers, at each flush)."""
        self._publish()
        self._derive(())
        self._sweep()
        self.pending.set(self.runtime.ledger.pending_bytes())
        self.unflushed_since.set(self.runtime.unflushed_since or 0)
        if self._server is not None:
            self.connections.set(len(self._server.connections))
