"""The structural half of the config reader: mappings, lists, issues with positions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.config import schema as s
from gateway.config._convert import (
    _MERGE,
    _NULL,
    T,
    _Bad,
    _choice,
    _describe,
    _join,
    _not_plain,
    _suggest,
    _value_column_offset,
)
from gateway.config.issues import ConfigIssue

RouteProbe = Callable[[str | None], str | None]


class _Fields:
    """The keys of one mapping node that passed the unknown/duplicate-key checks."""

    def __init__(self, node: MappingNode, path: str, values: dict[str, Node]) -> None:
        self.node = node
        self.path = path
        self.values = values

    def has(self, key: str) -> bool:
        """True when the key was written (even as null)."""
        return key in self.values

    def node_of(self, key: str) -> Node:
        """The value node for `key`, or the mapping itself (for "missing key" positions)."""
        return self.values.get(key, self.node)

    def child(self, key: str) -> str:
        """The dotted path of `key` inside this mapping."""
        return _join(self.path, key)


@dataclass
class _Seen:
    """Values that must be unique across lines, with the node that first used each."""

    names: dict[str, Node] = field(default_factory=dict)
    numbers: dict[str, Node] = field(default_factory=dict)
    accounts: dict[tuple[str, str], Node] = field(default_factory=dict)


class _NodeReader:
    """Walks the node tree, converting values and collecting issues."""

    def __init__(self, route_probe: RouteProbe) -> None:
        self.issues: list[ConfigIssue] = []
        self.route_probe = route_probe
        self.constructor = SafeConstructor()

    # -- issue bookkeeping

    def issue(
        self, node: Node, path: str, message: str, expected: str = "", offset: int | None = None
    ) -> None:
        """Record a problem at `node`'s position (or `offset` characters into its value)."""
        mark = node.start_mark
        if mark is None:
            self.issues.append(ConfigIssue(0, 0, path, message, expected))
            return
        line, column = mark.line + 1, mark.column + 1
        if offset is not None and isinstance(node, ScalarNode):
            column += _value_column_offset(node, offset)
        self.issues.append(ConfigIssue(line, column, path, message, expected))

    def sorted_issues(self) -> list[ConfigIssue]:
        """Issues in file order, without repeats (aliases can visit a node twice)."""
        unique = list(dict.fromkeys(self.issues))
        return sorted(unique, key=lambda i: (i.line, i.column))

    # -- structure

    def mapping(self, node: Node | None, path: str, allowed: Sequence[str]) -> _Fields | None:
        """Check a mapping's keys: strings, known (with a suggestion), not repeated."""
        if node is None or (isinstance(node, ScalarNode) and node.tag == _NULL):
            empty = MappingNode("tag:yaml.org,2002:map", [])
            if node is not None:
                empty.start_mark = node.start_mark
            return _Fields(empty, path, {})
        if not isinstance(node, MappingNode):
            self.issue(
                node,
                path or "(top level)",
                f"expected a mapping, got {_describe(node)}",
                "keys: " + ", ".join(allowed),
            )
            return None
        seen: dict[str, Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:
                continue
            if not isinstance(key_node, ScalarNode) or key_node.tag == _NULL:
                self.issue(key_node, path or "(top level)", "keys must be plain strings")
                continue
            name = key_node.value
            if name in seen:
                first = seen[name].start_mark.line + 1
                self.issue(
                    key_node,
                    _join(path, name),
                    f"duplicate key {name!r} (first written on line {first})",
                )
            seen[name] = key_node
        try:
            self.constructor.flatten_mapping(node)  # resolve "<<: *anchor" merge keys
        except ConstructorError as exc:
            mark = exc.problem_mark or node.start_mark
            self.issues.append(
                ConfigIssue(
                    mark.line + 1,
                    mark.column + 1,
                    path or "(top level)",
                    f"bad merge key: {exc.problem}",
                )
            )
        values: dict[str, Node] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _NULL:
                continue
            name = key_node.value
            if name not in allowed:
                self.issue(
                    key_node,
                    _join(path, name),
                    f"unknown key {name!r}{_suggest(name, allowed)}",
                    "one of: " + ", ".join(allowed),
                )
                continue
            values[name] = value_node
        return _Fields(node, path, values)

    def sequence(self, node: Node | None, path: str) -> list[Node]:
        """The items of a list (null or absent means empty)."""
        if node is None or (isinstance(node, ScalarNode) and node.tag == _NULL):
            return []
        if not isinstance(node, SequenceNode):
            self.issue(node, path, f"expected a list, got {_describe(node)}", "a list")
            return []
        return list(node.value)

    def take(self, fields: _Fields, key: str, convert: Callable[[Node], T], default: T) -> T:
        """Convert `key` if written, else return `default`; a bad value is recorded."""
        if key not in fields.values:
            return default
        node = fields.values[key]
        try:
            return convert(node)
        except _Bad as bad:
            self.issue(bad.node or node, fields.child(key), bad.message, bad.expected, bad.offset)
            return default

    def require(
        self, fields: _Fields, key: str, convert: Callable[[Node], T], placeholder: T, expected: str
    ) -> T:
        """Like take(), but a missing key is an issue at the mapping's position."""
        if key not in fields.values:
            self.issue(fields.node, fields.child(key), f"missing required key {key!r}", expected)
            return placeholder
        return self.take(fields, key, convert, placeholder)

    def list_of(self, node: Node, path: str, convert: Callable[[Node], T]) -> list[T]:
        """Convert each list item, recording a bad item under its index and carrying on."""
        if not isinstance(node, SequenceNode):
            raise _Bad(f"expected a list, got {_describe(node)}", "a list")
        out: list[T] = []
        for index, item in enumerate(node.value):
            try:
                out.append(convert(item))
            except _Bad as bad:
                self.issue(bad.node or item, f"{path}[{index}]", bad.message, bad.expected)
        return out

    def plain_data(self, node: Node, path: str) -> Any:
        """Construct a subtree as JSON-compatible data (for backend options)."""
        try:
            value = self.constructor.construct_object(node, deep=True)
        except ConstructorError as exc:
            raise _Bad(f"cannot read value: {exc.problem}") from exc
        problem = _not_plain(value)
        if problem:
            raise _Bad(
                f"unsupported value {problem}", "strings, numbers, booleans, lists, mappings"
            )
        return value

    # -- top level

    def codec_list(self, path: str) -> Callable[[Node], tuple[str, ...]]:
        """A converter for a non-empty list of distinct codec names."""

        def convert(node: Node) -> tuple[str, ...]:
            before = len(self.issues)
            names = self.list_of(node, path, _choice(s.CODECS))
            if len(self.issues) > before:
                return s.DEFAULT_CODECS
            if not names:
                raise _Bad("the codec list is empty", "at least one of " + ", ".join(s.CODECS))
            for index, name in enumerate(names):
                if name in names[:index]:
                    raise _Bad(
                        f"codec {name!r} is listed twice", "each codec once", node=node.value[index]
                    )
            return tuple(names)

        return convert

    # -- trunks

    # -- lines
