"""The call state machine of one GSM/LTE voice channel (a modem's one call at a time).

Pure and sans-IO: the runtime feeds it the AT engine's events (`gateway.modem.at`) and the
local intents (dial, answer, hang up, DTMF), each with `now`; it drains `SendAt` actions
(which the runtime passes to `AtEngine.send`) and call events, and re-arms one timer from
`get_timer()`.

- Outgoing: the profile's voice setup commands are sent before every ATD (a Quectel module
  that missed AT+QPCMV gives one-way audio), one at a time, and ATD goes out only when they
  all succeeded. Progress is read from AT+CLCC, polled every `poll_interval` while the call
  is being set up, and from the dial results the modem sends (BUSY, NO ANSWER, NO CARRIER).
- Incoming: RING (or +CRING), with +CLIP carrying the caller; `IncomingCall` is raised when
  +CLIP arrives or `clip_wait` after the first RING. While it rings, a gap of `ring_gap`
  without RING is checked with AT+CLCC (a caller who gives up often sends nothing).
- Failures map to SIP statuses through `SIP_STATUS_BY_CAUSE` (see `failure_status`).

Our own commands are tracked in order in `_sent`: the engine answers commands one at a time
and in order, so a result for a command at the head of that queue is ours, and anything
else (SMS, signal polls sharing the port) is ignored.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum

from gateway.modem.at import AtEvent, CommandDone, CommandFailed, CommandTimedOut, Unsolicited
from gateway.modem.profiles import ModemProfile
from gateway.modem.responses import (
    CallDirection,
    CallStatus,
    ClccEntry,
    ResponseError,
    parse_ceer,
    parse_clcc,
    parse_clip,
)

__all__ = [
    "CallAnswered",
    "CallEnded",
    "CallProgress",
    "DtmfReceived",
    "GsmAction",
    "GsmLine",
    "GsmState",
    "GsmStateChanged",
    "GsmUsageError",
    "IncomingCall",
    "SIP_STATUS_BY_CAUSE",
    "SendAt",
    "failure_status",
]

DTMF_DIGITS = frozenset("0123456789*#ABCD")


class GsmState(Enum):
    IDLE = "idle"
    DIALING = "dialing"
    ALERTING = "alerting"
    ACTIVE = "active"
    RINGING = "ringing"
    """An incoming call is offered and not yet answered."""
    RELEASING = "releasing"


@dataclass(frozen=True)
class SendAt:
    """A command for `AtEngine.send`."""

    command: str
    timeout: float = 5.0


@dataclass(frozen=True)
class GsmStateChanged:
    state: GsmState


@dataclass(frozen=True)
class CallProgress:
    """The far end is being alerted (send 180)."""

    kind: str = "alerting"


@dataclass(frozen=True)
class CallAnswered:
    """The call is connected (remote answered, or our ATA succeeded)."""


@dataclass(frozen=True)
class CallEnded:
    """The call is over. `sip_status` is the failure response for a call that never connected
    (486, 480, 503), None when it was connected or ended from our side."""

    cause: str
    sip_status: int | None = None


@dataclass(frozen=True)
class IncomingCall:
    caller_id: str | None
    withheld: bool
    number_type: int | None = None


@dataclass(frozen=True)
class DtmfReceived:
    """A digit the modem detected from the far end (+QTONEDET or +DTMF)."""

    digit: str


GsmAction = (
    SendAt | GsmStateChanged | CallProgress | CallAnswered | CallEnded | IncomingCall | DtmfReceived
)


class GsmUsageError(RuntimeError):
    """An intent that makes no sense now (dial while a call is up, answer with no call)."""


SIP_STATUS_BY_CAUSE: dict[int, int] = {
    16: 480,  # normal call clearing before answer: the callee declined
    17: 486,  # user busy
    18: 480,  # no user responding
    19: 480,  # no answer from user (user alerted)
    21: 480,  # call rejected
    31: 480,  # normal, unspecified
}
"""3GPP TS 24.008 cause (from +CEER) of a call that ended before answer -> SIP status. Causes
not listed are network or resource failures (no circuit, congestion, out of order, barred,
bad number...) and get 503 so the router tries its next target."""

_RESULT_STATUS = {"BUSY": 486, "NO ANSWER": 480, "NO DIALTONE": 503}


def failure_status(result: str, cause: int | None = None) -> int:
    """The SIP status for a call that failed before answer: BUSY 486, NO ANSWER 480,
    NO DIALTONE 503, +CME/+CMS ERROR and ERROR (network rejects) 503, NO CARRIER by the
    +CEER cause (unknown cause: 480)."""
    upper = result.strip().upper()
    if upper in _RESULT_STATUS:
        return _RESULT_STATUS[upper]
    if upper == "NO CARRIER":
        return 480 if cause is None else SIP_STATUS_BY_CAUSE.get(cause, 503)
    return 503


class GsmLine:
    """One modem's voice channel; see the module docstring for the call flows."""

    def __init__(
        self,
        name: str,
        *,
        profile: ModemProfile,
        audio: str | None = None,
        poll_interval: float = 0.5,
        clip_wait: float = 1.0,
        ring_gap: float = 7.0,
        hangup_command: str = "ATH",
        dial_timeout: float = 30.0,
        command_timeout: float = 5.0,
    ) -> None:
        if hangup_command not in ("ATH", "AT+CHUP"):
            raise ValueError("hangup_command must be ATH or AT+CHUP")
        self.name = name
        self._setup = profile.call_setup_commands(audio)
        self._connected = profile.call_connected_commands(audio)
        self._ended = profile.call_ended_commands(audio)
        self._poll_interval = poll_interval
        self._clip_wait = clip_wait
        self._ring_gap = ring_gap
        self._hangup = hangup_command
        self._dial_timeout = dial_timeout
        self._timeout = command_timeout
        self.state = GsmState.IDLE
        self._actions: deque[GsmAction] = deque()
        self._sent: deque[str] = deque()
        self._timers: dict[str, float] = {}
        self._reset_call()

    def _reset_call(self) -> None:
        self._next: deque[str] = deque()  # commands still to send, one after the other
        self._number = ""
        self._dial_done = False
        self._listed = False  # our call has appeared in a +CLCC list
        self._index: int | None = None  # its +CLCC index, once seen
        self._connected_sent = False
        self._offered = False
        self._dial_sent = False
        self._ending_cause: str | None = None
        self._ending_status: int | None = None
        self._ending_result = ""
        self._ceer_pending = False

    # --- local intents -----------------------------------------------------------------

    def dial(self, number: str, now: float) -> None:
        """Place a call: voice setup commands, then ``ATD<number>;``."""
        if self.state is not GsmState.IDLE:
            raise GsmUsageError(f"{self.name}: cannot dial while {self.state.value}")
        if not number or any(c not in "0123456789+*#" for c in number) or "+" in number[1:]:
            raise ValueError(f"{self.name}: cannot dial {number!r}: digits, * and # only")
        self._reset_call()
        self._number = number
        self._set_state(GsmState.DIALING)
        self._next.extend(self._setup)
        self._next.append(f"ATD{number};")
        self._send_next()
        self._timers["poll"] = now + self._poll_interval

    def answer(self, now: float) -> None:
        """Answer the ringing call: voice setup commands, then ATA."""
        if self.state is not GsmState.RINGING:
            raise GsmUsageError(f"{self.name}: no incoming call to answer ({self.state.value})")
        self._timers.pop("clip", None)
        self._timers.pop("ring", None)
        self._next.extend(self._setup)
        self._next.append("ATA")
        self._send_next()

    def hang_up(self, now: float) -> None:
        """End or reject the call from our side; `CallEnded` follows the hang-up's result."""
        if self.state in (GsmState.IDLE, GsmState.RELEASING):
            return
        if self.state is GsmState.DIALING and not self._dial_sent:
            self._end("cancelled before dialling", None)  # ATD never went out
            return
        self._next.clear()
        self._timers.clear()
        self._ending_cause = "local hang-up"
        self._set_state(GsmState.RELEASING)
        self._send(self._hangup)

    def send_dtmf(self, digit: str, now: float) -> None:
        """Send one DTMF digit to the far end of the connected call (AT+VTS)."""
        if digit not in DTMF_DIGITS or len(digit) != 1:
            raise ValueError(f"{self.name}: not a DTMF digit: {digit!r}")
        if self.state is not GsmState.ACTIVE:
            raise GsmUsageError(f"{self.name}: DTMF needs a connected call ({self.state.value})")
        self._send(f"AT+VTS={digit}")

    def modem_lost(self, now: float) -> None:
        """The modem vanished or was reset: nothing we sent will be answered; end any call."""
        self._sent.clear()
        if self.state is GsmState.IDLE:
            return
        before_answer = self.state in (GsmState.DIALING, GsmState.ALERTING)
        self._connected_sent = False  # nothing to undo on a modem that is gone
        self._end("modem lost", 503 if before_answer else None)

    # --- engine events -----------------------------------------------------------------

    def handle(self, event: AtEvent, now: float) -> None:
        """Feed one event from the AT engine (ours or not: others are ignored)."""
        if isinstance(event, Unsolicited):
            self._unsolicited(event, now)
            return
        if event.command not in self._sent:
            return
        # The engine answers in order: ours queued before this one got no result (lost).
        while (command := self._sent.popleft()) != event.command:
            pass
        if isinstance(event, CommandDone):
            self._done(command, event.lines, now)
        elif isinstance(event, CommandFailed):
            self._failed(command, event.final, now)
        elif isinstance(event, CommandTimedOut):
            self._timed_out(command, now)

    def _done(self, command: str, lines: tuple[str, ...], now: float) -> None:
        if command == "AT+CLCC":
            self._clcc(lines, now)
        elif command == "AT+CEER":
            self._ceer(lines)
        elif command in ("ATH", "AT+CHUP"):
            self._hung_up()
        elif command == "ATA" and self.state is GsmState.RINGING:
            self._connect()
        elif command.startswith("ATD") and self.state in (GsmState.DIALING, GsmState.ALERTING):
            self._dial_done = True
        elif self._next and self.state is not GsmState.RELEASING:
            self._send_next()

    def _failed(self, command: str, final: str, now: float) -> None:
        if command == "AT+CLCC" or command.startswith("AT+VTS"):
            return  # a failed poll or digit does not end the call
        if command == "AT+CEER":
            self._ceer(())
        elif command in ("ATH", "AT+CHUP"):
            self._hung_up()
        elif command == "ATA":
            if self.state is GsmState.RINGING:
                self._end(f"answer failed: {final}", None)
        elif command.startswith("ATD"):
            if self.state in (GsmState.DIALING, GsmState.ALERTING):
                self._remote_failure(final)
        elif command in self._setup and self.state in (GsmState.DIALING, GsmState.RINGING):
            # Without its voice setup the call would have one-way or no audio: refuse it.
            self._next.clear()
            if self.state is GsmState.DIALING:
                self._end(f"voice setup {command} failed: {final}", 503)
            else:
                self._release(f"voice setup {command} failed: {final}")

    def _timed_out(self, command: str, now: float) -> None:
        if command in ("ATH", "AT+CHUP", "AT+CEER"):
            self._failed(command, "no answer", now)
        elif command.startswith("ATD") or command == "ATA" or command in self._setup:
            if self.state in (GsmState.DIALING, GsmState.ALERTING):
                self._release(f"modem did not answer {command}", 503)
            elif self.state is GsmState.RINGING:
                self._release(f"modem did not answer {command}")

    def _unsolicited(self, event: Unsolicited, now: float) -> None:
        name = event.name.upper()
        if name in ("RING", "+CRING"):
            self._ring(now)
        elif name == "+CLIP":
            if self.state is GsmState.IDLE:
                self._ring(now)
            if self.state is GsmState.RINGING and not self._offered:
                try:
                    clip = parse_clip(event.value)
                except ResponseError:
                    return
                self._offer(clip.caller_id, clip.withheld, clip.number_type)
        elif name == "+CLCC":
            self._clcc(("+CLCC: " + event.value,), now)
        elif name in ("NO CARRIER", "BUSY", "NO ANSWER", "NO DIALTONE"):
            self._remote_end(name)
        elif name in ("+QTONEDET", "+DTMF") and self.state is GsmState.ACTIVE:
            digit = _dtmf_digit(event.value)
            if digit is not None:
                self._actions.append(DtmfReceived(digit))

    # --- timers ------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        return min(self._timers.values(), default=None)

    def handle_timer(self, now: float) -> None:
        for kind, _ in sorted(self._timers.items(), key=lambda kv: kv[1]):
            due = self._timers.get(kind)
            if due is None or due > now:
                continue  # not due, or cleared or re-armed by an earlier timer just now
            del self._timers[kind]
            if kind == "poll" and self.state in (GsmState.DIALING, GsmState.ALERTING):
                if "AT+CLCC" not in self._sent:
                    self._send("AT+CLCC")
                self._timers["poll"] = now + self._poll_interval
            elif kind == "clip" and self.state is GsmState.RINGING and not self._offered:
                self._offer(None, False, None)
            elif kind == "ring" and self.state is GsmState.RINGING:
                if "AT+CLCC" not in self._sent:
                    self._send("AT+CLCC")
                self._timers["ring"] = now + self._ring_gap

    def next_action(self) -> GsmAction | None:
        return self._actions.popleft() if self._actions else None

    # --- transitions -------------------------------------------------------------------

    def _ring(self, now: float) -> None:
        if self.state is GsmState.IDLE:
            self._reset_call()
            self._set_state(GsmState.RINGING)
            self._timers["clip"] = now + self._clip_wait
        if self.state is GsmState.RINGING:
            self._timers["ring"] = now + self._ring_gap

    def _offer(self, caller: str | None, withheld: bool, number_type: int | None) -> None:
        self._offered = True
        self._timers.pop("clip", None)
        self._actions.append(IncomingCall(caller, withheld, number_type))

    def _clcc(self, lines: tuple[str, ...], now: float) -> None:
        entries: list[ClccEntry] = []
        for line in lines:
            try:
                entries.append(parse_clcc(line))
            except ResponseError:
                continue
        if any(e.status is CallStatus.DISCONNECTED and self._is_ours(e) for e in entries):
            self._remote_end("NO CARRIER")  # SIMCom's +CLCC URC for a call that just ended
            return
        voice = [e for e in entries if e.voice and e.status is not CallStatus.DISCONNECTED]
        if self.state in (GsmState.DIALING, GsmState.ALERTING):
            ours = [e for e in voice if e.direction is CallDirection.OUTGOING]
            if not ours:
                if self._listed and self._dial_done:
                    self._remote_end("NO CARRIER")
                return
            self._listed = True
            self._index = ours[0].index
            status = ours[0].status
            if status is CallStatus.ALERTING and self.state is GsmState.DIALING:
                self._set_state(GsmState.ALERTING)
                self._actions.append(CallProgress("alerting"))
            elif status is CallStatus.ACTIVE:
                self._connect()
        elif self.state is GsmState.RINGING:
            ringing = [
                e
                for e in voice
                if e.direction is CallDirection.INCOMING
                and e.status in (CallStatus.INCOMING, CallStatus.WAITING)
            ]
            if not ringing:
                if not any(c == "ATA" for c in self._sent) and "ATA" not in self._next:
                    self._end("caller hung up before answer", None)
                return
            self._index = ringing[0].index
            if not self._offered:
                e = ringing[0]
                self._offer(e.number, e.number is None, e.number_type)

    def _is_ours(self, entry: ClccEntry) -> bool:
        """Whether a +CLCC entry is this line's call (by index once known, else direction)."""
        if self._index is not None:
            return entry.index == self._index
        if self.state in (GsmState.DIALING, GsmState.ALERTING):
            return entry.direction is CallDirection.OUTGOING
        if self.state is GsmState.RINGING:
            return entry.direction is CallDirection.INCOMING
        return self.state is GsmState.ACTIVE

    def _connect(self) -> None:
        if self.state is GsmState.ACTIVE:
            return
        self._timers.clear()
        self._set_state(GsmState.ACTIVE)
        self._actions.append(CallAnswered())
        for command in self._connected:
            self._send(command)
        self._connected_sent = True

    def _remote_end(self, result: str) -> None:
        """The modem says the call is over (or never connected)."""
        if self.state is GsmState.ACTIVE:
            self._end("remote hang-up", None)
        elif self.state in (GsmState.DIALING, GsmState.ALERTING):
            self._remote_failure(result)
        elif self.state is GsmState.RINGING:
            self._end("caller hung up before answer", None)

    def _remote_failure(self, final: str) -> None:
        """An outgoing call failed before answer: map it, asking +CEER for NO CARRIER."""
        upper = final.strip().upper()
        self._next.clear()
        self._timers.clear()
        if upper == "NO CARRIER":
            self._set_state(GsmState.RELEASING)
            self._ceer_pending = True
            self._ending_result = upper
            self._send("AT+CEER")
            return
        self._end(_describe(upper), failure_status(upper))

    def _ceer(self, lines: tuple[str, ...]) -> None:
        if not self._ceer_pending:
            return
        cause: int | None = None
        text = ""
        for line in lines:
            try:
                report = parse_ceer(line)
            except ResponseError:
                continue
            cause, text = report.cause, report.text
            break
        status = failure_status(self._ending_result, cause)
        detail = f"NO CARRIER ({text or 'no cause given'}"
        detail += f", cause {cause})" if cause is not None else ")"
        self._end(detail, status)

    def _release(self, cause: str, sip_status: int | None = None) -> None:
        """Hang up from our side because of a failure, then report `cause`."""
        self._next.clear()
        self._timers.clear()
        self._set_state(GsmState.RELEASING)
        self._ending_cause = cause
        self._ending_status = sip_status
        self._send(self._hangup)

    def _hung_up(self) -> None:
        """ATH/AT+CHUP finished (or failed: the call is over for us either way)."""
        if self.state is GsmState.RELEASING and not self._ceer_pending:
            self._end(self._ending_cause or "local hang-up", self._ending_status)

    def _end(self, cause: str, sip_status: int | None) -> None:
        if self._connected_sent:
            for command in self._ended:
                self._send(command)
        self._timers.clear()
        self._next.clear()
        self._actions.append(CallEnded(cause, sip_status))
        self._reset_call()
        self._set_state(GsmState.IDLE)

    # --- helpers -----------------------------------------------------------------------

    def _send_next(self) -> None:
        command = self._next.popleft()
        self._dial_sent = self._dial_sent or command.startswith("ATD")
        timeout = self._dial_timeout if command.startswith("ATD") else self._timeout
        self._send(command, timeout)

    def _send(self, command: str, timeout: float | None = None) -> None:
        self._sent.append(command)
        self._actions.append(SendAt(command, self._timeout if timeout is None else timeout))

    def _set_state(self, state: GsmState) -> None:
        if state is not self.state:
            self.state = state
            self._actions.append(GsmStateChanged(state))


def _describe(result: str) -> str:
    return {
        "BUSY": "busy",
        "NO ANSWER": "no answer",
        "NO DIALTONE": "no network (NO DIALTONE)",
    }.get(result, f"network rejected the call ({result})")


def _dtmf_digit(value: str) -> str | None:
    """``+DTMF: 5`` carries the digit; Quectel ``+QTONEDET: 53`` its ASCII code."""
    text = value.strip().strip('"')
    if len(text) == 1 and text in DTMF_DIGITS:
        return text
    if text.isascii() and text.isdigit() and 0 < int(text) < 128 and chr(int(text)) in DTMF_DIGITS:
        return chr(int(text))
    return None
