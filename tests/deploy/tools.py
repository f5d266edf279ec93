"""What the deployment tests share: the repository, the tools they run, governor's metric names."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent  # the virtualenv's bin: pip-installed tools land here

_METRIC = re.compile(r"\b(Counter|Gauge|Histogram)\(\s*\"(governor_\w+)\"", re.S)
_USED = re.compile(r"\bgovernor_[a-z_]+\b")


def tool(name: str, how: str) -> str:
    """The path of ``name``; a missing tool fails the test in CI and skips it elsewhere."""
    found = shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        message = f"{name} is not installed ({how})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def run(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run a tool to completion; its output is kept for the assertion messages."""
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def exposed_metrics() -> set[str]:
    """Every series name governor serves at /metrics, read from the modules that define them
    (governor/observe/metrics.py and tls_metrics.py)."""
    names: set[str] = set()
    observe = REPO / "governor" / "observe"
    source = "".join((observe / name).read_text() for name in ("metrics.py", "tls_metrics.py"))
    for kind, name in _METRIC.findall(source):
        if kind == "Counter":
            names.add(f"{name}_total")
        elif kind == "Histogram":
            names.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count"))
        else:
            names.add(name)
    assert len(names) > 10, "the metric definitions in governor/observe/metrics.py were not found"
    return names


def metrics_used(expr: str) -> set[str]:
    """The governor_* series names a PromQL expression reads."""
    return set(_USED.findall(expr))


def module(name: str, how: str) -> ModuleType:
    """Import ``name``; a missing package fails the test in CI and skips it elsewhere."""
    try:
        return importlib.import_module(name)
    except ImportError:
        message = f"{name} is not installed ({how})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
