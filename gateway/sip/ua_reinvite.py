"""New offers in an established call: re-INVITE both ways, glare, session refresh, INFO.

Our re-INVITE (hold, resume, RFC 4028 refresh) and theirs are states of the call
(OFFER_SENT, OFFER_RECEIVED, REANSWERED in call_state.py), so at most one offer is in
flight. A 491 is retried after the RFC 3261 14.1 back-off; a peer's re-INVITE that comes
during the back-off is served first and ours follows once it is done. Session timers:
the refresher re-INVITEs at half the interval; the other side sends BYE at expiry.
"""

from __future__ import annotations

from gateway.sip.call_state import (
    ESTABLISHED,
    Call,
    CallInput,
    CallState,
    CallTimer,
    OwnOffer,
)
from gateway.sip.events import CallUpdated, DtmfInfo, ReinviteAnswered, ReinviteFailed
from gateway.sip.info import ACCEPTED as INFO_ACCEPT
from gateway.sip.info import UnsupportedInfo, parse_dtmf_info
from gateway.sip.message import Request, make_response
from gateway.sip.session_timer import MIN_SE, format_session_expires, parse_session_expires
from gateway.sip.transaction import (
    ClientInviteTransaction,
    ResponseReceived,
    ServerInviteTransaction,
    TransactionTimedOut,
    TxEvent,
)
from gateway.sip.ua_calls import CallTable, adopt_session_timer, answer_session_timer
from gateway.sip.ua_core import ALLOW, SDP, Address, SipCore

RETRY_LATER = 1.0  # seconds a due refresh or retry waits while another offer is in flight


