"""The traffic a simulation replays: read from governor's access log, or made from a profile.

A :class:`Hit` is one request as the simulation sees it: when, from whom (address and
User-Agent), for what, and how many bytes its answer takes on the wire.

*An access log* (plain or JSON, see :mod:`governor.observe.accesslog`): a line of the
tenant's becomes a hit of ``BYTES_OUT + BYTES_IN`` bytes (what the tenant was charged,
for ``count: both``; the simulation charges by the tenant's ``count``). A request that
was refused in that log is replayed with the size of what was sent then (the notice),
which understates what it asked for; a simulation over a log of a day with no refusals
is exact.

*A profile* (YAML, see ``config/traffic/seed-day.yaml``): streams of requests, each with
a number of visitors, a User-Agent, a time window, a shape over the day and a mix of
response sizes; expanded with a seeded random generator, so a profile is one day of
traffic, the same every run.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import yaml

from governor.errors import ConfigError, Problem
from governor.sizes import parse_size


@dataclass(frozen=True, slots=True)
class Hit:
    """One request: its time (Unix), visitor address, User-Agent, path, and wire bytes."""

    time: float
    client: str
    agent: str | None
    path: str
    size: int  # bytes of the answer (and of the request, for count: both) on the wire
    request: int = 0  # bytes of the request head and body


_PLAIN: Final = re.compile(
    r"(?P<time>\S+) (?P<tenant>\S+) (?P<client>\S+) \S+ "
    r'"(?P<path>(?:[^"\\]|\\.)*)" \d{3} (?P<out>\d+) (?P<in>\d+) \S+ \S+ \S+'
    r'(?: "(?P<agent>(?:[^"\\]|\\.)*)"(?: \S+)?)?\s*$'
)


def read_access_log(path: Path, tenant: str) -> list[Hit]:
    """The hits of ``tenant`` in a governor access log (plain or JSON lines), in time order.

    Lines of other tenants are skipped; a line that is neither format raises ConfigError
    naming the file and line.
    """
    hits: list[Hit] = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError([Problem(str(path), None, "", f"cannot read: {exc.strerror}")]) from exc
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        hit = _json_hit(line, tenant) if line.lstrip().startswith("{") else _plain_hit(line, tenant)
        if hit is False or hit is True:
            raise ConfigError(
                [Problem(str(path), number, "", "not a line of governor's access log")]
            )
        if hit is not None:
            hits.append(hit)
    hits.sort(key=lambda h: h.time)
    return hits


def _when(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _plain_hit(line: str, tenant: str) -> Hit | bool | None:
    m = _PLAIN.match(line)
    if m is None:
        return False
    if m["tenant"] != tenant:
        return None
    try:
        when = _when(m["time"])
    except ValueError:
        return False
    agent = m["agent"]
    return Hit(
        when,
        m["client"],
        None if agent in (None, "-") else _unescape(agent),
        _unescape(m["path"]),
        int(m["out"]),
        int(m["in"]),
    )


def _json_hit(line: str, tenant: str) -> Hit | bool | None:
    try:
        doc = json.loads(line)
        if doc.get("tenant") != tenant:
            return None
        return Hit(
            _when(doc["time"]),
            str(doc.get("client") or ""),
            doc.get("agent"),
            str(doc.get("path") or "/"),
            int(doc["bytes_out"]),
            int(doc["bytes_in"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return False


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    try:
        decoded: str = text.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError:
        return text
    return decoded


# --------------------------------------------------------------------------- profiles

# The share of a day's traffic in each local hour, for ``shape: diurnal`` (a community
# site: quiet at night, rising through the day, highest in the evening).
DIURNAL: Final = (
    1.2, 0.8, 0.5, 0.4, 0.4, 0.5, 0.9, 1.6, 2.8, 3.8, 4.4, 4.8,
    5.0, 5.1, 5.2, 5.3, 5.4, 5.6, 5.8, 6.0, 6.2, 6.0, 4.8, 2.9,
)  # fmt: skip

BROWSER: Final = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"
)


class _Loader(yaml.SafeLoader):
    """Safe YAML that leaves dates as text: they are checked here, with the key named."""


_Loader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass(frozen=True, slots=True)
class Profile:
    """A day of synthetic traffic for one tenant."""

    date: dt.date
    seed: int
    streams: tuple[dict[str, Any], ...]
    path: Path


def read_profile(path: Path) -> Profile:
    """A traffic profile, checked; problems raise ConfigError naming file and key."""
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except OSError as exc:
        raise ConfigError([Problem(str(path), None, "", f"cannot read: {exc.strerror}")]) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = None if mark is None else mark.line + 1
        raise ConfigError([Problem(str(path), line, "", f"not valid YAML: {exc}")]) from exc
    problems: list[Problem] = []

    def bad(key: str, message: str) -> None:
        problems.append(Problem(str(path), None, key, message))

    if not isinstance(doc, dict):
        raise ConfigError([Problem(str(path), None, "", "a profile is a mapping: date, streams")])
    date = doc.get("date")
    if isinstance(date, str):
        try:
            date = dt.date.fromisoformat(date)
        except ValueError:
            date = None
    if not isinstance(date, dt.date):
        bad("date", "expected a date like 2026-03-10")
    streams = doc.get("streams")
    if not isinstance(streams, list) or not streams:
        bad("streams", "expected a list of streams")
        streams = []
    for i, stream in enumerate(streams):
        _check_stream(stream, f"streams[{i}]", bad)
    seed = doc.get("seed", 1)
    if not isinstance(seed, int):
        bad("seed", "expected a whole number")
    if problems:
        raise ConfigError(problems)
    assert isinstance(date, dt.date)
    return Profile(date, int(seed), tuple(streams), path)


_STREAM_KEYS: Final = {
    "name",
    "visitors",
    "agent",
    "requests",
    "window",
    "shape",
    "sizes",
    "network",
}


def _check_stream(stream: object, key: str, bad: Any) -> None:
    if not isinstance(stream, dict):
        bad(key, "expected a mapping (name, visitors, requests, window, sizes)")
        return
    for name in stream:
        if name not in _STREAM_KEYS:
            bad(f"{key}.{name}", f"unknown key; allowed: {', '.join(sorted(_STREAM_KEYS))}")
    for name in ("visitors", "requests"):
        if not isinstance(stream.get(name), int) or stream[name] < 1:
            bad(f"{key}.{name}", "expected a whole number from 1")
    window = stream.get("window", ["00:00", "24:00"])
    if not (isinstance(window, list) and len(window) == 2 and all(_minute(w) for w in window)):
        bad(f"{key}.window", 'expected ["HH:MM", "HH:MM"] (24:00 for midnight at the end)')
    if stream.get("shape", "flat") not in ("flat", "diurnal"):
        bad(f"{key}.shape", "expected flat or diurnal")
    sizes = stream.get("sizes")
    if not isinstance(sizes, list) or not sizes:
        bad(f"{key}.sizes", "expected a list of {share, size, path}")
        return
    for j, item in enumerate(sizes):
        where = f"{key}.sizes[{j}]"
        if not isinstance(item, dict) or set(item) - {"share", "size", "path"}:
            bad(where, "expected {share: 90%, size: 40 KiB, path: /t/}")
            continue
        try:
            parse_size(str(item.get("size")))
        except ValueError as exc:
            bad(f"{where}.size", str(exc))
        if _share(item.get("share", 1)) is None:
            bad(f"{where}.share", "expected a share like 90% or 0.9")


def _minute(text: object) -> int | None:
    if not isinstance(text, str) or not re.fullmatch(r"\d\d:\d\d", text):
        return None
    hours, minutes = int(text[:2]), int(text[3:])
    if hours > 24 or minutes > 59 or (hours == 24 and minutes):
        return None
    return hours * 60 + minutes + 1  # never 0, so that "00:00" is truthy; see _window


def _share(value: object) -> float | None:
    text = str(value).strip()
    try:
        share = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        return None
    return share if 0 < share <= 1 else None


def expand(profile: Profile, zone: ZoneInfo) -> list[Hit]:
    """The profile's hits, in time order (the same every run: seeded)."""
    rng = random.Random(profile.seed)
    midnight = dt.datetime.combine(profile.date, dt.time(0), zone).timestamp()
    hits: list[Hit] = []
    for number, stream in enumerate(profile.streams):
        hits.extend(_stream_hits(stream, number, midnight, rng))
    hits.sort(key=lambda h: h.time)
    return hits


