"""Property tests: any input gives a valid value or a clear error, never a traceback.

For the config loader (whole random documents, and every key of ``limits`` and
``timeouts``), size and duration parsing, the period arithmetic in every zone
the system knows, and the header functions of :mod:`governor.http1.headers`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import re
import zoneinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from governor.config import Config, load_config, parse_config
from governor.core.periods import period_at
from governor.errors import ConfigError
from governor.http1.headers import HOP_BY_HOP, VIA, client_address
from governor.sizes import MAX_SIZE, parse_duration, parse_size
from tests.unit.http1.header_oracle import (
    client_response_headers,
    connection_tokens,
    strip_hop_by_hop,
    upstream_request_headers,
)

PATH = Path("/nonexistent-governor-dir/governor.yaml")

# --- the config loader ------------------------------------------------------------------

_KEYS = [
    "listen",
    "store",
    "store_timeout",
    "spool",
    "workers",
    "admin_listen",
    "log_format",
    "access_log",
    "flush_interval",
    "history_days",
    "trusted_proxies",
    "timeouts",
    "limits",
    "defaults",
    "tenants",
    "upstream_connect",
    "request_header",
    "body_min_rate",
    "websocket_idle",
    "request_line",
    "header_field",
    "header_total",
    "header_count",
    "body_max",
    "connections",
    "connections_per_client",
    "hosts",
    "upstream",
    "daily_cap",
    "timezone",
    "reset_at",
    "warn_at",
    "notice",
    "status",
]
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(
        [
            "1s",
            "0",
            "-1",
            "2 GiB",
            "1 KiB/s",
            "8 KiB",
            "12:30",
            "127.0.0.1:8080",
            "[::1]:80",
            "*.x",
            "site.test",
            "http://127.0.0.1:8000",
            "UTC",
            "Asia/Seoul",
            "80%",
            "auto",
        ]
    ),
)
_KEY = st.one_of(st.sampled_from(_KEYS), st.text(max_size=8))
_DOCS = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEY, inner, max_size=6),
    max_leaves=25,
)


def check_outcome(text: str) -> Config | None:
    """Parse ``text``: a Config, or a ConfigError whose every problem is well placed."""
    # Lines as YAML counts them: NEL, LS and PS (and a lone CR) break lines too.
    lines = len(re.split("\r\n|[\n\r\x85\u2028\u2029]", text))
    try:
        config = parse_config(text, PATH)
    except ConfigError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.file == str(PATH)
            assert problem.line is None or 1 <= problem.line <= lines + 1, problem
            assert problem.message.strip(), problem
            assert "Traceback" not in str(problem)
        return None
    assert isinstance(config, Config)
    limits = config.limits
    assert 0 < limits.request_line <= limits.header_total
    assert 0 < limits.header_field <= limits.header_total
    assert limits.body_max >= 0
    assert limits.connections >= 1
    assert limits.connections_per_client >= 0
    assert config.timeouts.body_min_rate >= 0
    assert config.timeouts.request_header > 0
    assert config.timeouts.websocket_idle > 0
    return config


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(_DOCS)
def test_any_yaml_document_gives_a_config_or_a_clear_error(doc: object) -> None:
    check_outcome(yaml.safe_dump(doc, allow_unicode=True))


_VALID: dict[str, Any] = {
    "listen": "127.0.0.1:8080",
    "store": "sqlite:////tmp/x.db",
    "tenants": {
        "demo": {
            "hosts": ["demo.example"],
            "upstream": "http://127.0.0.1:8000",
            "daily_cap": "1 MiB",
        }
    },
}
_SECTION_KEYS = {
    "limits": [
        "request_line",
        "header_field",
        "header_total",
        "header_count",
        "body_max",
        "connections",
        "connections_per_client",
    ],
    "timeouts": [
        "upstream_connect",
        "upstream_response",
        "keepalive",
        "shutdown",
        "request_header",
        "body_min_rate",
        "websocket_idle",
    ],
}


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    section=st.sampled_from(sorted(_SECTION_KEYS)),
    values=st.data(),
)
def test_any_values_in_limits_and_timeouts(section: str, values: st.DataObject) -> None:
    keys = values.draw(st.lists(st.sampled_from(_SECTION_KEYS[section]), unique=True, max_size=4))
    body = {key: values.draw(_SCALARS, label=key) for key in keys}
    config = check_outcome(yaml.safe_dump({**_VALID, section: body}, allow_unicode=True))
    if config is not None and section == "limits":
        for key, value in body.items():
            if key.startswith(("request_", "header_f", "header_t", "body")) and value is not None:
                assert getattr(config.limits, key) == parse_size(str(value))


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=200))
def test_load_config_on_any_file_bytes(tmp_path_factory: Any, data: bytes) -> None:
    path = tmp_path_factory.mktemp("cfg") / "governor.yaml"
    path.write_bytes(data)
    try:
        assert isinstance(load_config(path), Config)
    except ConfigError as exc:
        assert all(p.file == str(path) and p.message for p in exc.problems)


# --- sizes and durations ------------------------------------------------------------------

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KiB": 2**10, "MiB": 2**20}


@given(
    st.integers(min_value=0, max_value=10**9),
    st.sampled_from(sorted(_UNITS)),
    st.sampled_from(["", " ", "  "]),
    st.booleans(),
)
def test_whole_sizes_read_exactly_in_any_spelling(
    n: int, unit: str, space: str, lower: bool
) -> None:
    text = f"{n}{space}{unit.lower() if lower else unit}"
    assert parse_size(text) == n * _UNITS[unit]


@given(st.integers(min_value=0, max_value=10**9), st.sampled_from(["0", "5", "25", "999"]))
def test_fractional_sizes_round_down(whole: int, fraction: str) -> None:
    exact = whole * 1024 + int(fraction) * 1024 // 10 ** len(fraction)
    assert parse_size(f"{whole}.{fraction} KiB") == exact
    assert parse_size(f"{whole}.{fraction}") == whole  # a fraction of a byte goes


@given(st.one_of(st.integers(), st.floats(), st.text(), st.booleans(), st.none(), st.binary()))
def test_any_value_is_a_size_or_a_clear_error(value: object) -> None:
    try:
        size = parse_size(value)
    except ValueError as exc:
        assert str(exc)
        assert len(str(exc)) < 300
        return
    assert isinstance(size, int)
    assert 0 <= size <= MAX_SIZE


@given(st.one_of(st.integers(), st.floats(), st.text(), st.booleans(), st.none()))
def test_any_value_is_a_duration_or_a_clear_error(value: object) -> None:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        assert str(exc)
        assert len(str(exc)) < 300
        return
    assert isinstance(seconds, float)
    assert 0 <= seconds < math.inf


@given(st.integers(min_value=0, max_value=10**7))
def test_duration_units_agree(n: int) -> None:
    assert parse_duration(f"{n}ms") == n / 1000
    assert parse_duration(f"{n}m") == n * 60
    assert parse_duration(f"{n}h") == n * 3600
    assert parse_duration(f"{n}") == parse_duration(f"{n}s") == n


# --- periods, in every zone -------------------------------------------------------------------

ALL_ZONES = sorted(zoneinfo.available_timezones())
instants = st.floats(min_value=946_684_800.0, max_value=2_145_830_400.0)  # 2000 .. 2037


@settings(max_examples=600)
@given(now=instants, zone=st.sampled_from(ALL_ZONES), reset=st.times())
def test_periods_tile_time_in_every_zone(now: float, zone: str, reset: dt.time) -> None:
    tz = ZoneInfo(zone)
    p = period_at(now, tz, reset)
    assert p.start <= now < p.end
    assert p.end - p.start <= 50 * 3600  # a day, give or take a skipped or repeated one
    assert p.resets_at(tz).timestamp() == p.end
    assert period_at(p.start, tz, reset) == p  # the start belongs to it
    nxt = period_at(p.end, tz, reset)  # and the next one starts exactly at the end
    assert nxt.start == p.end
    assert nxt.key > p.key
    before = period_at(math.nextafter(p.start, -math.inf), tz, reset)
    assert before.end == p.start
    assert dt.date.fromisoformat(p.key) <= dt.datetime.fromtimestamp(now, tz).date()


@given(now=instants, zone=st.sampled_from(ALL_ZONES), reset=st.times())
def test_the_reset_is_the_first_instant_at_or_past_reset_at(
    now: float, zone: str, reset: dt.time
) -> None:
    tz = ZoneInfo(zone)
    p = period_at(now, tz, reset)
    wall = dt.datetime.fromtimestamp(p.end, tz).replace(tzinfo=None)
    day = dt.datetime.fromtimestamp(p.end, tz).date()
    assume(day == dt.date.fromisoformat(p.key) + dt.timedelta(days=1))  # no skipped dates
    assert wall.time() >= reset.replace(tzinfo=None) or wall.time() == dt.time(0)
    earlier = dt.datetime.fromtimestamp(p.end - 1, tz).replace(tzinfo=None)
    target = dt.datetime.combine(day, reset.replace(tzinfo=None))
    assert earlier < target  # one second before the reset, the wall clock had not got there


# --- the header functions ---------------------------------------------------------------------

_NAMES = st.one_of(
    st.sampled_from(
        [
            *sorted(HOP_BY_HOP),
            "Host",
            "Content-Length",
            "Expect",
            "X-Forwarded-For",
            "X-Forwarded-Proto",
            "X-Forwarded-Host",
            "Via",
            "X-Custom",
            "CONNECTION",
            "Transfer-Encoding",
        ]
    ),
    st.text(min_size=1, max_size=12),
)
_HEADER_VALUES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["close", "keep-alive, X-Custom", "upgrade", "1.2.3.4, 10.0.0.1", "chunked"]),
    st.ip_addresses().map(str),
)
_HEADERS = st.lists(st.tuples(_NAMES, _HEADER_VALUES), max_size=12)
_NETWORKS = st.lists(
    st.sampled_from(["10.0.0.0/8", "127.0.0.1/32", "::1/128", "192.168.0.0/16"]).map(
        ipaddress.ip_network
    ),
    max_size=3,
)
_PEERS = st.one_of(st.none(), st.just(""), st.ip_addresses().map(str), st.text(max_size=10))


@given(_HEADERS, st.booleans())
def test_strip_hop_by_hop_leaves_only_end_to_end_headers(
    headers: list[tuple[str, str]], keep_upgrade: bool
) -> None:
    keep = frozenset({"upgrade"}) if keep_upgrade else frozenset()
    out = strip_hop_by_hop(headers, keep=keep)
    dropped = (HOP_BY_HOP | connection_tokens(headers)) - keep
    assert all(name.lower() not in dropped for name, _ in out)
    assert [h for h in headers if h[0].lower() not in dropped] == out  # order and values kept
    assert client_response_headers(headers) == strip_hop_by_hop(headers)


@given(_HEADERS, _PEERS, _NETWORKS, st.booleans())
def test_upstream_request_headers_are_sanitised(
    headers: list[tuple[str, str]], peer: str | None, trusted: list[Any], upgrade: bool
) -> None:
    out = upstream_request_headers(headers, peer=peer, trusted=trusted, upgrade=upgrade)
    names = [n.lower() for n, _ in out]
    forbidden = (HOP_BY_HOP | connection_tokens(headers) | {"content-length", "expect"}) - (
        {"upgrade", "connection"} if upgrade else set()
    )
    assert not forbidden & set(names), out
    for once in ("x-forwarded-for", "x-forwarded-proto", "via"):
        assert names.count(once) == 1, out
    assert names.count("x-forwarded-host") <= 1
    values = dict((n.lower(), v) for n, v in out)
    assert values["via"].endswith(VIA)
    assert values["x-forwarded-for"].endswith(peer or "unknown")
    client_hosts = [v for n, v in headers if n.lower() == "host"]
    assert [v for n, v in out if n.lower() == "host"] == client_hosts  # Host passes as sent
    if upgrade:
        assert names.count("connection") == 1
        assert values["connection"] == "upgrade"
    if not _trusted(peer, trusted):
        assert values["x-forwarded-for"] == (peer or "unknown")  # a client's XFF is not believed


def _trusted(peer: str | None, trusted: list[Any]) -> bool:
    try:
        ip = ipaddress.ip_address(peer or "")
    except ValueError:
        return False
    return any(ip in net for net in trusted)


@given(_PEERS, _HEADERS, _NETWORKS)
def test_client_address_is_the_peer_or_a_forwarded_hop(
    peer: str | None, headers: list[tuple[str, str]], trusted: list[Any]
) -> None:
    addr = client_address(peer, headers, trusted)
    hops = [h.strip() for n, v in headers if n.lower() == "x-forwarded-for" for h in v.split(",")]
    assert addr == (peer or "") or addr in hops
    if not _trusted(peer, trusted):
        assert addr == (peer or "")  # only a trusted peer's X-Forwarded-For is read
