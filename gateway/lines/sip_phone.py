"""The call state machine of one local SIP phone (a softphone or desk phone at the branch).

The box is a back-to-back user agent for its phones: a phone's call is two legs, the SIP
dialog with the phone and whatever the router joined it to (an FXS line, another phone, a
trunk, a modem). This machine is the phone's side of that, with the `PortMachine` shape
the runtime drives every port through, so the existing call paths work for a phone
unchanged.

Pure and sans-IO. Two kinds of input, two kinds of output:

- From the runtime (`PortMachine`): `incoming_call`, `call_progress`, `call_answered`,
  `call_ended`, `incoming_cancelled`, `set_call_id`, `dtmf_digit` (a digit the phone sent).
  Out through `actions()`: the runtime's verbs (`PlaceCall`, `AnswerCall`, `RejectCall`,
  `HangUp`, `CancelCall`, `ConnectAudio`, `SendDigit`, `StateChanged`).
- From the phone's SIP dialogs (fed by gateway.runtime.phones): `phone_dialled`,
  `phone_answered`, `phone_refused`, `phone_hung_up`. Out through `signals()`: what to
  tell the phone (`RingPhone`: INVITE its bindings; `AlertPhone`, `AnswerPhone`,
  `RefusePhone`, `ByePhone`, `CancelPhone`). When `on_signal` is set, `actions()` hands
  the signals to it first, in order (the runtime's pump only drains `actions()`).

One call at a time: a phone in a call is busy to the next caller (486); the phone itself
shows its own call waiting if it has any.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.lines import events as lev

__all__ = [
    "AlertPhone",
    "AnswerPhone",
    "ByePhone",
    "CancelPhone",
    "PhoneSignal",
    "RefusePhone",
    "RingPhone",
    "SipPhoneLine",
]

NO_ANSWER_TIMEOUT = 60.0
"""s a call for the phone may ring before the box gives up with 480."""

DTMF_DIGITS = frozenset("0123456789*#ABCD")


# ---------------------------------------------------------------- signals to the phone


@dataclass(frozen=True, slots=True)
class RingPhone:
    """A call for the phone: INVITE every binding it registered (first answer wins)."""

    call_id: str
    caller: str
    caller_name: str | None


@dataclass(frozen=True, slots=True)
class CancelPhone:
    """The call for the phone is off before it answered: CANCEL every fork."""


@dataclass(frozen=True, slots=True)
class AlertPhone:
    """The far end of the phone's call is alerting: 180 (183 with our SDP: early media)."""

    early_media: bool


@dataclass(frozen=True, slots=True)
class AnswerPhone:
    """The far end of the phone's call answered: 200 with our SDP."""


@dataclass(frozen=True, slots=True)
class RefusePhone:
    """The phone's call failed before answer: this final status to its INVITE."""

    status: int


@dataclass(frozen=True, slots=True)
class ByePhone:
    """The far end hung up a connected call: BYE to the phone."""


PhoneSignal = RingPhone | CancelPhone | AlertPhone | AnswerPhone | RefusePhone | ByePhone


def refusal_status(status: int | None) -> int:
    """The final status for the phone's INVITE when its call failed with `status`."""
    if status is not None and 400 <= status <= 699:
        return status
    return 480  # timeouts, transport errors, "remote hangup" before answer


