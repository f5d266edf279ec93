"""governor.config.composer: the same tree, lines and errors as PyYAML's composer (each parser)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from governor.config import composer
from governor.config.composer import MappingNode, Node, ScalarNode, SequenceNode

DOCUMENT = """\
listen: 127.0.0.1:8080
defaults: &shared
  daily_cap: 1 GiB
  warn_at: [80%, 95%]
tenants:
  a:
    hosts:
      - a.test
      - "*.a.test"
    upstream: "http://${HOST-localhost}:81"
    <<: *shared
  b: {hosts: [b.test], upstream: 'http://b', daily_cap: 2 GiB}
  c:
    hosts: [c.test]
    notice:
      template: |
        <p>over</p>
        <p>the cap</p>
    exempt_paths: ~
    count: !!str both
"""


def shape(node: Node | yaml.Node) -> Any:
    """A node tree as plain data: kind, tag, line (1-based) and value."""
    line = node.line if isinstance(node, Node) else node.start_mark.line + 1
    if isinstance(node, (ScalarNode, yaml.ScalarNode)):
        quoted = node.style == '"'
        return ("scalar", node.tag, line, node.value, quoted)
    if isinstance(node, (SequenceNode, yaml.SequenceNode)):
        return ("sequence", node.tag, line, [shape(n) for n in node.value])
    assert isinstance(node, (MappingNode, yaml.MappingNode))
    return ("mapping", node.tag, line, [(shape(k), shape(v)) for k, v in node.value])


# PyYAML's loader over the same parser: the reference for each (conftest.py runs every
# test here under both, as ``composer``).
REFERENCE: dict[str, Any] = {"pure": yaml.SafeLoader, "libyaml": getattr(yaml, "CSafeLoader", None)}


@pytest.fixture
def parser(composer: str) -> str:
    return composer


def test_the_tree_is_pyyamls_with_lines_instead_of_marks(parser: str) -> None:
    ours = composer.compose(DOCUMENT, parser)
    theirs = yaml.compose(DOCUMENT, Loader=REFERENCE[parser])
    assert ours is not None
    assert theirs is not None
    assert shape(ours) == shape(theirs)


def test_an_alias_is_the_anchored_node_itself(parser: str) -> None:
    root = composer.compose(DOCUMENT, parser)
    assert isinstance(root, MappingNode)
    tenants = dict((k.value, v) for k, v in root.value)["tenants"]
    a = dict((k.value, v) for k, v in tenants.value)["a"]
    merged = dict((k.value, v) for k, v in a.value)["<<"]
    assert merged is dict((k.value, v) for k, v in root.value)["defaults"]


@pytest.mark.parametrize("text", ["", "# nothing\n", "---\n"])
def test_an_empty_stream_or_document(parser: str, text: str) -> None:
    theirs = yaml.compose(text, Loader=REFERENCE[parser])
    ours = composer.compose(text, parser)
    assert (ours is None) == (theirs is None)


@pytest.mark.parametrize("text", ["a: [1, 2\n", "a: b: c\n", "a:\n\t- 1\n"])
def test_syntax_errors_are_the_parsers_at_the_same_line(parser: str, text: str) -> None:
    with pytest.raises(yaml.MarkedYAMLError) as theirs:
        yaml.compose(text, Loader=REFERENCE[parser])
    with pytest.raises(yaml.MarkedYAMLError) as ours:
        composer.compose(text, parser)
    assert type(ours.value) is type(theirs.value)
    assert ours.value.problem == theirs.value.problem
    assert ours.value.problem_mark is not None
    assert theirs.value.problem_mark is not None
    assert ours.value.problem_mark.line == theirs.value.problem_mark.line


@pytest.mark.parametrize(
    ("text", "line"),
    [("a: 1\nb: *nowhere\n", 1), ("a: &x 1\nb: &x 2\n", 1), ("a: 1\n---\nb: 2\n", 1)],
)
def test_composer_errors_are_pyyamls_own_at_the_same_line(
    parser: str, text: str, line: int
) -> None:
    """Worded as PyYAML's Python composer words them (libyaml's leaves the alias out)."""
    with pytest.raises(yaml.composer.ComposerError) as theirs:
        yaml.compose(text, Loader=yaml.SafeLoader)
    with pytest.raises(yaml.composer.ComposerError) as ours:
        composer.compose(text, parser)
    assert ours.value.problem == theirs.value.problem
    assert ours.value.context == theirs.value.context
    assert ours.value.problem_mark is not None
    assert ours.value.problem_mark.line == line  # 0-based, as PyYAML's marks


def test_a_node_has_slots_not_a_dict(parser: str) -> None:
    root = composer.compose("a: [1]\n", parser)
    assert root is not None
    assert not hasattr(root, "__dict__")
    assert not hasattr(root.value[0][1].value[0], "__dict__")
