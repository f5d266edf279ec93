"""deploy/systemd/governor.service: ``systemd-analyze verify`` and ``security`` accept it.

``verify`` checks that ExecStart's program exists, and /opt/governor (where the unit
expects the install) is not on a test machine: the unit is verified as a copy whose
/opt/governor/bin/governor is this virtualenv's ``governor``, every other line unchanged.
``verify`` reports unknown keys and bad values as warnings with exit status 0, so any
output at all fails the test.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from governor.config import load_config
from tests.deploy.tools import BIN, DEPLOY, run, tool

UNIT = DEPLOY / "systemd" / "governor.service"
HOW = "Debian package systemd; .ci/run installs it"
INSTALLED = "/opt/governor/bin/governor"


def verifiable(tmp_path: Path, text: str | None = None) -> Path:
    governor = shutil.which("governor", path=str(BIN))
    assert governor is not None, "governor is not installed in this virtualenv"
    copy = tmp_path / "governor.service"
    copy.write_text((text or UNIT.read_text()).replace(INSTALLED, governor))
    return copy


def directives() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    result = run(tool("systemd-analyze", HOW), "verify", verifiable(tmp_path))
    assert result.returncode == 0, result.stderr
    assert (result.stdout + result.stderr).strip() == "", result.stdout + result.stderr


def test_verify_would_report_a_mistake(tmp_path: Path) -> None:
    broken = UNIT.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes")
    result = run(tool("systemd-analyze", HOW), "verify", verifiable(tmp_path, broken))
    assert "Unknown key 'NoNewPrivilege'" in result.stdout + result.stderr


def test_sandboxing_exposure_is_low(tmp_path: Path) -> None:
    result = run(
        tool("systemd-analyze", HOW),
        "security",
        "--offline=true",
        "--no-pager",
        verifiable(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for governor\.service: ([0-9.]+)", result.stdout)
    assert match is not None, result.stdout
    assert float(match[1]) <= 2.5, result.stdout  # systemd calls 0-2.9 "OK"


def test_the_unit_does_what_the_issue_asks() -> None:
    unit = directives()
    assert unit["Type"] == ["notify"]
    assert unit["ExecStart"] == [f"{INSTALLED} serve --config /etc/governor/governor.yaml"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["NoNewPrivileges"] == ["yes"]
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["StateDirectory"] == ["governor"]
    assert unit["KillMode"] == ["mixed"], "SIGTERM to the supervisor only; it stops its workers"


def test_the_example_config_fits_the_unit() -> None:
    config = load_config(DEPLOY / "systemd" / "governor.yaml")
    timeout_stop = float(directives()["TimeoutStopSec"][0])
    assert timeout_stop > config.timeouts.shutdown + config.store_timeout
    assert config.store == "sqlite:////var/lib/governor/usage.db"  # the StateDirectory
    assert str(config.spool).startswith("/var/lib/governor/")
    assert config.admin_listen is not None
    assert config.admin_listen[0] == "127.0.0.1"
