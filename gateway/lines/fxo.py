"""The call state machine of one analog exchange line (FXO): the gateway is the telephone.

Pure and sans-IO. The port feeds it what its hardware and its audio detectors saw, each
with `now`: ring bursts (`ring`), line polarity (`polarity`), loop current (`loop_current`),
call-progress tones heard on the line (`tone`: dial, busy, reorder) and a caller ID decoded
from the on-hook audio (`caller_id`). It answers with actions: `SetHook` (the hook relay),
`DialDigit` (a DTMF digit to send down the line), `IncomingOffer` (a call rings here), and
the runtime's own call actions (`AnswerCall`, `ConnectAudio`, `HangUp`, `CancelCall`,
`RejectCall`, `StateChanged`). One timer: `get_timer()` / `handle_timer(now)`.

Incoming: a ring burst counts once it lasted `ring_min` (shorter ones are spikes, an
extension's tinkle). The call is offered at once when a caller ID is already known (ETSI
sends it before the first ring, after a polarity reversal or a DT-AS) or when the line sends
none (`wait_callerid` off), else when the caller ID arrives in the silent interval after
the first ring (Bellcore) or, at the latest, when the second ring starts. No ring for
`ring_timeout`: the caller gave up. The line is seized only when the other leg answers.

Outgoing (`place`): seize, wait for dial tone (or `dial_delay` in "delay" mode), send the
digits as DTMF, then the call counts as answered at once ("dialled": most exchange lines
say nothing about the answer), at the polarity reversal the exchange sends on answer
("polarity"), or when sound that is no call-progress tone follows the ringback ("voice":
the port's energy detector reports it as the tone "voice").

Disconnect supervision while the line is held: busy or reorder tone, loop current gone for
longer than `loop_drop`, or a polarity reversal (the one after the answer reversal). After
every release the line rests for `release_guard` (the exchange must see the on-hook before
the next seize; rings in that time are the old call's tail) before it takes a call again.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

from gateway.lines import events as lev

__all__ = [
    "DialDigit",
    "FxoAction",
    "FxoLine",
    "FxoSettings",
    "FxoState",
    "IncomingOffer",
    "SetHook",
]

DIGITS = frozenset("0123456789*#ABCD")
ANSWER_MODES = ("dialled", "polarity", "voice")
"""How an outgoing call counts as answered; see `FxoSettings.answer`."""


class FxoState(Enum):
    IDLE = "idle"
    RINGING = "ringing"
    """Ring bursts seen; offered to the runtime once the caller ID is known (or given up)."""
    SEIZED = "seized"
    """Off-hook for an outgoing call, waiting for dial tone (or the dial delay)."""
    DIALLING = "dialling"
    CALLING = "calling"
    """Digits sent, waiting for the answer reversal."""
    CONNECTED = "connected"
    GUARD = "guard"
    """Released; resting before the line may be seized or offered again."""


_LINE_STATE = {
    FxoState.IDLE: lev.LineState.IDLE,
    FxoState.RINGING: lev.LineState.RINGING,
    FxoState.SEIZED: lev.LineState.CALLING,
    FxoState.DIALLING: lev.LineState.COLLECTING,
    FxoState.CALLING: lev.LineState.RINGBACK,
    FxoState.CONNECTED: lev.LineState.CONNECTED,
    FxoState.GUARD: lev.LineState.WAIT_ONHOOK,
}


@dataclass(frozen=True)
class FxoSettings:
    """Timing and supervision choices of one exchange line (seconds)."""

    ring_min: float = 0.15
    ring_timeout: float = 6.5
    """No ring burst for this long: the caller gave up (longer than the cadence's pause)."""
    wait_callerid: bool = True
    callerid_window: float = 4.0
    """A caller ID heard this long before the first ring belongs to its call (ETSI)."""
    dial_mode: Literal["tone", "delay"] = "tone"
    dial_tone_timeout: float = 3.0
    dial_delay: float = 2.0
    digit_on: float = 0.1
    digit_off: float = 0.1
    answer: Literal["dialled", "polarity", "voice"] = "dialled"
    answer_timeout: float = 60.0
    loop_drop: float = 0.25
    """Loop current must be gone this long to count as the far end hanging up (CPC)."""
    reversal_disconnect: bool = True
    seize_guard: float = 0.3
    """After seizing, loop and polarity changes settle this long before they count."""
    release_guard: float = 1.0

    def __post_init__(self) -> None:
        for name in ("ring_min", "ring_timeout", "callerid_window", "dial_tone_timeout",
                     "dial_delay", "digit_on", "digit_off", "answer_timeout", "loop_drop",
                     "seize_guard", "release_guard"):
            if getattr(self, name) < 0:
                raise ValueError(f"FxoSettings.{name}: expected seconds >= 0")
        if self.dial_mode not in ("tone", "delay"):
            raise ValueError("FxoSettings.dial_mode: expected 'tone' or 'delay'")
        if self.answer not in ANSWER_MODES:
            raise ValueError("FxoSettings.answer: expected 'dialled', 'polarity' or 'voice'")
        if self.digit_on < 0.04:
            raise ValueError("FxoSettings.digit_on: expected >= 0.04 s (DTMF needs 40 ms)")


@dataclass(frozen=True)
class SetHook:
    """Close (True: seize, answer) or open (False: release) the line's hook relay."""

    off: bool


@dataclass(frozen=True)
class DialDigit:
    """Send one DTMF digit down the line for `seconds`."""

    digit: str
    seconds: float


@dataclass(frozen=True)
class IncomingOffer:
    """A call rings on the line: `caller` is its caller ID number (None: unknown/withheld)."""

    caller: str | None
    name: str | None
    withheld: bool = False


FxoAction = lev.Action | SetHook | DialDigit | IncomingOffer

_TONES = frozenset({"dial", "busy", "reorder", "ringback", "voice"})


class FxoLine:
    """One exchange line; see the module docstring for the flows."""

    def __init__(self, name: str, settings: FxoSettings | None = None) -> None:
        self.name = name
        self.settings = settings or FxoSettings()
        self._state = FxoState.IDLE
        self._actions: list[FxoAction] = []
        self._timers: dict[str, float] = {}
        self._call_id: str | None = None
        self.reversed = False
        """The line's polarity as last reported."""
        self.loop: bool | None = None
        """Loop current as last reported (None: the hardware cannot tell)."""
        self._cid: tuple[str | None, str | None, bool, float] | None = None
        self._reset_call()

    def _reset_call(self) -> None:
        self._ring_on_at: float | None = None  # start of a burst not validated yet
        self._in_burst = False
        self._rings = 0
        self._offered = False
        self._number = ""
        self._next_digit = 0
        self._seized_at = 0.0
        self._seize_polarity = False
        self._ringback_heard = False
        self.end_reason: str | None = None
        """Why the last call ended on the line's side (for logs and tests)."""

    # --- PortMachine --------------------------------------------------------------------

    @property
    def state(self) -> lev.LineState:
        return _LINE_STATE[self._state]

    @property
    def fxo_state(self) -> FxoState:
        return self._state

    @property
    def call_id(self) -> str | None:
        return self._call_id

    @property
    def off_hook(self) -> bool:
        """Whether the line is held (the hook relay closed)."""
        return self._state in (FxoState.SEIZED, FxoState.DIALLING, FxoState.CALLING,
                               FxoState.CONNECTED)

    @property
    def number(self) -> str:
        """The number being dialled or dialled for the current outgoing call."""
        return self._number

    def set_call_id(self, call_id: str) -> None:
        self._call_id = call_id

    def incoming_call(self, call_id: str, caller: str, caller_name: str | None,
                      now: float) -> lev.IncomingResult:
        """A call for the line with no number to dial: use `place` instead."""
        return lev.IncomingResult.BUSY

    def place(self, call_id: str, number: str, now: float) -> lev.IncomingResult:
        """Seize the line and dial `number` for the runtime call `call_id`; BUSY when the
        line is ringing, in a call or resting after one."""
        if not number or any(c not in DIGITS for c in number):
            raise ValueError(f"fxo {self.name}: cannot dial {number!r}: 0-9, *, #, A-D only")
        if self._state is not FxoState.IDLE or self._ring_on_at is not None:
            return lev.IncomingResult.BUSY
        self._reset_call()
        self._call_id = call_id
        self._number = number
        self._seize(now)
        self._set(FxoState.SEIZED)
        if self.settings.dial_mode == "delay":
            self._timers["dial"] = now + self.settings.dial_delay
        else:
            self._timers["dial_tone"] = now + self.settings.dial_tone_timeout
        return lev.IncomingResult.ACCEPTED

    def call_progress(self, status: int, now: float, early_media: bool = False) -> None:
        """The other leg is alerting: the exchange caller already hears its ringback."""

    def call_answered(self, now: float) -> None:
        """The other leg answered the call ringing here: seize the line, connect audio."""
        if self._state is not FxoState.RINGING or self._call_id is None:
            return
        self._seize(now)
        self._timers.clear()
        self._set(FxoState.CONNECTED)
        self._actions.append(lev.ConnectAudio(self._call_id))

    def call_ended(self, reason: str, status: int | None, now: float) -> None:
        """The other leg ended or refused the call: release the line (if held)."""
        self._call_id = None
        if self._state is FxoState.RINGING:
            return  # refused before answer: let it ring out, never offered twice
        if self.off_hook:
            self._release("other leg ended: " + reason, now)

    def incoming_cancelled(self, now: float) -> None:
        self.call_ended("cancelled", None, now)

    def hang_up(self, now: float) -> None:
        """Our side ends the call."""
        self.call_ended("local hang-up", None, now)

    def dtmf_digit(self, digit: str, now: float) -> None:
        """Digits heard on the line are not ours to act on."""

    # --- hardware and detector inputs ----------------------------------------------------

    def ring(self, on: bool, now: float) -> None:
        """Ring voltage present (True) or gone (False), as the ring detector saw it."""
        if on:
            if self._ring_on_at is None and not self._in_burst:
                self._ring_on_at = now
                self._timers["ring_valid"] = now + self.settings.ring_min
            return
        self._timers.pop("ring_valid", None)
        self._ring_on_at = None
        if self._in_burst:
            self._in_burst = False
            if self._state is FxoState.RINGING:
                self._timers["ring_gap"] = now + self.settings.ring_timeout

    def polarity(self, reversed: bool, now: float) -> None:
        """The line's polarity changed (answer supervision, disconnect, ETSI caller ID)."""
        if reversed == self.reversed:
            return
        self.reversed = reversed
        settled = now - self._seized_at >= self.settings.seize_guard
        if self._state is FxoState.CALLING and self.settings.answer == "polarity":
            self._answered()
        elif self._state is FxoState.CONNECTED and self.settings.reversal_disconnect:
            if settled:
                self._far_end_gone("polarity reversal", now)
            else:  # a seize can glitch the polarity: look again once it has settled
                self._timers["polarity_check"] = self._seized_at + self.settings.seize_guard

    def loop_current(self, present: bool, now: float) -> None:
        """Loop current through the held line came (True) or went (False)."""
        self.loop = present
        if present:
            self._timers.pop("loop_drop", None)
        elif self.off_hook:
            start = max(now, self._seized_at + self.settings.seize_guard)
            self._timers.setdefault("loop_drop", start + self.settings.loop_drop)

    def tone(self, name: str, now: float) -> None:
        """A call-progress tone recognised on the line's audio (with its cadence): dial,
        busy, reorder, ringback, or "voice" (sound that is none of them, held)."""
        if name not in _TONES:
            return
        if name in ("ringback", "voice"):
            if self._state is FxoState.CALLING and self.settings.answer == "voice":
                if name == "ringback":
                    self._ringback_heard = True
                elif self._ringback_heard:
                    self._answered()  # sound after the ringback stopped: someone answered
            return
        if name == "dial" and self._state is FxoState.SEIZED:
            self._timers.pop("dial_tone", None)
            self._start_dialling(now)
        elif name in ("busy", "reorder"):
            if self._state in (FxoState.SEIZED, FxoState.DIALLING, FxoState.CALLING):
                status = 486 if name == "busy" else 503
                self._failed(f"{name} tone", status, now)
            elif self._state is FxoState.CONNECTED:
                self._far_end_gone(f"{name} tone", now)
        elif name == "dial" and self._state is FxoState.CONNECTED:
            self._far_end_gone("dial tone", now)  # some exchanges give dial tone after a clear

    def caller_id(self, number: str | None, name: str | None, withheld: bool,
                  now: float) -> None:
        """A caller ID message decoded from the on-hook line."""
        if self.off_hook or self._state is FxoState.GUARD:
            return
        self._cid = (number, name, withheld, now)
        if self._state is FxoState.RINGING and not self._offered:
            self._offer()

    # --- timers --------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        return min(self._timers.values(), default=None)

    def handle_timer(self, now: float) -> None:
        for kind, _ in sorted(self._timers.items(), key=lambda kv: kv[1]):
            due = self._timers.get(kind)
            if due is None or due > now:
                continue
            del self._timers[kind]
            self._timer(kind, now)

    def _timer(self, kind: str, now: float) -> None:
        if kind == "ring_valid" and self._ring_on_at is not None:
            self._ring_on_at = None
            self._ring_burst(now)
        elif kind == "ring_gap" and self._state is FxoState.RINGING:
            self._caller_gone(now)
        elif kind == "dial_tone" and self._state is FxoState.SEIZED:
            self._failed("no dial tone", 503, now)
        elif kind == "dial" and self._state is FxoState.SEIZED:
            self._start_dialling(now)
        elif kind == "digit" and self._state is FxoState.DIALLING:
            self._send_digit(now)
        elif kind == "answer" and self._state is FxoState.CALLING:
            self._failed("no answer", 480, now)
        elif kind == "loop_drop" and self.off_hook and self.loop is False:
            if self._state is FxoState.CONNECTED:
                self._far_end_gone("loop current lost", now)
            else:
                self._failed("no loop current", 503, now)
        elif kind == "polarity_check" and self._state is FxoState.CONNECTED:
            if self.reversed != self._seize_polarity:
                self._far_end_gone("polarity reversal", now)
        elif kind == "guard" and self._state is FxoState.GUARD:
            self._reset_call()
            self._set(FxoState.IDLE)

    def actions(self) -> list[FxoAction]:
        out, self._actions = self._actions, []
        return out

    # --- transitions ---------------------------------------------------------------------

    def _ring_burst(self, now: float) -> None:
        """A ring burst lasted long enough to count."""
        self._in_burst = True
        self._timers.pop("ring_gap", None)
        if self._state is FxoState.IDLE:
            self._set(FxoState.RINGING)
            self._rings = 1
            cid = self._cid
            fresh = cid is not None and now - cid[3] <= self.settings.callerid_window
            if not fresh:
                self._cid = None
            if fresh or not self.settings.wait_callerid:
                self._offer()
            return
        if self._state is FxoState.RINGING:
            self._rings += 1
            if not self._offered:
                self._offer()  # the second ring: no caller ID came with this call

    def _offer(self) -> None:
        self._offered = True
        cid = self._cid
        self._cid = None
        if cid is None:
            self._actions.append(IncomingOffer(None, None))
        else:
            self._actions.append(IncomingOffer(cid[0], cid[1], cid[2]))

    def _caller_gone(self, now: float) -> None:
        call_id = self._call_id
        self._call_id = None
        if call_id is not None:
            self._actions.append(lev.CancelCall(call_id))
        self._reset_call()
        self.end_reason = "caller gave up"
        self._set(FxoState.IDLE)

    def _start_dialling(self, now: float) -> None:
        self._set(FxoState.DIALLING)
        self._next_digit = 0
        self._send_digit(now)

    def _send_digit(self, now: float) -> None:
        s = self.settings
        if self._next_digit >= len(self._number):
            self._set(FxoState.CALLING)
            if s.answer == "dialled":
                self._answered()
            else:
                self._timers["answer"] = now + s.answer_timeout
            return
        digit = self._number[self._next_digit]
        self._next_digit += 1
        self._actions.append(DialDigit(digit, s.digit_on))
        self._timers["digit"] = now + s.digit_on + s.digit_off

    def _answered(self) -> None:
        self._timers.pop("answer", None)
        self._set(FxoState.CONNECTED)
        if self._call_id is not None:
            self._actions.append(lev.AnswerCall(self._call_id))
            self._actions.append(lev.ConnectAudio(self._call_id))

    def _failed(self, reason: str, status: int, now: float) -> None:
        """An outgoing call failed before the answer."""
        call_id = self._call_id
        self._call_id = None
        self._release(reason, now)
        if call_id is not None:
            self._actions.append(lev.RejectCall(call_id, status))

    def _far_end_gone(self, reason: str, now: float) -> None:
        call_id = self._call_id
        self._call_id = None
        self._release(reason, now)
        if call_id is not None:
            self._actions.append(lev.HangUp(call_id))

    def _seize(self, now: float) -> None:
        self._seized_at = now
        self._seize_polarity = self.reversed
        self._timers.pop("loop_drop", None)
        if self.loop is False:  # no current on hook is normal; it must come once seized
            self._timers["loop_drop"] = now + self.settings.seize_guard + self.settings.loop_drop
        self._actions.append(SetHook(True))

    def _release(self, reason: str, now: float) -> None:
        self._timers.clear()
        self._actions.append(SetHook(False))
        self._reset_call()
        self.end_reason = reason
        self._set(FxoState.GUARD)
        self._timers["guard"] = now + self.settings.release_guard

    def _set(self, state: FxoState) -> None:
        if state is not self._state:
            self._state = state
            self._actions.append(lev.StateChanged(_LINE_STATE[state]))
