"""``governor simulate`` as an operator runs it: the seed day, and governor's own access log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.functional.conftest import GovernorFactory
from tests.functional.processes import governor
from tests.functional.test_access_log import lines
from tests.functional.test_metering import used
from tests.functional.test_shares import BROWSER, GOOGLEBOT, fetch


async def test_the_seed_day_keeps_pages_up_with_the_features_and_not_without() -> None:
    code, out, err = await governor("simulate", "--config", "config/seed.yaml", "--json")
    assert code == 0, err
    doc = json.loads(out)
    configured, bare = doc["as_configured"], doc["cap_only"]
    assert configured["categories"]["pages"]["dark_minutes"] == 0
    assert configured["served_bytes"] <= configured["cap_bytes"]
    assert bare["categories"]["pages"]["dark_minutes"] >= 360  # from about 17:00 on
    assert bare["cap_reached_at"].startswith("2026-03-10T1")
    who = configured["categories"]
    assert who["crawlers"]["reasons"]["crawler"] > 0
    assert who["large files"]["reasons"]["large"] > 0
    assert who["heaviest visitor"]["refused"] > 0
    code, table, err = await governor("simulate", "--config", "config/seed.yaml")
    assert code == 0, err
    assert "pages dark" in table
    assert "Who was refused what (as configured):" in table


async def test_an_access_log_replays_to_what_governor_counted(
    make_governor: GovernorFactory, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    gov = await make_governor(cap="1 MiB", access_log=str(log))
    for path, agent in [
        ("/bytes/20000", BROWSER),
        ("/bytes/50000", GOOGLEBOT),
        ("/bytes/7", BROWSER),
    ]:
        status, _, _, _ = await fetch(gov, path, agent)
        assert status == 200
    await lines(log, 3)
    config = tmp_path / "governor.yaml"
    code, out, err = await governor(
        "simulate", "--config", str(config), "--traffic", str(log), "--json"
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["requests"] == 3
    assert doc["cap_only"]["served_bytes"] == used(gov)  # egress: what went out, to the byte
    assert doc["cap_only"]["categories"]["crawlers"]["requests"] == 1  # by its User-Agent


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--tenant", "nobody"], "no tenant 'nobody'"),
        (["--traffic", "/nonexistent/access.log"], "/nonexistent/access.log"),
        (["--traffic", "/nonexistent/profile.yaml"], "/nonexistent/profile.yaml"),
    ],
)
async def test_bad_arguments_are_named_without_a_traceback(args: list[str], fragment: str) -> None:
    code, _, err = await governor("simulate", "--config", "config/seed.yaml", *args)
    assert code == 1
    assert fragment in err
    assert "Traceback" not in err
