"""The pure SIP user agent: the one object the runtime drives (aioquic style).

Messages and `now` go in through `receive_datagram`, `handle_timer` and the call/account
methods; what to send comes out of `messages_out()` (bytes, destination, transport, TLS
name; `datagrams_to_send()` is the older UDP-only view of the same queue), the next
deadline from `get_timer`, and what happened from `next_event`. No sockets, no clock, no
DNS: targets are passed in already resolved (see gateway/sip/target.py).

The class is layered: ua_core.py (I/O, bounds, filter and validation hooks), ua_calls.py
(call setup, failover, redirects) and this module (in-dialog requests, re-INVITE and
glare, session timers, INFO DTMF).

Decisions, so the runtime knows what to expect:
- An incoming INVITE gets 100 Trying at once, then `IncomingCall`.
- `CallEnded` is emitted exactly once per call, also for calls we end ourselves (BYE,
  reject, cancel), so the runtime has one place to free its resources.
- As UAS we retransmit our 2xx (T1 doubling to T2, UDP only) until the ACK; without an
  ACK after 64*T1 we send BYE and report `CallEnded("no ACK")` (RFC 3261 13.3.1.4).
- In-dialog requests go to the first route or the remote target when that is an IP
  literal, else to the address the call was set up with (the trunk).
- Malformed input never raises: it is counted in `stats`, reported as `MessageDropped`,
  and answered with 400 (or the parser's status hint) when enough of it was readable.
- `request_filter(request, source, transport, now, in_dialog)` sees every incoming
  request except ACKs, CANCELs that match a transaction and retransmissions absorbed by
  a server transaction, before any state is created; it returns Accept() / None (go on),
  Respond(...) (answered from a bare server transaction, no event) or Drop(reason)
  (silently ignored, counted in stats["filtered"]). `in_dialog` is True when the
  request's Call-ID and tags match a dialog we hold. After the filter, the validator
  (gateway.sip.validate.validate_request when present) may refuse the request.
- Tables are bounded: beyond `max_server_transactions` new requests get a stateless 503
  (stats["overload"]); beyond `max_calls` new INVITEs get 503.
"""

from __future__ import annotations

from gateway.sip.call_state import (
    ESTABLISHED,
    Call,
    CallInput,
    CallState,
    CallTimer,
    OwnOffer,
    SentAnswer,
)
from gateway.sip.dialog import incoming_request_dialog_id
from gateway.sip.events import (
    CallUpdated,
    DtmfInfo,
    ReinviteAnswered,
    ReinviteFailed,
)
from gateway.sip.info import ACCEPTED as INFO_ACCEPT
from gateway.sip.info import UnsupportedInfo, parse_dtmf_info
from gateway.sip.message import Request, Response, make_response
from gateway.sip.session_timer import (
    MIN_SE,
    expiry_delay,
    format_session_expires,
    parse_min_se,
    parse_session_expires,
    refresh_delay,
    supports_timer,
)
from gateway.sip.transaction import (
    ClientInviteTransaction,
    ResponseReceived,
    ServerInviteTransaction,
    TransactionTimedOut,
    TxEvent,
)
from gateway.sip.ua_calls import UaCalls
from gateway.sip.ua_core import ALLOW, SDP, Address, RequestFilter

__all__ = ["ALLOW", "SDP", "Address", "CallState", "RequestFilter", "UserAgent"]


