"""YAML plumbing for the loader: nodes with their lines, mappings with known keys, problems.

Every check reports through :class:`Ctx` (file, line, key path, what is wrong), so the
loader lists every problem of a file at once.

Environment references: in a double-quoted value (and only there, as HAProxy expands
them only inside double quotes), ``${NAME}`` is the environment variable ``NAME``,
``${NAME-default}`` the default when it is unset and ``${NAME:-default}`` also when it is
empty. Every value is read through :func:`scalar`, so every key takes them, and a reload
reads them again from the process's environment.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

import yaml
from yaml.reader import Reader

from governor.config import composer
from governor.config.composer import MappingNode, Node, ScalarNode, SequenceNode
from governor.errors import Problem

_NULL_TAG: Final = "tag:yaml.org,2002:null"

PARSER = composer.DEFAULT_PARSER
"""The YAML parser under the composer: libyaml's (about ten times faster) where PyYAML
was built with it, else PyYAML's own ("pure").

Both give every node its line and every syntax error its line alike; tests run the
loader's cases under both.
"""

T = TypeVar("T")
Fields = dict[str, tuple[ScalarNode, Node]]  # key -> (key node, value node)
Hosts = list[tuple[Node, str, str]]  # (node, key path, normalised host)
Parser = Callable[[Node, str, "Ctx"], "T | None"]


@dataclass(slots=True)
class Ctx:
    """What every check needs: where the file is, and the problems found so far."""

    file: str
    base: Path  # the config file's folder, absolute
    problems: list[Problem] = field(default_factory=list)
    # key path -> line, of the keys read but a tenant's (Config.problem's messages)
    lines: dict[str, int] = field(default_factory=dict)
    # Tables as large as the config, kept to the end of the load and freed with the node
    # tree (see parse_config), not at once when the function that built them returns.
    scratch: list[object] = field(default_factory=list)

    def error(self, at: Node | int | None, key: str, message: str) -> None:
        line = at if at is None or isinstance(at, int) else line_of(at)
        self.problems.append(Problem(self.file, line, key, message))


def line_of(node: Node) -> int:
    return node.line


def join_key(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL_TAG


def kind_of(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if is_null(node):
        return "nothing (null)"
    tag = node.tag.rsplit(":", 1)[-1]
    return {"bool": "a boolean", "int": "a number", "float": "a number"}.get(tag, "a string")


def compose(text: str, ctx: Ctx) -> Node | None:
    """The document's node tree; YAML errors become problems (and None)."""
    try:
        if PARSER != "pure":
            _check_characters(text)
        root = composer.compose(text, PARSER)
    except yaml.MarkedYAMLError as exc:
        ctx.error(*_yaml_problem(exc, text))
        return None
    except yaml.YAMLError as exc:  # ReaderError: a character YAML does not allow
        position = getattr(exc, "position", None)
        line = text.count("\n", 0, position) + 1 if isinstance(position, int) else None
        ctx.error(line, "", f"invalid YAML: {getattr(exc, 'reason', exc)}")
        return None
    if root is None:
        ctx.error(
            None, "", "the file is empty; expected a mapping with at least listen and tenants"
        )
    return root


# What YAML reports where something unclosed (a ``[``, a ``{``, a quote) began: the problem
# is found lines later, at the next thing that cannot be inside it.
_UNCLOSED: Final = (
    "while parsing a flow sequence",
    "while parsing a flow mapping",
    "while scanning a quoted",
)
_KEY_LINE: Final = re.compile(r"( *)(?:- +)?([A-Za-z0-9_][A-Za-z0-9_.-]*) *:(?: |$)")


def _yaml_problem(exc: yaml.MarkedYAMLError, text: str) -> tuple[int | None, str, str]:
    """(line, key, message) for a YAML syntax error: where an unclosed bracket or quote
    began, with the key it belongs to, rather than the line where YAML gave up."""
    found = exc.problem_mark or exc.context_mark
    line = None if found is None else found.line + 1
    what = ": ".join(p for p in (exc.context, exc.problem) if p) or "syntax error"
    began = exc.context_mark
    if began is not None and (exc.context or "").startswith(_UNCLOSED) and began.line + 1 != line:
        where = f" at line {line}" if line is not None else ""
        message = f"invalid YAML: {exc.context} that begins here: {exc.problem}{where}"
        return began.line + 1, _key_at(text.split("\n"), began.line), message
    return line, "", f"invalid YAML: {what}"


def _key_at(lines: list[str], index: int) -> str:
    """The dotted key of what starts on ``lines[index]``, read from the indentation: the
    line's own ``key:`` under its parents' (only the parents' for a list item)."""
    if index >= len(lines):
        return ""
    here = lines[index]
    m = _KEY_LINE.match(here)
    path = [] if m is None else [m.group(2)]
    indent = len(here) - len(here.lstrip(" "))
    for line in reversed(lines[:index]):
        if indent == 0:
            break
        m = _KEY_LINE.match(line)
        if m is not None and len(m.group(1)) < indent:
            path.append(m.group(2))
            indent = len(m.group(1))
    return ".".join(reversed(path))


