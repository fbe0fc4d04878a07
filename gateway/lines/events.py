"""What an FXS line is told (inputs) and what it asks the runtime to do (actions).

All of these are frozen dataclasses so they can be compared in tests, logged and passed
between tasks without anyone mutating them. Hook inputs (`OffHook`, `OnHook`, `Flash`,
`PulseDigit`) come from `gateway.dsp.pulse` and are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

from gateway.dsp.pulse import Flash, OffHook, OnHook, PulseDigit

__all__ = [
    "Action",
    "AlertCallWaiting",
    "AnswerCall",
    "CallAnswered",
    "CallEnded",
    "CallProgress",
    "CancelCall",
    "ConnectAudio",
    "DisconnectAudio",
    "DtmfDigit",
    "Flash",
    "FlashHook",
    "HangUp",
    "HoldCall",
    "IncomingCall",
    "IncomingCancelled",
    "IncomingResult",
    "LineInput",
    "LineState",
    "LineUsageError",
    "MixCalls",
    "OffHook",
    "OnHook",
    "PlaceCall",
    "PlayTone",
    "PulseDigit",
    "RejectCall",
    "ResumeCall",
    "SendCallerId",
    "SendVmwi",
    "SendDigit",
    "SetRinging",
    "StateChanged",
    "StopTone",
    "TimerFired",
    "TimerKind",
    "ToneName",
    "TransferCall",
    "TransferResult",
]


class LineState(Enum):
    """Where one analog port is in its call life cycle; reported by `StateChanged`."""

    IDLE = "idle"
    """On-hook, no call."""
    DIAL_TONE = "dial-tone"
    """Off-hook, dial tone playing, no digit yet."""
    COLLECTING = "collecting"
    """Digits being collected against the digit map."""
    CALLING = "calling"
    """Outgoing call placed, no ringing indication yet (silence)."""
    RINGBACK = "ringback"
    """Far end is alerting; local ringback tone playing."""
    EARLY_MEDIA = "early-media"
    """Far end sends audio before answering (183 with SDP); audio connected."""
    CONNECTED = "connected"
    """Call answered, audio connected."""
    RINGING = "ringing"
    """Incoming call; the phone's bell is driven with the ring cadence."""
    WAIT_ONHOOK = "wait-onhook"
    """Call over or dialling failed; busy/reorder tone until the user hangs up."""
    HOWLER = "howler"
    """Off-hook for too long without doing anything; howler tone until on-hook."""


ToneName = Literal["dial", "ringback", "busy", "reorder", "howler", "stutter", "call-waiting",
                   "confirm"]
"""Call-progress tones the line asks for; the tone generator maps them to a country profile."""


class IncomingResult(Enum):
    """Whether the line took an incoming call, so the SIP side knows to send 180 or 486."""

    ACCEPTED = "accepted"
    BUSY = "busy"


class LineUsageError(RuntimeError):
    """The runtime drove the line out of contract (e.g. answered a call before `set_call_id`)."""


# ---------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class PlayTone:
    """Play a call-progress tone to the handset, replacing any tone already playing."""

    name: ToneName


@dataclass(frozen=True, slots=True)
class StopTone:
    """Silence the local tone generator."""


@dataclass(frozen=True, slots=True)
class SetRinging:
    """Switch ring voltage on or off; the line runs the cadence, so the driver just obeys."""

    on: bool


@dataclass(frozen=True, slots=True)
class SendCallerId:
    """Send on-hook caller ID now (first silent interval of the ring cadence)."""

    caller: str
    caller_name: str | None


@dataclass(frozen=True, slots=True)
class SendVmwi:
    """Send the on-hook visual message waiting indicator (lamp on or off) now: FSK while
    the line is idle (the port plays it through the caller-ID path)."""

    on: bool


@dataclass(frozen=True, slots=True)
class PlaceCall:
    """Start an outgoing call to the dialled number; report its id with `FxsLine.set_call_id`."""

    number: str


@dataclass(frozen=True, slots=True)
class CancelCall:
    """Abandon an outgoing call before answer (CANCEL).

    `call_id` is None when the user hung up before `set_call_id` was called: cancel the
    call started by this line's last `PlaceCall`.
    """

    call_id: str | None


@dataclass(frozen=True, slots=True)
class AnswerCall:
    """The user picked up a ringing phone: send 200 OK."""

    call_id: str


@dataclass(frozen=True, slots=True)
class RejectCall:
    """Refuse an incoming call with a final status (486 busy, 480 no answer)."""

    call_id: str
    status: int


@dataclass(frozen=True, slots=True)
class HangUp:
    """The user hung up an established call: send BYE."""

    call_id: str


