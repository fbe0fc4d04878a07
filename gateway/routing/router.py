"""Route a dialled number to a local line or a trunk.

Pure: the router only looks at the dialled digits and the configured routes. Whether the
target is reachable (registered, trunk healthy) is decided by the caller.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class RouteSpec(Protocol):
    """What the router needs of one configured route (read-only, so frozen configs fit)."""

    @property
    def pattern(self) -> str: ...
    @property
    def to(self) -> str: ...
    @property
    def strip(self) -> int: ...
    @property
    def prepend(self) -> str: ...


@dataclass(frozen=True)
class RouteDecision:
    """Where a call goes: `kind` is "local" or "trunk"; `trunk` names the trunk."""

    kind: str
    number: str
    trunk: str | None = None


class NoRoute(LookupError):
    """No configured route matches the dialled number."""


class Router:
    """First-match routing over the configured routes, in order."""

    def __init__(self, routes: Sequence[RouteSpec]) -> None:
        self._routes = [(re.compile(r.pattern), r) for r in routes]

    def route(self, digits: str) -> RouteDecision:
        for regex, spec in self._routes:
            if regex.fullmatch(digits):
                number = spec.prepend + digits[spec.strip:]
                if spec.to == "local":
                    return RouteDecision("local", number)
                if spec.to.startswith("trunk:"):
                    return RouteDecision("trunk", number, spec.to.split(":", 1)[1])
        raise NoRoute(f"no route for {digits!r}")
