"""One measurement of one setup, checked while it is made.

Checks on every setup: wrk saw no non-2xx response and no socket error; every
download and raw response is 200 and complete, of the file's exact size; a default
TLS client negotiates TLS 1.3 (once, in the warm-up).

Checks on governor, against ``governor usage --json`` read before and after (once
the count has settled, see :func:`tests.bench.lab.settled_count`):

* raw client and curl downloads end cleanly, so governor's count must equal, to the
  byte, what the clients read (status lines, headers and bodies: the raw client counts
  every byte off its sockets; curl's ``size_header + size_download``);
* a wrk run is cut off at its deadline: each of its connections may have a response
  governor wrote (and counted: it was handed to the kernel) that wrk never read. So
  governor's count must lie between the exact bytes wrk read (from the Lua ``done()``
  hook) and that plus one whole response per connection; the excess is recorded. A
  response governor writes after wrk's exit closed the connection (its request was in
  flight) says ``Connection: close``: 19 B more than the exact pass's (:data:`CLOSING`).

On TLS (the rows ending in ``-tls``) governor charges ciphertext: the TLS records that
crossed the socket, the handshake included, while wrk, curl and s_time report plaintext.
There the count is not checked to the byte but bounded (:func:`_check_tls_count`): at
least the plaintext the clients read, at most that plus a generous allowance per
request, per connection and per 16 KiB of plaintext. The handshake is charged only to
the tenant its SNI name belongs to: curl sends HOST; wrk sends "127.0.0.1" and s_time
none, so theirs are nobody's (documented), and s_time's rows should count nothing.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.bench.configs import FILES, HOST, TLSFiles
from tests.bench.lab import Cores, Setup, client_context, haproxy_meter, settled_count
from tests.bench.load import (
    Downloads,
    WrkResult,
    curl_tls,
    run_exact,
    run_s_time,
    run_streams,
    run_wrk,
)
from tests.bench.procs import core_busy, cpu_times
from tests.bench.report import Row
from tests.bench.tools import Tools

MiB = 2**20
GiB = 2**30
# What a response governor answers after the client closed its side (wrk exiting with
# a request in flight) carries beyond the exact pass's response of the same file.
CLOSING = len(b"Connection: close\r\n")

# The TLS count's allowance over the plaintext (see _check_tls_count). A TLS 1.3 record
# adds 22 B (5 B header, 1 B content type, 16 B AEAD tag; 29 B with TLS 1.2's AES-GCM) and
# carries at most 16 KiB. A 1 KiB response is a record or two; a connection adds its
# handshake (~1.5 KB out with this certificate: ServerHello, certificate, signature,
# Finished, two session tickets; charged only with the tenant's SNI name), a close_notify,
# and at wrk's deadline a response it never read (~1.3 KB for the 1 KiB file).
TLS_PER_REQUEST = 100
TLS_PER_CONNECTION = 6000
TLS_PER_16KIB = 100  # a big body's records: 22 B each if full; room for 4 per 16 KiB


@dataclass(frozen=True)
class Settings:
    seconds: float
    rounds: int
    quick: bool
    connections: int = 32
    streams: int = 4
    handshake_clients: int = 4  # openssl s_time processes side by side
    mixed_downloads: int = 2  # big-file downloads beside the mixed row's wrk
    mixed_connections: int = 8

    @property
    def big(self) -> str:
        """The file of the stream tests: 1 GiB, or 10 MiB in a quick run."""
        return "10m.bin" if self.quick else "1g.bin"


@dataclass
class Bench:
    settings: Settings
    tools: Tools
    cores: Cores
    lua: Path
    files: TLSFiles
    response_bytes: dict[tuple[str, str], int] = field(default_factory=dict)


def _counted(setup: Setup, row: Row) -> int | None:
    """What governor counted since its last settled count; None if not a governor or
    the day rolled over meanwhile."""
    if setup.config is None or setup.count is None:
        return None
    before, after = setup.count, settled_count(setup.config)
    setup.count = after
    if before.period != after.period:
        row.info["note"] = "the period rolled over: count not checked"
        return None
    row.info["governor_counted"] = after.used - before.used
    return after.used - before.used


def _cpu_since(pids: list[int], before: tuple[float, float]) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pids`` since ``before``."""
    user, system = cpu_times(pids)
    return user - before[0], system - before[1]


def _load_core_pct(before: tuple[int, int], after: tuple[int, int]) -> float:
    busy, total = after[0] - before[0], after[1] - before[1]
    return 100 * busy / total if total else 0.0


def _load_core(bench: Bench) -> int | None:
    return min(bench.cores.load) if bench.cores.load else None


