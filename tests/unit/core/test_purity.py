"""governor.core stays pure: it imports no I/O library and no outer governor package.

Read from the source (not by importing), so a forbidden import fails here even
when it sits under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import governor.core

CORE = Path(governor.core.__file__).parent
ALLOWED_GOVERNOR = ("governor.core", "governor.config", "governor.errors", "governor.sizes")
FORBIDDEN = {"asyncio", "aiohttp", "redis", "socket", "selectors", "ssl", "sqlite3", "threading"}


def imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return names


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_a_core_module_imports_only_core_config_errors_sizes_and_pure_stdlib(path: Path) -> None:
    for name in imports(path):
        top = name.partition(".")[0]
        assert top not in FORBIDDEN, f"{path.name} imports {name}"
        if top == "governor":
            assert name.startswith(ALLOWED_GOVERNOR), f"{path.name} imports {name}"
