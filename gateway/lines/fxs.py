"""The call state machine of one FXS port (an analog phone on a SLIC).

Pure and sans-IO: the runtime feeds it hook edges, detected digits and SIP call events,
each with `now`, drains the actions it asks for (tones, ringing, SIP requests, audio
bridging) and re-arms a single timer from `get_timer()`.

Everything that changes the state lives in `FxsLine._handle`, one ``match`` over
(state, input) pairs; the helpers below it only emit actions. Inputs that make no sense in
the current state (a late 180 after the user hung up, a digit while ringing) are ignored,
because the network and the handset race each other all the time.
"""

from __future__ import annotations

from collections import deque

from gateway.dsp.pulse import Flash, HookDecoder, HookSettings, OffHook, OnHook, PulseDigit
from gateway.lines.events import (
    Action,
    AnswerCall,
    CallAnswered,
    CallEnded,
    CallProgress,
    CancelCall,
    ConnectAudio,
    DisconnectAudio,
    DtmfDigit,
    FlashHook,
    HangUp,
    IncomingCall,
    IncomingCancelled,
    IncomingResult,
    LineInput,
    LineState,
    LineUsageError,
    PlaceCall,
    PlayTone,
    RejectCall,
    SendCallerId,
    SendDigit,
    SendVmwi,
    SetRinging,
    StateChanged,
    StopTone,
    TimerFired,
    TimerKind,
    ToneName,
    TransferResult,
)
from gateway.lines.fxs_calls import CallFeatures
from gateway.routing.dialplan import DigitMap, MatchResult

__all__ = ["BUSY_STATUSES", "DTMF_DIGITS", "FxsLine"]

DTMF_DIGITS = frozenset("0123456789*#ABCD")
"""Digits `FxsLine.dtmf_digit` accepts."""

BUSY_STATUSES = frozenset({486, 600, 603})
"""Failure statuses answered with busy tone; every other failure gets reorder."""

S = LineState
_OUTGOING = (S.CALLING, S.RINGBACK, S.EARLY_MEDIA)


