"""Route a dialled number to its targets, in failover order: the number's own line, a named
line, a trunk, a GSM group or an FXO line.

Pure: the router only looks at the dialled digits, the configured dial plan (whose routes
already know how to match and rewrite) and, for `attempt_order`, a snapshot of trunk health
the caller passes in. Whether a GSM modem or a line is usable is decided by the caller when
it places the call; a target that cannot be used passes to the next.

Emergency numbers (`emergency:` in the config) are recognised before any route: they always
get a decision (even when no route matches), are sent on as dialled (a route's strip/prepend
is for the operator's numbering, and "+1911" would not reach anybody), and `attempt_order`
tries every target, best health first, instead of skipping trunks that are down.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.config.schema import DialPlan, EmergencySettings
from gateway.routing.dialplan import DigitMap, MatchResult
from gateway.routing.health import HealthState
from gateway.routing.targets import (
    RouteTarget,
    TrunkTarget,
    parse_targets,
    target_kind,
)

if TYPE_CHECKING:
    from gateway.config.schema import Config

__all__ = [
    "NoRoute",
    "RouteDecision",
    "Router",
    "attempt_order",
    "effective_digit_map",
]


@dataclass(frozen=True)
class RouteDecision:
    """Where a call goes: the typed `targets` in configured order (failover), the number
    sent on (after rewriting) and whether it is an emergency call."""

    targets: tuple[RouteTarget, ...]
    number: str
    emergency: bool = False

    def __post_init__(self) -> None:
        if not self.targets:
            raise ValueError(f"a route decision for {self.number!r} needs a target")

    @property
    def target(self) -> RouteTarget:
        """The first target: where the call goes when nothing has failed."""
        return self.targets[0]

    @property
    def kind(self) -> str:
        """"local", "line", "trunk", "gsm" or "fxo": the first target's prefix."""
        return target_kind(self.target)

    @property
    def trunk(self) -> str | None:
        """The first target's trunk name when it is a trunk, else None."""
        return self.target.name if isinstance(self.target, TrunkTarget) else None


class NoRoute(LookupError):
    """No configured route matches the dialled number."""


class Router:
    """Emergency numbers first, then first-match routing over the dial plan's routes."""

    def __init__(self, dialplan: DialPlan, emergency: EmergencySettings | None = None) -> None:
        self.dialplan = dialplan
        self.emergency = emergency

    @classmethod
    def from_config(cls, config: Config) -> Router:
        """The router for a loaded config (its dial plan and emergency settings)."""
        return cls(config.dialplan, emergency=config.emergency)

    def is_emergency(self, digits: str) -> bool:
        """True when `digits` is one of the configured emergency numbers."""
        return self.emergency is not None and digits in self.emergency.numbers

    def route(self, digits: str) -> RouteDecision:
        """The decision for a dialled number; NoRoute when nothing can take it."""
        route = self.dialplan.route_for(digits)
        if self.emergency is not None and digits in self.emergency.numbers:
            targets = parse_targets(self.emergency.targets)
            if not targets and route is not None:  # no trunk/group/FXO: the route's own
                targets = parse_targets(route.targets)
            if not targets:
                raise NoRoute(f"emergency number {digits!r} has no target (no trunk, GSM "
                              "group or FXO line, and no route)")
            return RouteDecision(targets, digits, emergency=True)
        if route is None:
            raise NoRoute(f"no route for {digits!r}")
        return RouteDecision(parse_targets(route.targets), route.rewrite(digits))

    def attempt_order(
        self, decision: RouteDecision, health: Mapping[str, HealthState]
    ) -> tuple[RouteTarget, ...]:
        """`attempt_order(decision, health)` (the module function), for callers holding
        the router."""
        return attempt_order(decision, health)


def _state(value: object) -> HealthState | None:
    """A health snapshot value as a HealthState ("up" strings too); None when unknown."""
    if isinstance(value, HealthState):
        return value
    try:
        return HealthState(str(value))
    except ValueError:
        return None


#: Emergency ranking: usable now, usable with trouble, then down or not known.
_RANK = {HealthState.UP: 0, HealthState.DEGRADED: 1, HealthState.DOWN: 2}
_UNKNOWN_RANK = 2


def attempt_order(
    decision: RouteDecision, health: Mapping[str, HealthState]
) -> tuple[RouteTarget, ...]:
    """The targets to try now, in order, given each trunk's health (trunk name -> state).

    Ordinary calls keep the configured order and skip trunks that are DOWN (none left: an
    empty tuple, the call fails at once instead of waiting for timeouts). DEGRADED trunks
    stay: they still answer.

    Emergency calls try every target: those UP first, then DEGRADED, then DOWN or unknown,
    the configured order kept inside each rank. Targets that are not trunks (GSM, FXO,
    lines) have no trunk health and rank as UP; the runtime skips them when they cannot be
    used. When `health` knows none of the decision's trunks (no monitor), the configured
    order stands: nothing is known that would justify changing it.
    """
    if not decision.emergency:
        return tuple(
            t for t in decision.targets
            if not (isinstance(t, TrunkTarget) and _state(health.get(t.name)) is HealthState.DOWN)
        )
    trunks = [t.name for t in decision.targets if isinstance(t, TrunkTarget)]
    if trunks and not any(name in health for name in trunks):
        return decision.targets

    def rank(target: RouteTarget) -> int:
        if not isinstance(target, TrunkTarget):
            return 0
        state = _state(health.get(target.name))
        return _UNKNOWN_RANK if state is None else _RANK[state]

    return tuple(sorted(decision.targets, key=rank))  # sorted() is stable


def effective_digit_map(config: Config) -> str:
    """The dial plan's digit map with every emergency number added as an alternative, so a
    handset dials one even when the configured map would wait for more digits or refuse it.

    Numbers the map already completes are not added; when none is missing the map comes
    back unchanged (same text).
    """
    source = config.dialplan.digit_map
    digit_map = DigitMap(source)
    complete = (MatchResult.FULL, MatchResult.FULL_MAY_EXTEND)
    missing = [n for n in config.emergency.numbers if digit_map.match(n) not in complete]
    if not missing:
        return source
    text = source.strip()
    inner = text[1:-1] if text.startswith("(") and text.endswith(")") else text
    return "(" + "|".join([*missing, inner]) + ")"
