"""Line features an analog subscriber sets from the handset: call forward and do-not-disturb.

Pure: star codes are parsed from the digits a line dialled, a line's forward/DND state is
an immutable value changed by those requests, and what happens to a call offered to the
line (ring it, refuse it, or forward it) is decided from that state. The runtime
(gateway/runtime/forwarding.py) stores the state, places the forwarded call through the
router and the route guard, and answers the handset with confirm tone or reorder.

Star codes default to the North American vertical service codes, and every one can be
changed per line in the config (``lines[].features.star_codes``):

==========================  ========  =========================================
feature                      default   dialled as
==========================  ========  =========================================
forward always on            ``*72``   ``*72`` + number (``#`` or a pause ends it)
forward always off           ``*73``
forward busy on / off        ``*90`` / ``*91``  (``*90`` + number)
forward no answer on / off   ``*92`` / ``*93``  (``*92`` + number)
do not disturb on / off      ``*78`` / ``*79``
==========================  ========  =========================================

Distinctive ring: `ring_name` reads a call's Alert-Info (``<http://x/Bellcore-dr2>``,
``<http://x>;info=alert-internal``, ``<urn:alert:source:internal>``) and gives the name
the country profile's cadence table uses (gateway/dsp/tone_profiles.toml ``distinctive``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

__all__ = [
    "DEFAULT_NO_ANSWER_AFTER",
    "FORWARD_NUMBER_PATTERN",
    "STAR_CODE_PATTERN",
    "FeatureRequest",
    "Forward",
    "ForwardState",
    "Refuse",
    "Ring",
    "StarCodes",
    "decide_incoming",
    "ring_name",
]

FeatureKind = Literal["forward_always", "forward_busy", "forward_no_answer", "dnd"]

DEFAULT_NO_ANSWER_AFTER = 20.0
"""Seconds a line rings before a call forwarded on no answer leaves it."""

FORWARD_NUMBER_PATTERN = r"\+?[0-9*#]{1,32}"
"""A forward target: what a handset could dial (the router decides where it goes)."""

STAR_CODE_PATTERN = r"[*#][0-9*#]{1,5}"
"""A feature code: ``*`` or ``#`` and one to five more keys."""

_NUMBER_RE = re.compile(FORWARD_NUMBER_PATTERN)


@dataclass(frozen=True)
class StarCodes:
    """The codes a handset dials to set its features (defaults: US vertical service codes)."""

    forward_always_on: str = "*72"
    forward_always_off: str = "*73"
    forward_busy_on: str = "*90"
    forward_busy_off: str = "*91"
    forward_no_answer_on: str = "*92"
    forward_no_answer_off: str = "*93"
    dnd_on: str = "*78"
    dnd_off: str = "*79"

    def __post_init__(self) -> None:
        codes = self.by_name()
        for name, code in codes.items():
            if not re.fullmatch(STAR_CODE_PATTERN, code):
                raise ValueError(f"star code {name} {code!r}: expected '*' or '#' and 1-5 "
                                 "more keys, such as '*72'")
        seen: dict[str, str] = {}
        for name, code in codes.items():
            for other_name, other in seen.items():
                if code.startswith(other) or other.startswith(code):
                    raise ValueError(f"star codes {other_name} {other!r} and {name} {code!r} "
                                     "overlap: one is the start of the other")
            seen[name] = code

    def by_name(self) -> dict[str, str]:
        """Every code by its field name, in declaration order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def _with_number(self) -> tuple[tuple[str, FeatureKind], ...]:
        return ((self.forward_always_on, "forward_always"),
                (self.forward_busy_on, "forward_busy"),
                (self.forward_no_answer_on, "forward_no_answer"))

    def digit_map_alternatives(self) -> tuple[str, ...]:
        """Digit-map alternatives that let a line dial these codes (a number after an "on"
        forward code ends with ``#`` or the long inter-digit timer)."""
        out: list[str] = []
        for code, _ in self._with_number():
            out += [f"{code}x.#", f"{code}x.T"]
        out += [self.forward_always_off, self.forward_busy_off, self.forward_no_answer_off,
                self.dnd_on, self.dnd_off]
        return tuple(out)

    def parse(self, digits: str) -> FeatureRequest | None:
        """The feature request `digits` (what the line placed) make, or None for a number.

        A forward code with no number, or with one no handset could dial, is a request with
        `number` None and `on` True: the runtime refuses it with reorder."""
        off: dict[str, tuple[FeatureKind, bool]] = {
            self.forward_always_off: ("forward_always", False),
            self.forward_busy_off: ("forward_busy", False),
            self.forward_no_answer_off: ("forward_no_answer", False),
            self.dnd_on: ("dnd", True),
            self.dnd_off: ("dnd", False),
        }
        if digits in off:
            kind, on = off[digits]
            return FeatureRequest(kind, on)
        for code, kind in self._with_number():
            if digits.startswith(code):
                number = digits[len(code):].removesuffix("#")
                valid = bool(number) and _NUMBER_RE.fullmatch(number) is not None
                return FeatureRequest(kind, True, number if valid else None)
        return None


@dataclass(frozen=True)
class FeatureRequest:
    """A feature set or cleared from the handset."""

    kind: FeatureKind
    on: bool
    number: str | None = None
    """The forward target for a forward "on"; None there means the code lacked a number."""

    @property
    def complete(self) -> bool:
        """False for a forward "on" without a usable number (answered with reorder)."""
        return not (self.on and self.kind != "dnd" and self.number is None)


@dataclass(frozen=True)
class ForwardState:
    """One line's call forward and DND settings, as stored across restarts."""

    always: str | None = None
    busy: str | None = None
    no_answer: str | None = None
    no_answer_after: float = DEFAULT_NO_ANSWER_AFTER
    dnd: bool = False

    def __post_init__(self) -> None:
        for name in ("always", "busy", "no_answer"):
            number = getattr(self, name)
            if number is not None and not _NUMBER_RE.fullmatch(number):
                raise ValueError(f"forward {name} {number!r}: expected a number to dial "
                                 "(digits, '*', '#', an optional leading '+')")
        if not 1.0 <= self.no_answer_after <= 300.0:
            raise ValueError(f"forward no_answer_after {self.no_answer_after!r}: expected "
                             "1 to 300 seconds")

    def apply(self, request: FeatureRequest) -> ForwardState:
        """The state after `request` (an incomplete request changes nothing)."""
        if not request.complete:
            return self
        if request.kind == "dnd":
            return replace(self, dnd=request.on)
        number = request.number if request.on else None
        if request.kind == "forward_always":
            return replace(self, always=number)
        if request.kind == "forward_busy":
            return replace(self, busy=number)
        return replace(self, no_answer=number)

    @property
    def active(self) -> bool:
        """Anything set that changes how calls are offered (for the stutter dial tone)."""
        return self.dnd or any((self.always, self.busy, self.no_answer))

    def to_json(self) -> dict[str, Any]:
        """A plain dict for the state file and the status command."""
        return {"always": self.always, "busy": self.busy, "no_answer": self.no_answer,
                "no_answer_after": self.no_answer_after, "dnd": self.dnd}

    @classmethod
    def from_json(cls, data: Any) -> ForwardState:
        """Read what `to_json` wrote; ValueError names what is wrong."""
        if not isinstance(data, dict):
            raise ValueError(f"forward state: expected an object, got {type(data).__name__}")
        unknown = set(data) - {"always", "busy", "no_answer", "no_answer_after", "dnd"}
        if unknown:
            raise ValueError(f"forward state: unknown keys {sorted(unknown)}")
        out: dict[str, Any] = {}
        for key in ("always", "busy", "no_answer"):
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"forward state {key}: expected a string or null")
            out[key] = value
        after = data.get("no_answer_after", DEFAULT_NO_ANSWER_AFTER)
        if isinstance(after, bool) or not isinstance(after, int | float):
            raise ValueError("forward state no_answer_after: expected a number")
        dnd = data.get("dnd", False)
        if not isinstance(dnd, bool):
            raise ValueError("forward state dnd: expected true or false")
        return cls(out["always"], out["busy"], out["no_answer"], float(after), dnd)