class FxsLine(CallFeatures):
    """One analog port's call state machine, driven with `now` so it is testable without a clock.

    A second call (call waiting, consultation, three-way conference, transfer) is
    gateway/lines/fxs_calls.py's; the call inputs take an optional `call_id` naming which
    of the line's calls they are about (None: the current one).
    """

    def __init__(
        self,
        name: str,
        *,
        digit_map: DigitMap,
        first_digit_timeout: float = 10.0,
        inter_digit_timeout: float = 5.0,
        short_inter_digit_timeout: float = 2.0,
        ring_cadence: tuple[float, ...] = (2.0, 4.0),
        no_answer_timeout: float = 120.0,
        offhook_warning_timeout: float = 30.0,
        hook_settings: HookSettings | None = None,
        call_waiting: bool = True,
        call_waiting_caller_id: bool = True,
        call_waiting_repeat: float = 10.0,
        three_way: bool = True,
        transfer_on_hangup: bool = True,
    ) -> None:
        for label, value in (
            ("first_digit_timeout", first_digit_timeout),
            ("inter_digit_timeout", inter_digit_timeout),
            ("short_inter_digit_timeout", short_inter_digit_timeout),
            ("no_answer_timeout", no_answer_timeout),
            ("offhook_warning_timeout", offhook_warning_timeout),
        ):
            if not value > 0:
                raise ValueError(f"line {name!r}: {label} must be > 0 seconds, got {value!r}")
        if not ring_cadence or len(ring_cadence) % 2 or not all(t > 0 for t in ring_cadence):
            raise ValueError(
                f"line {name!r}: ring_cadence must be on/off pairs of positive seconds, "
                f"got {ring_cadence!r}"
            )
        self.name = name
        self.digit_map = digit_map
        self.first_digit_timeout = first_digit_timeout
        self.inter_digit_timeout = inter_digit_timeout
        self.short_inter_digit_timeout = short_inter_digit_timeout
        self.ring_cadence = tuple(ring_cadence)
        self.no_answer_timeout = no_answer_timeout
        self.offhook_warning_timeout = offhook_warning_timeout

        self._hook = HookDecoder(hook_settings)
        self._state = S.IDLE
        self._actions: deque[Action] = deque()
        self._timers: dict[TimerKind, float] = {}
        self._digits = ""
        self._call_id: str | None = None
        self._caller: tuple[str, str | None] | None = None
        self._callerid_sent = False
        self._cadence_index = 0
        self._tone: ToneName | None = None
        self._ringing = False
        self._audio = False
        self._message_waiting = False
        self._cadence = self.ring_cadence  # the ringing call's bell (distinctive ring)
        self._offered_cadence: tuple[float, ...] | None = None
        self._vmwi_due = False  # the lamp changed while the line was busy
        self._init_features(
            call_waiting=call_waiting, call_waiting_caller_id=call_waiting_caller_id,
            call_waiting_repeat=call_waiting_repeat, three_way=three_way,
            transfer_on_hangup=transfer_on_hangup,
        )

    # ------------------------------------------------------------------ read-only view

    @property
    def state(self) -> LineState:
        """Current state, for the control socket and tests."""
        return self._state

    @property
    def digits(self) -> str:
        """Digits collected so far (or the number last placed), for logs and call records."""
        return self._digits

    @property
    def call_id(self) -> str | None:
        """Id of the call this line is on, if any."""
        return self._call_id

    @property
    def caller(self) -> tuple[str, str | None] | None:
        """(caller, display name) of the call offered to this line, for caller ID."""
        return self._caller

    # --------------------------------------------------------------------------- inputs

    def hook(self, offhook: bool, now: float) -> None:
        """Feed a raw hook-switch edge; flashes and rotary digits are decoded from these."""
        self._advance(now)
        for event in self._hook.hook(offhook, now):
            self._handle(event, now)

    def dtmf_digit(self, digit: str, now: float) -> None:
        """A DTMF digit detected in the handset's audio."""
        if digit not in DTMF_DIGITS:
            raise ValueError(f"line {self.name!r}: DTMF digit must be one of 0-9*#A-D, got {digit!r}")
        self._advance(now)
        self._handle(DtmfDigit(digit), now)

    def call_progress(self, status: int, now: float, early_media: bool = False, *,
                      call_id: str | None = None) -> None:
        """A provisional response to our call; `early_media` when it carried SDP to play."""
        if not 100 <= status <= 199:
            raise ValueError(f"line {self.name!r}: call_progress needs a 1xx status, got {status}")
        self._advance(now)
        self._handle(CallProgress(status, early_media, call_id), now)

    def call_answered(self, now: float, *, call_id: str | None = None) -> None:
        """Our outgoing call was answered."""
        self._advance(now)
        self._handle(CallAnswered(call_id), now)

    def call_ended(self, reason: str, status: int | None, now: float, *,
                   call_id: str | None = None) -> None:
        """The network ended a call: BYE (status None), a failure response or a timeout."""
        self._advance(now)
        self._handle(CallEnded(reason, status, call_id), now)

    def incoming_call(
        self, call_id: str, caller: str, caller_name: str | None, now: float, *,
        ring_cadence: tuple[float, ...] | None = None,
    ) -> IncomingResult:
        """Offer an incoming call; BUSY means the line already emitted RejectCall(call_id, 486).

        `ring_cadence` rings this call with its own bell cadence (distinctive ring from the
        call's Alert-Info) instead of the line's."""
        if ring_cadence is not None and (
                not ring_cadence or len(ring_cadence) % 2 or not all(t > 0 for t in ring_cadence)):
            raise ValueError(f"line {self.name!r}: ring_cadence must be on/off pairs of "
                             f"positive seconds, got {ring_cadence!r}")
        self._offered_cadence = tuple(ring_cadence) if ring_cadence is not None else None
        self._advance(now)
        self._handle(IncomingCall(call_id, caller, caller_name), now)
        if self._state is S.RINGING and self._call_id == call_id:
            return IncomingResult.ACCEPTED
        if self._is_other(call_id):
            return IncomingResult.ACCEPTED  # waiting: the caller hears ringing
        return IncomingResult.BUSY

    def incoming_cancelled(self, now: float, *, call_id: str | None = None) -> None:
        """The caller gave up before the phone was answered."""
        self._advance(now)
        self._handle(IncomingCancelled(call_id), now)

    def set_call_id(self, call_id: str) -> None:
        """Tell the line the id of the call its last PlaceCall created.

        Ignored when the line no longer waits for it (the user hung up first and the line
        emitted ``CancelCall(None)``).
        """
        if self._state in _OUTGOING and self._call_id is None:
            self._call_id = call_id

    def replace_call(self, old: str, new: str) -> bool:
        """The far end of the call `old` now talks over the call `new` (we were transferred
        with REFER, or an INVITE with Replaces took it over): later events name `new`.
        False when `old` is not the line's current call."""
        if self._call_id != old or old is None:
            return False
        self._call_id = new
        return True

    def set_message_waiting(self, waiting: bool) -> None:
        """Voicemail is waiting: dial tone becomes stutter tone, and the lamp (VMWI, on-hook
        FSK) is set now if the line is idle, else when it next goes idle."""
        self._message_waiting = waiting
        self._vmwi_due = True
        self._send_vmwi()

    def _send_vmwi(self) -> None:
        if self._vmwi_due and self._state is S.IDLE:
            self._vmwi_due = False
            self._emit(SendVmwi(self._message_waiting))

    @property
    def active_ring_cadence(self) -> tuple[float, ...]:
        """The bell cadence of the call ringing now (the line's own, or a distinctive one)."""
        return self._cadence

    def feature_done(self, ok: bool, now: float) -> None:
        """The runtime carried out (`ok`) or refused the feature code the last `PlaceCall`
        dialled (a star code, never a call): confirm tone, or reorder, until on-hook."""
        self._advance(now)
        if self._state is S.CALLING and self._call_id is None:
            self._fail("confirm" if ok else "reorder", now)

    def get_timer(self) -> float | None:
        """Earliest time handle_timer must be called, or None."""
        deadlines = list(self._timers.values())
        hook_deadline = self._hook.get_timer()
        if hook_deadline is not None:
            deadlines.append(hook_deadline)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Run every timer due at or before `now`, in time order."""
        self._advance(now)

    # -------------------------------------------------------------------------- outputs

    def next_action(self) -> Action | None:
        """Pop the oldest pending action, or None."""
        return self._actions.popleft() if self._actions else None

    def actions(self) -> list[Action]:
        """Drain every pending action, oldest first."""
        out = list(self._actions)
        self._actions.clear()
        return out

    # ----------------------------------------------------------------- state machine

    def _handle(self, event: LineInput, now: float) -> None:
        other = self._other is not None
        match (self._state, event):
            # A second call (gateway/lines/fxs_calls.py).
            case (_, CallProgress(call_id=c) | CallAnswered(call_id=c) | CallEnded(call_id=c)
                  | IncomingCancelled(call_id=c)) if self._foreign(c):
                pass  # a call the line let go of (hung up, transferred)
            case (_, CallEnded(call_id=c) | IncomingCancelled(call_id=c)) if self._is_other(c):
                self._other_gone(now)
            case (_, CallProgress(call_id=c) | CallAnswered(call_id=c)) if self._is_other(c):
                pass
            case (_, IncomingCall(call_id=call_id)) if self._is_other(call_id):
                pass  # offered again
            case (S.CONNECTED, IncomingCall(call_id=call_id, caller=caller, caller_name=name)) \
                    if call_id != self._call_id and self._may_wait():
                self._offer_waiting(call_id, caller, name, now)
            case (_, TransferResult(ok=ok)):
                self.transfer_result(ok, now)
            case (_, TimerFired(kind=TimerKind.CALL_WAITING | TimerKind.WAITING_NO_ANSWER)):
                self._waiting_timer(event.kind, now)
            case (S.CONNECTED, Flash()) if self._flash_connected(now):
                pass
            case (S.CONNECTED, CallEnded()) if self._mixing:
                self._current_gone_in_conference()
            case (S.CONNECTED | S.CALLING | S.RINGBACK | S.EARLY_MEDIA | S.DIAL_TONE
                  | S.COLLECTING | S.WAIT_ONHOOK | S.HOWLER, OnHook()) if other:
                self._hang_up_with_other(now)
            case (S.CALLING | S.RINGBACK | S.EARLY_MEDIA | S.DIAL_TONE | S.COLLECTING
                  | S.WAIT_ONHOOK | S.HOWLER, Flash()) if other:
                self._flash_back(now)
            case (S.RINGING, OffHook()) if self._recall:
                self._answer_recall()
            case (S.RINGING, TimerFired(kind=TimerKind.NO_ANSWER)) if self._recall:
                self._set_ringing(False)
                self._release(HangUp(self._require_call_id("hang up")))
                self._go_idle()

            # Handset lifted.
            case (S.IDLE, OffHook()):
                self._start_dial_tone(now)
            case (S.RINGING, OffHook()):
                call_id = self._require_call_id("answer")
                self._set_ringing(False)
                self._emit(AnswerCall(call_id))
                self._connect_audio()
                self._goto(S.CONNECTED)

            # Handset put down.
            case (S.DIAL_TONE | S.COLLECTING | S.WAIT_ONHOOK | S.HOWLER, OnHook()):
                self._go_idle()
            case (S.CALLING | S.RINGBACK | S.EARLY_MEDIA, OnHook()):
                self._quiesce()
                self._release(CancelCall(self._call_id))
                self._go_idle()
            case (S.CONNECTED, OnHook()):
                call_id = self._require_call_id("hang up")
                self._quiesce()
                self._release(HangUp(call_id))
                self._go_idle()

            # Hook flash: a feature request in a call, a fresh dial tone outside one.
            case (S.CONNECTED | S.EARLY_MEDIA, Flash()):
                self._emit(FlashHook(self._require_call_id("flash")))
            case (S.DIAL_TONE | S.COLLECTING | S.WAIT_ONHOOK | S.HOWLER, Flash()):
                self._start_dial_tone(now)

            # Digits, pulse or DTMF alike.
            case (S.DIAL_TONE | S.COLLECTING, PulseDigit(digit=d) | DtmfDigit(digit=d)):
                self._collect(d, now)
            case (S.CONNECTED | S.EARLY_MEDIA, PulseDigit(digit=d) | DtmfDigit(digit=d)):
                self._emit(SendDigit(self._require_call_id("send a digit"), d))

            # Outgoing call progress.
            case (S.CALLING | S.RINGBACK, CallProgress(early_media=True)):
                self._stop_tone()
                self._connect_audio()
                self._goto(S.EARLY_MEDIA)
            case (S.CALLING, CallProgress(status=180)):
                self._goto(S.RINGBACK)
                self._play("ringback")
            case (S.CALLING | S.RINGBACK | S.EARLY_MEDIA, CallAnswered()):
                self._stop_tone()
                self._connect_audio()
                self._goto(S.CONNECTED)
            case (S.CALLING | S.RINGBACK | S.EARLY_MEDIA | S.CONNECTED, CallEnded(status=status)):
                busy = status is None or status < 300 or status in BUSY_STATUSES
                self._quiesce()
                self._fail("busy" if busy else "reorder", now)

            # Incoming calls.
            case (S.IDLE, IncomingCall(call_id=call_id, caller=caller, caller_name=name)):
                self._call_id = call_id
                self._caller = (caller, name)
                self._callerid_sent = False
                self._cadence_index = 0
                self._cadence = self._offered_cadence or self.ring_cadence
                self._goto(S.RINGING)
                self._set_ringing(True)
                self._timers[TimerKind.RING_CADENCE] = now + self._cadence[0]
                self._timers[TimerKind.NO_ANSWER] = now + self.no_answer_timeout
            case (_, IncomingCall(call_id=call_id)) if call_id == self._call_id:
                pass  # the same call offered again: not a second call
            case (_, IncomingCall(call_id=call_id)):
                self._emit(RejectCall(call_id, 486))
            case (S.RINGING, IncomingCancelled() | CallEnded()):
                self._set_ringing(False)  # even in a silent interval: leave the bell off
                self._go_idle()

            # Timers.
            case (S.DIAL_TONE, TimerFired(kind=TimerKind.FIRST_DIGIT)):
                self._fail("reorder", now)
            case (S.COLLECTING, TimerFired(kind=TimerKind.INTER_DIGIT)):
                if self.digit_map.matches_on_timeout(self._digits):
                    self._place_call()
                else:
                    self._fail("reorder", now)
            case (S.WAIT_ONHOOK, TimerFired(kind=TimerKind.OFFHOOK_WARNING)):
                self._goto(S.HOWLER)
                self._play("howler")
            case (S.RINGING, TimerFired(kind=TimerKind.RING_CADENCE)):
                self._next_ring_period(now)
            case (S.RINGING, TimerFired(kind=TimerKind.NO_ANSWER)):
                call_id = self._require_call_id("reject")
                self._set_ringing(False)
                self._emit(RejectCall(call_id, 480))
                self._go_idle()

            case _:
                pass  # stale or meaningless here: the network and the handset race

    # ------------------------------------------------------------------------ helpers

    def _advance(self, now: float) -> None:
        """Fire hook-decoder and line timers due by `now`, each at its own deadline."""
        while True:
            hook_due = self._hook.get_timer()
            line_due = min(self._timers.items(), key=lambda kv: kv[1], default=None)
            if hook_due is not None and hook_due <= now and (
                line_due is None or hook_due <= line_due[1]
            ):
                for event in self._hook.handle_timer(hook_due):
                    self._handle(event, hook_due)
            elif line_due is not None and line_due[1] <= now:
                kind, at = line_due
                del self._timers[kind]
                self._handle(TimerFired(kind), at)
            else:
                return

    def _emit(self, action: Action) -> None:
        if isinstance(action, PlaceCall):
            self._last_number = action.number  # a blind transfer's target
        self._actions.append(action)

    def _goto(self, state: LineState) -> None:
        waiting = self._other is not None and self._other.role == "waiting"
        self._timers = {k: t for k, t in self._timers.items()
                        if waiting and k in (TimerKind.CALL_WAITING, TimerKind.WAITING_NO_ANSWER)}
        self._state = state
        self._emit(StateChanged(state))

    def _go_idle(self) -> None:
        self._quiesce()
        self._digits = ""
        self._call_id = None
        self._caller = None
        self._recall = self._mixing = False
        self._goto(S.IDLE)
        self._send_vmwi()

    def _require_call_id(self, what: str) -> str:
        if self._call_id is None:
            raise LineUsageError(
                f"line {self.name!r}: cannot {what} in state {self._state.value}: "
                "no call id (call set_call_id after PlaceCall)"
            )
        return self._call_id

    def _play(self, tone: ToneName) -> None:
        self._tone = tone
        self._emit(PlayTone(tone))

    def _stop_tone(self) -> None:
        if self._tone is not None:
            self._tone = None
            self._emit(StopTone())

    def _set_ringing(self, on: bool) -> None:
        self._ringing = on
        self._emit(SetRinging(on))

    def _connect_audio(self) -> None:
        if not self._audio:
            self._audio = True
            self._emit(ConnectAudio(self._require_call_id("connect audio")))

    def _quiesce(self) -> None:
        """Undo whatever the port is doing to the handset: tone, bell, audio bridge."""
        self._stop_tone()
        if self._ringing:
            self._set_ringing(False)
        if self._audio:
            self._audio = False
            if self._call_id is not None:
                self._emit(DisconnectAudio(self._call_id))

    def _start_dial_tone(self, now: float) -> None:
        self._digits = ""
        self._goto(S.DIAL_TONE)
        self._play("stutter" if self._message_waiting else "dial")
        self._timers[TimerKind.FIRST_DIGIT] = now + self.first_digit_timeout

    def _collect(self, digit: str, now: float) -> None:
        if self._state is S.DIAL_TONE:
            self._stop_tone()
            self._goto(S.COLLECTING)
        self._digits += digit
        self._timers.pop(TimerKind.INTER_DIGIT, None)
        match self.digit_map.match(self._digits):
            case MatchResult.FULL:
                self._place_call()
            case MatchResult.FULL_MAY_EXTEND:
                self._timers[TimerKind.INTER_DIGIT] = now + self._digit_timer(
                    self.short_inter_digit_timeout)
            case MatchResult.PARTIAL:
                self._timers[TimerKind.INTER_DIGIT] = now + self._digit_timer(
                    self.inter_digit_timeout)
            case MatchResult.NO_MATCH:
                self._fail("reorder", now)

    def _digit_timer(self, default: float) -> float:
        """The digit map's own timer for what was dialled (``S3``, ``T4``), else `default`."""
        seconds = self.digit_map.timer_seconds(self._digits)
        return default if seconds is None else seconds

    def _place_call(self) -> None:
        self._call_id = None
        self._emit(PlaceCall(self.digit_map.transform(self._digits)))  # <a:b> applied
        self._goto(S.CALLING)

    def _fail(self, tone: ToneName, now: float) -> None:
        self._goto(S.WAIT_ONHOOK)
        self._play(tone)
        self._timers[TimerKind.OFFHOOK_WARNING] = now + self.offhook_warning_timeout

    def _next_ring_period(self, now: float) -> None:
        self._cadence_index = (self._cadence_index + 1) % len(self._cadence)
        ring = self._cadence_index % 2 == 0
        self._set_ringing(ring)
        if not ring and not self._callerid_sent and self._caller is not None:
            self._callerid_sent = True
            self._emit(SendCallerId(*self._caller))
        self._timers[TimerKind.RING_CADENCE] = now + self._cadence[self._cadence_index]
