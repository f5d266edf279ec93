"""Ctrl-C before governor serves (loading its modules, reading a large config) ends the
command with status 130 and no traceback, as Ctrl-C while serving does."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

import pytest

import governor.__main__ as entry
from governor import cli


def interrupt(*_args: object, **_kwargs: object) -> None:
    raise KeyboardInterrupt


def test_ctrl_c_while_the_config_loads_is_status_130(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "load_config", interrupt)
    assert cli.main(["check", "-c", str(tmp_path / "governor.yaml")]) == 130
    assert "Traceback" not in capsys.readouterr().err


class _Interrupting:
    """A finder that is Ctrl-C arriving while ``governor.cli`` is imported."""

    @staticmethod
    def find_spec(
        name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name == "governor.cli":
            raise KeyboardInterrupt
        return None


def test_ctrl_c_while_the_modules_load_is_status_130(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "governor.cli")
    monkeypatch.setattr(sys, "meta_path", [_Interrupting(), *sys.meta_path])
    with pytest.raises(SystemExit) as exited:
        entry.run()
    assert exited.value.code == 130
