"""Route a dialled number to a local line or a trunk.

Pure: the router only looks at the dialled digits and the configured dial plan (whose
routes already know how to match and rewrite). Whether the target is reachable
(registered, trunk healthy) is decided by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config.schema import DialPlan


@dataclass(frozen=True)
class RouteDecision:
    """Where a call goes: `kind` is "local" or "trunk"; `trunk` names the trunk."""

    kind: str
    number: str
    trunk: str | None = None


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
        number = route.rewrite(digits)
        if route.trunk is not None:
            return RouteDecision("trunk", number, route.trunk)
        return RouteDecision("local", number)
