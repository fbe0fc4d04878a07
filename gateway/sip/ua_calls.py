"""Call setup for the pure user agent: accounts, outgoing and incoming INVITEs.

Outgoing INVITEs walk an ordered target list (RFC 3263): on a transport error, a 503, or
no response at all within `target_timeout` they move to the next target; the target that
answered stays preferred for later requests to the same trunk. 3xx answers are followed
to the Contact(s) given, at most `MAX_REDIRECTS` hops and never twice to one URI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from gateway.sip.auth import build_authorization, challenge_from
from gateway.sip.call_state import (
    SETTING_UP,
    Call,
    CallInput,
    CallState,
    CallTimer,
)
from gateway.sip.dialog import Dialog
from gateway.sip.errors import SipError
from gateway.sip.events import CallAnswered, CallEnded, CallProgress, IncomingCall
from gateway.sip.headers import NameAddr, generate_call_id, generate_tag
from gateway.sip.message import Headers, Request, Response, build_request, make_response
from gateway.sip.registration import AccountSettings, RegistrationClient
from gateway.sip.session_timer import (
    MIN_SE,
    parse_min_se,
    parse_session_expires,
)
from gateway.sip.target import Outgoing, Target, as_targets
from gateway.sip.transaction import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ResponseReceived,
    ServerInviteTransaction,
    TransactionTimedOut,
    TxEvent,
    TxState,
)
from gateway.sip.ua_core import (
    ALLOW,
    SDP,
    Address,
    Handler,
    UaCore,
    is_ip,
)

MAX_REDIRECTS = 3


def _quote_display(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def end_reason(status: int) -> str:
    """The CallEnded reason for a final failure status."""
    if status in (486, 600):
        return "busy"
    if status == 487:
        return "cancelled"
    if status in (603, 403):
        return "declined"
    if status == 408:
        return "timeout"
    if 300 <= status < 400:
        return "redirect failed"
    return "rejected"


def _q(addr: NameAddr) -> float:
    try:
        return float(addr.params.get("q") or "1")
    except ValueError:
        return 0.0


class UaCalls(UaCore):
    """Accounts plus the INVITE transactions that set calls up, in both roles."""

    # -- registrations ---------------------------------------------------------------

    def add_account(self, account_id: str, settings: AccountSettings, now: float) -> None:
        """Start registering `account_id` (replaces an account of the same id).

        With `settings.targets` the REGISTER fails over like an INVITE and shares the
        sticky target choice with calls that pass the same targets to `invite`.
        """
        if not settings.instance_id:
            settings = replace(settings, instance_id=self.instance_id)
        reg = RegistrationClient(account_id, settings, local_host=self.local_host,
                                 local_port=self.local_port, transport=self.transport,
                                 user_agent=self.user_agent, t1=self.t1,
                                 target_set=self._target_set(settings.target_list()))
        self._accounts[account_id] = reg
        self._removing.discard(account_id)
        reg.start(now)

    def remove_account(self, account_id: str, now: float) -> None:
        """Unregister; the account disappears once the registrar answered or timed out."""
        reg = self._accounts.get(account_id)
        if reg is None:
            return
        self._removing.add(account_id)
        reg.unregister(now)

    def registration_state(self, account_id: str) -> dict[str, object]:
        """Snapshot for the control socket: registered, phase, expires, reason..."""
        reg = self._accounts.get(account_id)
        if reg is None:
            return {"account_id": account_id, "registered": False, "phase": "unknown"}
        return reg.state()

    # -- outgoing calls --------------------------------------------------------------

    def invite(self, *, target_uri: str, from_uri: str, dest: Address | Sequence[Target],
               sdp: bytes, account_id: str | None = None, display_name: str | None = None,
               now: float) -> str:
        """Place a call; returns its Call-ID, the key of every later event and method.

        `dest` is an address (sent over the agent's default transport) or an ordered
        list of RFC 3263 targets, tried in turn with failover.
        """
        targets = as_targets(dest, self.transport.lower())
        tset = self._target_set(targets) if len(targets) > 1 else None
        index = tset.start() if tset is not None else 0
        target = targets[index]
        call_id = generate_call_id(self.local_host)
        tag = generate_tag()
        from_value = f"<{from_uri}>;tag={tag}"
        if display_name:
            from_value = f"{_quote_display(display_name)} {from_value}"
        user = from_uri.split(":", 1)[-1].split("@", 1)[0] if "@" in from_uri else None
        req = build_request(
            "INVITE", target_uri, from_addr=from_value, to_addr=f"<{target_uri}>",
            call_id=call_id, cseq=1, via=self._via(target.transport),
            contact=self._contact(user, target.transport),
            body=sdp, content_type=SDP if sdp else None,
            extra=[("Allow", ALLOW), ("Supported", "timer"), ("User-Agent", self.user_agent)])
        tx = self._invite_tx(req, target, now)
        call = Call(call_id, True, target.addr, tag, req, tx, CallState.CALLING, target,
                    account_id=account_id, targets=tset, target_index=index,
                    local_sdp=sdp)
        call.visited.add(target_uri)
        self._calls[call_id] = call
        self._arm_target_timer(call, now)
        self._track(tx, lambda ev, t: self._on_invite_client_events(call, tx, ev, t))
        return call_id

    def cancel(self, call_id: str, now: float) -> None:
        """Abandon an unanswered outgoing call (CANCEL once a provisional arrived, 9.1)."""
        call = self._calls.get(call_id)
        if call is None or not call.uac or call.fire(CallInput.CANCEL) is None:
            return
        call.arm(CallTimer.CANCEL, now + 64 * self.t1)
        if call.state is CallState.CANCELLING:  # a provisional came: CANCEL may go now
            self._send_cancel(call, now)

    def bye(self, call_id: str, now: float) -> None:
        """Hang up in any state: CANCEL, 480, or BYE as the state requires."""
        call = self._calls.get(call_id)
        if call is None or call.over:
            return
        if call.state in SETTING_UP:
            self.cancel(call_id, now)
        elif call.state in (CallState.INCOMING, CallState.RINGING):
            self.reject(call_id, 480, now)
        else:
            if call.answer is None:  # else our 2xx is not ACKed yet: BYE waits (RFC 3261 15)
                self._send_bye(call, now)
            self._end(call, "local hangup", None, now, CallInput.HANGUP)

    def call_state(self, call_id: str) -> str | None:
        """The call's state name, or None for unknown calls (for the control socket)."""
        call = self._calls.get(call_id)
        return call.state.public if call is not None else None

    # -- incoming calls --------------------------------------------------------------

    def ringing(self, call_id: str, now: float, *, sdp: bytes | None = None) -> None:
        """Tell the caller we alert: 180, or 183 with early-media SDP."""
        call = self._uas_pending(call_id)
        if call is None:
            return
        resp = self._dialog_response(call, call.invite, 183 if sdp else 180, sdp)
        if call.dialog is None:
            call.dialog = Dialog.from_uas_request(call.invite, call.local_tag, early=True)
        call.fire(CallInput.RING)
        assert isinstance(call.invite_tx, ServerInviteTransaction)
        call.invite_tx.send_response(resp, now)

    def answer(self, call_id: str, sdp: bytes, now: float) -> None:
        """Accept an incoming call with our SDP; 2xx is retransmitted until the ACK."""
        call = self._uas_pending(call_id)
        if call is None:
            return
        resp = self._dialog_response(call, call.invite, 200, sdp)
        if call.dialog is None:
            call.dialog = Dialog.from_uas_request(call.invite, call.local_tag, early=False)
        call.dialog.confirm()
        call.fire(CallInput.ANSWER)
        self._session_timer_answer(call, call.invite, resp, now)
        call.local_sdp = sdp
        assert isinstance(call.invite_tx, ServerInviteTransaction)
        call.invite_tx.send_response(resp, now)
        self._start_2xx_retransmission(call, resp, call.invite_tx, now)

    def reject(self, call_id: str, status: int, now: float) -> None:
        """Refuse an incoming call with a 300-699 status."""
        call = self._uas_pending(call_id)
        if call is None:
            return
        if not 300 <= status <= 699:
            raise ValueError(f"reject needs a 300-699 status, got {status}")
        assert isinstance(call.invite_tx, ServerInviteTransaction)
        call.invite_tx.send_response(
            make_response(call.invite, status, to_tag=call.local_tag), now)
        self._end(call, "rejected", status, now)

    # -- hooks implemented in ua.py ----------------------------------------------------

    def _start_2xx_retransmission(self, call: Call, resp: Response,
                                  tx: ServerInviteTransaction, now: float) -> None:
        raise NotImplementedError

    def _session_timer_answer(self, call: Call, req: Request, resp: Response,
                              now: float) -> None:
        raise NotImplementedError

    def _session_timer_start(self, call: Call, resp: Response, now: float) -> None:
        raise NotImplementedError

    # -- call plumbing -----------------------------------------------------------------

    def _invite_tx(self, req: Request, target: Target, now: float) -> ClientInviteTransaction:
        tx = ClientInviteTransaction(req, now, reliable=target.reliable, t1=self.t1,
                                     t2=self.t2, dest=target.addr)
        self._apply_target(tx, target)
        return tx

    def _arm_target_timer(self, call: Call, now: float) -> None:
        if call.targets is not None and call.tried < len(call.targets):
            call.arm(CallTimer.TARGET, now + self.target_timeout)

    def _reissue_invite(self, call: Call, now: float, *, target: Target | None = None,
                        uri: str | None = None,
                        headers_extra: list[tuple[str, str]] | None = None) -> None:
        """Send the call's INVITE again: new branch and CSeq, maybe new target or URI."""
        old = call.invite
        target = target or call.target
        headers = old.headers.copy()
        headers.set("Via", self._via(target.transport))
        headers.set("CSeq", f"{old.cseq.number + 1} INVITE")
        if target.transport != call.target.transport:
            user = None
            try:
                user = old.from_addr.uri.user
            except SipError:
                pass
            headers.set("Contact", self._contact(user, target.transport))
        for name, value in headers_extra or []:
            headers.remove(name)
            headers.add(name, value)
        req = Request("INVITE", uri or old.uri, headers, old.body)
        old_tx = call.invite_tx
        if isinstance(old_tx, ClientInviteTransaction) and old_tx.state is TxState.CALLING:
            old_tx.abandon()
        tx = self._invite_tx(req, target, now)
        call.invite = req
        call.invite_tx = tx
        call.target = target
        call.peer = target.addr
        call.fire(CallInput.REISSUED)
        self._track(tx, lambda ev, t: self._on_invite_client_events(call, tx, ev, t))

    def _fail_over(self, call: Call, now: float) -> bool:
        """Try the call's next target; False when there is none left."""
        if call.targets is None or not call.can(CallInput.REISSUED):
            return False
        nxt = call.targets.next_after(call.target_index, call.tried)
        if nxt is None:
            return False
        self.stats["failovers"] += 1
        call.target_index = nxt
        call.tried += 1
        self._reissue_invite(call, now, target=call.targets.targets[nxt])
        self._arm_target_timer(call, now)
        return True

    def _target_silence(self, call: Call, now: float) -> None:
        """No response at all from the current target within `target_timeout`."""
        tx = call.invite_tx
        if isinstance(tx, ClientInviteTransaction) and not tx.terminated:
            tx.abandon()
        if not self._fail_over(call, now):
            self._end(call, "timeout", 408, now)

    def _follow_redirect(self, call: Call, resp: Response, now: float) -> bool:
        if call.hops >= MAX_REDIRECTS or not call.can(CallInput.REISSUED):
            return False
        contacts: list[NameAddr] = []
        for value in resp.headers.get_all("Contact"):
            try:
                contacts.append(NameAddr.parse(value))
            except SipError:
                continue
        contacts.sort(key=_q, reverse=True)
        for addr in contacts:
            uri = addr.uri
            text = str(replace(uri, headers={}))
            if uri.scheme not in ("sip", "sips") or text in call.visited:
                continue
            call.visited.add(text)
            call.hops += 1
            self.stats["redirects"] += 1
            target = call.target
            if is_ip(uri.host):
                transport = "tls" if uri.scheme == "sips" else (
                    (uri.params.get("transport") or call.target.transport).lower())
                if transport not in ("udp", "tcp", "tls"):
                    transport = call.target.transport
                host, port = uri.host_port(5061 if transport == "tls" else 5060)
                target = Target(transport, host.strip("[]"), port)
            call.targets = None
            call.disarm(CallTimer.TARGET)
            self._reissue_invite(call, now, target=target, uri=text)
            return True
        return False

    # -- responses -------------------------------------------------------------------

    def _on_response(self, resp: Response, now: float) -> None:
        tx = self._txl.match_response(resp)
        if tx is not None:
            self._route(tx, tx.receive(resp, now), now)
            return
        for reg in self._accounts.values():
            if reg.receive_response(resp, now):
                return
        call = self._calls.get(resp.call_id)
        if (call is not None and call.ack is not None and call.ack_dest is not None
                and 200 <= resp.status < 300 and resp.cseq.method == "INVITE"):
            self._send_to(call.ack, call.ack_dest, call.target)  # 2xx after Timer M
            return
        self.stats["stray_responses"] += 1

    def _on_invite_client_events(self, call: Call, tx: ClientInviteTransaction,
                                 events: list[TxEvent], now: float) -> None:
        for event in events:
            if isinstance(event, ResponseReceived):
                resp = event.response
                first = call.state in (CallState.CALLING, CallState.CANCEL_WAIT)
                if tx is call.invite_tx and first:  # the target answers: no failover now
                    call.disarm(CallTimer.TARGET)
                    if call.targets is not None and resp.status != 503:
                        call.targets.succeeded(call.target_index)
                if 200 <= resp.status < 300:
                    self._on_invite_2xx(call, resp, now)
                elif tx is call.invite_tx:
                    self._on_invite_response(call, resp, now)
            elif isinstance(event, TransactionTimedOut) and tx is call.invite_tx:
                if call.cancelling:
                    self._end(call, "cancelled", None, now)
                elif event.reason == "transport error":
                    if not self._fail_over(call, now):
                        self._end(call, "transport error", 503, now)
                else:
                    self._end(call, "timeout", 408, now)

    def _on_invite_response(self, call: Call, resp: Response, now: float) -> None:
        status = resp.status
        if status < 200:
            new = call.fire(CallInput.TRYING if status == 100 else CallInput.PROVISIONAL)
            if new is CallState.CANCELLING:  # the CANCEL waited for this provisional
                self._send_cancel(call, now)
            elif new is CallState.EARLY:
                if resp.to_tag and call.dialog is None:
                    call.dialog = Dialog.from_uac_response(call.invite, resp)
                self._events.append(CallProgress(call.call_id, status, resp.body or None))
            return
        if call.over:
            return
        if not call.cancelling:
            if status in (401, 407) and self._retry_with_auth(call, resp, now):
                return
            if status == 503 and self._fail_over(call, now):
                return
            if 300 <= status < 400 and self._follow_redirect(call, resp, now):
                return
            if status == 422 and self._retry_session_interval(call, resp, now):
                return
        if call.cancelling:
            self._end(call, "cancelled", status, now)
        elif status in (401, 407):
            self._end(call, "authentication failed", status, now)
        else:
            self._end(call, end_reason(status), status, now)

    def _retry_session_interval(self, call: Call, resp: Response, now: float) -> bool:
        """422 Session Interval Too Small: retry once with the peer's Min-SE (RFC 4028 7.4)."""
        minimum = parse_min_se(resp.headers.get("Min-SE"))
        if call.se_offer is not None or minimum is None or minimum > 86400:
            return False  # retried once already, or no usable Min-SE
        call.se_offer = max(minimum, MIN_SE)
        self._reissue_invite(call, now, headers_extra=[
            ("Session-Expires", str(call.se_offer)), ("Min-SE", str(call.se_offer))])
        return True

    def _on_invite_2xx(self, call: Call, resp: Response, now: float) -> None:
        if call.dialog is not None and not call.dialog.early:
            if resp.to_tag == call.dialog.remote_tag:
                if call.ack is not None and call.ack_dest is not None:
                    self._send_to(call.ack, call.ack_dest, call.target)
                return
            # a second fork answered: ACK it and hang it up
            extra = Dialog.from_uac_response(call.invite, resp)
            dest = self._dialog_dest(extra, call.peer)
            self._send_to(extra.create_ack(call.invite.cseq.number,
                                           via=self._via(call.target.transport)),
                          dest, call.target)
            bye = extra.create_request("BYE", via=self._via(call.target.transport))
            btx = ClientNonInviteTransaction(bye, now, reliable=call.target.reliable,
                                             t1=self.t1, t2=self.t2, dest=dest)
            self._apply_target(btx, call.target)
            self._track(btx)
            return
        if call.dialog is None or call.dialog.remote_tag != resp.to_tag:
            call.dialog = Dialog.from_uac_response(call.invite, resp)
        else:
            call.dialog.confirm(resp)
        dest = self._dialog_dest(call.dialog, call.peer)
        call.ack = call.dialog.create_ack(call.invite.cseq.number,
                                          via=self._via(call.target.transport))
        call.ack_dest = dest
        self._send_to(call.ack, dest, call.target)
        if call.cancelling or call.over:
            self._send_bye(call, now)  # answered while we were cancelling
            self._end(call, "cancelled", None, now, CallInput.ANSWERED)
            return
        call.fire(CallInput.ANSWERED)
        self._session_timer_start(call, resp, now)
        self._events.append(CallAnswered(call.call_id, resp.body))

    def _retry_with_auth(self, call: Call, resp: Response, now: float) -> bool:
        reg = self._accounts.get(call.account_id or "")
        if reg is None:
            return False
        proxy = resp.status == 407
        try:
            challenge = challenge_from(resp)
        except SipError:
            return False
        if challenge.nonce == call.auth_nonce and not challenge.stale:
            return False  # answered once already: credentials are wrong
        if challenge.nonce != call.auth_nonce:
            call.auth_nc = 0
        call.auth_nonce = challenge.nonce
        call.auth_nc += 1
        settings = reg.settings
        header = "Proxy-Authorization" if proxy else "Authorization"
        call.invite.headers.remove("Authorization")
        call.invite.headers.remove("Proxy-Authorization")
        value = build_authorization(
            challenge, method="INVITE", uri=call.invite.uri,
            username=settings.auth_username or reg.username, password=settings.password,
            nc=call.auth_nc, body=call.invite.body)
        self._reissue_invite(call, now, headers_extra=[(header, value)])
        return True

    def _send_cancel(self, call: Call, now: float) -> None:
        inv = call.invite
        headers = Headers()
        headers.add("Via", inv.headers.get_all("Via")[0])
        for route in inv.headers.get_all("Route"):
            headers.add("Route", route)
        headers.add("Max-Forwards", "70")
        headers.add("From", inv.headers.get("From") or "")
        headers.add("To", inv.headers.get("To") or "")
        headers.add("Call-ID", inv.call_id)
        headers.add("CSeq", f"{inv.cseq.number} CANCEL")
        headers.add("User-Agent", self.user_agent)
        tx = ClientNonInviteTransaction(Request("CANCEL", inv.uri, headers), now,
                                        reliable=call.target.reliable, t1=self.t1,
                                        t2=self.t2, dest=call.peer)
        self._apply_target(tx, call.target)
        self._track(tx)

    # -- incoming INVITE and CANCEL ------------------------------------------------------

    def _on_invite(self, req: Request, addr: Address, dest: Address, now: float) -> None:
        existing = self._calls.get(req.call_id)
        if existing is not None and not existing.over:
            self._respond(req, 482, dest, now)  # merged/looped request (8.2.2.2)
            return
        if len(self._calls) >= self.max_calls:
            self.stats["overload"] += 1
            self._respond(req, 503, dest, now, extra=[("Retry-After", "10")])
            return
        content_type = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if req.body and content_type != SDP:
            self._respond(req, 415, dest, now, extra=[("Accept", SDP)])
            return
        required = [tag.strip() for item in req.headers.get_all("Require")
                    for tag in item.split(",") if tag.strip().lower() != "timer"]
        if required:
            self._respond(req, 420, dest, now, extra=[("Unsupported", ", ".join(required))])
            return
        se = parse_session_expires(req.headers.get("Session-Expires"))
        if se is not None and se[0] < MIN_SE:
            self._respond(req, 422, dest, now, extra=[("Min-SE", str(MIN_SE))])
            return
        from_addr = req.from_addr
        tx = self._server_tx(req, dest, now)
        assert isinstance(tx, ServerInviteTransaction)
        tx.send_response(make_response(req, 100), now)
        target = Target(self._rx_transport, addr[0], addr[1])
        call = Call(req.call_id, False, addr, generate_tag(), req, tx, CallState.INCOMING,
                    target)
        # Safety net: an application that never answers must not keep the call forever.
        call.arm(CallTimer.ALERT, now + self.max_alerting)
        self._calls[req.call_id] = call
        self._events.append(IncomingCall(
            call_id=req.call_id, from_uri=str(from_addr.uri), from_display=from_addr.display,
            to_uri=str(req.to_addr.uri), request_uri=req.uri, sdp=req.body, source=addr))

    def _on_cancel(self, req: Request, dest: Address, now: float) -> None:
        inv_tx = self._txl.invite_for_cancel(req)
        if inv_tx is None:
            self._respond(req, 481, dest, now)
            return
        call = self._calls.get(req.call_id)
        to_tag = call.local_tag if call is not None else None
        self._respond(req, 200, dest, now, to_tag=to_tag)
        if inv_tx.final_sent:
            return
        inv_tx.send_response(make_response(inv_tx.request, 487, to_tag=to_tag or generate_tag()),
                             now)
        if call is not None and call.invite_tx is inv_tx:
            self._end(call, "cancelled", 487, now)

    # -- shared helpers ------------------------------------------------------------------

    def _send_to(self, msg: Request | Response, dest: Address, target: Target) -> None:
        self._out.append(Outgoing(bytes(msg), dest, target.transport, target.server_name))

    def _end(self, call: Call, reason: str, status: int | None, now: float,
             inp: CallInput = CallInput.END) -> None:
        """Feed `inp` (END unless a more precise input applies); report the end once.

        ENDED forgets our 2xx and lingers 64*T1 for retransmissions; ENDING (hung up
        before the ACK) keeps retransmitting the 2xx and sends BYE after the ACK.
        """
        was_over = call.over
        if call.fire(inp) is None:
            return
        if call.state is CallState.ENDED:
            call.answer = None
            call.arm(CallTimer.LINGER, now + 64 * self.t1)
        if not was_over:
            self._events.append(CallEnded(call.call_id, reason, status))

    def _uas_pending(self, call_id: str) -> Call | None:
        call = self._calls.get(call_id)
        if call is None or call.uac or call.state not in (CallState.INCOMING,
                                                          CallState.RINGING):
            return None
        return call

    def _dialog_response(self, call: Call, request: Request, status: int,
                         sdp: bytes | None) -> Response:
        resp = make_response(request, status, to_tag=call.local_tag)
        for rr in request.headers.get_lines("Record-Route"):
            resp.headers.add("Record-Route", rr)
        user = None
        try:
            user = request.request_uri.user
        except SipError:
            pass
        resp.headers.add("Contact", self._contact(user, call.target.transport))
        resp.headers.add("Allow", ALLOW)
        if sdp:
            resp.headers.add("Content-Type", SDP)
            resp.body = sdp
        return resp

    def _dialog_dest(self, dialog: Dialog, fallback: Address) -> Address:
        try:
            hop = dialog.next_hop()
        except SipError:
            return fallback
        if is_ip(hop.host):
            return hop.host_port(5061 if hop.scheme == "sips" else 5060)
        return fallback

    def _send_request(self, call: Call, method: str, now: float,
                      handler: Handler | None = None, *, body: bytes = b"",
                      content_type: str | None = None,
                      extra: list[tuple[str, str]] | None = None) -> ClientNonInviteTransaction:
        assert call.dialog is not None
        req = call.dialog.create_request(
            method, via=self._via(call.target.transport), body=body,
            content_type=content_type,
            extra=[("User-Agent", self.user_agent), *(extra or [])])
        tx = ClientNonInviteTransaction(req, now, reliable=call.target.reliable, t1=self.t1,
                                        t2=self.t2,
                                        dest=self._dialog_dest(call.dialog, call.peer))
        self._apply_target(tx, call.target)
        self._track(tx, handler)
        return tx

    def _send_bye(self, call: Call, now: float) -> None:
        if call.dialog is not None:
            self._send_request(call, "BYE", now)


__all__ = ["MAX_REDIRECTS", "UaCalls", "end_reason"]
