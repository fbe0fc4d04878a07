"""Hook-switch decoding: off-hook, on-hook, hook flash and rotary (pulse) digits.

A SLIC only reports the raw loop state. Whether a break in the loop was a rotary dial
pulse, a hook flash or the handset going down is only known once the break ends, or once
it has lasted longer than the hang-up threshold. `HookDecoder` therefore takes raw edges
with their times and exposes a timer, like every other pure object in Branchline.

Timing (defaults follow common ATA practice and FIELD.md):

- breaks shorter than ``debounce`` are contact bounce and ignored, as are makes shorter
  than ``debounce`` in the middle of a break;
- a break of up to ``pulse_break_max`` is one dial pulse (rotary dials break for ~60 ms
  at ~10 pulses/s); the pulses of one digit end when the loop stays made for
  ``inter_digit_gap``; ten pulses are the digit "0";
- a break from ``flash_min`` up to ``flash_max`` is a hook flash;
- a break that reaches ``flash_max`` is a hang-up, reported the moment it reaches it;
- breaks between ``pulse_break_max`` and ``flash_min`` mean nothing and are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto

__all__ = [
    "Flash",
    "HookDecoder",
    "HookEvent",
    "HookSettings",
    "OffHook",
    "OnHook",
    "PulseDigit",
]


@dataclass(frozen=True, slots=True)
class HookSettings:
    """Thresholds (seconds) for reading the hook switch, so countries and installers can tune them."""

    debounce: float = 0.01
    pulse_break_max: float = 0.1
    flash_min: float = 0.1
    flash_max: float = 0.9
    inter_digit_gap: float = 0.25

    def __post_init__(self) -> None:
        if not 0.0 <= self.debounce < self.pulse_break_max:
            raise ValueError(
                f"hook settings: need 0 <= debounce < pulse_break_max, got "
                f"debounce={self.debounce}, pulse_break_max={self.pulse_break_max}"
            )
        if not self.pulse_break_max <= self.flash_min < self.flash_max:
            raise ValueError(
                f"hook settings: need pulse_break_max <= flash_min < flash_max, got "
                f"pulse_break_max={self.pulse_break_max}, flash_min={self.flash_min}, "
                f"flash_max={self.flash_max}"
            )
        if not self.inter_digit_gap > self.debounce:
            raise ValueError(
                f"hook settings: inter_digit_gap must exceed debounce, got "
                f"inter_digit_gap={self.inter_digit_gap}, debounce={self.debounce}"
            )


@dataclass(frozen=True, slots=True)
class OffHook:
    """The handset was lifted: start dial tone or answer a ringing call."""


@dataclass(frozen=True, slots=True)
class OnHook:
    """The handset was put down for longer than a flash: end whatever the line was doing."""


@dataclass(frozen=True, slots=True)
class Flash:
    """A short deliberate break while off-hook: the user asks for a feature (recall)."""


@dataclass(frozen=True, slots=True)
class PulseDigit:
    """A digit dialled on a rotary dial, to be handled exactly like a DTMF digit."""

    digit: str


HookEvent = OffHook | OnHook | Flash | PulseDigit


class _Phase(Enum):
    ON_HOOK = auto()  # reported on-hook, loop open
    LIFTING = auto()  # reported on-hook, loop closed but not yet for `debounce`
    MADE = auto()  # reported off-hook, loop closed
    BREAK = auto()  # reported off-hook, loop open: pulse, flash or hang-up?
    REMAKE = auto()  # reported off-hook, loop closed again after a break, not yet for `debounce`


class HookDecoder:
    """Turns raw hook edges into OffHook/OnHook/Flash/PulseDigit; pure, so it is tested with a fake clock."""

    def __init__(self, settings: HookSettings | None = None, *, offhook: bool = False) -> None:
        self.settings = settings if settings is not None else HookSettings()
        self._phase = _Phase.MADE if offhook else _Phase.ON_HOOK
        self._make_start = 0.0
        self._saved_make_start = 0.0
        self._break_start = 0.0
        self._break_end = 0.0
        self._pulses = 0

    @property
    def offhook(self) -> bool:
        """Whether the line is reported off-hook (short breaks do not count as on-hook)."""
        return self._phase in (_Phase.MADE, _Phase.BREAK, _Phase.REMAKE)

    def hook(self, offhook: bool, now: float) -> list[HookEvent]:
        """Feed one raw edge (the new loop state) seen at `now`; repeated levels are ignored."""
        events = self.handle_timer(now)
        if offhook:
            self._on_make(now)
        else:
            self._on_break(now)
        events.extend(self.handle_timer(now))  # a zero debounce resolves at once
        return events

    def get_timer(self) -> float | None:
        """When handle_timer must next be called, or None if nothing is pending."""
        s = self.settings
        match self._phase:
            case _Phase.LIFTING:
                return self._make_start + s.debounce
            case _Phase.MADE:
                return self._make_start + s.inter_digit_gap if self._pulses else None
            case _Phase.BREAK:
                return self._break_start + s.flash_max
            case _Phase.REMAKE:
                return self._break_end + s.debounce
            case _Phase.ON_HOOK:
                return None

    def handle_timer(self, now: float) -> list[HookEvent]:
        """Settle everything whose deadline is at or before `now`, in time order."""
        events: list[HookEvent] = []
        while (deadline := self.get_timer()) is not None and deadline <= now:
            self._expire(events)
        return events

    def _on_make(self, now: float) -> None:
        match self._phase:
            case _Phase.ON_HOOK:
                self._phase = _Phase.LIFTING
                self._make_start = now
            case _Phase.BREAK:
                if now - self._break_start < self.settings.debounce:
                    # Bounce: the make that was interrupted simply continues.
                    self._phase = _Phase.MADE
                    self._make_start = self._saved_make_start
                else:
                    self._phase = _Phase.REMAKE
                    self._break_end = now
            case _Phase.LIFTING | _Phase.MADE | _Phase.REMAKE:
                pass

    def _on_break(self, now: float) -> None:
        match self._phase:
            case _Phase.LIFTING:
                self._phase = _Phase.ON_HOOK  # never lifted for long enough
            case _Phase.MADE:
                self._phase = _Phase.BREAK
                self._break_start = now
                self._saved_make_start = self._make_start
            case _Phase.REMAKE:
                # Bounce in the middle of a break: it is still the same break.
                self._phase = _Phase.BREAK
            case _Phase.ON_HOOK | _Phase.BREAK:
                pass

    def _expire(self, events: list[HookEvent]) -> None:
        s = self.settings
        match self._phase:
            case _Phase.LIFTING:
                self._phase = _Phase.MADE
                self._pulses = 0
                events.append(OffHook())
            case _Phase.MADE:
                count, self._pulses = self._pulses, 0
                if 1 <= count <= 10:
                    events.append(PulseDigit("0" if count == 10 else str(count)))
            case _Phase.BREAK:
                self._phase = _Phase.ON_HOOK
                self._pulses = 0  # a half-dialled digit dies with the call
                events.append(OnHook())
            case _Phase.REMAKE:
                length = self._break_end - self._break_start
                self._phase = _Phase.MADE
                self._make_start = self._break_end
                if length < s.pulse_break_max:
                    self._pulses += 1
                else:
                    self._pulses = 0  # a long break spoils any digit being dialled
                    if length >= s.flash_min:
                        events.append(Flash())
            case _Phase.ON_HOOK:
                pass
