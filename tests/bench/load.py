"""The load generators: wrk for small files, curl for the big one, an exact raw client,
and ``openssl s_time`` for new TLS connections.

wrk is run with ``--latency`` and a Lua script whose only hook is ``done()`` (it runs
once, after the test, so it costs nothing per request): it prints wrk's exact totals,
the requests completed and every byte read from the sockets, which the rounded
"Transfer/sec" line is not. Over TLS those bytes are wrk's plaintext (``SSL_read``'s).

wrk cannot measure full TLS handshakes: with ``Connection: close`` it resumes the
session on every reconnection (nginx's ``$ssl_session_reused`` is "r" for all but the
first few). ``openssl s_time -new`` makes each connection a new session, a full
handshake, and closes it as soon as the handshake is done (it sends no request, and
no SNI). One s_time runs one connection at a time, so several run side by side.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.bench.procs import rss_bytes
from tests.support import RawClient, request

WRK_DONE_LUA = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d bytes=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d\\n",
    summary.requests, summary.bytes, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}  # -> milliseconds
_LATENCY = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_TOTALS = re.compile(r"^BENCH (.*)$", re.MULTILINE)
_S_TIME = re.compile(r"^(\d+) connections in [\d.]+s;", re.MULTILINE)
_CURL_TIMED_OUT = 28  # curl's exit status when --max-time ran out


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    bytes_read: int  # exact, from done()
    seconds: float
    non_2xx: int
    socket_errors: int
    output: str


def write_lua(folder: Path, *, delay_ms: int = 0) -> Path:
    """wrk's script: the done() hook, and with ``delay_ms`` a pause before each request
    (wrk's delay() hook: each connection then sends at most one request per ``delay_ms``
    plus a round trip, a paced load instead of as many as the proxy can answer)."""
    path = folder / (f"paced-{delay_ms}.lua" if delay_ms else "totals.lua")
    pause = f"delay = function()\n  return {delay_ms}\nend\n" if delay_ms else ""
    path.write_text(WRK_DONE_LUA + pause)
    return path


def parse_wrk(output: str) -> WrkResult:
    """The numbers in wrk's report (``--latency``) and in the done() line."""
    latency = {int(p): float(v) * _UNITS[unit] for p, v, unit in _LATENCY.findall(output)}
    rps, totals = _RPS.search(output), _TOTALS.search(output)
    if rps is None or totals is None or set(latency) != {50, 99}:
        raise RuntimeError(f"could not parse wrk's output:\n{output}")
    exact = dict(item.split("=") for item in totals.group(1).split())
    non_2xx = _NON_2XX.search(output)
    errors = _SOCKET_ERRORS.search(output)
    return WrkResult(
        rps=float(rps.group(1)),
        p50_ms=latency[50],
        p99_ms=latency[99],
        requests=int(exact["requests"]),
        bytes_read=int(exact["bytes"]),
        seconds=int(exact["duration_us"]) / 1e6,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
        output=output,
    )


def run_wrk(
    wrk: str, lua: Path, url: str, host: str, *, seconds: float, connections: int
) -> WrkResult:
    argv = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--latency",
        "-H",
        f"Host: {host}",
        "-s",
        str(lua),
        url,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return parse_wrk(done.stdout)


@dataclass(frozen=True)
class Download:
    status: int
    header_bytes: int
    body_bytes: int
    seconds: float


@dataclass(frozen=True)
class StreamResult:
    downloads: list[Download]
    rss_peak: int
    rss_steady: int  # median of the samples in the second half of the transfer
    samples: int

    @property
    def received(self) -> int:
        """Every byte the clients read: status lines, headers and bodies."""
        return sum(d.header_bytes + d.body_bytes for d in self.downloads)

    @property
    def mib_per_s(self) -> float:
        body = sum(d.body_bytes for d in self.downloads)
        return body / max(d.seconds for d in self.downloads) / 2**20


def _curl_argv(curl: str, url: str, host: str, extra: Sequence[str]) -> list[str]:
    return [
        curl,
        "-sS",
        "-o",
        "/dev/null",
        "-H",
        f"Host: {host}",
        "-w",
        "%{http_code} %{size_header} %{size_download} %{time_total}",
        *extra,
        url,
    ]


def curl_tls(ca: Path, host: str, port: int) -> list[str]:
    """curl's options for ``https://host:port/``: ``host`` is 127.0.0.1 (and the SNI name),
    the certificate is checked against ``ca``."""
    return ["--cacert", str(ca), "--resolve", f"{host}:{port}:127.0.0.1"]


def _parsed(out: str) -> Download:
    """A download from what curl's ``-w`` (:func:`_curl_argv`) printed; ValueError if not."""
    status, header, body, seconds = out.split()
    return Download(int(status), int(header), int(body), float(seconds))


def _download(proc: subprocess.Popen[str]) -> Download:
    out, err = proc.communicate()
    try:
        return _parsed(out)
    except ValueError:
        raise RuntimeError(f"curl failed ({proc.returncode}): {out}{err}") from None