class UserAgent(UaCalls):
    """Calls and registrations over one local SIP identity, with no I/O of its own.

    Constructor keywords: local_host, local_port, transport ("udp" default for Via and
    Contact when a destination names none), user_agent, instance_id, t1, t2,
    target_timeout (1.5 s: silence before failing over to the next target),
    request_filter (security hook, see the module docstring), validator (defaults to
    gateway.sip.validate.validate_request), max_server_transactions (1000), max_calls,
    ports ({"tcp": 5060, "tls": 5061} when those listen elsewhere than local_port) and
    rng (random.Random for the 491 back-off; injectable for tests).
    """

    # -- re-INVITE (hold / resume) -------------------------------------------------------

    def reinvite(self, call_id: str, sdp: bytes, now: float) -> None:
        """Send a new offer in an established call (hold, resume).

        The outcome is `ReinviteAnswered(call_id, sdp)` or `ReinviteFailed(call_id,
        status)`; a 491 (glare) is retried by itself after the RFC 3261 14.1 delay. A
        re-INVITE asked for while another offer is in progress fails at once with 491.
        """
        call = self._calls.get(call_id)
        if call is None or call.state not in ESTABLISHED or call.dialog is None:
            self._events.append(ReinviteFailed(call_id, 481))
            return
        if self._offer_pending(call):
            self._events.append(ReinviteFailed(call_id, 491))
            return
        self._send_reinvite(call, sdp, now, refresh=False)

    def answer_reinvite(self, call_id: str, sdp: bytes, now: float) -> None:
        """Answer the re-INVITE announced by `CallUpdated` with our SDP."""
        call = self._calls.get(call_id)
        tx = call.their_offer if call is not None else None
        if call is None or tx is None or not call.can(CallInput.OFFER_ANSWERED):
            return
        resp = self._dialog_response(call, tx.request, 200, sdp)
        call.fire(CallInput.OFFER_ANSWERED)
        self._session_timer_answer(call, tx.request, resp, now)
        call.local_sdp = sdp
        tx.send_response(resp, now)
        self._start_2xx_retransmission(call, resp, tx, now)

    def reject_reinvite(self, call_id: str, status: int, now: float) -> None:
        """Refuse a re-INVITE (e.g. 488 for an SDP we cannot accept); the call goes on."""
        call = self._calls.get(call_id)
        tx = call.their_offer if call is not None else None
        if call is None or tx is None or call.fire(CallInput.OFFER_REFUSED) is None:
            return
        tx.send_response(make_response(tx.request, status, to_tag=call.local_tag), now)

    def _offer_pending(self, call: Call) -> bool:
        """An offer is in flight either way, or ours waits out a 491 back-off."""
        return (call.state is not CallState.CONFIRMED
                or CallTimer.REINVITE_RETRY in call.timers)

    def _send_reinvite(self, call: Call, sdp: bytes, now: float, *, refresh: bool) -> None:
        assert call.dialog is not None
        extra = [("Allow", ALLOW), ("Supported", "timer"), ("User-Agent", self.user_agent)]
        if call.se_interval is not None:
            extra.append(("Session-Expires", format_session_expires(
                call.se_interval, "uac" if call.se_we_refresh else "uas")))
        user = None
        try:
            user = call.invite.to_addr.uri.user if not call.uac else call.invite.from_addr.uri.user
        except Exception:  # a URI without user part is fine
            user = None
        req = call.dialog.create_request(
            "INVITE", via=self._via(call.target.transport),
            contact=self._contact(user, call.target.transport), body=sdp,
            content_type=SDP if sdp else None, extra=extra)
        dest = self._dialog_dest(call.dialog, call.peer)
        tx = ClientInviteTransaction(req, now, reliable=call.target.reliable, t1=self.t1,
                                     t2=self.t2, dest=dest)
        self._apply_target(tx, call.target)
        call.fire(CallInput.OFFER_SENT)
        call.own_offer = OwnOffer(sdp, refresh, tx)
        acked: list[Request] = []
        self._track(tx, lambda ev, t: self._on_reinvite_events(call, tx, acked, ev, t))

    def _on_reinvite_events(self, call: Call, tx: ClientInviteTransaction,
                            acked: list[Request], events: list[TxEvent], now: float) -> None:
        for event in events:
            if isinstance(event, TransactionTimedOut):
                if self._offer_done(call, tx) is not None:
                    self._send_bye(call, now)  # 14.1: 408 ends the dialog
                    self._end(call, "timeout", 408, now)
                continue
            if not isinstance(event, ResponseReceived):
                continue
            resp = event.response
            if resp.status < 200:
                continue
            assert call.dialog is not None
            if resp.status < 300:
                if acked:  # retransmitted 2xx: ACK again
                    self._send_to(acked[0], self._dialog_dest(call.dialog, call.peer),
                                  call.target)
                    continue
                ack = call.dialog.create_ack(tx.request.cseq.number,
                                             via=self._via(call.target.transport))
                acked.append(ack)
                self._send_to(ack, self._dialog_dest(call.dialog, call.peer), call.target)
                call.dialog.refresh_target(resp)
                offer = self._offer_done(call, tx)
                if offer is not None:
                    call.local_sdp = offer.sdp
                    self._session_timer_start(call, resp, now)
                    if not offer.refresh:
                        self._events.append(ReinviteAnswered(call.call_id, resp.body))
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
            self.stats["glare"] += 1
            delay = (self.rng.uniform(2.1, 4.0) if call.uac else self.rng.uniform(0.0, 2.0))
            call.own_offer = OwnOffer(offer.sdp, offer.refresh)
            call.arm(CallTimer.REINVITE_RETRY, now + delay)
            return
        if status in (408, 481):
            self._send_bye(call, now)
            self._end(call, "timeout" if status == 408 else "dialog gone", status, now)
            return
        if offer.refresh:
            self._send_bye(call, now)
            self._end(call, "session refresh failed", status, now)
            return
        self._events.append(ReinviteFailed(call.call_id, status))

    # -- session timers (RFC 4028) -------------------------------------------------------

    def _session_timer_answer(self, call: Call, req: Request, resp: Response,
                              now: float) -> None:
        """Our 2xx to an (re-)INVITE: echo Session-Expires with a refresher when asked."""
        resp.headers.add("Supported", "timer")
        se = parse_session_expires(req.headers.get("Session-Expires"))
        if se is None:
            if call.se_interval is not None and not call.se_we_refresh:
                self._arm_session(call, now)  # any re-INVITE from the refresher refreshes
            return
        interval = max(se[0], MIN_SE, parse_min_se(req.headers.get("Min-SE")) or 0)
        refresher = se[1]
        if refresher is None:
            refresher = "uac" if supports_timer(req.headers.get_all("Supported")) else "uas"
        resp.headers.add("Session-Expires", format_session_expires(interval, refresher))
        if refresher == "uac":
            resp.headers.add("Require", "timer")
        call.se_interval = interval
        call.se_we_refresh = refresher == "uas"
        self._arm_session(call, now)

    def _session_timer_start(self, call: Call, resp: Response, now: float) -> None:
        """A 2xx to our (re-)INVITE: adopt the interval and refresher it names."""
        se = parse_session_expires(resp.headers.get("Session-Expires"))
        if se is None:
            call.se_interval = None
            call.disarm(CallTimer.SESSION_REFRESH)
            call.disarm(CallTimer.SESSION_EXPIRE)
            return
        call.se_interval = max(se[0], 1)
        call.se_we_refresh = (se[1] or "uac") == "uac"
        self._arm_session(call, now)

    def _arm_session(self, call: Call, now: float) -> None:
        if call.se_interval is None:
            return
        if call.se_we_refresh:
            call.disarm(CallTimer.SESSION_EXPIRE)
            call.arm(CallTimer.SESSION_REFRESH, now + refresh_delay(call.se_interval))
        else:
            call.disarm(CallTimer.SESSION_REFRESH)
            call.arm(CallTimer.SESSION_EXPIRE, now + expiry_delay(call.se_interval))

    # -- requests ----------------------------------------------------------------------

    def _on_new_request(self, req: Request, addr: Address, dest: Address, now: float,
                        in_dialog: bool) -> None:
        method = req.method.upper()
        if req.to_tag:
            self._on_in_dialog(req, dest, now)
        elif method == "INVITE":
            self._on_invite(req, addr, dest, now)
        elif method == "OPTIONS":
            self._respond(req, 200, dest, now, extra=self._capabilities())
        elif method in ("BYE", "INFO"):
            self._respond(req, 481, dest, now)
        else:
            self._respond(req, 405, dest, now, extra=[("Allow", ALLOW)])

    def _capabilities(self) -> list[tuple[str, str]]:
        return [("Allow", ALLOW), ("Accept", SDP), ("Supported", "timer"),
                ("User-Agent", self.user_agent)]

    def _find_dialog_call(self, req: Request) -> Call | None:
        call = self._calls.get(req.call_id)
        if call is None or call.dialog is None:
            return None
        if incoming_request_dialog_id(req) != call.dialog.id:
            return None
        return call

    def _on_ack(self, req: Request, now: float) -> None:
        call = self._find_dialog_call(req)
        if call is None or call.answer is None or req.cseq.number != call.answer.cseq:
            self.stats["dropped"] += 1
            return
        offerless = call.state is CallState.ACCEPTED and not call.invite.body
        call.answer = None
        if call.state is CallState.ENDING:
            self._send_bye(call, now)  # we hung up before this ACK (RFC 3261 15)
            self._end(call, "local hangup", None, now, CallInput.ACKED)
            return
        call.fire(CallInput.ACKED)
        if offerless and req.body:  # the answer to our offer in the 2xx
            self._events.append(CallUpdated(call.call_id, req.body))

    def _on_in_dialog(self, req: Request, dest: Address, now: float) -> None:
        method = req.method.upper()
        call = self._find_dialog_call(req)
        if call is None or call.over:
            self._respond(req, 481, dest, now)
            return
        assert call.dialog is not None
        if not call.dialog.check_remote_cseq(req):
            self._respond(req, 500, dest, now, extra=[("Retry-After", "1")])
            return
        if method == "BYE":
            self._respond(req, 200, dest, now)
            if not call.uac and isinstance(call.invite_tx, ServerInviteTransaction) \
                    and not call.invite_tx.final_sent:
                call.invite_tx.send_response(
                    make_response(call.invite, 487, to_tag=call.local_tag), now)
            self._end(call, "remote hangup", None, now)
        elif method == "INVITE":
            self._on_reinvite(call, req, dest, now)
        elif method == "OPTIONS":
            self._respond(req, 200, dest, now, extra=self._capabilities())
        elif method == "INFO":
            self._on_info(call, req, dest, now)
        else:
            self._respond(req, 405, dest, now, extra=[("Allow", ALLOW)])

    def _on_reinvite(self, call: Call, req: Request, dest: Address, now: float) -> None:
        assert call.dialog is not None
        if call.state is CallState.OFFER_SENT:
            self.stats["glare"] += 1
            self._respond(req, 491, dest, now)  # 14.2: our own offer is pending
            return
        if not call.can(CallInput.OFFER_RECEIVED):  # an INVITE is in progress (14.2)
            self._respond(req, 500, dest, now, extra=[("Retry-After", "2")])
            return
        se = parse_session_expires(req.headers.get("Session-Expires"))
        if se is not None and se[0] < MIN_SE:
            self._respond(req, 422, dest, now, extra=[("Min-SE", str(MIN_SE))])
            return
        tx = self._server_tx(req, dest, now)
        assert isinstance(tx, ServerInviteTransaction)
        tx.send_response(make_response(req, 100), now)
        call.dialog.refresh_target(req)
        call.their_offer = tx
        call.fire(CallInput.OFFER_RECEIVED)
        self._events.append(CallUpdated(call.call_id, req.body))

    def _on_info(self, call: Call, req: Request, dest: Address, now: float) -> None:
        if not req.body:
            self._respond(req, 200, dest, now)  # an empty INFO is a liveness check
            return
        try:
            parsed = parse_dtmf_info(req.headers.get("Content-Type") or "", req.body)
        except UnsupportedInfo:
            self._respond(req, 415, dest, now, extra=[("Accept", INFO_ACCEPT)])
            return
        self._respond(req, 200, dest, now)
        if parsed is not None:
            self._events.append(DtmfInfo(call.call_id, parsed[0], parsed[1]))
        else:
            self.stats["dropped"] += 1

    # -- call timers -----------------------------------------------------------------

    def _start_2xx_retransmission(self, call: Call, resp: Response,
                                  tx: ServerInviteTransaction, now: float) -> None:
        call.answer = SentAnswer(resp, tx.dest, tx.request.cseq.number, self.t1)
        if not tx.reliable:
            call.arm(CallTimer.OK_RETRANSMIT, now + self.t1)
        call.arm(CallTimer.OK_GIVEUP, now + 64 * self.t1)

    def _call_timers(self, call: Call, now: float) -> None:
        while (timer := call.pop_due(now)) is not None:
            self._call_timer(call, timer, now)

    def _call_timer(self, call: Call, timer: CallTimer, now: float) -> None:
        if timer is CallTimer.ALERT:
            self.stats["unanswered"] = self.stats.get("unanswered", 0) + 1
            self.reject(call.call_id, 480, now)
        elif timer is CallTimer.OK_GIVEUP:
            call.answer = None
            self._send_bye(call, now)  # 13.3.1.4: confirmed but no ACK: end the session
            self._end(call, "no ACK", None, now, CallInput.NO_ACK)
        elif timer is CallTimer.OK_RETRANSMIT and call.answer is not None:
            answer = call.answer
            if answer.dest is not None:
                self._send_to(answer.response, answer.dest, call.target)
            answer.interval = min(answer.interval * 2, self.t2)
            giveup = call.timers.get(CallTimer.OK_GIVEUP, now + answer.interval)
            call.arm(CallTimer.OK_RETRANSMIT, min(now + answer.interval, giveup))
        elif timer is CallTimer.TARGET:
            self._target_silence(call, now)
        elif timer is CallTimer.CANCEL:
            self._end(call, "cancelled", None, now)  # 9.1: no final after 64*T1
        elif timer is CallTimer.REINVITE_RETRY and call.own_offer is not None:
            if self._offer_pending(call):
                call.arm(CallTimer.REINVITE_RETRY, now + 1.0)  # their offer goes first
            else:
                offer, call.own_offer = call.own_offer, None
                self._send_reinvite(call, offer.sdp, now, refresh=offer.refresh)
        elif timer is CallTimer.SESSION_REFRESH:
            if self._offer_pending(call):
                call.arm(CallTimer.SESSION_REFRESH, now + 1.0)  # let the offer finish first
            else:
                self._send_reinvite(call, call.local_sdp, now, refresh=True)
        elif timer is CallTimer.SESSION_EXPIRE:
            self.stats["session_expired"] += 1
            self._send_bye(call, now)
            self._end(call, "session expired", None, now)
        elif timer is CallTimer.LINGER:
            self._calls.pop(call.call_id, None)
