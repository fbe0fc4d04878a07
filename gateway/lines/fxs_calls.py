"""The FXS line's second call: call waiting, hold and swap, consultation, a three-way
conference and the handset side of transfer. `FxsLine` (gateway/lines/fxs.py) mixes this
in; its ``_handle`` decides when, these methods say what.

The conventions are the ones Cisco SPA and Grandstream ATAs (and Bellcore CLASS lines)
taught their users, so a handset behaves as it did on the old box:

- A second call while talking is offered (180) and heard as the call-waiting tone, with
  type-2 (off-hook) caller ID when the phone acknowledges the alerting signal. Flash
  answers it and holds the first call; every further flash swaps the two.
- Flash in a single call holds it and gives dial tone for a consultation call. Flash while
  that call is still being dialled, ringing or has failed drops it and returns to the held
  call.
- Flash while the consultation call is connected joins all three (mixed locally); flash in
  the conference drops the consultation party again. Hanging up ends the conference.
- Hanging up with the consultation call connected transfers the held party to it
  (attended); hanging up while it is still ringing transfers the held party to the number
  dialled (blind) and drops the consultation call. Either way the runtime reports back
  with `FxsLine.transfer_result`; a failed transfer rings the phone with the held call.
- Hanging up with a call on hold otherwise (after call waiting, or with transfer off)
  rings the phone again (recall); picking up resumes the held call. Hanging up with a call
  waiting rings the phone for it like any incoming call.

Only the state is here: one optional second call (`OtherCall`), whether the two are mixed
and a transfer the runtime has not answered yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from gateway.lines.events import (
    AlertCallWaiting,
    AnswerCall,
    CallAnswered,
    CallEnded,
    CallProgress,
    CancelCall,
    ConnectAudio,
    DisconnectAudio,
    HangUp,
    HoldCall,
    IncomingCancelled,
    IncomingResult,
    LineState,
    MixCalls,
    ResumeCall,
    TimerKind,
    TransferCall,
)

if TYPE_CHECKING:
    from gateway.lines import PortMachine
    from gateway.lines.events import Action, LineInput, ToneName

__all__ = ["CallFeatures", "CallView", "OtherCall", "PendingTransfer"]

S = LineState
_WAITING_TIMERS = (TimerKind.CALL_WAITING, TimerKind.WAITING_NO_ANSWER)


@dataclass
class OtherCall:
    """The line's second call: offered and waiting, or answered and on hold."""

    call_id: str
    role: Literal["waiting", "held"]
    caller: tuple[str, str | None] | None = None
    consult: bool = False
    """The pair began with a flash and a dialled call (consultation): hanging up transfers."""


@dataclass(frozen=True)
class PendingTransfer:
    """A `TransferCall` the runtime has not reported on yet."""

    call_id: str
    caller: tuple[str, str | None] | None
    replaces: str | None


