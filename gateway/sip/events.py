"""Events the pure SIP user agent hands to the runtime.

They are frozen dataclasses so the runtime can queue, log and compare them without
worrying that the agent changes them later. `call_id` is the key for every call event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.sip.registrar import Binding


@dataclass(frozen=True)
class RegistrationStateChanged:
    """An account became registered or stopped being registered; `reason` says why."""

    account_id: str
    registered: bool
    reason: str
    expires: int | None


@dataclass(frozen=True)
class IncomingCall:
    """A new INVITE arrived; the runtime answers with ringing/answer/reject."""

    call_id: str
    from_uri: str
    from_display: str | None
    to_uri: str
    request_uri: str
    sdp: bytes
    source: tuple[str, int]


@dataclass(frozen=True)
class CallProgress:
    """The far end is ringing (180) or sent early media (183 with SDP)."""

    call_id: str
    status: int
    sdp: bytes | None


@dataclass(frozen=True)
class CallAnswered:
    """Our outgoing call was answered; `sdp` is the answer to our offer."""

    call_id: str
    sdp: bytes


@dataclass(frozen=True)
class CallUpdated:
    """The peer sent a new offer (re-INVITE) or a late answer (ACK with SDP)."""

    call_id: str
    sdp: bytes


@dataclass(frozen=True)
class CallEnded:
    """A call is over, whoever ended it; emitted exactly once per call."""

    call_id: str
    reason: str
    status: int | None


@dataclass(frozen=True)
class MessageDropped:
    """Input was unusable; counted in `UserAgent.stats` so admins can see abuse or bugs."""

    reason: str
    source: tuple[str, int]


@dataclass(frozen=True)
class ReinviteAnswered:
    """Our re-INVITE (hold/resume) was accepted; `sdp` is the peer's answer."""

    call_id: str
    sdp: bytes


@dataclass(frozen=True)
class ReinviteFailed:
    """Our re-INVITE was refused or timed out; the call goes on with the old session."""

    call_id: str
    status: int


@dataclass(frozen=True)
class DtmfInfo:
    """A DTMF digit arrived in a SIP INFO (dtmf-relay or application/dtmf), answered 200."""

    call_id: str
    digit: str
    duration_ms: int | None


@dataclass(frozen=True)
class MessageDelivered:
    """Our MESSAGE (`UserAgent.send_message`) got a 2xx: the peer took it."""

    handle: str
    status: int


@dataclass(frozen=True)
class MessageFailed:
    """Our MESSAGE was refused, timed out or could not be sent; the sender may retry."""

    handle: str
    status: int | None
    reason: str


@dataclass(frozen=True)
class MessageReceived:
    """A MESSAGE (RFC 3428) passed the filter; answer it with `UserAgent.answer_message`."""

    handle: str
    from_uri: str
    to_uri: str
    request_uri: str
    content_type: str
    body: bytes
    source: tuple[str, int]


@dataclass(frozen=True)
class OptionsAnswered:
    """Our OPTIONS probe (`UserAgent.send_options`) got a final response: the peer is there."""

    handle: str
    status: int


@dataclass(frozen=True)
class OptionsFailed:
    """Our OPTIONS probe got no final response: "timeout" or "transport error"."""

    handle: str
    reason: str


@dataclass(frozen=True)
class BindingsChanged:
    """A local phone's registrar bindings changed (registered, refreshed, removed, expired).

    `bindings` is the user's whole live set after the change (empty: not registered).
    """

    user: str
    bindings: tuple[Binding, ...]


# -- request filter verdicts (the security hook) -----------------------------------------


@dataclass(frozen=True)
class Accept:
    """Filter verdict: let the request through to validation and the dialog layer.

    `user` names the local user the filter authenticated (digest), None for requests it
    let in without (trunks, in-dialog, ACK/CANCEL); the registrar binds only for `user`.
    """

    user: str | None = None


@dataclass(frozen=True)
class Respond:
    """Filter verdict: answer with `status` from a bare server transaction; no event."""

    status: int
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Drop:
    """Filter verdict: ignore the request silently; counted in `stats["filtered"]`."""

    reason: str


FilterVerdict = Accept | Respond | Drop

UaEvent = (
    RegistrationStateChanged
    | IncomingCall
    | CallProgress
    | CallAnswered
    | CallUpdated
    | CallEnded
    | MessageDropped
    | ReinviteAnswered
    | ReinviteFailed
    | DtmfInfo
    | MessageDelivered
    | MessageFailed
    | MessageReceived
    | OptionsAnswered
    | OptionsFailed
    | BindingsChanged
)
