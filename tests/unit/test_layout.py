"""The tree keeps the architecture it shows: the pure core imports no I/O, imports point down
the layers, no module imports itself back through others, no module outgrows a reading.
Read from governor/ with ``ast``.

Each rule has a named allow-list of accepted offenders, empty since issue 12 split them; an
entry that no longer offends has to go too (``test_the_allow_lists_name_only_todays_offenders``),
so the lists only shrink.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "governor"
MAX_LINES = 500

# What governor/core/ must not reach, directly or through other governor modules.
CORE_FORBIDDEN = frozenset({"asyncio", "aiohttp", "redis", "socket", "selectors"})
# The governor modules core may import: core itself and the leaves below it.
CORE_MAY_IMPORT = (
    "governor.core",
    "governor.config",
    "governor.errors",
    "governor.release",
    "governor.sizes",
)

# Imports (importer, imported) through which governor/core/ reaches what it must not, today.
ALLOWED_CORE_LEAKS: frozenset[tuple[str, str]] = frozenset({})

# Import cycles today, each as the set of modules it runs through (counting TYPE_CHECKING).
ALLOWED_CYCLES: tuple[frozenset[str], ...] = ()

# Modules over MAX_LINES today.
ALLOWED_LONG: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    lines: int
    imports: frozenset[str]  # every module it names, dotted, anywhere in it (TYPE_CHECKING too)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.Module, name: str, is_package: bool) -> Iterator[str]:
    """The dotted names a module imports; ``from a import b`` gives ``a.b`` and ``a``."""
    for node in ast.walk(tree):  # function bodies and `if TYPE_CHECKING:` blocks included
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                package = name.split(".")
                package = package if is_package else package[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def load() -> dict[str, Module]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        name = module_name(path)
        tree = ast.parse(text, filename=str(path))
        names = frozenset(imported(tree, name, path.name == "__init__.py"))
        modules[name] = Module(name, path, len(text.splitlines()), names)
    return modules


MODULES = load()


def governor_deps(module: Module) -> set[str]:
    """The governor modules ``module`` imports (``from pkg import name`` counts as the
    module ``pkg.name`` when there is one, else as ``pkg``)."""
    deps = set()
    for name in module.imports:
        if name in MODULES and name != module.name:
            deps.add(name)
    # `from governor.x import y` also yields "governor.x": drop it when y was a submodule
    # and nothing else is imported from governor.x itself.
    for name in list(deps):
        children = {d for d in deps if d.startswith(name + ".")}
        if children and not _imports_names_from(module, name):
            deps.discard(name)
    return deps


def _imports_names_from(module: Module, package: str) -> bool:
    """Whether ``module`` imports a name (not a submodule) from ``package``'s __init__."""
    return any(
        name.startswith(package + ".")
        and name.count(".") == package.count(".") + 1
        and name not in MODULES
        for name in module.imports
    )


def externals(module: Module) -> set[str]:
    """The top-level non-governor packages ``module`` imports."""
    return {name.split(".")[0] for name in module.imports if not name.startswith("governor")}


GRAPH = {name: governor_deps(module) for name, module in MODULES.items()}


# -- (a) the core is pure -------------------------------------------------------------------


def core_leaks(allowed: frozenset[tuple[str, str]]) -> list[str]:
    """Each way a core module reaches a forbidden import or an outer governor module, as its
    chain of imports (it stops at the first outer module: that import is the leak)."""
    found = []
    for start in sorted(n for n in MODULES if n.startswith("governor.core")):
        chains = {start: [start]}
        todo = [start]
        while todo:
            here = todo.pop()
            for bad in sorted(externals(MODULES[here]) & CORE_FORBIDDEN):
                found.append(" -> ".join([*chains[here], bad]))
            for dep in sorted(GRAPH[here]):
                if (here, dep) in allowed or dep in chains:
                    continue
                chains[dep] = [*chains[here], dep]
                if dep.startswith(CORE_MAY_IMPORT):
                    todo.append(dep)
                else:
                    found.append(" -> ".join(chains[dep]))
    return found


def test_the_core_imports_no_io_and_no_outer_package() -> None:
    leaks = core_leaks(ALLOWED_CORE_LEAKS)
    assert not leaks, "governor/core/ reaches what it must not:\n" + "\n".join(leaks)


# -- (b) no import cycles -------------------------------------------------------------------