class CallFeatures:
    """What `FxsLine` does with two calls; see the module docstring for the conventions."""

    if TYPE_CHECKING:  # provided by FxsLine
        name: str
        no_answer_timeout: float
        ring_cadence: tuple[float, ...]
        _state: LineState
        _call_id: str | None
        _caller: tuple[str, str | None] | None
        _callerid_sent: bool
        _cadence_index: int
        _cadence: tuple[float, ...]
        _audio: bool
        _timers: dict[TimerKind, float]

        def _emit(self, action: Action) -> None: ...
        def _goto(self, state: LineState) -> None: ...
        def _go_idle(self) -> None: ...
        def _quiesce(self) -> None: ...
        def _connect_audio(self) -> None: ...
        def _set_ringing(self, on: bool) -> None: ...
        def _start_dial_tone(self, now: float) -> None: ...
        def _stop_tone(self) -> None: ...
        def _play(self, tone: ToneName) -> None: ...
        def _advance(self, now: float) -> None: ...
        def _handle(self, event: LineInput, now: float) -> None: ...

    call_waiting: bool
    call_waiting_caller_id: bool
    call_waiting_repeat: float
    three_way: bool
    transfer_on_hangup: bool
    _other: OtherCall | None
    _mixing: bool
    _recall: bool
    _transfer: PendingTransfer | None
    _released: list[str]
    _last_number: str

    def _init_features(self, *, call_waiting: bool, call_waiting_caller_id: bool,
                       call_waiting_repeat: float, three_way: bool,
                       transfer_on_hangup: bool) -> None:
        if not call_waiting_repeat > 0:
            raise ValueError(f"line {self.name!r}: call_waiting_repeat must be > 0 seconds, "
                             f"got {call_waiting_repeat!r}")
        self.call_waiting = call_waiting
        self.call_waiting_caller_id = call_waiting_caller_id
        self.call_waiting_repeat = call_waiting_repeat
        self.three_way = three_way
        self.transfer_on_hangup = transfer_on_hangup
        self._other = None
        self._mixing = False
        self._recall = False
        self._transfer = None
        self._released = []
        self._last_number = ""

    # ------------------------------------------------------------------ read-only view

    @property
    def other_call(self) -> OtherCall | None:
        """The second call (waiting or held), if any."""
        return self._other

    @property
    def conference(self) -> bool:
        """True while the handset and both far ends are mixed."""
        return self._mixing

    @property
    def pending_transfer(self) -> PendingTransfer | None:
        """A transfer asked for and not yet reported on."""
        return self._transfer

    def call_ids(self) -> tuple[str, ...]:
        """Every call this line is on (current first), for the runtime and status."""
        ids = [self._call_id] if self._call_id is not None else []
        if self._other is not None:
            ids.append(self._other.call_id)
        return tuple(ids)

    def for_call(self, call_id: str) -> PortMachine:
        """This line as the machine of one of its calls: call events name `call_id`."""
        return CallView(self, call_id)

    def transfer_result(self, ok: bool, now: float) -> None:
        """How the `TransferCall` went: on success the line forgets the calls; on failure
        the user gets the transferred call back (the phone rings with it)."""
        self._advance(now)
        pending, self._transfer = self._transfer, None
        if pending is None:
            return
        if ok:
            return
        if pending.replaces is not None:
            self._release(HangUp(pending.replaces))
        back = OtherCall(pending.call_id, "held", pending.caller)
        if self._state is S.IDLE:
            self._other = back
            self._start_recall(now)
        elif self._other is None:
            self._other = back  # the user is busy on the handset: flash gets it back
        else:
            self._release(HangUp(pending.call_id))

    # ------------------------------------------------------------------ helpers

    def _release(self, action: HangUp | CancelCall | TransferCall) -> None:
        """Emit an action that lets go of a call; later events for it are not ours."""
        if action.call_id is not None:
            self._released = [*self._released[-7:], action.call_id]
        self._emit(action)

    def _is_other(self, call_id: str | None) -> bool:
        return call_id is not None and self._other is not None and \
            call_id == self._other.call_id

    def _foreign(self, call_id: str | None) -> bool:
        """An event for a call the line already let go of (hung up, transferred)."""
        return call_id is not None and call_id != self._call_id and call_id in self._released

    def _hold_current(self) -> str:
        call_id = self._call_id
        assert call_id is not None
        self._emit(HoldCall(call_id))
        if self._audio:
            self._audio = False
            self._emit(DisconnectAudio(call_id))
        return call_id

    def _stop_waiting_timers(self) -> None:
        for kind in _WAITING_TIMERS:
            self._timers.pop(kind, None)

    # ------------------------------------------------------------------ call waiting

    def _may_wait(self) -> bool:
        return self.call_waiting and self._other is None and not self._mixing

    def _offer_waiting(self, call_id: str, caller: str, name: str | None, now: float) -> None:
        self._other = OtherCall(call_id, "waiting", (caller, name))
        self._emit(AlertCallWaiting(call_id, caller, name, self.call_waiting_caller_id))
        self._timers[TimerKind.CALL_WAITING] = now + self.call_waiting_repeat
        self._timers[TimerKind.WAITING_NO_ANSWER] = now + self.no_answer_timeout

    def _waiting_timer(self, kind: TimerKind, now: float) -> None:
        other = self._other
        if other is None or other.role != "waiting":
            return
        if kind is TimerKind.WAITING_NO_ANSWER:
            self._stop_waiting_timers()
            self._other = None
            from gateway.lines.events import RejectCall

            self._emit(RejectCall(other.call_id, 480))
            self._released = [*self._released[-7:], other.call_id]
            return
        if self._state is S.CONNECTED:  # the tone again, without caller ID this time
            caller, name = other.caller or ("", None)
            self._emit(AlertCallWaiting(other.call_id, caller, name, False))
        self._timers[TimerKind.CALL_WAITING] = now + self.call_waiting_repeat

    def _other_gone(self, now: float) -> None:
        """The waiting caller gave up, or the held party hung up."""
        self._stop_waiting_timers()
        self._other = None
        if self._mixing:
            self._mixing = False
            self._emit(MixCalls(()))

    # ------------------------------------------------------------------ flash

    def _flash_connected(self, now: float) -> bool:
        """Flash in a connected call; False when the line has no feature for it."""
        other = self._other
        if self._mixing and other is not None:  # drop the consultation party
            self._mixing = False
            self._emit(MixCalls(()))
            current = self._call_id
            assert current is not None
            self._audio = False
            self._emit(DisconnectAudio(current))
            self._release(HangUp(current))
            self._take_other(other, resume=False)
            return True
        if other is not None and other.role == "waiting":
            self._stop_waiting_timers()
            held = self._hold_current()
            self._other = OtherCall(held, "held", self._caller)
            self._call_id, self._caller = other.call_id, other.caller
            self._emit(AnswerCall(other.call_id))
            self._connect_audio()
            return True
        if other is not None and other.consult and self.three_way:
            self._mixing = True
            current = self._call_id
            assert current is not None
            self._emit(ResumeCall(other.call_id))
            self._emit(MixCalls((current, other.call_id)))
            return True
        if other is not None:  # swap
            held = self._hold_current()
            self._other = OtherCall(held, "held", self._caller, other.consult)
            self._take_other(other, resume=True, keep_other=True)
            return True
        if not self.three_way:
            return False
        held = self._hold_current()
        self._other = OtherCall(held, "held", self._caller, consult=True)
        self._call_id = None
        self._start_dial_tone(now)
        return True

    def _take_other(self, other: OtherCall, *, resume: bool, keep_other: bool = False) -> None:
        """Make `other` the current call (answered or resumed), audio to the handset."""
        if not keep_other:
            self._other = None
        self._stop_tone()
        self._call_id, self._caller = other.call_id, other.caller
        if other.role == "waiting":
            self._stop_waiting_timers()
            self._emit(AnswerCall(other.call_id))
        elif resume:
            self._emit(ResumeCall(other.call_id))
        self._connect_audio()
        if self._state is not S.CONNECTED:
            self._goto(S.CONNECTED)

    def _flash_back(self, now: float) -> None:
        """Flash while dialling, ringing out or after a failure: back to the other call."""
        other = self._other
        assert other is not None
        if self._state in (S.CALLING, S.RINGBACK, S.EARLY_MEDIA):
            self._quiesce()
            self._release(CancelCall(self._call_id))
        else:
            self._quiesce()
        self._take_other(other, resume=True)

    # ------------------------------------------------------------------ hanging up

    def _hang_up_with_other(self, now: float) -> None:
        """On-hook with a second call: end the conference, transfer, or ring again."""
        other = self._other
        assert other is not None
        current = self._call_id
        outgoing = self._state in (S.CALLING, S.RINGBACK, S.EARLY_MEDIA)
        self._quiesce()
        if self._mixing:
            self._mixing = False
            self._emit(MixCalls(()))
            if current is not None:
                self._release(HangUp(current))
            self._release(HangUp(other.call_id))
            self._other = None
            self._go_idle()
            return
        transfer = other.role == "held" and other.consult and self.transfer_on_hangup
        if transfer and self._state is S.CONNECTED and current is not None:
            self._transfer = PendingTransfer(other.call_id, other.caller, current)
            self._other = None
            self._release(TransferCall(other.call_id, None, current))
            self._released.append(current)  # both calls are the transfer's now
            self._go_idle()
            return
        if transfer and outgoing and self._last_number:
            self._release(CancelCall(current))
            self._transfer = PendingTransfer(other.call_id, other.caller, None)
            self._other = None
            self._release(TransferCall(other.call_id, self._last_number, None))
            self._go_idle()
            return
        if self._state is S.CONNECTED and current is not None:
            self._release(HangUp(current))
        elif outgoing:
            self._release(CancelCall(current))
        self._start_recall(now)

    def _start_recall(self, now: float) -> None:
        """Ring the phone for the other call: a waiting one as it is, a held one to resume."""
        other = self._other
        assert other is not None
        self._other = None
        self._stop_waiting_timers()
        self._quiesce()
        self._call_id, self._caller = other.call_id, other.caller
        self._recall = other.role == "held"
        self._callerid_sent = False
        self._cadence_index = 0
        self._cadence = self.ring_cadence  # the line's own bell, whatever rang last
        self._goto(S.RINGING)
        self._set_ringing(True)
        self._timers[TimerKind.RING_CADENCE] = now + self._cadence[0]
        self._timers[TimerKind.NO_ANSWER] = now + self.no_answer_timeout

    def _answer_recall(self) -> None:
        call_id = self._call_id
        assert call_id is not None
        self._recall = False
        self._set_ringing(False)
        self._emit(ResumeCall(call_id))
        self._connect_audio()
        self._goto(S.CONNECTED)

    def _current_gone_in_conference(self) -> None:
        """A conference party hung up: the other one is the call now."""
        other = self._other
        assert other is not None
        self._mixing = False
        self._emit(MixCalls(()))
        self._other = None
        self._call_id, self._caller = other.call_id, other.caller
        self._emit(ConnectAudio(other.call_id))  # the port now hears this call
        self._audio = True