def _stream_hits(
    stream: dict[str, Any], number: int, midnight: float, rng: random.Random
) -> Iterator[Hit]:
    window = stream.get("window", ["00:00", "24:00"])
    start = ((_minute(window[0]) or 1) - 1) * 60
    end = ((_minute(window[1]) or 1) - 1) * 60
    diurnal = stream.get("shape", "flat") == "diurnal"
    hours = [h for h in range(24) if start < (h + 1) * 3600 and h * 3600 < end]
    weights = [DIURNAL[h] if diurnal else 1.0 for h in hours]
    sizes = [(_share(s.get("share", 1)) or 1.0, s) for s in stream["sizes"]]
    agent = stream.get("agent", BROWSER)
    visitors = int(stream["visitors"])
    network = int(stream.get("network", 10 + number))
    for _ in range(int(stream["requests"])):
        hour = rng.choices(hours, weights)[0]
        low, high = max(start, hour * 3600), min(end, (hour + 1) * 3600)
        at = midnight + low + rng.random() * (high - low)
        item = rng.choices([s for _, s in sizes], [w for w, _ in sizes])[0]
        visitor = rng.randrange(visitors)
        client = f"{network}.{visitor >> 16 & 255}.{visitor >> 8 & 255}.{visitor & 255}"
        size = parse_size(str(item["size"]))
        jitter = 1.0 + (rng.random() - 0.5) * 0.2 if size > 4096 else 1.0
        path = f"{item.get('path', '/')}{rng.randrange(10**6)}"
        yield Hit(at, client, agent, path, max(1, math.floor(size * jitter)), 400)
