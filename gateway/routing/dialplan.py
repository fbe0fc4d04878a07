"""Digit maps: decide from the digits dialled so far whether to place the call yet.

The syntax is the one analog telephone adapters use, so installers can paste what they
already have::

    (911|1xx|[2-9]xxxxxx|1[2-9]xxxxxxxxx|0|00|*xx|x.T)

- alternatives are separated by ``|``; the outer parentheses are optional;
- ``0``-``9``, ``*`` and ``#`` match themselves; ``x`` matches any digit 0-9;
- ``[2-9]``, ``[135]``, ``[1-35*]`` match one character from a set (ranges of digits);
- ``.`` repeats the element before it zero or more times (``x.`` = any number of digits);
- a timer letter may end an alternative: ``T`` or ``L`` = it matches only once the long
  inter-digit timer expires; ``S`` = it matches once the short inter-digit timer expires;
  a number of seconds may follow the letter (``S0``, ``S3``, ``T4``, ``L1.5``) and
  replaces the line's timer for that alternative; ``S0`` (or ``T0``/``L0``) dials at once;
- ``<a:b>`` substitutes: the digits ``a`` are matched but not sent, ``b`` is sent in their
  place (``<9:>xxxxxxx`` strips an outside-line 9, ``<:1>[2-9]xxxxxxxxx`` prepends 1,
  ``<00:011>x.`` rewrites an international prefix); `DigitMap.transform` gives the number
  to place;
- spaces are ignored; letters are accepted in either case.

Matching returns a `MatchResult`; the line decides which timer to run from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["DIALLABLE", "DialPlanError", "DigitMap", "MatchResult"]

DIALLABLE = frozenset("0123456789*#")
"""Characters a digit map can match (DTMF A-D never match)."""

_ANY_DIGIT = frozenset("0123456789")
_INSERTABLE = DIALLABLE | {"+"}
"""Characters the ``b`` of ``<a:b>`` may send (a ``+`` for E.164 numbers)."""


class MatchResult(Enum):
    """What to do with the digits collected so far."""

    NO_MATCH = "no-match"
    """No alternative can match, whatever follows: play reorder."""
    PARTIAL = "partial"
    """More digits are needed (or the long timer, for a T alternative)."""
    FULL = "full"
    """Complete and nothing longer could match: dial now."""
    FULL_MAY_EXTEND = "full-may-extend"
    """Complete, but a longer number could still match: dial after the short timer."""


class DialPlanError(ValueError):
    """A digit map that cannot be parsed; carries the 0-based position so config errors can point at it."""

    def __init__(self, message: str, source: str, position: int) -> None:
        super().__init__(f"digit map {source!r}, position {position}: {message}")
        self.message = message
        self.source = source
        self.position = position


class _Timer(Enum):
    NONE = "none"
    SHORT = "short"
    LONG = "long"


@dataclass(frozen=True, slots=True)
class _Element:
    chars: frozenset[str]
    repeat: bool
    emit: bool = True
    """False for the ``a`` of ``<a:b>``: matched, not sent."""
    insert: str = ""
    """Sent just before this element (the ``b`` of ``<a:b>``)."""


@dataclass(frozen=True, slots=True)
class _Pattern:
    elements: tuple[_Element, ...]
    timer: _Timer
    timer_seconds: float | None = None
    """``S3``/``T4``: this alternative's own timer; 0 = dial at once."""
    suffix: str = ""
    """A trailing ``<:b>``: sent after everything dialled."""

    def rewrite(self, digits: str) -> str | None:
        """The number to send for `digits`, or None when this alternative does not accept it."""
        elements = self.elements
        memo: dict[tuple[int, int, bool], str | None] = {}

        def walk(i: int, j: int, started: bool) -> str | None:
            key = (i, j, started)
            if key in memo:
                return memo[key]
            out: str | None = None
            if i == len(elements):
                out = self.suffix if j == len(digits) else None
            else:
                e = elements[i]
                prefix = "" if started else e.insert
                if j < len(digits) and digits[j] in e.chars:
                    rest = walk(i, j + 1, True) if e.repeat else walk(i + 1, j + 1, False)
                    if rest is not None:
                        out = prefix + (digits[j] if e.emit else "") + rest
                if out is None and e.repeat:
                    rest = walk(i + 1, j, False)
                    if rest is not None:
                        out = prefix + rest
            memo[key] = out
            return out

        return walk(0, 0, False)

    def positions(self, digits: str) -> frozenset[int]:
        """Element indices the NFA can be at after `digits`; len(elements) means accepted."""
        current = self._closure({0})
        for ch in digits:
            nxt: set[int] = set()
            for i in current:
                if i < len(self.elements) and ch in self.elements[i].chars:
                    nxt.add(i if self.elements[i].repeat else i + 1)
            if not nxt:
                return frozenset()
            current = self._closure(nxt)
        return current

    def _closure(self, states: set[int]) -> frozenset[int]:
        out = set(states)
        pending = list(states)
        while pending:
            i = pending.pop()
            if i < len(self.elements) and self.elements[i].repeat and i + 1 not in out:
                out.add(i + 1)
                pending.append(i + 1)
        return frozenset(out)