def cycles() -> list[frozenset[str]]:
    """The strongly connected components of the import graph that are cycles (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in GRAPH[node]:
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.add(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    new = [c for c in cycles() if not any(c <= allowed for allowed in ALLOWED_CYCLES)]
    assert not new, "import cycles (TYPE_CHECKING imports count):\n" + "\n".join(
        f"{' -> '.join(shortest_cycle(c))}  (all of: {', '.join(sorted(c))})" for c in new
    )


def shortest_cycle(component: frozenset[str]) -> list[str]:
    """One shortest way round ``component``, from its first module back to it."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    for here in queue:  # breadth first: the queue grows as it is read
        for dep in sorted(GRAPH[here] & component):
            if dep == start:
                return [*paths[here], start]
            if dep not in paths:
                paths[dep] = [*paths[here], dep]
                queue.append(dep)
    raise AssertionError(f"not a cycle: {sorted(component)}")


# -- (c) no long modules --------------------------------------------------------------------


def test_no_module_over_500_lines() -> None:
    long = {m.name: m.lines for m in MODULES.values() if m.lines > MAX_LINES}
    new = {name: n for name, n in long.items() if name not in ALLOWED_LONG}
    assert not new, f"modules over {MAX_LINES} lines (split them): {new}"


# -- the allow-lists only shrink --------------------------------------------------------------


# The packages from the top down: a module imports only from its own package or from
# one further down (docs/architecture.md). cli.py and __main__.py sit above them all.
LAYERS = (
    ("governor.cli", "governor.__main__"),
    ("governor.process",),
    ("governor.admin", "governor.simulation"),
    ("governor.proxy",),
    ("governor.http1",),
    ("governor.observe",),
    ("governor.tls",),
    ("governor.accounts",),
    ("governor.store",),
    ("governor.core",),
    ("governor.config",),
    (
        "governor.errors",
        "governor.release",
        "governor.sizes",
        "governor.tasks",
        "governor.build",
        "governor.backend",
        "governor",
    ),
)


def layer(name: str) -> int:
    """The index in :data:`LAYERS` of the package that ``name`` belongs to."""
    for index, members in enumerate(LAYERS):
        if any(name == m or name.startswith(m + ".") for m in members if m != "governor"):
            return index
    assert name == "governor", f"{name}: in no layer of LAYERS"
    return len(LAYERS) - 1


def upward_imports() -> list[str]:
    return sorted(
        f"{name} -> {dep}"
        for name, deps in GRAPH.items()
        for dep in deps
        if layer(dep) < layer(name)
    )


def test_imports_point_down_the_layers() -> None:
    up = upward_imports()
    assert not up, "imports that point up the layers (see LAYERS):\n" + "\n".join(up)


def test_the_layer_rule_can_fail() -> None:
    assert layer("governor.proxy.handler") < layer("governor.http1.request")
    assert layer("governor.core.meter") > layer("governor.accounts.runtime")
    assert layer("governor.tasks") == len(LAYERS) - 1


def test_the_allow_lists_name_only_todays_offenders() -> None:
    stale = [f"ALLOWED_LONG: {name}" for name in sorted(ALLOWED_LONG) if name not in MODULES]
    stale += [
        f"ALLOWED_LONG: {name} ({MODULES[name].lines} lines now)"
        for name in sorted(ALLOWED_LONG)
        if name in MODULES and MODULES[name].lines <= MAX_LINES
    ]
    found = cycles()
    stale += [
        f"ALLOWED_CYCLES: {' <-> '.join(sorted(c))}"
        for c in ALLOWED_CYCLES
        if not any(len(f & c) > 1 for f in found)  # gone, not merely grown into a bigger one
    ]
    everything = core_leaks(frozenset())
    stale += [
        f"ALLOWED_CORE_LEAKS: {a} -> {b}"
        for a, b in sorted(ALLOWED_CORE_LEAKS)
        if not any(chain.endswith(f"{a} -> {b}") for chain in everything)
    ]
    assert not stale, "fixed: remove from the allow-list:\n" + "\n".join(stale)


# -- the checks themselves can fail -----------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "is_package", "expected"),
    [
        ("import asyncio", False, {"asyncio"}),
        ("from governor.core import ledger", False, {"governor.core", "governor.core.ledger"}),
        ("from . import periods", False, {"governor.core", "governor.core.periods"}),
        ("from .. import errors", False, {"governor", "governor.errors"}),
        ("from .ledger import Key", True, {"governor.core.ledger", "governor.core.ledger.Key"}),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import socket",
            False,
            {"typing", "typing.TYPE_CHECKING", "socket"},
        ),
        ("def f() -> None:\n    import redis", False, {"redis"}),
    ],
)
def test_imports_are_read_wherever_they_are(
    source: str, is_package: bool, expected: set[str]
) -> None:
    name = "governor.core" if is_package else "governor.core.meter"
    assert set(imported(ast.parse(source), name, is_package)) == expected
