"""A steady stream of sequential 1 KiB requests to one tenant, timing each one's wait.

It runs in a thread of the benchmark (pinned with it to the load core) over one keep-alive
connection; a connection the server closed (nginx's old worker at a reload) is opened again
and the request sent again, inside the same timed wait. The longest wait while something
happens (a reload, a scrape), beside the longest wait of the same stream when nothing
happens, is what the table reports.
"""

from __future__ import annotations

import http.client
import statistics
import threading
import time
from types import TracebackType
from typing import Any


class RequestStream:
    """``with RequestStream(port, host) as s: ...``; then :meth:`summary`."""

    def __init__(self, port: int, host: str, *, timeout: float, path: str = "/1k.bin") -> None:
        self.port, self.host, self.path, self.timeout = port, host, path, timeout
        self.waits: list[float] = []
        self.failures: list[str] = []
        self.retries = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="request-stream", daemon=True)
        self._conn: http.client.HTTPConnection | None = None

    def __enter__(self) -> RequestStream:
        self._thread.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 5)

    def _connect(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def _once(self) -> int:
        conn = self._connect()
        conn.request("GET", self.path, headers={"Host": self.host})
        resp = conn.getresponse()
        resp.read()
        return resp.status

    def _one(self) -> None:
        started = time.perf_counter()
        try:
            try:
                status = self._once()
            except (OSError, http.client.HTTPException):
                self._drop()  # a keep-alive connection the server closed: once more
                self.retries += 1
                status = self._once()
            if status != 200:
                self.failures.append(f"status {status}")
        except (OSError, http.client.HTTPException) as exc:
            self._drop()
            self.failures.append(f"{type(exc).__name__}: {exc}")
        self.waits.append(time.perf_counter() - started)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._one()
        finally:
            self._drop()

    def summary(self) -> dict[str, Any]:
        """Requests, failures, and the waits: longest, p99 and median, in milliseconds."""
        waits = sorted(self.waits) or [0.0]
        return {
            "requests": len(self.waits),
            "failures": len(self.failures),
            "first_failures": self.failures[:3],
            "reconnects": self.retries,
            "max_ms": 1000 * waits[-1],
            "p99_ms": 1000 * waits[min(len(waits) - 1, int(0.99 * len(waits)))],
            "p50_ms": 1000 * statistics.median(waits),
        }