# ------------------------------------------------------------------ incoming calls


@dataclass(frozen=True)
class Ring:
    """Offer the call to the line; with `forward_after`, forward it if unanswered by then."""

    forward_after: float | None = None
    number: str | None = None


@dataclass(frozen=True)
class Forward:
    """Send the call to `number` instead (`why`: always, busy, dnd, no-answer)."""

    number: str
    why: str


@dataclass(frozen=True)
class Refuse:
    """Answer the caller with `status` (486 for do-not-disturb)."""

    status: int
    why: str


def decide_incoming(state: ForwardState, line_busy: bool) -> Ring | Forward | Refuse:
    """What to do with a call offered to a line in `state`.

    Forward always wins; DND refuses with 486 unless busy-forward is set (then it forwards
    there, as a busy line would); a busy line forwards on busy, else the line's own answer
    stands (call waiting, 486); otherwise the line rings, with the no-answer forward armed.
    """
    if state.always is not None:
        return Forward(state.always, "always")
    if state.dnd:
        if state.busy is not None:
            return Forward(state.busy, "dnd")
        return Refuse(486, "do not disturb")
    if line_busy and state.busy is not None:
        return Forward(state.busy, "busy")
    if state.no_answer is not None:
        return Ring(state.no_answer_after, state.no_answer)
    return Ring()


# ----------------------------------------------------------------- distinctive ring

_BELLCORE = re.compile(r"bellcore-(dr[1-5])", re.IGNORECASE)
_INFO = re.compile(r"info\s*=\s*\"?alert-([a-z0-9-]+)", re.IGNORECASE)
_URN = re.compile(r"urn:alert:(?:source|priority|service):([a-z0-9-]+)", re.IGNORECASE)
_URN_NAMES = {"internal": "internal", "external": "external", "high": "priority"}


def ring_name(alert_info: str | None) -> str | None:
    """The distinctive-ring name an Alert-Info header asks for, or None (normal ring).

    ``Bellcore-dr1`` .. ``Bellcore-dr5`` anywhere in it (the URL's last part or an
    ``info=`` parameter), ``info=alert-<name>`` (``alert-internal``, ``alert-external``,
    ``alert-priority`` or ``alert-dr2``), or an RFC 7462 URN (``urn:alert:source:internal``,
    ``urn:alert:priority:high``). The first one found wins."""
    if not alert_info:
        return None
    found: list[tuple[int, str]] = []
    if m := _BELLCORE.search(alert_info):
        found.append((m.start(), m.group(1).lower()))
    if m := _INFO.search(alert_info):
        name = m.group(1).lower()
        found.append((m.start(), name.removeprefix("bellcore-")))
    if m := _URN.search(alert_info):
        name = _URN_NAMES.get(m.group(1).lower())
        if name is not None:
            found.append((m.start(), name))
    return min(found)[1] if found else None
