"""YAML text to a tree of small nodes that keep what the loader reads: tag, value, line.

PyYAML's nodes carry a ``__dict__`` and two marks each (where they start and end, with
the line, the column and the offset): about 3.5 KB per tenant of a config, 345 MB at
100,000 tenants, most of it for positions the loader never asks for. The nodes here
have slots and a line number: about a fifth of that. Freed memory is not all given back
to the system (the config is allocated among the nodes), so the tree's size is what a
large config's process keeps.

The events come from libyaml's parser where PyYAML was built with it (its composer is
no faster than this one: both make every node in Python), else from PyYAML's pure
parser; the same text gives the same tree, the same lines and the same errors. The
composition follows :class:`yaml.composer.Composer` step by step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Protocol

import yaml
from yaml.composer import ComposerError
from yaml.events import (
    AliasEvent,
    Event,
    MappingEndEvent,
    MappingStartEvent,
    NodeEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner


class Node:
    """A YAML node: its resolved tag, its value, and the 1-based line it starts on."""

    __slots__ = ("line", "tag", "value")

    def __init__(self, tag: str, value: Any, line: int) -> None:
        self.tag = tag
        self.value: Any = value  # str, list[Node] or list[tuple[Node, Node]] by kind
        self.line = line


class ScalarNode(Node):
    __slots__ = ("style",)

    def __init__(self, tag: str, value: str, line: int, style: str | None) -> None:
        self.tag = tag
        self.value = value
        self.line = line
        self.style = style  # '"' for a double-quoted scalar (environment references)


class SequenceNode(Node):
    __slots__ = ()


class MappingNode(Node):
    __slots__ = ()


class Events(Protocol):
    """A YAML parser's event stream (libyaml's or PyYAML's)."""

    def check_event(self, *choices: type[Event]) -> bool: ...
    def peek_event(self) -> Event: ...
    def get_event(self) -> Event: ...


class PureParser(Reader, Scanner, Parser):
    """PyYAML's pure-Python parser alone (no composer, no constructor)."""

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)


PARSERS: Final[dict[str, Callable[[str], Any]]] = {"pure": PureParser}
try:
    from yaml._yaml import CParser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    pass
else:
    PARSERS["libyaml"] = CParser
DEFAULT_PARSER: Final = "libyaml" if "libyaml" in PARSERS else "pure"
# Deeper than any config (tenants.NAME.crawlers.agents is 4): a file nested a thousand deep
# would otherwise exhaust the interpreter's stack here, or in every walk of the tree after.
MAX_DEPTH: Final = 64


def compose(text: str, parser: str = DEFAULT_PARSER) -> Node | None:
    """The single document of ``text`` as a node tree (None when empty).

    Raises what PyYAML raises for the same text (:class:`yaml.YAMLError` and its kinds).
    """
    events = PARSERS[parser](text)
    try:
        return _Composer(events).single_document()
    finally:
        events.dispose()


class _Composer:
    def __init__(self, events: Events) -> None:
        self._events = events
        self._resolve: Callable[[type[yaml.Node], str | None, Any], str] = Resolver().resolve
        self._anchors: dict[str, Node] = {}

    def single_document(self) -> Node | None:
        events = self._events
        events.get_event()  # the stream's start
        document = None
        if not events.check_event(StreamEndEvent):
            events.get_event()  # the document's start
            document = self._node(events.get_event(), 0)
            events.get_event()  # the document's end
            self._anchors = {}
        if not events.check_event(StreamEndEvent):
            event = events.get_event()
            raise ComposerError(
                "expected a single document in the stream",
                None,
                "but found another document",
                _mark(event),
            )
        events.get_event()
        return document

    def _node(self, event: Event, depth: int) -> Node:
        """The node that ``event`` (just taken from the stream) starts."""
        if isinstance(event, AliasEvent):
            if event.anchor not in self._anchors:
                raise ComposerError(
                    None, None, f"found undefined alias {event.anchor!r}", _mark(event)
                )
            return self._anchors[event.anchor]
        assert isinstance(event, NodeEvent)
        anchor = event.anchor
        if anchor is not None and anchor in self._anchors:
            raise ComposerError(
                f"found duplicate anchor {anchor!r}; first occurrence",
                None,
                "second occurrence",
                _mark(event),
            )
        if depth > MAX_DEPTH:
            raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", _mark(event))
        line: int = _mark(event).line + 1
        node: Node
        events = self._events
        if isinstance(event, ScalarEvent):
            tag = event.tag
            if tag is None or tag == "!":
                tag = self._resolve(yaml.ScalarNode, event.value, event.implicit)
            node = ScalarNode(tag, event.value, line, event.style)
            if anchor is not None:
                self._anchors[anchor] = node
        elif isinstance(event, SequenceStartEvent):
            node = SequenceNode(self._tag(event, yaml.SequenceNode), [], line)
            if anchor is not None:
                self._anchors[anchor] = node
            items = node.value
            while not isinstance(item := events.get_event(), SequenceEndEvent):
                items.append(self._node(item, depth + 1))
        else:
            assert isinstance(event, MappingStartEvent)
            node = MappingNode(self._tag(event, yaml.MappingNode), [], line)
            if anchor is not None:
                self._anchors[anchor] = node
            pairs = node.value
            while not isinstance(key := events.get_event(), MappingEndEvent):
                pairs.append(
                    (self._node(key, depth + 1), self._node(events.get_event(), depth + 1))
                )
        return node

    def _tag(self, event: SequenceStartEvent | MappingStartEvent, kind: type[yaml.Node]) -> str:
        tag = event.tag
        if tag is None or tag == "!":
            tag = self._resolve(kind, None, event.implicit)
        return tag


def _mark(event: Event) -> Any:
    """Where ``event`` starts (libyaml's and PyYAML's marks differ in type, not in use)."""
    return event.start_mark
