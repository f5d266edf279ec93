"""The scale benchmark's pieces that need no servers: its generated configs load (governor's
own loader) and say what the table claims, and its reading of a /metrics page and its table."""

from __future__ import annotations

from pathlib import Path

from governor.config import load_config
from tests.bench.scale import gen
from tests.bench.scale.common import Result
from tests.bench.scale.governor import flush_stats
from tests.bench.scale.table import table


def test_generated_governor_config_loads_with_every_tenant(tmp_path: Path) -> None:
    path = gen.governor_yaml(
        tmp_path / "g.yaml",
        tenants=3,
        listen=8001,
        admin=8002,
        upstream=8003,
        store="redis://127.0.0.1:6390/0",
    )
    config = load_config(path)
    assert [t.name for t in config.tenants] == ["t0", "t1", "t2"]
    assert config.store_timeout == 0.5
    assert config.flush_interval == 1.0
    assert [t.hosts for t in config.tenants] == [(f"t{i}.scale.test",) for i in range(3)]
    assert {t.upstream.port for t in config.tenants} == {8003}
    assert {t.timezone.key for t in config.tenants} == {"UTC"}


def test_nginx_map_has_one_entry_per_tenant(tmp_path: Path) -> None:
    text = gen.nginx_map(tmp_path, tenants=5, listen=8001, upstream=8003).read_text()
    assert [line.split()[0] for line in text.splitlines() if line.endswith(" origin;")] == [
        f"t{i}.scale.test" for i in range(5)
    ]


def test_flush_stats_read_the_histogram_at_the_interval() -> None:
    page = "\n".join(
        [
            'governor_store_flush_seconds_bucket{le="0.5"} 3.0',
            'governor_store_flush_seconds_bucket{le="1.0"} 4.0',
            'governor_store_flush_seconds_bucket{le="+Inf"} 6.0',
            "governor_store_flush_seconds_count 6.0",
            "governor_store_flush_seconds_sum 7.5",
            "governor_store_errors_total 2.0",
        ]
    )
    assert flush_stats(page, 1.0) == {
        "within": 4.0,
        "flushes": 6.0,
        "flush_sum_s": 7.5,
        "store_errors": 2.0,
    }


def test_table_shows_a_timeout_as_a_result() -> None:
    rows = [
        Result(1, "governor", "check_s", 0.25),
        Result(100_000, "governor", "check_s", None, "timeout (> 300 s)"),
    ]
    lines = table(rows, [1, 100_000]).splitlines()
    assert lines[0] == "| tenants in the config | 1 | 100,000 |"
    assert lines[2] == "| `governor check`, s | 0.25 | timeout (> 300 s) |"
    assert len(lines) == 3  # rows never measured are left out
