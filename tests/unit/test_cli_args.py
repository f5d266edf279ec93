"""Misused commands: the command's own usage and what is wrong, exit status 2."""

from __future__ import annotations

import pytest

from governor import cli


@pytest.mark.parametrize(
    ("argv", "usage", "says"),
    [
        (
            ["check", "-c", "g.yaml", "--json"],
            "usage: governor check",
            "unrecognized arguments: --json",
        ),
        (["usage", "-c", "g.yaml", "--bogus"], "usage: governor usage", "unrecognized arguments"),
        (["grant", "demo", "5", "TiB", "-c", "g.yaml"], "usage: governor grant", "TiB"),
        (["check", "-c", ""], "usage: governor check", "argument -c/--config: an empty path"),
    ],
)
def test_a_misused_command_prints_its_own_usage(
    argv: list[str], usage: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage)
    assert says in err
    assert "Traceback" not in err
