"""The metrics of the listeners and their certificates, registered with the others.

* ``governor_listener_requests_total{listener, scheme}``: answered requests per listener
  (kept as plain numbers, published at each flush: a request costs a dict update);
* ``governor_tls_handshakes_total{listener, result}``: TLS handshakes, ``ok`` or ``failed``
  (no handshake in time, no TLS at all, no common version or cipher);
* ``governor_certificate_expiry_timestamp_seconds{tenant, listener, cert}``: when each
  certificate in use expires (``tenant`` is "" for a listener's own, ``listener`` "" for a
  tenant's), set at start-up and on every reload from the files then read.

Labels are bounded by the config: listeners and certificates are configured.
"""

from __future__ import annotations

from collections.abc import Collection

from prometheus_client import CollectorRegistry, Counter, Gauge

from governor.observe.events import RequestRecord
from governor.tls.certificates import Certificates


class ListenerMetrics:
    """Requests per listener, TLS handshakes, certificate expiry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "governor_listener_requests",
            "Requests answered, by the listener (address) they came in on.",
            ["listener", "scheme"],
            registry=registry,
        )
        self.handshakes = Counter(
            "governor_tls_handshakes",
            "TLS handshakes on each TLS listener, by result (ok, failed).",
            ["listener", "result"],
            registry=registry,
        )
        self.expiry = Gauge(
            "governor_certificate_expiry_timestamp_seconds",
            "When each certificate in use expires (Unix time), as read at start or reload.",
            ["tenant", "listener", "cert"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self._requests: dict[str, int] = {}  # listener -> requests not published yet
        self._expiry: dict[tuple[str, str, str], float] = {}  # the series set now

    def request_done(self, record: RequestRecord) -> None:
        """A request sink: count it against its listener (published at the next flush)."""
        listener = record.listener
        if listener:  # "": refused on arrival, before any listener was noted
            self._requests[listener] = self._requests.get(listener, 0) + 1

    def flushed(self, changed: Collection[str]) -> None:
        """A flush listener: publish the requests counted since the last flush."""
        counted, self._requests = self._requests, {}
        for listener, n in counted.items():
            scheme, _, address = listener.partition("://")
            self.requests.labels(listener=address, scheme=scheme).inc(n)

    def handshake(self, listener: str, ok: bool) -> None:
        self.handshakes.labels(listener=listener, result="ok" if ok else "failed").inc()

    def certificates(self, certificates: Certificates | None) -> None:
        """The certificates in use now (a reload's): a series for each, the old ones gone.

        Only what changed is touched (a renewal, a tenant added or removed), so a reload of
        a config with 100,000 certificates sets a handful of series, not all of them.
        """
        now: dict[tuple[str, str, str], float] = {}
        for use in [] if certificates is None else certificates.in_use:
            now[(use.tenant, use.listener, str(use.cert.pair.cert))] = use.cert.not_after
        for labels in self._expiry.keys() - now.keys():
            self.expiry.remove(*labels)
        for labels, value in now.items():
            if self._expiry.get(labels) != value:
                self.expiry.labels(*labels).set(value)
        self._expiry = now
