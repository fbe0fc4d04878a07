"""Route a dialled number to a target: the number's own line, a named line, a trunk, a GSM
group or an FXO line.

Pure: the router only looks at the dialled digits and the configured dial plan (whose
routes already know how to match and rewrite). Whether the target is reachable
(registered, trunk healthy, modem attached) is decided by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config.schema import DialPlan
from gateway.routing.targets import (
    FxoTarget,
    GsmTarget,
    LineTarget,
    LocalTarget,
    RouteTarget,
    TrunkTarget,
    parse_target,
)


@dataclass(frozen=True)
class RouteDecision:
    """Where a call goes: the typed `target` and the number sent on (after rewriting)."""

    target: RouteTarget
    number: str

    @property
    def kind(self) -> str:
        """"local", "line", "trunk", "gsm" or "fxo": the target's prefix."""
        match self.target:
            case LocalTarget():
                return "local"
            case LineTarget():
                return "line"
            case TrunkTarget():
                return "trunk"
            case GsmTarget():
                return "gsm"
            case FxoTarget():
                return "fxo"

    @property
    def trunk(self) -> str | None:
        """The trunk's name for a trunk target, else None."""
        return self.target.name if isinstance(self.target, TrunkTarget) else None


class NoRoute(LookupError):
    """No configured route matches the dialled number."""


class Router:
    """First-match routing over the dial plan's routes, in order."""

    def __init__(self, dialplan: DialPlan) -> None:
        self.dialplan = dialplan

    def route(self, digits: str) -> RouteDecision:
        route = self.dialplan.route_for(digits)
        if route is None:
            raise NoRoute(f"no route for {digits!r}")
        return RouteDecision(parse_target(route.to), route.rewrite(digits))