def _wrk_problems(result: WrkResult) -> list[str]:
    problems = []
    if result.non_2xx:
        problems.append(f"wrk: {result.non_2xx} non-2xx/3xx responses")
    if result.socket_errors:
        problems.append(f"wrk: {result.socket_errors} socket errors")
    if result.requests == 0:
        problems.append("wrk: no request completed")
    return problems


def _check_wrk_count(row: Row, counted: int, result: WrkResult, one: int, conns: int) -> None:
    excess = counted - result.bytes_read
    row.info["counted_minus_read"] = excess
    if not 0 <= excess <= conns * (one + CLOSING):
        row.problems.append(
            f"governor counted {counted:,} B, wrk read {result.bytes_read:,} B: the "
            f"difference {excess:,} B is outside 0..{conns} responses of {one:,} B "
            f"(+{CLOSING} B each for Connection: close)"
        )


def _tls_allowance(plaintext: int, requests: int, connections: int) -> int:
    """The most a TLS row's count may exceed the clients' plaintext by (see above)."""
    records = -(-plaintext // 2**14)
    return TLS_PER_REQUEST * requests + TLS_PER_CONNECTION * connections + TLS_PER_16KIB * records


def _check_tls_count(
    row: Row, counted: int, plaintext: int, requests: int, connections: int
) -> None:
    """On TLS governor counts ciphertext (records and handshakes), the clients plaintext:
    the count must lie between the plaintext and that plus :func:`_tls_allowance`."""
    excess, allowed = counted - plaintext, _tls_allowance(plaintext, requests, connections)
    row.info["counted_minus_read"] = excess
    if not 0 <= excess <= allowed:
        row.problems.append(
            f"governor counted {counted:,} B over TLS, the clients read {plaintext:,} B of "
            f"plaintext: the difference {excess:,} B is outside 0..{allowed:,} B "
            f"({requests:,} requests, {connections:,} connections)"
        )


def _proxy_pids(setup: Setup) -> list[int]:
    """The processes whose CPU and memory are the proxy's (none for the origin itself)."""
    pids = setup.server.pids()  # raises if it died (a worker too: the tree shrank)
    return pids if setup.proxy else []


def measure_wrk(bench: Bench, setup: Setup, name: str, rnd: int, *, tls: bool = False) -> Row:
    """wrk on keep-alive connections; ``tls``: over HTTPS (each connection's handshake
    within the run, as wrk opens them)."""
    row = Row(rnd, setup.key, f"wrk-{name.removesuffix('.bin')}{'-tls' if tls else ''}")
    pids, core = _proxy_pids(setup), _load_core(bench)
    meter = haproxy_meter(setup.haproxy_socket) if setup.haproxy_socket else 0
    cpu0, load = cpu_times(pids), core_busy(core) if core is not None else (0, 0)
    result = run_wrk(
        bench.tools.wrk,
        bench.lua,
        setup.tls_url(name) if tls else setup.url(name),
        HOST,
        seconds=bench.settings.seconds,
        connections=bench.settings.connections,
    )
    user, system = _cpu_since(pids, cpu0)
    _proxy_pids(setup)
    row.metrics = {"rps": result.rps, "p50_ms": result.p50_ms, "p99_ms": result.p99_ms}
    if setup.proxy:
        requests = max(result.requests, 1)
        row.metrics["cpu_us"] = 1e6 * (user + system) / requests
        row.metrics["cpu_user_us"] = 1e6 * user / requests
        row.metrics["cpu_pct"] = 100 * (user + system) / result.seconds
    if core is not None:
        row.metrics["load_pct"] = _load_core_pct(load, core_busy(core))
    row.info = {"requests": result.requests, "bytes_read": result.bytes_read}
    row.info["seconds"] = result.seconds
    if setup.haproxy_socket:
        row.info["haproxy_metered"] = haproxy_meter(setup.haproxy_socket) - meter
    row.problems = _wrk_problems(result)
    counted = _counted(setup, row)
    conns = bench.settings.connections
    if counted is not None and tls:
        _check_tls_count(row, counted, result.bytes_read, result.requests, conns)
    elif counted is not None:
        one = bench.response_bytes[(setup.key, name)]
        _check_wrk_count(row, counted, result, one, conns)
    return row


def measure_mixed(bench: Bench, setup: Setup, rnd: int) -> Row:
    """1 KiB requests (wrk, :attr:`Settings.mixed_connections` connections) while
    :attr:`Settings.mixed_downloads` downloads of the big file run through the same proxy,
    each begun again as it ends: what a fast download costs the other visitors, and the
    downloads' MiB/s (the completed ones, and what the ones cut at the end had received).
    The cut downloads leave the count unchecked: it is recorded."""
    row = Row(rnd, setup.key, "mixed")
    name = bench.settings.big
    lead = 0.2  # the downloads under way before the first request (the point)
    downloads = Downloads(
        bench.tools.curl,
        setup.url(name),
        HOST,
        streams=bench.settings.mixed_downloads,
        seconds=lead + bench.settings.seconds,
    )
    try:
        time.sleep(lead)
        result = run_wrk(
            bench.tools.wrk,
            bench.lua,
            setup.url("1k.bin"),
            HOST,
            seconds=bench.settings.seconds,
            connections=bench.settings.mixed_connections,
        )
    finally:
        seconds = downloads.stop()
    row.metrics = {"rps": result.rps, "p50_ms": result.p50_ms, "p99_ms": result.p99_ms}
    row.metrics["downloads_mib_s"] = downloads.received / seconds / 2**20
    row.info = {
        "requests": result.requests,
        "downloads_completed": len(downloads.completed),
        "downloads_cut": len(downloads.cut),
    }
    row.problems = _wrk_problems(result) + downloads.failures
    if not downloads.received:  # starved, or never under way: no comparison then
        row.problems.append(f"the downloads of {name} beside wrk received nothing")
    for d in downloads.completed:
        if d.status != 200 or d.body_bytes != FILES[name]:
            row.problems.append(f"curl: status {d.status}, {d.body_bytes:,} of {FILES[name]:,} B")
    for d in downloads.cut:
        if d.status not in (0, 200):  # 0: cut before the response's head
            row.problems.append(f"curl: status {d.status} (a download cut at the end)")
    _counted(setup, row)  # the settled count moves on; cut downloads: not checked
    return row


def measure_exact(bench: Bench, setup: Setup, rnd: int) -> Row:
    """100 requests each for 1 KiB and 64 KiB on 4 keep-alive connections, byte-exact."""
    row = Row(rnd, setup.key, "exact")
    received = 0
    for name in ("1k.bin", "64k.bin"):
        result = run_exact(setup.port, f"/{name}", HOST, FILES[name])
        bench.response_bytes[(setup.key, name)] = result.response_bytes
        row.info[f"response_bytes_{name}"] = result.response_bytes
        row.problems += result.problems
        received += result.received
    row.info["received"] = received
    counted = _counted(setup, row)
    if counted is not None and counted != received:
        row.problems.append(f"governor counted {counted:,} B, the raw client read {received:,} B")
    return row


def measure_stream(bench: Bench, setup: Setup, streams: int, rnd: int, *, tls: bool = False) -> Row:
    """``streams`` curl downloads of the big file; ``tls``: over HTTPS, with the name HOST
    (its SNI) resolved to 127.0.0.1 and the certificate checked."""
    row = Row(rnd, setup.key, f"stream-{streams}{'-tls' if tls else ''}")
    name, pids = bench.settings.big, _proxy_pids(setup)
    url = setup.tls_url(name, HOST) if tls else setup.url(name)
    extra = curl_tls(bench.files.ca, HOST, setup.tls_port) if tls else []
    cpu0 = cpu_times(pids)
    result = run_streams(bench.tools.curl, url, HOST, streams=streams, pids=pids, extra=extra)
    user, system = _cpu_since(pids, cpu0)
    _proxy_pids(setup)
    row.metrics = {"mib_s": result.mib_per_s}
    if setup.proxy:
        row.metrics["cpu_s_gib"] = (user + system) / (result.received / GiB)
        row.metrics["cpu_user_s_gib"] = user / (result.received / GiB)
        row.metrics["rss_peak_mib"] = result.rss_peak / MiB
        row.metrics["rss_steady_mib"] = result.rss_steady / MiB
    row.info = {"received": result.received, "rss_samples": result.samples}
    row.info["downloads"] = [d.__dict__ for d in result.downloads]
    for d in result.downloads:
        if d.status != 200 or d.body_bytes != FILES[name]:
            row.problems.append(f"curl: status {d.status}, {d.body_bytes:,} of {FILES[name]:,} B")
    counted = _counted(setup, row)
    if counted is not None and tls:
        _check_tls_count(row, counted, result.received, streams, streams)
    elif counted is not None and counted != result.received:
        row.problems.append(f"governor counted {counted:,} B, curl read {result.received:,} B")
    return row


def _limit(bench: Bench, setup: Setup, cpu_pct: float, load_pct: float | None) -> str:
    """Which side held the handshake rate back, from how busy each core was."""
    load = f"the load core {load_pct:.0f}% busy" if load_pct is not None else "nothing pinned"
    busy = f"{load}, the proxy {cpu_pct:.0f}% of a core"
    if not setup.proxy:
        return f"the origin and the clients share the load core ({load})"
    cpus = setup.server.cpus
    if load_pct is None or cpus is None or bench.cores.load is None:
        return busy
    if cpus & bench.cores.load:
        return f"the proxy shares the load core with the clients: {busy}"
    if cpu_pct >= 90 * len(cpus):
        return f"the proxy: {busy}"
    if load_pct >= 90:
        return f"the clients (s_time): {busy}"
    return f"neither core full, so the round trips: {busy}"


def measure_handshakes(bench: Bench, setup: Setup, rnd: int) -> Row:
    """New TLS connections per second, each a full handshake (``openssl s_time -new``,
    :attr:`Settings.handshake_clients` of them side by side on the load core), and the
    proxy's CPU per handshake. The row's ``limit`` says which side held the rate back."""
    row = Row(rnd, setup.key, "handshakes-tls")
    pids, core = _proxy_pids(setup), _load_core(bench)
    cpu0, load = cpu_times(pids), core_busy(core) if core is not None else (0, 0)
    clients = bench.settings.handshake_clients
    result = run_s_time(
        bench.tools.openssl, setup.tls_port, seconds=bench.settings.seconds, clients=clients
    )
    user, system = _cpu_since(pids, cpu0)
    _proxy_pids(setup)
    row.metrics = {"conns_s": result.per_second}
    cpu_pct = 100 * (user + system) / result.seconds
    if setup.proxy:
        handshakes = max(result.connections, 1)
        row.metrics["cpu_us"] = 1e6 * (user + system) / handshakes
        row.metrics["cpu_user_us"] = 1e6 * user / handshakes
        row.metrics["cpu_pct"] = cpu_pct
    load_pct = _load_core_pct(load, core_busy(core)) if core is not None else None
    if load_pct is not None:
        row.metrics["load_pct"] = load_pct
    row.info = {"connections": result.connections, "seconds": result.seconds}
    row.info["clients"] = clients
    row.info["limit"] = _limit(bench, setup, cpu_pct, load_pct)
    if result.connections == 0:
        row.problems.append("openssl s_time: no connection completed")
    counted = _counted(setup, row)
    if counted is not None:  # no request, no SNI: nothing is any tenant's
        _check_tls_count(row, counted, 0, 0, result.connections)
    return row


def tls_version(setup: Setup, files: TLSFiles) -> str:
    """The protocol and cipher a default client negotiates with ``setup`` (with SNI HOST)."""
    context = client_context(files)
    with (
        socket.create_connection(("127.0.0.1", setup.tls_port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=HOST) as tls,
    ):
        cipher = tls.cipher()
        return f"{tls.version()} {cipher[0] if cipher else '?'}"


def warm_up(bench: Bench, setup: Setup) -> Row:
    """Round 0: an exact pass (which learns each response's size), a short wrk run over
    HTTP and one over HTTPS, and which TLS version and cipher a client gets; for the
    origin, first a read of the big file into the page cache."""
    if not setup.proxy:
        run_streams(bench.tools.curl, setup.url(bench.settings.big), HOST, streams=1, pids=[])
    row = measure_exact(bench, setup, 0)
    for url in (setup.url("1k.bin"), setup.tls_url("1k.bin")):
        run_wrk(bench.tools.wrk, bench.lua, url, HOST, seconds=1, connections=8)
    row.info["tls"] = tls_version(setup, bench.files)
    if not row.info["tls"].startswith("TLSv1.3 "):
        row.problems.append(f"negotiated {row.info['tls']}, not TLS 1.3")
    if setup.config is not None:
        setup.count = settled_count(setup.config)
    return row


Measure = Callable[[Bench, Setup, int], Row]


def tests(settings: Settings) -> list[tuple[str, Measure]]:
    """Every measurement of one round, in order."""
    return [
        ("1 KiB wrk", lambda b, s, r: measure_wrk(b, s, "1k.bin", r)),
        ("1 KiB wrk over TLS", lambda b, s, r: measure_wrk(b, s, "1k.bin", r, tls=True)),
        ("64 KiB wrk", lambda b, s, r: measure_wrk(b, s, "64k.bin", r)),
        (
            f"1 KiB wrk -c{settings.mixed_connections} beside {settings.mixed_downloads}"
            f" downloads of {settings.big}",
            measure_mixed,
        ),
        (
            f"new TLS connections (openssl s_time -new x{settings.handshake_clients})",
            measure_handshakes,
        ),
        ("exact counts", measure_exact),
        (f"{settings.big} x1", lambda b, s, r: measure_stream(b, s, 1, r)),
        (f"{settings.big} x1 over TLS", lambda b, s, r: measure_stream(b, s, 1, r, tls=True)),
        (
            f"{settings.big} x{settings.streams}",
            lambda b, s, r: measure_stream(b, s, settings.streams, r),
        ),
    ]
