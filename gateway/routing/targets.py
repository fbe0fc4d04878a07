"""Route targets: where a dial-plan route sends a call, as typed values.

A route's `to:` is written as text (``local``, ``line:<name>``, ``trunk:<name>``,
``gsm:<group>``, ``fxo:<name>``); `parse_target` turns it into one of the small frozen
classes below, so the runtime matches on a type instead of splitting strings. The config
loader uses the same parser (and `TARGET_PATTERN` for the JSON Schema), so what check-config
accepts is exactly what the router can return.

Pure: no I/O. Whether a named line, trunk or group exists is checked by the config loader
(with line and column) and again by the runtime when it places the call.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

#: Names after the prefix: letters, digits, '_', '.' and '-' (trunk names are narrower,
#: lower case only, as the trunk section already requires).
NAME_PATTERN: Final = r"[A-Za-z0-9_.-]+"
TRUNK_PATTERN: Final = r"[a-z0-9_-]+"
#: Every spelling a route's `to:` may take (anchored by the user).
TARGET_PATTERN: Final = (
    rf"local|trunk:{TRUNK_PATTERN}|line:{NAME_PATTERN}|gsm:{NAME_PATTERN}|fxo:{NAME_PATTERN}"
)
#: What the config error says was expected.
EXPECTED: Final = "'local', 'line:<name>', 'trunk:<name>', 'gsm:<group>' or 'fxo:<name>'"

_TARGET_RE: Final = re.compile(TARGET_PATTERN)


@dataclass(frozen=True)
class LocalTarget:
    """The dialled number's own line: the FXS line whose `number` is the (rewritten) number."""

    def __str__(self) -> str:
        return "local"


@dataclass(frozen=True)
class LineTarget:
    """Ring the FXS line called `name`, whatever number was dialled."""

    name: str

    def __str__(self) -> str:
        return f"line:{self.name}"


@dataclass(frozen=True)
class TrunkTarget:
    """Send the call to the SIP trunk called `name`."""

    name: str

    def __str__(self) -> str:
        return f"trunk:{self.name}"


@dataclass(frozen=True)
class GsmTarget:
    """Send the call out through a GSM/LTE modem of group `group` (the `modems:` section)."""

    group: str

    def __str__(self) -> str:
        return f"gsm:{self.group}"


@dataclass(frozen=True)
class FxoTarget:
    """Send the call out on the FXO (exchange) line called `name`."""

    name: str

    def __str__(self) -> str:
        return f"fxo:{self.name}"


RouteTarget = LocalTarget | LineTarget | TrunkTarget | GsmTarget | FxoTarget


class TargetError(ValueError):
    """A route target that is not one of the spellings in `EXPECTED`."""


def parse_targets(texts: Iterable[str]) -> tuple[RouteTarget, ...]:
    """The typed targets of a route's `to:` list (or `emergency.targets`), in order."""
    return tuple(parse_target(text) for text in texts)


def target_kind(target: RouteTarget) -> str:
    """"local", "line", "trunk", "gsm" or "fxo": the target's prefix."""
    match target:
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


def parse_target(text: str) -> RouteTarget:
    """The typed target for a route's `to:` text; TargetError names what was expected."""
    if _TARGET_RE.fullmatch(text) is None:
        raise TargetError(f"route target {text!r} is not {EXPECTED}")
    if text == "local":
        return LocalTarget()
    prefix, name = text.split(":", 1)
    if prefix == "line":
        return LineTarget(name)
    if prefix == "trunk":
        return TrunkTarget(name)
    if prefix == "gsm":
        return GsmTarget(name)
    return FxoTarget(name)