class Reoffers:
    """Offer/answer after the call is set up, in both directions."""

    def __init__(self, core: SipCore, calls: CallTable) -> None:
        self._core = core
        self._calls = calls
        calls.on_timer(CallTimer.REINVITE_RETRY, self._retry_due)
        calls.on_timer(CallTimer.SESSION_REFRESH, self._refresh_due)
        calls.on_timer(CallTimer.SESSION_EXPIRE, self._session_expired)

    # -- our offer ---------------------------------------------------------------------

    def reinvite(self, call_id: str, sdp: bytes, now: float) -> None:
        """Send a new offer in an established call (hold, resume); see UserAgent.reinvite."""
        call = self._calls.get(call_id)
        if call is None or call.state not in ESTABLISHED or call.dialog is None:
            self._core.emit(ReinviteFailed(call_id, 481))
            return
        if self._offer_pending(call):
            self._core.emit(ReinviteFailed(call_id, 491))
            return
        self._send_reinvite(call, sdp, now, refresh=False)

    def _offer_pending(self, call: Call) -> bool:
        """An offer is in flight either way, or ours waits out a 491 back-off."""
        return (call.state is not CallState.CONFIRMED
                or CallTimer.REINVITE_RETRY in call.timers)

    def _send_reinvite(self, call: Call, sdp: bytes, now: float, *, refresh: bool) -> None:
        assert call.dialog is not None
        core = self._core
        extra = [("Allow", ALLOW), ("Supported", "timer"), ("User-Agent", core.user_agent)]
        if call.se_interval is not None:
            extra.append(("Session-Expires", format_session_expires(
                call.se_interval, "uac" if call.se_we_refresh else "uas")))
        user = None
        try:
            user = call.invite.to_addr.uri.user if not call.uac else call.invite.from_addr.uri.user
        except Exception:  # a URI without user part is fine
            user = None
        req = call.dialog.create_request(
            "INVITE", via=core.via(call.target.transport),
            contact=core.contact(user, call.target.transport), body=sdp,
            content_type=SDP if sdp else None, extra=extra)
        tx = core.invite_tx(req, call.target, self._calls.dest(call), now)
        call.fire(CallInput.OFFER_SENT)
        call.own_offer = OwnOffer(sdp, refresh, tx)
        acked: list[Request] = []
        core.track(tx, lambda ev, t: self._on_reinvite_events(call, tx, acked, ev, t))

    def _on_reinvite_events(self, call: Call, tx: ClientInviteTransaction,
                            acked: list[Request], events: list[TxEvent], now: float) -> None:
        core = self._core
        for event in events:
            if isinstance(event, TransactionTimedOut):
                if self._offer_done(call, tx) is not None:
                    self._calls.send_bye(call, now)  # 14.1: 408 ends the dialog
                    self._calls.end(call, "timeout", 408, now)
                continue
            if not isinstance(event, ResponseReceived):
                continue
            resp = event.response
            if resp.status < 200:
                continue
            assert call.dialog is not None
            if resp.status < 300:
                if acked:  # retransmitted 2xx: ACK again
                    core.send_to(acked[0], self._calls.dest(call), call.target)
                    continue
                ack = call.dialog.create_ack(tx.request.cseq.number,
                                             via=core.via(call.target.transport))
                acked.append(ack)
                core.send_to(ack, self._calls.dest(call), call.target)
                call.dialog.refresh_target(resp)
                offer = self._offer_done(call, tx)
                if offer is not None:
                    call.local_sdp = offer.sdp
                    adopt_session_timer(call, resp, now)
                    if not offer.refresh:
                        core.emit(ReinviteAnswered(call.call_id, resp.body))
                continue
            offer = self._offer_done(call, tx)
            if offer is not None:
                self._reinvite_failed(call, offer, resp.status, now)

    def _offer_done(self, call: Call, tx: ClientInviteTransaction) -> OwnOffer | None:
        """Our re-INVITE `tx` completed: its offer, or None if it is not the call's live one."""
        offer = call.own_offer
        if offer is None or offer.tx is not tx:
            return None
        call.own_offer = None
        return offer if call.fire(CallInput.OFFER_DONE) is not None else None

    def _reinvite_failed(self, call: Call, offer: OwnOffer, status: int, now: float) -> None:
        if status == 491:
            self._core.stats["glare"] += 1
            rng = self._core.rng
            delay = rng.uniform(2.1, 4.0) if call.uac else rng.uniform(0.0, 2.0)
            call.own_offer = OwnOffer(offer.sdp, offer.refresh)
            call.arm(CallTimer.REINVITE_RETRY, now + delay)
            return
        if status in (408, 481):
            self._calls.send_bye(call, now)
            self._calls.end(call, "timeout" if status == 408 else "dialog gone", status, now)
            return
        if offer.refresh:
            self._calls.send_bye(call, now)
            self._calls.end(call, "session refresh failed", status, now)
            return
        self._core.emit(ReinviteFailed(call.call_id, status))

    # -- their offer -------------------------------------------------------------------

    def on_reinvite(self, call: Call, req: Request, dest: Address, now: float) -> None:
        """A re-INVITE in the call's dialog: 491 on glare, 500 while an INVITE is open."""
        core = self._core
        assert call.dialog is not None
        if call.state is CallState.OFFER_SENT:
            core.stats["glare"] += 1
            core.respond(req, 491, dest, now)  # 14.2: our own offer is pending
            return
        if not call.can(CallInput.OFFER_RECEIVED):  # an INVITE is in progress (14.2)
            core.respond(req, 500, dest, now, extra=[("Retry-After", "2")])
            return
        se = parse_session_expires(req.headers.get("Session-Expires"))
        if se is not None and se[0] < MIN_SE:
            core.respond(req, 422, dest, now, extra=[("Min-SE", str(MIN_SE))])
            return
        tx = core.server_tx(req, dest, now)
        assert isinstance(tx, ServerInviteTransaction)
        tx.send_response(make_response(req, 100), now)
        call.dialog.refresh_target(req)
        call.their_offer = tx
        call.fire(CallInput.OFFER_RECEIVED)
        core.emit(CallUpdated(call.call_id, req.body))

    def answer_reinvite(self, call_id: str, sdp: bytes, now: float) -> None:
        """Answer the re-INVITE announced by `CallUpdated` with our SDP."""
        call = self._calls.get(call_id)
        tx = call.their_offer if call is not None else None
        if call is None or tx is None or not call.can(CallInput.OFFER_ANSWERED):
            return
        resp = self._calls.dialog_response(call, tx.request, 200, sdp)
        call.fire(CallInput.OFFER_ANSWERED)
        answer_session_timer(call, tx.request, resp, now)
        call.local_sdp = sdp
        tx.send_response(resp, now)
        self._calls.start_2xx_retransmission(call, resp, tx, now)

    def reject_reinvite(self, call_id: str, status: int, now: float) -> None:
        """Refuse a re-INVITE (e.g. 488 for an SDP we cannot accept); the call goes on."""
        call = self._calls.get(call_id)
        tx = call.their_offer if call is not None else None
        if call is None or tx is None or call.fire(CallInput.OFFER_REFUSED) is None:
            return
        tx.send_response(make_response(tx.request, status, to_tag=call.local_tag), now)

    def on_info(self, call: Call, req: Request, dest: Address, now: float) -> None:
        """INFO in the dialog: DTMF bodies become `DtmfInfo`; empty ones prove liveness."""
        core = self._core
        if not req.body:
            core.respond(req, 200, dest, now)
            return
        try:
            parsed = parse_dtmf_info(req.headers.get("Content-Type") or "", req.body)
        except UnsupportedInfo:
            core.respond(req, 415, dest, now, extra=[("Accept", INFO_ACCEPT)])
            return
        core.respond(req, 200, dest, now)
        if parsed is not None:
            core.emit(DtmfInfo(call.call_id, parsed[0], parsed[1]))
        else:
            core.stats["dropped"] += 1

    # -- timers ------------------------------------------------------------------------

    def _retry_due(self, call: Call, now: float) -> None:
        offer = call.own_offer
        if offer is None:
            return
        if self._offer_pending(call):
            call.arm(CallTimer.REINVITE_RETRY, now + RETRY_LATER)  # their offer goes first
            return
        call.own_offer = None
        self._send_reinvite(call, offer.sdp, now, refresh=offer.refresh)

    def _refresh_due(self, call: Call, now: float) -> None:
        if self._offer_pending(call):
            call.arm(CallTimer.SESSION_REFRESH, now + RETRY_LATER)
        else:
            self._send_reinvite(call, call.local_sdp, now, refresh=True)

    def _session_expired(self, call: Call, now: float) -> None:
        self._core.stats["session_expired"] += 1
        self._calls.send_bye(call, now)
        self._calls.end(call, "session expired", None, now)


__all__ = ["Reoffers"]
