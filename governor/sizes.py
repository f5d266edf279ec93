"""Byte sizes and durations as operators write them ("2 GiB", "100ms"), and back.

Pure functions, no I/O. Every bad input raises :class:`ValueError` with a message
fit to show an operator as is.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Final

MAX_SIZE: Final = 2**63 - 1  # the largest count a 64-bit signed store column holds

_SIZE_UNITS: Final[dict[str, int]] = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_DURATION_UNITS: Final[dict[str, Fraction]] = {
    "": Fraction(1),
    "ms": Fraction(1, 1000),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
    "d": Fraction(86400),
}
_SIZE_HELP: Final = "expected a number with an optional unit B, KB, MB, GB, TB, KiB, MiB, GiB, TiB"
_DURATION_HELP: Final = "expected a number with an optional unit ms, s, m or h"

_NUMBER: Final = re.compile(
    r"\s*(?P<num>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))\s*(?P<unit>[A-Za-z]*)\s*", re.ASCII
)
_MAX_DIGITS: Final = 30


def _show(value: object) -> str:
    """``repr(value)``, kept short (and safe for huge ints)."""
    if isinstance(value, int) and abs(value) >= 10**_MAX_DIGITS:
        return "a number that large"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _amount(value: object, units: dict[str, int] | dict[str, Fraction], what: str) -> Fraction:
    """The exact amount ``value`` denotes in base units (bytes, seconds), sign included."""
    help_ = _SIZE_HELP if what == "size" else _DURATION_HELP
    bad = ValueError(f"{_show(value)} is not a {what}: {help_}")
    if isinstance(value, bool):
        raise bad
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise bad
        return Fraction(value)
    if not isinstance(value, str):
        raise bad
    match = _NUMBER.fullmatch(value)
    if match is None or len(match["num"]) > _MAX_DIGITS:
        raise bad
    factor = units.get(match["unit"].lower())
    if factor is None:
        raise bad
    return Fraction(match["num"]) * factor


def parse_size(value: object) -> int:
    """Bytes from ``"2 GiB"``, ``"500 MB"``, ``"1.5GB"``, ``"1048576"`` or an int.

    KiB/MiB/GiB/TiB are 1024-based, KB/MB/GB/TB 1000-based, B is bytes; the unit is
    case-insensitive and the space before it optional. A fraction of a byte is
    rounded down. Negatives, NaN, infinities, bools and sizes above
    :data:`MAX_SIZE` raise :class:`ValueError`.
    """
    amount = _amount(value, _SIZE_UNITS, "size")
    if amount < 0:
        raise ValueError(f"{_show(value)} is not a size: it must not be negative")
    if amount > MAX_SIZE:
        raise ValueError(f"{_show(value)} is too large: at most {MAX_SIZE} bytes")
    return math.floor(amount)


def parse_duration(value: object) -> float:
    """Seconds from ``"1s"``, ``"100ms"``, ``"5m"``, ``"1h"``, ``"1.5s"`` or a bare number.

    A bare number (int, float or string) is seconds. Negatives, NaN, infinities and
    bools raise :class:`ValueError`.
    """
    amount = _amount(value, _DURATION_UNITS, "duration")
    if amount < 0:
        raise ValueError(f"{_show(value)} is not a duration: it must not be negative")
    try:
        seconds = float(amount)
    except OverflowError:
        raise ValueError(f"{_show(value)} is too long a duration") from None
    if not math.isfinite(seconds):
        raise ValueError(f"{_show(value)} is too long a duration")
    return seconds


def format_size(n: int) -> str:
    """``n`` bytes for humans, 1024-based, at most one decimal: ``1536 -> "1.5 KiB"``."""
    if n < 0:
        return "-" + format_size(-n)
    if n < 1024:
        return f"{n} B"
    text = ""
    for power, unit in enumerate(("KiB", "MiB", "GiB", "TiB"), start=1):
        text = f"{n / 1024**power:.1f} {unit}"
        if float(text.split()[0]) < 1024:
            break
    return text