@dataclass(frozen=True, slots=True)
class ConnectAudio:
    """Bridge the port's audio with the call's RTP stream."""

    call_id: str


@dataclass(frozen=True, slots=True)
class DisconnectAudio:
    """Stop bridging the port's audio with the call's RTP stream."""

    call_id: str


@dataclass(frozen=True, slots=True)
class SendDigit:
    """A digit dialled during a call: send it out of band (RFC 4733)."""

    call_id: str
    digit: str


@dataclass(frozen=True, slots=True)
class FlashHook:
    """The user flashed during a call: the place where call waiting and transfer hook in."""

    call_id: str


@dataclass(frozen=True, slots=True)
class HoldCall:
    """Put the far end of `call_id` on hold (re-INVITE a=sendonly, or mute a local leg)."""

    call_id: str


@dataclass(frozen=True, slots=True)
class ResumeCall:
    """Take `call_id` off hold (re-INVITE a=sendrecv); ConnectAudio follows for the handset."""

    call_id: str


@dataclass(frozen=True, slots=True)
class AlertCallWaiting:
    """A second call waits: sound the call-waiting tone over the call in progress.

    With `caller_id`, the tone is followed by the CPE alerting signal and, once the phone
    acknowledges it (DTMF D or A), off-hook (type 2) caller ID for `caller`.
    """

    call_id: str
    caller: str
    caller_name: str | None
    caller_id: bool


@dataclass(frozen=True, slots=True)
class MixCalls:
    """Three-way conference: the handset and the far ends of `call_ids` each hear the others.

    An empty tuple ends the mixing (each call goes back to being bridged alone).
    """

    call_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TransferCall:
    """The handset asks to transfer the far end of `call_id`.

    Blind: `target` is the dialled number and `replaces` None. Attended: `target` None and
    `replaces` the consultation call's id (Refer-To with Replaces, or the two legs joined
    locally when neither is SIP). The runtime reports back with `FxsLine.transfer_result`.
    """

    call_id: str
    target: str | None
    replaces: str | None


@dataclass(frozen=True, slots=True)
class StateChanged:
    """The line entered `state`; for logs, metrics and the control socket."""

    state: LineState


Action = (
    PlayTone
    | StopTone
    | SetRinging
    | SendCallerId
    | SendVmwi
    | PlaceCall
    | CancelCall
    | AnswerCall
    | RejectCall
    | HangUp
    | ConnectAudio
    | DisconnectAudio
    | SendDigit
    | FlashHook
    | HoldCall
    | ResumeCall
    | AlertCallWaiting
    | MixCalls
    | TransferCall
    | StateChanged
)

# ----------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    """A DTMF digit detected in the audio from the handset."""

    digit: str


@dataclass(frozen=True, slots=True)
class CallProgress:
    """A provisional response (18x) to our outgoing call."""

    status: int
    early_media: bool
    call_id: str | None = None


@dataclass(frozen=True, slots=True)
class CallAnswered:
    """Our outgoing call was answered (200 OK)."""

    call_id: str | None = None


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The current call ended from the network side (BYE, failure response, timeout)."""

    reason: str
    status: int | None
    call_id: str | None = None
    """Which call; None: the line's current call (single-call callers)."""


@dataclass(frozen=True, slots=True)
class IncomingCall:
    """A call for this port arrived."""

    call_id: str
    caller: str
    caller_name: str | None


@dataclass(frozen=True, slots=True)
class IncomingCancelled:
    """The caller gave up before we answered (CANCEL)."""

    call_id: str | None = None


@dataclass(frozen=True, slots=True)
class TransferResult:
    """How the transfer the line asked for (`TransferCall`) went."""

    ok: bool


class TimerKind(Enum):
    """Which of the line's own timers expired."""

    FIRST_DIGIT = "first-digit"
    INTER_DIGIT = "inter-digit"
    OFFHOOK_WARNING = "offhook-warning"
    RING_CADENCE = "ring-cadence"
    NO_ANSWER = "no-answer"
    CALL_WAITING = "call-waiting"
    """Repeat the call-waiting tone."""
    WAITING_NO_ANSWER = "waiting-no-answer"
    """A waiting call nobody took."""


@dataclass(frozen=True, slots=True)
class TimerFired:
    """One of the line's timers expired."""

    kind: TimerKind


LineInput = (
    OffHook
    | OnHook
    | Flash
    | PulseDigit
    | DtmfDigit
    | CallProgress
    | CallAnswered
    | CallEnded
    | IncomingCall
    | IncomingCancelled
    | TransferResult
    | TimerFired
)
