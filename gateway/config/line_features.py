"""`lines[].timers` and `lines[].features`: per-line digit timers, hook-flash window,
off-hook warning, call forward, do-not-disturb and star codes.

YAML::

    lines:
      - name: desk
        backend: sim
        number: "101"
        timers:
          first_digit: 10         # s of dial tone before reorder
          long_inter_digit: 5     # s between digits while more are needed (T/L)
          short_inter_digit: 2    # s after a complete number that could go on (S)
          offhook_warning: 30     # s of busy/reorder before the howler
          ring_no_answer: 120     # s of ringing before the caller gets 480
          flash_min_ms: 100       # a break this long (ms) ...
          flash_max_ms: 900       # ... up to this long is a hook flash; longer hangs up
        features:
          forward_always: null    # a number: every call goes there
          forward_busy: "2001"    # calls while the line is busy (or in DND)
          forward_no_answer: null
          forward_no_answer_after: 20   # s of ringing first
          dnd: false
          forwarded_caller_id: original   # or "line": what a forward target is shown
          star_codes: {forward_always_on: "*72", dnd_on: "*78"}   # any of gateway.lines.features.StarCodes

The forward settings are where a line starts; the handset changes them with star codes
and its changes are kept across restarts until the config's own settings change.
This module reads and checks them; it never touches the clock or the network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from gateway.dsp.pulse import HookSettings
from gateway.lines.features import (
    DEFAULT_NO_ANSWER_AFTER,
    FORWARD_NUMBER_PATTERN,
    STAR_CODE_PATTERN,
    ForwardState,
    StarCodes,
)

if TYPE_CHECKING:
    from gateway.config._reader import _Fields

__all__ = ["FEATURE_KEYS", "TIMER_KEYS", "LineFeatures", "LineTimers", "json_schema",
           "line_features_dict", "with_features"]

TIMER_KEYS: tuple[str, ...] = ("first_digit", "long_inter_digit", "short_inter_digit",
                               "offhook_warning", "ring_no_answer", "flash_min_ms",
                               "flash_max_ms")
FEATURE_KEYS: tuple[str, ...] = ("forward_always", "forward_busy", "forward_no_answer",
                                 "forward_no_answer_after", "dnd", "star_codes",
                                 "forwarded_caller_id",
                                 *("call_waiting", "three_way", "transfer_on_hangup"))
CALL_FEATURES = ("call_waiting", "three_way", "transfer_on_hangup")
"""Two-call features of gateway/lines/fxs_calls.py, each on unless set false."""
STAR_CODE_KEYS: tuple[str, ...] = tuple(f.name for f in fields(StarCodes))
FORWARDED_CALLER_ID = ("original", "line")
"""Who a call this line forwards is shown as: its original caller (From; the line's
account as P-Asserted-Identity, Diversion naming the line), or the line itself (for a
trunk that refuses a From that is not one of its accounts)."""

#: (low, high, default) for each timer.
TIMER_RANGES: dict[str, tuple[float, float, float]] = {
    "first_digit": (1.0, 120.0, 10.0),
    "long_inter_digit": (0.5, 60.0, 5.0),
    "short_inter_digit": (0.2, 30.0, 2.0),
    "offhook_warning": (5.0, 600.0, 30.0),
    "ring_no_answer": (5.0, 600.0, 120.0),
    "flash_min_ms": (70.0, 1500.0, 100.0),
    "flash_max_ms": (150.0, 2000.0, 900.0),
}


@dataclass(frozen=True)
class LineTimers:
    """A line's timers in seconds (flash window in seconds too; the YAML says ms)."""

    first_digit: float = 10.0
    long_inter_digit: float = 5.0
    short_inter_digit: float = 2.0
    offhook_warning: float = 30.0
    ring_no_answer: float = 120.0
    flash_min: float = 0.1
    flash_max: float = 0.9

    def hook_settings(self) -> HookSettings:
        """The hook decoder's thresholds for this flash window (dial pulses stay below it)."""
        return HookSettings(pulse_break_max=min(0.1, self.flash_min),
                            flash_min=self.flash_min, flash_max=self.flash_max)

    def line_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `FxsLine`."""
        return {"first_digit_timeout": self.first_digit,
                "inter_digit_timeout": self.long_inter_digit,
                "short_inter_digit_timeout": self.short_inter_digit,
                "offhook_warning_timeout": self.offhook_warning,
                "no_answer_timeout": self.ring_no_answer,
                "hook_settings": self.hook_settings()}


@dataclass(frozen=True)
class LineFeatures:
    """Call forward and DND as configured, and the star codes that change them."""

    forward: ForwardState = field(default_factory=ForwardState)
    star_codes: StarCodes = field(default_factory=StarCodes)
    call_waiting: bool = True
    three_way: bool = True
    transfer_on_hangup: bool = True
    forwarded_caller_id: str = "original"


def with_features(reader: Any, node: Any, path: str, line: Any) -> Any:
    """`line` (a LineConfig) with the `timers` and `features` its mapping `node` sets."""
    from dataclasses import replace

    from yaml import MappingNode, ScalarNode

    from gateway.config._reader import _Fields

    if not isinstance(node, MappingNode):
        return line
    values = {k.value: v for k, v in node.value
              if isinstance(k, ScalarNode) and k.value in ("timers", "features")}
    f = _Fields(node, path, values)
    return replace(line, timers=read_timers(reader, f), features=read_features(reader, f))


def read_timers(reader: Any, f: _Fields) -> LineTimers:
    """`timers:` of one line (issues recorded on `reader`, defaults for what is bad)."""
    from gateway.config._convert import _float_range

    if not f.has("timers"):
        return LineTimers()
    t = reader.mapping(f.node_of("timers"), f.child("timers"), TIMER_KEYS)
    if t is None:
        return LineTimers()
    values = {key: reader.take(t, key, _float_range(lo, hi), default)
              for key, (lo, hi, default) in TIMER_RANGES.items()}
    if values["flash_min_ms"] >= values["flash_max_ms"]:
        where = t.node_of("flash_max_ms") if t.has("flash_max_ms") else t.node_of("flash_min_ms")
        reader.issue(where, t.child("flash_max_ms"),
                     f"flash window {values['flash_min_ms']:g}-{values['flash_max_ms']:g} ms "
                     "is empty: flash_max_ms must exceed flash_min_ms",
                     "flash_max_ms greater than flash_min_ms")
        return LineTimers()
    return LineTimers(values["first_digit"], values["long_inter_digit"],
                      values["short_inter_digit"], values["offhook_warning"],
                      values["ring_no_answer"], values["flash_min_ms"] / 1000.0,
                      values["flash_max_ms"] / 1000.0)


def read_features(reader: Any, f: _Fields) -> LineFeatures:
    """`features:` of one line (issues recorded on `reader`, defaults for what is bad)."""
    from gateway.config._convert import _bool, _choice, _float_range, _optional, _pattern

    if not f.has("features"):
        return LineFeatures()
    x = reader.mapping(f.node_of("features"), f.child("features"), FEATURE_KEYS)
    if x is None:
        return LineFeatures()
    number = _optional(_pattern(FORWARD_NUMBER_PATTERN,
                                "a number to dial: digits, '*', '#', optional leading '+'"))
    forward = ForwardState(
        always=reader.take(x, "forward_always", number, None),
        busy=reader.take(x, "forward_busy", number, None),
        no_answer=reader.take(x, "forward_no_answer", number, None),
        no_answer_after=reader.take(x, "forward_no_answer_after", _float_range(1.0, 300.0),
                                    DEFAULT_NO_ANSWER_AFTER),
        dnd=reader.take(x, "dnd", _bool, False),
    )
    codes = StarCodes()
    if x.has("star_codes"):
        c = reader.mapping(x.node_of("star_codes"), x.child("star_codes"), STAR_CODE_KEYS)
        if c is not None:
            code = _pattern(STAR_CODE_PATTERN, "'*' or '#' and 1-5 more keys, such as '*72'")
            chosen = {k: reader.take(c, k, code, getattr(codes, k)) for k in STAR_CODE_KEYS}
            try:
                codes = StarCodes(**chosen)
            except ValueError as exc:
                reader.issue(x.node_of("star_codes"), x.child("star_codes"), str(exc),
                             "distinct codes, none the start of another")
    calls = {k: reader.take(x, k, _bool, True) for k in CALL_FEATURES}  # fxs_calls.py
    shown = reader.take(x, "forwarded_caller_id", _choice(FORWARDED_CALLER_ID), "original")
    return LineFeatures(forward, codes, **calls, forwarded_caller_id=shown)


def line_features_dict(timers: LineTimers, features: LineFeatures) -> dict[str, Any]:
    """`timers` and `features` as the YAML writes them (Config.to_dict round-trips)."""
    return {
        "timers": {
            "first_digit": timers.first_digit, "long_inter_digit": timers.long_inter_digit,
            "short_inter_digit": timers.short_inter_digit,
            "offhook_warning": timers.offhook_warning, "ring_no_answer": timers.ring_no_answer,
            "flash_min_ms": round(timers.flash_min * 1000.0, 3),
            "flash_max_ms": round(timers.flash_max * 1000.0, 3),
        },
        "features": {
            "forward_always": features.forward.always, "forward_busy": features.forward.busy,
            "forward_no_answer": features.forward.no_answer,
            "forward_no_answer_after": features.forward.no_answer_after,
            "dnd": features.forward.dnd, "star_codes": features.star_codes.by_name(),
            **{k: getattr(features, k) for k in CALL_FEATURES},
            "forwarded_caller_id": features.forwarded_caller_id,
        },
    }


def json_schema() -> dict[str, dict[str, Any]]:
    """The JSON Schema of `timers` and `features` (gateway/config/jsonschema.py adds them)."""
    timer_props: dict[str, Any] = {}
    for key, (lo, hi, default) in TIMER_RANGES.items():
        unit = "ms" if key.endswith("_ms") else "s"
        timer_props[key] = {"type": "number", "minimum": lo, "maximum": hi, "default": default,
                            "description": f"{key.replace('_', ' ')} ({unit})"}
    number = {"anyOf": [{"type": "string", "pattern": f"^{FORWARD_NUMBER_PATTERN}$"},
                        {"type": "null"}], "default": None}
    codes = StarCodes()
    star = {k: {"type": "string", "pattern": f"^{STAR_CODE_PATTERN}$",
                "default": getattr(codes, k)} for k in STAR_CODE_KEYS}
    return {
        "timers": {"type": "object", "additionalProperties": False, "properties": timer_props,
                   "description": "Digit timers, the off-hook warning, ringing time and the "
                                  "hook-flash window of this line."},
        "features": {
            "type": "object", "additionalProperties": False,
            "description": "Call forward and do-not-disturb (the handset changes them with "
                           "star codes; its changes are kept across restarts).",
            "properties": {
                "forward_always": number, "forward_busy": number, "forward_no_answer": number,
                "forward_no_answer_after": {"type": "number", "minimum": 1, "maximum": 300,
                                            "default": DEFAULT_NO_ANSWER_AFTER},
                "dnd": {"type": "boolean", "default": False},
                "forwarded_caller_id": {
                    "enum": list(FORWARDED_CALLER_ID), "default": "original",
                    "description": "What the target of a call this line forwards is shown: "
                                   "the original caller (its number in From, the line's "
                                   "account in P-Asserted-Identity) or the line itself."},
                "star_codes": {"type": "object", "additionalProperties": False,
                               "properties": star},
                "call_waiting": {"type": "boolean", "default": True, "description":
                                 "A second call while talking is offered with the "
                                 "call-waiting tone and type-2 caller ID (else 486)."},
                "three_way": {"type": "boolean", "default": True, "description":
                              "Hook flash in a call holds it for a consultation call; "
                              "flash again with both connected makes a 3-way conference."},
                "transfer_on_hangup": {"type": "boolean", "default": True, "description":
                                       "Hanging up on a consultation call transfers the "
                                       "held party (attended if answered, else blind)."},
            },
        },
    }


def check_pattern(pattern: str, text: str) -> bool:
    """Whether `text` is a whole match of `pattern` (for callers outside the loader)."""
    return re.fullmatch(pattern, text) is not None