_SLICE: Final = 1 << 16  # characters; a reload checks in a thread, and each search holds the GIL


def _check_characters(text: str) -> None:
    """The characters YAML allows, checked as the pure loader checks them.

    libyaml words and places a bad character differently (at a byte offset) and takes
    UTF-8 only (so it never sees a lone surrogate): the pure reader's own check runs
    first, slice by slice so that no one search holds a reload's thread on the GIL for
    long, and reports the first bad character exactly as the pure loader does.
    """
    for start in range(0, len(text), _SLICE):
        if Reader.NON_PRINTABLE.search(text, start, start + _SLICE) is not None:
            Reader(text)  # raises the ReaderError the pure loader raises


def mapping(node: Node, key: str, allowed: tuple[str, ...] | None, ctx: Ctx) -> Fields | None:
    """The mapping's entries by key; null is empty. Duplicate and unknown keys are problems."""
    if is_null(node):
        return {}
    if not isinstance(node, MappingNode):
        ctx.error(node, key, f"expected a mapping, got {kind_of(node)}")
        return None
    fields: Fields = {}
    first: dict[str, int] = {}
    for key_node, value in node.value:
        if not isinstance(key_node, ScalarNode) or is_null(key_node):
            ctx.error(key_node, key, f"keys must be strings, got {kind_of(key_node)}")
            continue
        name = str(key_node.value)
        if name in first:
            ctx.error(key_node, join_key(key, name), f"duplicate key (first at line {first[name]})")
            continue
        first[name] = line_of(key_node)
        if allowed is not None and name not in allowed:
            ctx.error(key_node, join_key(key, name), unknown_key(name, allowed))
            continue
        fields[name] = (key_node, value)
    return fields


def unknown_key(name: str, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown key{hint}; allowed keys here: {', '.join(allowed)}"


def get_field(fields: Fields, name: str, parent: str, parse: Parser[T], ctx: Ctx) -> T | None:
    """Parse ``fields[name]`` if present; None if absent or invalid. Its line is noted."""
    entry = fields.get(name)
    if entry is None:
        return None
    key = join_key(parent, name)
    if not parent.startswith("tenants."):  # a line per tenant key: 200 bytes a tenant
        ctx.lines[key] = line_of(entry[0])
    return parse(entry[1], key, ctx)


def scalar(node: Node, key: str, what: str, ctx: Ctx) -> str | None:
    """The scalar's text exactly as written (so ``12:30`` is not a YAML 1.1 number).

    A double-quoted value has its environment references replaced first.
    """
    if isinstance(node, ScalarNode) and not is_null(node):
        text = str(node.value)
        if node.style == '"' and "${" in text:
            return _expand_environment(node, key, text, ctx)
        return text
    ctx.error(node, key, f"expected {what}, got {kind_of(node)}")
    return None


_ENV_REFERENCE: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")


def _expand_environment(node: ScalarNode, key: str, text: str, ctx: Ctx) -> str | None:
    """``text`` with each ``${NAME}``, ``${NAME-default}``, ``${NAME:-default}`` replaced."""
    out: list[str] = []
    end = 0
    for ref in _ENV_REFERENCE.finditer(text):
        out.append(text[end : ref.start()])
        end = ref.end()
        name, operator, default = ref.groups()
        value = os.environ.get(name)
        unset = value is None or (operator == ":-" and not value)  # ":-": empty is unset too
        if unset and operator is not None:
            value = default
        if value is None:
            ctx.error(
                node,
                key,
                f"environment variable {name} is not set "
                f'(write "${{{name}-default}}" to give a default)',
            )
            return None
        out.append(value)
    out.append(text[end:])
    if any("${" in literal for literal in out[::2]):
        ctx.error(
            node,
            key,
            f"{text!r}: a ${{ in a double-quoted value must start ${{NAME}}, ${{NAME-default}} "
            "or ${NAME:-default} (NAME: letters, digits and _)",
        )
        return None
    return "".join(out)


def items_of(
    node: Node, key: str, what: tuple[str, str], ctx: Ctx
) -> list[tuple[Node, str, str]] | None:
    """A list of scalars as (node, key path, text); null is empty. ``what``: (one, many)."""
    if is_null(node):
        return []
    if not isinstance(node, SequenceNode):
        ctx.error(node, key, f"expected a list of {what[1]}, got {kind_of(node)}")
        return None
    items: list[tuple[Node, str, str]] = []
    ok = True
    for i, item in enumerate(node.value):
        text = scalar(item, f"{key}[{i}]", what[0], ctx)
        if text is None:
            ok = False
        else:
            items.append((item, f"{key}[{i}]", text))
    return items if ok else None


# --- scalar checks ------------------------------------------------------------
