"""Our INVITE: placing calls, failover, redirects, digest retries and CANCEL.

Outgoing INVITEs walk an ordered target list (RFC 3263): on a transport error, a 503, or
no response at all within `target_timeout` they move to the next target; the target that
answered stays preferred for later requests to the same trunk. 3xx answers are followed
to the Contact(s) given, at most `MAX_REDIRECTS` hops and never twice to one URI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from gateway.sip.auth import build_authorization, challenge_from
from gateway.sip.call_state import Call, CallInput, CallState, CallTimer
from gateway.sip.dialog import Dialog
from gateway.sip.errors import SipError
from gateway.sip.events import CallAnswered, CallProgress
from gateway.sip.headers import NameAddr, generate_call_id, generate_tag
from gateway.sip.message import Headers, Request, Response, build_request
from gateway.sip.session_timer import MIN_SE, parse_min_se
from gateway.sip.target import Target, as_targets
from gateway.sip.transaction import (
    ClientInviteTransaction,
    ResponseReceived,
    TransactionTimedOut,
    TxEvent,
    TxState,
)
from gateway.sip.ua_accounts import Registrations
from gateway.sip.ua_calls import CallTable, adopt_session_timer
from gateway.sip.ua_core import ALLOW, SDP, Address, SipCore, dialog_dest, is_ip

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


class OutgoingCalls:
    """The UAC side of call setup: our INVITE until its final answer, and CANCEL."""

    def __init__(self, core: SipCore, calls: CallTable, accounts: Registrations, *,
                 target_timeout: float = 1.5) -> None:
        self._core = core
        self._calls = calls
        self._accounts = accounts
        self.target_timeout = target_timeout
        calls.on_timer(CallTimer.TARGET, self._target_silence)
        calls.on_timer(CallTimer.CANCEL, lambda call, now: calls.end(call, "cancelled", None,
                                                                      now))  # 9.1: 64*T1

    def invite(self, *, target_uri: str, from_uri: str, dest: Address | Sequence[Target],
               sdp: bytes, account_id: str | None = None, display_name: str | None = None,
               asserted_identity: str | None = None, privacy: bool = False,
               now: float, extra: Sequence[tuple[str, str]] = ()) -> str:
        """Place a call; returns its Call-ID. `asserted_identity` (a URI) is sent as
        P-Asserted-Identity (RFC 3325) to a trunk that trusts us; `privacy` asks it to
        withhold the caller's identity (Privacy: id). `extra` headers go as they are
        (Replaces, Referred-By for a transfer)."""
        core = self._core
        targets = as_targets(dest, core.transport.lower())
        tset = core.target_set(targets) if len(targets) > 1 else None
        index = tset.start() if tset is not None else 0
        target = targets[index]
        call_id = generate_call_id(core.local_host)
        tag = generate_tag()
        from_value = f"<{from_uri}>;tag={tag}"
        if display_name:
            from_value = f"{_quote_display(display_name)} {from_value}"
        user = from_uri.split(":", 1)[-1].split("@", 1)[0] if "@" in from_uri else None
        req = build_request(
            "INVITE", target_uri, from_addr=from_value, to_addr=f"<{target_uri}>",
            call_id=call_id, cseq=1, via=core.via(target.transport),
            contact=core.contact(user, target.transport),
            body=sdp, content_type=SDP if sdp else None,
            extra=[("Allow", ALLOW), ("Supported", "timer"), ("User-Agent", core.user_agent),
                   *([("P-Asserted-Identity", f"<{asserted_identity}>")]
                     if asserted_identity else []),
                   *([("Privacy", "id")] if privacy else []), *extra])
        tx = core.invite_tx(req, target, target.addr, now)
        call = Call(call_id, True, target.addr, tag, req, tx, CallState.CALLING, target,
                    account_id=account_id, targets=tset, target_index=index,
                    local_sdp=sdp)
        call.visited.add(target_uri)
        self._calls.add(call)
        self._arm_target_timer(call, now)
        core.track(tx, lambda ev, t: self._on_invite_events(call, tx, ev, t))
        return call_id

    def cancel(self, call_id: str, now: float) -> None:
        """Abandon an unanswered outgoing call (CANCEL once a provisional arrived, 9.1)."""
        call = self._calls.get(call_id)
        if call is None or not call.uac or call.fire(CallInput.CANCEL) is None:
            return
        call.arm(CallTimer.CANCEL, now + 64 * self._core.t1)
        if call.state is CallState.CANCELLING:  # a provisional came: CANCEL may go now
            self._send_cancel(call, now)

    def absorb_stray(self, resp: Response) -> bool:
        """A 2xx retransmitted after our INVITE transaction ended: ACK it again."""
        call = self._calls.get(resp.call_id)
        if (call is not None and call.ack is not None and call.ack_dest is not None
                and 200 <= resp.status < 300 and resp.cseq.method == "INVITE"):
            self._core.send_to(call.ack, call.ack_dest, call.target)  # 2xx after Timer M
            return True
        return False

    # -- targets -----------------------------------------------------------------------

    def _arm_target_timer(self, call: Call, now: float) -> None:
        # Armed for the last (or only) target too: a silent target ends the INVITE with
        # 408 "timeout" after `target_timeout`, so a route's next target (another trunk,
        # a GSM group) is tried within seconds instead of after Timer B's 32 s.
        call.arm(CallTimer.TARGET, now + self.target_timeout)

    def _reissue_invite(self, call: Call, now: float, *, target: Target | None = None,
                        uri: str | None = None,
                        headers_extra: list[tuple[str, str]] | None = None) -> None:
        """Send the call's INVITE again: new branch and CSeq, maybe new target or URI."""
        core = self._core
        old = call.invite
        target = target or call.target
        headers = old.headers.copy()
        headers.set("Via", core.via(target.transport))
        headers.set("CSeq", f"{old.cseq.number + 1} INVITE")
        if target.transport != call.target.transport:
            user = None
            try:
                user = old.from_addr.uri.user
            except SipError:
                pass
            headers.set("Contact", core.contact(user, target.transport))
        for name, value in headers_extra or []:
            headers.remove(name)
            headers.add(name, value)
        req = Request("INVITE", uri or old.uri, headers, old.body)
        old_tx = call.invite_tx
        if isinstance(old_tx, ClientInviteTransaction) and old_tx.state is TxState.CALLING:
            old_tx.abandon()
        tx = core.invite_tx(req, target, target.addr, now)
        call.invite = req
        call.invite_tx = tx
        call.target = target
        call.peer = target.addr
        call.fire(CallInput.REISSUED)
        core.track(tx, lambda ev, t: self._on_invite_events(call, tx, ev, t))

    def _fail_over(self, call: Call, now: float) -> bool:
        """Try the call's next target; False when there is none left."""
        if call.targets is None or not call.can(CallInput.REISSUED):
            return False
        nxt = call.targets.next_after(call.target_index, call.tried)
        if nxt is None:
            return False
        self._core.stats["failovers"] += 1
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
            self._calls.end(call, "timeout", 408, now)

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
            self._core.stats["redirects"] += 1
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

    def _on_invite_events(self, call: Call, tx: ClientInviteTransaction,
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
                    self._on_2xx(call, resp, now)
                elif tx is call.invite_tx:
                    self._on_response(call, resp, now)
            elif isinstance(event, TransactionTimedOut) and tx is call.invite_tx:
                if call.cancelling:
                    self._calls.end(call, "cancelled", None, now)
                elif event.reason == "transport error":
                    if not self._fail_over(call, now):
                        self._calls.end(call, "transport error", 503, now)
                else:
                    self._calls.end(call, "timeout", 408, now)

    def _on_response(self, call: Call, resp: Response, now: float) -> None:
        status = resp.status
        if status < 200:
            new = call.fire(CallInput.TRYING if status == 100 else CallInput.PROVISIONAL)
            if new is CallState.CANCELLING:  # the CANCEL waited for this provisional
                self._send_cancel(call, now)
            elif new is CallState.EARLY:
                if resp.to_tag and call.dialog is None:
                    call.dialog = Dialog.from_uac_response(call.invite, resp)
                self._core.emit(CallProgress(call.call_id, status, resp.body or None))
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
            self._calls.end(call, "cancelled", status, now)
        elif status in (401, 407):
            self._calls.end(call, "authentication failed", status, now)
        else:
            self._calls.end(call, end_reason(status), status, now)

    def _retry_session_interval(self, call: Call, resp: Response, now: float) -> bool:
        """422 Session Interval Too Small: retry once with the peer's Min-SE (RFC 4028 7.4)."""
        minimum = parse_min_se(resp.headers.get("Min-SE"))
        if call.se_offer is not None or minimum is None or minimum > 86400:
            return False  # retried once already, or no usable Min-SE
        call.se_offer = max(minimum, MIN_SE)
        self._reissue_invite(call, now, headers_extra=[
            ("Session-Expires", str(call.se_offer)), ("Min-SE", str(call.se_offer))])
        return True

    def _on_2xx(self, call: Call, resp: Response, now: float) -> None:
        core = self._core
        if call.dialog is not None and not call.dialog.early:
            if resp.to_tag == call.dialog.remote_tag:
                if call.ack is not None and call.ack_dest is not None:
                    core.send_to(call.ack, call.ack_dest, call.target)
                return
            # a second fork answered: ACK it and hang it up
            extra = Dialog.from_uac_response(call.invite, resp)
            dest = dialog_dest(extra, call.peer)
            core.send_to(extra.create_ack(call.invite.cseq.number,
                                          via=core.via(call.target.transport)),
                         dest, call.target)
            bye = extra.create_request("BYE", via=core.via(call.target.transport))
            core.send_request(bye, call.target, dest, now)
            return
        if call.dialog is None or call.dialog.remote_tag != resp.to_tag:
            call.dialog = Dialog.from_uac_response(call.invite, resp)
        else:
            call.dialog.confirm(resp)
        dest = dialog_dest(call.dialog, call.peer)
        call.ack = call.dialog.create_ack(call.invite.cseq.number,
                                          via=core.via(call.target.transport))
        call.ack_dest = dest
        core.send_to(call.ack, dest, call.target)
        if call.cancelling or call.over:
            self._calls.send_bye(call, now)  # answered while we were cancelling
            self._calls.end(call, "cancelled", None, now, CallInput.ANSWERED)
            return
        call.fire(CallInput.ANSWERED)
        adopt_session_timer(call, resp, now)
        core.emit(CallAnswered(call.call_id, resp.body))

    def _retry_with_auth(self, call: Call, resp: Response, now: float) -> bool:
        reg = self._accounts.get(call.account_id)
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
        headers.add("User-Agent", self._core.user_agent)
        self._core.send_request(Request("CANCEL", inv.uri, headers), call.target, call.peer,
                                now)


__all__ = ["MAX_REDIRECTS", "OutgoingCalls", "end_reason"]