def _steady(samples: list[int]) -> int:
    return int(statistics.median(samples[len(samples) // 2 :]))


def run_streams(
    curl: str,
    url: str,
    host: str,
    *,
    streams: int,
    pids: list[int],
    extra: Sequence[str] = (),
    interval: float = 0.05,
) -> StreamResult:
    """``streams`` parallel curl downloads (``extra``: more options, e.g. :func:`curl_tls`),
    sampling the proxy's RSS every ``interval``."""
    argv = _curl_argv(curl, url, host, extra)
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(streams)
    ]
    samples: list[int] = []
    try:
        while any(p.poll() is None for p in procs):
            samples.append(rss_bytes(pids))
            time.sleep(interval)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    downloads = [_download(p) for p in procs]
    samples = samples or [rss_bytes(pids)]
    return StreamResult(downloads, max(samples), _steady(samples), len(samples))


class Downloads:
    """``streams`` downloads of ``url``, each begun again as it ends, for ``seconds``: a
    steady large-file load beside another measurement.

    Each curl is given what is left of the time (``--max-time``), so the downloads under
    way at the end stop by themselves and still print what they received (curl's
    ``-w``, exit status 28): those are kept apart from the completed ones. A curl's own
    reads from its socket cannot be seen from outside (``/proc/<pid>/io`` counts file
    reads, not ``recv``)."""

    def __init__(self, curl: str, url: str, host: str, *, streams: int, seconds: float) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + seconds
        self._curl, self._url, self._host = curl, url, host
        self.completed: list[Download] = []
        self.cut: list[Download] = []
        self.failures: list[str] = []  # a curl that failed otherwise than by its time
        self._threads = [threading.Thread(target=self._stream, daemon=True) for _ in range(streams)]
        for thread in self._threads:
            thread.start()

    def _stream(self) -> None:
        while (left := self.deadline - time.monotonic()) > 0.01:
            argv = _curl_argv(self._curl, self._url, self._host, ("--max-time", f"{left:.3f}"))
            proc = subprocess.run(argv, capture_output=True, text=True, check=False)
            try:
                if proc.returncode not in (0, _CURL_TIMED_OUT):
                    raise ValueError
                download = _parsed(proc.stdout)
            except ValueError:
                self.failures.append(f"curl failed ({proc.returncode}): {proc.stderr.strip()}")
                return
            if proc.returncode == _CURL_TIMED_OUT:
                self.cut.append(download)
                return
            self.completed.append(download)

    def stop(self) -> float:
        """Wait for the downloads under way to reach the time (``seconds`` from the
        start); returns the seconds the streams ran."""
        for thread in self._threads:
            thread.join()
        return time.monotonic() - self.started

    @property
    def received(self) -> int:
        """Every byte the downloads read, the cut ones' included."""
        return sum(d.header_bytes + d.body_bytes for d in self.completed + self.cut)


@dataclass(frozen=True)
class HandshakeResult:
    connections: int  # completed, over every client
    seconds: float  # from the first client's start to the last one's exit
    clients: int

    @property
    def per_second(self) -> float:
        return self.connections / self.seconds


def _s_time_connections(proc: subprocess.Popen[str], timeout: float) -> int:
    out, err = proc.communicate(timeout=timeout)
    found = _S_TIME.search(out)
    if proc.returncode != 0 or found is None:
        raise RuntimeError(f"openssl s_time failed ({proc.returncode}):\n{out[-2000:]}{err}")
    return int(found.group(1))


def run_s_time(openssl: str, port: int, *, seconds: float, clients: int) -> HandshakeResult:
    """``clients`` ``openssl s_time -new`` side by side against 127.0.0.1:``port``, each
    making full TLS handshakes one after the other for ``seconds``. s_time's own clock
    is ``time()``'s whole seconds (it runs ``-time N`` for N to N+1 s), so the rate is
    taken over the wall-clock time of the whole run instead."""
    whole = max(1, round(seconds))
    argv = [openssl, "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time", str(whole)]
    started = time.monotonic()
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(clients)
    ]
    try:
        total = sum(_s_time_connections(p, whole + 60) for p in procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return HandshakeResult(total, time.monotonic() - started, clients)


@dataclass(frozen=True)
class ExactResult:
    received: int  # every byte read off the sockets
    responses: int
    response_bytes: int  # the size of one whole response (head and body)
    problems: list[str]


async def _one_connection(port: int, path: str, host: str, count: int, size: int) -> ExactResult:
    client = await RawClient.connect(port)
    problems: list[str] = []
    sizes: set[int] = set()
    try:
        for _ in range(count):
            await client.send(request("GET", path, host))
            resp = await client.response()
            sizes.add(resp.received)
            if resp.status != 200 or not resp.complete or len(resp.body) != size:
                problems.append(f"{path}: status {resp.status}, {len(resp.body)} of {size} B")
    finally:
        await client.close()
    return ExactResult(client.received, count, max(sizes), problems)


async def _exact(port: int, path: str, host: str, size: int, conns: int, each: int) -> ExactResult:
    parts = await asyncio.gather(
        *(_one_connection(port, path, host, each, size) for _ in range(conns))
    )
    sizes = {p.response_bytes for p in parts}
    problems = [problem for p in parts for problem in p.problems]
    if len(sizes) != 1:
        problems.append(f"{path}: responses of different sizes {sorted(sizes)}")
    return ExactResult(
        sum(p.received for p in parts), sum(p.responses for p in parts), max(sizes), problems
    )


def run_exact(
    port: int, path: str, host: str, size: int, *, conns: int = 4, each: int = 25
) -> ExactResult:
    """``conns`` keep-alive connections, ``each`` requests apiece, every byte counted."""
    return asyncio.run(_exact(port, path, host, size, conns, each))
