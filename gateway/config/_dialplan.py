"""The `dialplan:` and `emergency:` sections: where calls go, in failover order."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from yaml.nodes import Node, ScalarNode, SequenceNode

from gateway.config import schema as s
from gateway.config import survivable as sv
from gateway.config._convert import (
    _NULL,
    _Bad,
    _describe,
    _digit_map,
    _int_range,
    _min_match_length,
    _pattern,
    _regex,
    _suggest,
)
from gateway.config._reader import _NodeReader
from gateway.config.schema import DialPlan, LineConfig, Route, TrunkConfig
from gateway.config.survivable import EmergencySettings
from gateway.routing.emergency import default_targets, emergency_numbers
from gateway.routing.targets import EXPECTED as EXPECTED_TARGET
from gateway.routing.targets import (
    FxoTarget,
    GsmTarget,
    LineTarget,
    RouteTarget,
    TrunkTarget,
    parse_target,
)

_EXPECTED_TARGETS = f"{EXPECTED_TARGET}, or a list of them (tried in order)"


class _DialPlanReader(_NodeReader):
    """Section readers for the dial plan and emergency calls (mixed into the full reader)."""

    def dialplan(
        self,
        node: Node | None,
        trunks: list[TrunkConfig] | None,
        trunk_names: Collection[str],
        lines: list[LineConfig] | None = None,
        gsm_groups: Collection[str] | None = None,
    ) -> DialPlan | None:
        """The `dialplan:` section, with default routes when none are written.

        Route targets name lines, trunks, GSM groups and FXO lines; each name is checked
        against what is configured. `lines` None (the lines section had errors) skips the
        line checks; `gsm_groups` None (no `modems:` section read) leaves gsm:<group>
        names to the runtime, which refuses a call to a group it does not have.
        """
        f = self.mapping(node, "dialplan", s.DIALPLAN_KEYS)
        if f is None:
            return None
        before = len(self.issues)
        digit_map = self.take(f, "digit_map", _digit_map, s.DEFAULT_DIGIT_MAP)
        items = self.sequence(f.values.get("routes"), f.child("routes"))
        routes: list[Route] = []
        for index, item in enumerate(items):
            route = self.route(item, f"dialplan.routes[{index}]", trunk_names, lines,
                               gsm_groups)
            if route is not None:
                routes.append(route)
        if len(self.issues) > before:
            return None
        if not items:
            routes = [Route(s.DEFAULT_LOCAL_ROUTE, "local")]
            if trunks:
                routes.append(Route(s.CATCH_ALL_ROUTE, f"trunk:{trunks[0].name}"))
        return DialPlan(digit_map, tuple(routes))

    def route(
        self,
        node: Node,
        path: str,
        trunk_names: Collection[str],
        lines: list[LineConfig] | None = None,
        gsm_groups: Collection[str] | None = None,
    ) -> Route | None:
        """One route: pattern, targets (one, or a list tried in order), the digit rewrite."""
        f = self.mapping(node, path, s.ROUTE_KEYS)
        if f is None:
            return None
        before = len(self.issues)
        pattern = self.require(f, "pattern", _regex, "", "a regular expression")
        targets: tuple[str, ...] = ()
        if not f.has("to"):
            self.issue(f.node, f.child("to"), "missing required key 'to'", _EXPECTED_TARGETS)
        else:
            targets = self.targets(f.node_of("to"), f.child("to"), trunk_names, lines,
                                   gsm_groups)
        strip = self.take(f, "strip", _int_range(0, 64), 0)
        prepend = self.take(
            f, "prepend", _pattern(s.PREPEND_PATTERN, "digits, '*', '#', '+'", allow_empty=True), ""
        )
        if pattern and f.has("strip") and len(self.issues) == before:
            shortest = _min_match_length(pattern)
            if shortest is not None and strip > shortest:
                self.issue(
                    f.node_of("strip"),
                    f.child("strip"),
                    f"strip {strip} is longer than the shortest number the pattern "
                    f"matches ({shortest} digits)",
                    f"0..{shortest}",
                )
        if len(self.issues) > before or not targets:
            return None
        return Route(pattern, targets[0], strip, prepend, targets=targets)

    def targets(
        self,
        node: Node,
        path: str,
        trunk_names: Collection[str],
        lines: list[LineConfig] | None,
        gsm_groups: Collection[str] | None,
    ) -> tuple[str, ...]:
        """A `to:` value: one target, or a non-empty list of distinct ones (failover order).

        Every target is checked on its own, at its own position; () when any is bad.
        """
        before = len(self.issues)
        convert = _pattern(s.ROUTE_TARGET_PATTERN, EXPECTED_TARGET)
        items: list[tuple[Node, str]] = []
        if isinstance(node, SequenceNode):
            if not node.value:
                self.issue(node, path, "the target list is empty", _EXPECTED_TARGETS)
            items = [(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        elif isinstance(node, ScalarNode) and node.tag != _NULL:
            items = [(node, path)]
        else:
            self.issue(node, path, f"expected a target, got {_describe(node)}", _EXPECTED_TARGETS)
        found: dict[str, Node] = {}
        for item, where in items:
            try:
                text = convert(item)
            except _Bad as bad:
                self.issue(item, where, bad.message, bad.expected)
                continue
            if text in found:
                first = found[text].start_mark.line + 1
                self.issue(item, where, f"target {text!r} is listed twice (first on line "
                           f"{first})", "each target once")
                continue
            found[text] = item
            self.target_check(item, where, parse_target(text), trunk_names, lines, gsm_groups)
        return () if len(self.issues) > before else tuple(found)

    def target_check(
        self,
        node: Node,
        path: str,
        target: RouteTarget,
        trunk_names: Collection[str],
        lines: list[LineConfig] | None,
        gsm_groups: Collection[str] | None,
    ) -> None:
        """An issue at `node` when the target names a trunk, line or group that is not there."""
        names: Collection[str] | None
        match target:
            case TrunkTarget(name=name):
                what, names, section = "trunk", trunk_names, "trunks"
            case LineTarget(name=name):
                what, section = "line", "lines"
                names = None if lines is None else [ln.name for ln in lines if ln.type == "fxs"]
            case FxoTarget(name=name):
                what, section = "FXO line", "lines of type fxo"
                names = None if lines is None else [ln.name for ln in lines if ln.type == "fxo"]
            case GsmTarget(group=name):
                what, names, section = "GSM group", gsm_groups, "gsm_groups"
            case _:
                return
        if names is None or name in names:
            return
        known = ", ".join(names) or "none are defined"
        self.issue(
            node,
            path,
            f"no {what} named {name!r}{_suggest(name, names)}",
            f"{EXPECTED_TARGET} with a name from {section} ({known})",
        )

    # -- emergency

    def emergency(
        self,
        node: Node | None,
        country: str,
        trunks: Sequence[str],
        lines: list[LineConfig] | None,
        gsm_groups: Sequence[str],
        known_groups: Collection[str] | None,
    ) -> tuple[EmergencySettings | None, dict[str, Node]]:
        """The `emergency:` section with its defaults resolved, plus where each number was
        written (empty for country defaults), for the clash checks against extensions."""
        f = self.mapping(node, "emergency", sv.EMERGENCY_KEYS)
        if f is None:
            return None, {}
        before = len(self.issues)
        written: dict[str, Node] = {}
        numbers = emergency_numbers(country)
        value = f.values.get("numbers")
        if value is not None and not (isinstance(value, ScalarNode) and value.tag == _NULL):
            numbers = self.emergency_numbers(value, f.child("numbers"), written)
        targets = default_targets(
            trunks, gsm_groups, [ln.name for ln in lines or () if ln.type == "fxo"]
        )
        value = f.values.get("targets")
        if value is not None and not (isinstance(value, ScalarNode) and value.tag == _NULL):
            if not isinstance(value, SequenceNode):
                self.issue(value, f.child("targets"), f"expected a list, got {_describe(value)}",
                           "a list of targets, tried in order")
            else:
                targets = self.targets(value, f.child("targets"), trunks, lines, known_groups)
        if len(self.issues) > before:
            return None, written
        return EmergencySettings(numbers, targets), written

    def emergency_numbers(self, node: Node, path: str, written: dict[str, Node]) -> tuple[str, ...]:
        """`emergency.numbers`: a non-empty list of distinct digit strings."""
        expected = "a list of emergency numbers, digits only (e.g. ['112', '999'])"
        if not isinstance(node, SequenceNode) or not node.value:
            got = "an empty list" if isinstance(node, SequenceNode) else _describe(node)
            self.issue(node, path, f"expected at least one number, got {got}",
                       expected + "; leave the key out for the country's own numbers")
            return ()
        convert = _pattern(sv.EMERGENCY_NUMBER_PATTERN, "digits only (no '+', '*' or '#')")
        for index, item in enumerate(node.value):
            where = f"{path}[{index}]"
            try:
                number = convert(item)
            except _Bad as bad:
                self.issue(item, where, bad.message, bad.expected)
                continue
            if number in written:
                first = written[number].start_mark.line + 1
                self.issue(item, where, f"number {number!r} is listed twice (first on line "
                           f"{first})", "each number once")
                continue
            written[number] = item
        return tuple(written)

    def emergency_clashes(
        self,
        emergency: EmergencySettings,
        written: dict[str, Node],
        country: str,
        extensions: Sequence[tuple[str, Node, str, str]],
    ) -> None:
        """An extension (line or phone number) may not be an emergency number: the call
        would leave the box instead of ringing it. `extensions`: (number, node, path, who)."""
        for number, node, path, who in extensions:
            if number not in emergency.numbers:
                continue
            if number in written:
                self.issue(written[number], _where(written, number),
                           f"emergency number {number!r} is also the number of {who}",
                           "a number no line or phone uses")
            else:
                self.issue(node, path,
                           f"number {number!r} is an emergency number in {country}",
                           "an extension that is not an emergency number (or set "
                           "emergency.numbers)")


def _where(written: dict[str, Node], number: str) -> str:
    return f"emergency.numbers[{list(written).index(number)}]"

