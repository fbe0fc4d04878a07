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
    #: The INVITE's Replaces header (RFC 3891) when it asks to take over a dialog we hold.
    replaces: str | None = None
    #: The INVITE's Alert-Info header (distinctive ring), as sent.
    alert_info: str | None = None


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


@dataclass(frozen=True)
class ReferProgress:
    """How the transfer we asked for with REFER is going (RFC 3515).

    `status` is the status line of a NOTIFY's message/sipfrag body (100, 180, 200, 486...),
    or the REFER's own final status when it was refused (`final` True then). `final` True
    ends the transfer: a 2xx succeeded, anything else failed.
    """

    call_id: str
    status: int
    final: bool


@dataclass(frozen=True)
class ReferReceived:
    """The dialog's peer asks us to call `refer_to` (RFC 3515): answer with
    `UserAgent.accept_refer` or `reject_refer`, then report with `notify_refer`.

    `refer_to` is the target URI without URI headers; `replaces` the Replaces value it
    carried (RFC 3891: call-id;to-tag=..;from-tag=..), unescaped, or None.
    """

    call_id: str
    refer_to: str
    replaces: str | None
    referred_by: str | None
    source: tuple[str, int]


@dataclass(frozen=True)
class MessageSummary:
    """A message-summary NOTIFY (RFC 3842): voicemail waiting or not.

    `sub_id` names our subscription, None for an unsolicited NOTIFY; `user` is the user
    part of its Request-URI (or To), which the runtime maps to a line.
    """

    sub_id: str | None
    user: str | None
    waiting: bool
    new: int | None
    old: int | None
    source: tuple[str, int]


@dataclass(frozen=True)
class SubscriptionChanged:
    """A SUBSCRIBE of ours became active (with its granted `expires`) or stopped."""

    sub_id: str
    active: bool
    reason: str
    expires: int | None


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
    | ReferProgress
    | ReferReceived
    | MessageSummary
    | SubscriptionChanged
)