class CallView:
    """One call of an `FxsLine` as a `PortMachine`: the call events name that call."""

    def __init__(self, line: CallFeatures, call_id: str) -> None:
        self._line = line
        self._id = call_id

    @property
    def state(self) -> LineState:
        return self._line._state

    @property
    def call_id(self) -> str | None:
        return self._line._call_id

    def incoming_call(self, call_id: str, caller: str, caller_name: str | None,
                      now: float) -> IncomingResult:
        from gateway.lines.fxs import FxsLine

        assert isinstance(self._line, FxsLine)
        return self._line.incoming_call(call_id, caller, caller_name, now)

    def call_progress(self, status: int, now: float, early_media: bool = False) -> None:
        if not 100 <= status <= 199:
            raise ValueError(f"line {self._line.name!r}: call_progress needs a 1xx status, "
                             f"got {status}")
        self._line._advance(now)
        self._line._handle(CallProgress(status, early_media, self._id), now)

    def call_answered(self, now: float) -> None:
        self._line._advance(now)
        self._line._handle(CallAnswered(self._id), now)

    def call_ended(self, reason: str, status: int | None, now: float) -> None:
        self._line._advance(now)
        self._line._handle(CallEnded(reason, status, self._id), now)

    def incoming_cancelled(self, now: float) -> None:
        self._line._advance(now)
        self._line._handle(IncomingCancelled(self._id), now)

    def set_call_id(self, call_id: str) -> None:
        from gateway.lines.fxs import FxsLine

        assert isinstance(self._line, FxsLine)
        self._line.set_call_id(call_id)

    def dtmf_digit(self, digit: str, now: float) -> None:
        from gateway.lines.fxs import FxsLine

        assert isinstance(self._line, FxsLine)
        self._line.dtmf_digit(digit, now)

    def get_timer(self) -> float | None:
        from gateway.lines.fxs import FxsLine

        assert isinstance(self._line, FxsLine)
        return self._line.get_timer()

    def handle_timer(self, now: float) -> None:
        self._line._advance(now)

    def actions(self) -> list[Action]:
        from gateway.lines.fxs import FxsLine

        assert isinstance(self._line, FxsLine)
        return self._line.actions()
