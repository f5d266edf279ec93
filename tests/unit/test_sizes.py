"""Sizes and durations: every accepted form, every rejected one, and a fuzz."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from governor.sizes import MAX_SIZE, format_size, parse_duration, parse_size

KiB, MiB, GiB, TiB = 2**10, 2**20, 2**30, 2**40


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2 GiB", 2 * GiB),
        ("500 MB", 500_000_000),
        ("1.5GB", 1_500_000_000),
        ("1048576", 1_048_576),
        (1048576, 1_048_576),
        ("10 KiB", 10 * KiB),
        ("1 B", 1),
        ("0", 0),
        (0, 0),
        ("1 TiB", TiB),
        ("3 TB", 3 * 10**12),
        ("7 kb", 7000),
        ("7 KB", 7000),
        ("2 mib", 2 * MiB),
        ("2gib", 2 * GiB),
        ("  4 MiB  ", 4 * MiB),
        ("1.5 B", 1),  # a fraction of a byte rounds down
        ("0.5 KiB", 512),
        ("0.1 KB", 100),  # exact arithmetic: no 99.999...
        ("4.35 KB", 4350),
        (".5 KiB", 512),
        ("5. KiB", 5 * KiB),
        ("+3 B", 3),
        (12.9, 12),
        (f"{MAX_SIZE}", MAX_SIZE),
    ],
)
def test_parse_size_accepts(text: object, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("2 GB/s", "'2 GB/s' is not a size: expected a number with an optional unit B, KB,"),
        ("", "is not a size"),
        ("   ", "is not a size"),
        ("GiB", "is not a size"),
        ("2 PiB", "is not a size"),
        ("2 K", "is not a size"),
        ("1,000", "is not a size"),
        ("1e3", "is not a size"),
        ("nan", "is not a size"),
        ("inf", "is not a size"),
        ("-1", "must not be negative"),
        ("-1 KiB", "must not be negative"),
        (-5, "must not be negative"),
        (True, "is not a size"),
        (False, "is not a size"),
        (math.nan, "is not a size"),
        (math.inf, "is not a size"),
        (None, "is not a size"),
        ([1], "is not a size"),
        ("٣ B", "is not a size"),  # non-ASCII digits
        ("9" * 31, "is not a size"),
        (f"{MAX_SIZE + 1}", "too large"),
        ("10000000 TiB", "too large"),
        pytest.param(10**400, "too large", id="huge-int"),
    ],
)
def test_parse_size_rejects(value: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        parse_size(value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1s", 1.0),
        ("100ms", 0.1),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("0", 0.0),
        ("2", 2.0),
        ("2.5", 2.5),
        (3, 3.0),
        (0.25, 0.25),
        (" 10 S ", 10.0),
        ("250 ms", 0.25),
        ("0.5h", 1800.0),
    ],
)
def test_parse_duration_accepts(text: object, expected: float) -> None:
    result = parse_duration(text)
    assert isinstance(result, float)
    assert result == pytest.approx(expected)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("1 fortnight", "'1 fortnight' is not a duration: expected a number with an optional unit"),
        ("5y", "is not a duration"),
        ("", "is not a duration"),
        ("s", "is not a duration"),
        ("1m30s", "is not a duration"),
        ("-1s", "must not be negative"),
        (-0.5, "must not be negative"),
        (True, "is not a duration"),
        (math.inf, "is not a duration"),
        (math.nan, "is not a duration"),
        (None, "is not a duration"),
        pytest.param(10**400, "too long", id="huge-int"),
    ],
)
def test_parse_duration_rejects(value: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        parse_duration(value)


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, "0 B"),
        (1, "1 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (200 * KiB, "200.0 KiB"),
        (2147483648, "2.0 GiB"),
        (MiB - 1, "1.0 MiB"),  # 1023.999 KiB would print as 1024.0 KiB
        (3 * TiB, "3.0 TiB"),
        (2048 * TiB, "2048.0 TiB"),
        (-1536, "-1.5 KiB"),
    ],
)
def test_format_size(n: int, expected: str) -> None:
    assert format_size(n) == expected


@given(st.integers(min_value=0, max_value=2**62))
def test_format_size_reads_back_close(n: int) -> None:
    text = format_size(n)
    assert abs(parse_size(text) - n) <= max(1, n) * 0.05 + 1


@given(st.text())
def test_parse_size_on_any_text(text: str) -> None:
    try:
        n = parse_size(text)
    except ValueError:
        return
    assert isinstance(n, int)
    assert 0 <= n <= MAX_SIZE


@given(st.text())
def test_parse_duration_on_any_text(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError:
        return
    assert isinstance(seconds, float)
    assert seconds >= 0
    assert math.isfinite(seconds)


_NUMBERS = st.from_regex(r"\A[+-]?([0-9]{1,12}(\.[0-9]{0,6})?|\.[0-9]{1,6})\Z")


@given(_NUMBERS, st.sampled_from(["", "b", "KB", "mb", "GiB", "tib", "ms", "s", "m", "h", "x"]))
def test_number_unit_pairs(number: str, unit: str) -> None:
    for parse in (parse_size, parse_duration):
        try:
            value = parse(f"{number} {unit}")
        except ValueError:
            continue
        assert value >= 0