class DigitMap:
    """A parsed digit map; immutable, so one instance can serve many lines."""

    __slots__ = ("_patterns", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self._patterns = _parse(source)

    def __repr__(self) -> str:
        return f"DigitMap({self.source!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DigitMap) and other._patterns == self._patterns

    def __hash__(self) -> int:
        return hash(self._patterns)

    def match(self, digits: str) -> MatchResult:
        """Classify the digits dialled so far (see `MatchResult`)."""
        if any(p.timer_seconds == 0 and len(p.elements) in p.positions(digits)
               for p in self._patterns):
            return MatchResult.FULL  # S0: complete, dial now whatever could follow
        exact = False
        exact_short = False
        exact_long = False
        extendable = False
        for pattern in self._patterns:
            positions = pattern.positions(digits)
            if not positions:
                continue
            end = len(pattern.elements)
            if end in positions:
                if pattern.timer is _Timer.NONE:
                    exact = True
                elif pattern.timer is _Timer.SHORT:
                    exact_short = True
                else:
                    exact_long = True
            # Every element matches at least one character, so any unfinished position
            # means a longer string can still be accepted.
            if any(i < end for i in positions):
                extendable = True
        if exact:
            return MatchResult.FULL_MAY_EXTEND if extendable else MatchResult.FULL
        if exact_short:
            return MatchResult.FULL_MAY_EXTEND
        if extendable or exact_long:
            return MatchResult.PARTIAL
        return MatchResult.NO_MATCH

    def matches_on_timeout(self, digits: str) -> bool:
        """Whether the digits form a complete number once the inter-digit timer has expired."""
        return any(len(p.elements) in p.positions(digits) for p in self._patterns)

    def timer_seconds(self, digits: str) -> float | None:
        """The inter-digit timer an alternative that accepts `digits` sets (``S3``, ``T4``);
        the shortest when several do; None: the line's own short/long timer applies."""
        values = [p.timer_seconds for p in self._patterns
                  if p.timer_seconds is not None and len(p.elements) in p.positions(digits)]
        return min(values) if values else None

    def transform(self, digits: str) -> str:
        """The number to place for `digits`: the first alternative that accepts them, with
        its ``<a:b>`` substitutions applied; digits no alternative accepts are returned
        unchanged."""
        for pattern in self._patterns:
            if len(pattern.elements) in pattern.positions(digits):
                out = pattern.rewrite(digits)
                if out is not None:
                    return out
        return digits


def _parse(source: str) -> tuple[_Pattern, ...]:
    n = len(source)
    i = 0
    while i < n and source[i].isspace():
        i += 1
    if i == n:
        raise DialPlanError("empty digit map", source, 0)
    outer = source[i] == "("
    if outer:
        i += 1
    closed = False
    patterns: list[_Pattern] = []
    elements: list[_Element] = []
    timer: _Timer | None = None
    seconds: float | None = None
    insert = ""  # a `<:b>` waiting for the element it goes before
    substituted = False  # the last element came from `<a:b>`

    def add(element: _Element) -> None:
        nonlocal insert, substituted
        if insert:
            element = _Element(element.chars, element.repeat, element.emit,
                               insert + element.insert)
            insert = ""
        elements.append(element)
        substituted = False

    def finish(at: int) -> None:
        nonlocal elements, timer, seconds, insert
        if not elements:
            raise DialPlanError("empty alternative", source, at)
        patterns.append(_Pattern(tuple(elements), timer or _Timer.NONE, seconds, insert))
        elements = []
        timer = None
        seconds = None
        insert = ""

    while i < n:
        ch = source[i]
        if ch.isspace():
            i += 1
            continue
        if ch == "|":
            finish(i)
            i += 1
            continue
        if ch == ")":
            if not outer:
                raise DialPlanError("')' without a matching '('", source, i)
            finish(i)
            closed = True
            i += 1
            while i < n and source[i].isspace():
                i += 1
            if i < n:
                raise DialPlanError(f"unexpected {source[i]!r} after ')'", source, i)
            break
        if ch == "(":
            raise DialPlanError("nested '(' is not supported", source, i)
        if timer is not None:
            raise DialPlanError(
                f"unexpected {ch!r}: a timer letter must end its alternative", source, i
            )
        upper = ch.upper()
        if ch in DIALLABLE:
            add(_Element(frozenset(ch), repeat=False))
            i += 1
        elif upper == "X":
            add(_Element(_ANY_DIGIT, repeat=False))
            i += 1
        elif ch == "[":
            chars, i = _parse_set(source, i)
            add(_Element(chars, repeat=False))
        elif ch == "<":
            matched, sent, i = _parse_substitution(source, i)
            if matched:
                for k, digit in enumerate(matched):
                    add(_Element(frozenset(digit), repeat=False, emit=False,
                                 insert=sent if k == 0 else ""))
                substituted = True
            else:
                insert += sent
        elif ch == ".":
            if not elements or elements[-1].repeat or substituted or insert:
                raise DialPlanError("'.' must follow a digit, 'x' or '[...]'", source, i)
            last = elements[-1]
            elements[-1] = _Element(last.chars, True, last.emit, last.insert)
            i += 1
        elif upper in ("T", "L", "S"):
            timer = _Timer.SHORT if upper == "S" else _Timer.LONG
            i += 1
            start = i
            while i < n and (source[i].isdigit() or source[i] == "."):
                i += 1
            if i > start:
                try:
                    seconds = float(source[start:i])
                except ValueError:
                    raise DialPlanError(f"bad timer seconds {source[start:i]!r}",
                                        source, start) from None
                if seconds > 60:
                    raise DialPlanError(f"timer {seconds:g} s is longer than 60 s",
                                        source, start)
        else:
            raise DialPlanError(
                f"unexpected {ch!r}; expected a digit, '*', '#', 'x', '[', '<', '.', 'T', "
                "'S', 'L' or '|'",
                source,
                i,
            )
    if outer and not closed:
        raise DialPlanError("missing ')'", source, n)
    if not closed:
        finish(n)
    return tuple(patterns)


def _parse_substitution(source: str, start: int) -> tuple[str, str, int]:
    """Parse ``<a:b>`` beginning at `start`; return a, b and the index after '>'."""
    end = source.find(">", start)
    if end < 0:
        raise DialPlanError("missing '>'", source, start)
    body = source[start + 1:end]
    colon = body.find(":")
    if colon < 0:
        raise DialPlanError("expected '<digits:digits>' with a ':'", source, start)
    matched, sent = body[:colon], body[colon + 1:]
    for offset, ch in enumerate(matched):
        if ch not in DIALLABLE:
            raise DialPlanError(f"unexpected {ch!r} before ':' in '<...>'; expected digits, "
                                "'*' or '#'", source, start + 1 + offset)
    for offset, ch in enumerate(sent):
        if ch not in _INSERTABLE:
            raise DialPlanError(f"unexpected {ch!r} after ':' in '<...>'; expected digits, "
                                "'*', '#' or '+'", source, start + 2 + colon + offset)
    if not matched and not sent:
        raise DialPlanError("empty '<:>'", source, start)
    return matched, sent, end + 1


def _parse_set(source: str, start: int) -> tuple[frozenset[str], int]:
    """Parse ``[...]`` beginning at `start`; return its characters and the index after ']'."""
    n = len(source)
    chars: set[str] = set()
    i = start + 1
    while i < n and source[i] != "]":
        ch = source[i]
        if ch not in DIALLABLE:
            raise DialPlanError(f"unexpected {ch!r} in '[...]'; expected a digit, '*' or '#'",
                                source, i)
        if i + 1 < n and source[i + 1] == "-":
            if ch not in _ANY_DIGIT:
                raise DialPlanError(f"a range must start with a digit 0-9, not {ch!r}", source, i)
            if i + 2 >= n or source[i + 2] not in _ANY_DIGIT:
                raise DialPlanError("expected a digit 0-9 after '-'", source, i + 2)
            hi = source[i + 2]
            if hi < ch:
                raise DialPlanError(f"range {ch}-{hi} runs backwards", source, i)
            chars.update(str(d) for d in range(int(ch), int(hi) + 1))
            i += 3
        else:
            chars.add(ch)
            i += 1
    if i >= n:
        raise DialPlanError("missing ']'", source, start)
    if not chars:
        raise DialPlanError("empty '[]'", source, start)
    return frozenset(chars), i + 1