class SipPhoneLine:
    """One local phone's current call; see the module docstring."""

    def __init__(self, name: str, *, no_answer_timeout: float = NO_ANSWER_TIMEOUT) -> None:
        self.name = name
        self.no_answer_timeout = no_answer_timeout
        self._state = lev.LineState.IDLE
        self._call_id: str | None = None
        self._outgoing = False  # the phone placed this call (else it is for the phone)
        self._actions: list[lev.Action] = []
        self._signals: list[PhoneSignal] = []
        self._ring_deadline: float | None = None
        self.on_signal: Callable[[PhoneSignal], None] | None = None
        """Where `actions()` hands the signals (the runtime's phone side); None: keep them
        for `signals()`."""
        self.on_change: Callable[[], None] | None = None
        """Called whenever an action or a signal is queued or the deadline changes, so the
        runtime visits only the phones that have something to do (None: nobody asks)."""

    # --- PortMachine: state ------------------------------------------------------------

    @property
    def state(self) -> lev.LineState:
        return self._state

    @property
    def call_id(self) -> str | None:
        return self._call_id

    @property
    def outgoing(self) -> bool:
        """The current call was placed by the phone."""
        return self._outgoing

    def _set_state(self, state: lev.LineState) -> None:
        if state is not self._state:
            self._state = state
            self._queue(lev.StateChanged(state))

    def _queue(self, action: lev.Action) -> None:
        self._actions.append(action)
        if self.on_change is not None:
            self.on_change()

    def _signal(self, signal: PhoneSignal) -> None:
        self._signals.append(signal)
        if self.on_change is not None:
            self.on_change()

    def _set_deadline(self, deadline: float | None) -> None:
        if deadline != self._ring_deadline:
            self._ring_deadline = deadline
            if self.on_change is not None:
                self.on_change()

    def _idle(self) -> None:
        self._call_id = None
        self._outgoing = False
        self._set_deadline(None)
        self._set_state(lev.LineState.IDLE)

    # --- from the phone ----------------------------------------------------------------

    def phone_dialled(self, number: str, now: float) -> lev.IncomingResult:
        """The phone sent an INVITE for `number`: place it (BUSY: it is in a call already)."""
        if self._state is not lev.LineState.IDLE:
            return lev.IncomingResult.BUSY
        self._outgoing = True
        self._call_id = None
        self._set_state(lev.LineState.CALLING)
        self._queue(lev.PlaceCall(number))
        return lev.IncomingResult.ACCEPTED

    def phone_answered(self, now: float) -> None:
        """One of the phone's bindings answered the call for it."""
        if self._state is not lev.LineState.RINGING or self._call_id is None:
            return
        self._set_deadline(None)
        self._set_state(lev.LineState.CONNECTED)
        self._queue(lev.AnswerCall(self._call_id))
        self._queue(lev.ConnectAudio(self._call_id))

    def phone_refused(self, status: int, now: float) -> None:
        """Every binding refused the call for the phone, or it has none (480)."""
        if self._state is not lev.LineState.RINGING or self._call_id is None:
            return
        self._queue(lev.RejectCall(self._call_id, status))
        self._idle()

    def phone_hung_up(self, now: float) -> None:
        """The phone ended its dialog: BYE, or CANCEL of the INVITE it sent."""
        call_id = self._call_id
        match self._state:
            case lev.LineState.IDLE:
                return
            case lev.LineState.CONNECTED if call_id is not None:
                self._queue(lev.HangUp(call_id))
            case lev.LineState.RINGING if call_id is not None:
                self._queue(lev.RejectCall(call_id, 480))
            case _ if self._outgoing:
                self._queue(lev.CancelCall(call_id))
        self._idle()

    # --- PortMachine: from the runtime -------------------------------------------------

    def incoming_call(
        self, call_id: str, caller: str, caller_name: str | None, now: float
    ) -> lev.IncomingResult:
        """A call for the phone: ring its bindings; BUSY (in a call already) means
        `RejectCall(call_id, 486)` was emitted, as an FXS line does."""
        if self._state is not lev.LineState.IDLE:
            self._queue(lev.RejectCall(call_id, 486))
            return lev.IncomingResult.BUSY
        self._call_id = call_id
        self._outgoing = False
        self._set_deadline(now + self.no_answer_timeout)
        self._set_state(lev.LineState.RINGING)
        self._signal(RingPhone(call_id, caller, caller_name))
        return lev.IncomingResult.ACCEPTED

    def call_progress(self, status: int, now: float, early_media: bool = False) -> None:
        if not self._outgoing or self._state not in (lev.LineState.CALLING,
                                                     lev.LineState.RINGBACK):
            return
        if early_media:
            self._set_state(lev.LineState.EARLY_MEDIA)
            self._signal(AlertPhone(True))
            if self._call_id is not None:
                self._queue(lev.ConnectAudio(self._call_id))
        elif self._state is lev.LineState.CALLING:
            self._set_state(lev.LineState.RINGBACK)
            self._signal(AlertPhone(False))

    def call_answered(self, now: float) -> None:
        if not self._outgoing or self._state not in (
                lev.LineState.CALLING, lev.LineState.RINGBACK, lev.LineState.EARLY_MEDIA):
            return
        self._set_state(lev.LineState.CONNECTED)
        self._signal(AnswerPhone())
        if self._call_id is not None:
            self._queue(lev.ConnectAudio(self._call_id))

    def call_ended(self, reason: str, status: int | None, now: float) -> None:
        match self._state:
            case lev.LineState.IDLE:
                return
            case lev.LineState.CONNECTED:
                self._signal(ByePhone())
            case lev.LineState.RINGING:
                self._signal(CancelPhone())
            case _:
                self._signal(RefusePhone(refusal_status(status)))
        self._idle()

    def incoming_cancelled(self, now: float) -> None:
        if self._state is lev.LineState.RINGING:
            self._signal(CancelPhone())
            self._idle()

    def set_call_id(self, call_id: str) -> None:
        self._call_id = call_id

    def dtmf_digit(self, digit: str, now: float) -> None:
        """A digit the phone sent (RFC 4733 or SIP INFO): on to the other leg."""
        if digit in DTMF_DIGITS and self._call_id is not None and self._state in (
                lev.LineState.CONNECTED, lev.LineState.EARLY_MEDIA):
            self._queue(lev.SendDigit(self._call_id, digit))

    # --- timers and output ---------------------------------------------------------------

    def get_timer(self) -> float | None:
        return self._ring_deadline

    def handle_timer(self, now: float) -> None:
        if self._ring_deadline is not None and now >= self._ring_deadline:
            self._set_deadline(None)
            if self._state is lev.LineState.RINGING and self._call_id is not None:
                self._signal(CancelPhone())
                self._queue(lev.RejectCall(self._call_id, 480))
                self._idle()

    def signals(self) -> list[PhoneSignal]:
        """Every signal for the phone queued since the last call, oldest first."""
        out, self._signals = self._signals, []
        return out

    def actions(self) -> list[lev.Action]:
        if not self._actions and not self._signals:
            return []  # the common case: the pump asks every port after every input
        if self.on_signal is not None:
            for signal in self.signals():
                self.on_signal(signal)
        out, self._actions = self._actions, []
        return out
