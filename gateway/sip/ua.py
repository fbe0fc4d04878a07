"""The pure SIP user agent: the one object the runtime drives (aioquic style).

Datagrams and `now` go in through `receive_datagram`, `handle_timer` and the call/account
methods; bytes to send come out of `datagrams_to_send`, the next deadline from `get_timer`,
and what happened from `next_event`. No sockets, no clock, no DNS: destinations are passed
through as given, and the adapter resolves names if any.

Decisions, so the runtime knows what to expect:
- An incoming INVITE gets 100 Trying at once, then `IncomingCall`.
- `CallEnded` is emitted exactly once per call, also for calls we end ourselves (BYE,
  reject, cancel), so the runtime has one place to free its resources.
- As UAS we retransmit our 2xx (T1 doubling to T2) until the ACK; without an ACK after
  64*T1 we send BYE and report `CallEnded("no ACK")` (RFC 3261 13.3.1.4, RFC 6026).
- In-dialog requests go to the first route or the remote target when that is an IP
  literal, else to the address the call was set up with (the trunk).
- Malformed input never raises: it is counted in `stats`, reported as `MessageDropped`,
  and answered with 400 (or the parser's status hint) when enough of it was readable.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum

from gateway.sip.auth import Challenge, build_authorization
from gateway.sip.dialog import Dialog, incoming_request_dialog_id
from gateway.sip.errors import SipError, SipParseError
from gateway.sip.events import (
    CallAnswered,
    CallEnded,
    CallProgress,
    CallUpdated,
    IncomingCall,
    MessageDropped,
    UaEvent,
)
from gateway.sip.headers import Via, generate_branch, generate_call_id, generate_tag
from gateway.sip.message import (
    Headers,
    Request,
    Response,
    build_request,
    make_response,
    parse_message,
)
from gateway.sip.registration import AccountSettings, RegistrationClient
from gateway.sip.transaction import (
    T1,
    T2,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    RequestReceived,
    ResponseReceived,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    ServerTransaction,
    Transaction,
    TransactionLayer,
    TransactionTimedOut,
    TxEvent,
)

Address = tuple[str, int]
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO"
SDP = "application/sdp"
_Handler = Callable[[list[TxEvent], float], None]


class CallState(Enum):
    """Where a call stands; both roles share it."""

    CALLING = "calling"
    INCOMING = "incoming"
    EARLY = "early"
    CONFIRMED = "confirmed"
    ENDED = "ended"


@dataclass
class _Call:
    call_id: str
    uac: bool
    peer: Address
    local_tag: str
    invite: Request
    invite_tx: ClientInviteTransaction | ServerInviteTransaction
    state: CallState
    account_id: str | None = None
    dialog: Dialog | None = None
    provisional_seen: bool = False
    cancel_requested: bool = False
    cancel_sent: bool = False
    cancel_deadline: float | None = None
    auth_nonce: str | None = None
    auth_nc: int = 0
    ack: Request | None = None
    ack_dest: Address | None = None
    ok: Response | None = None
    ok_dest: Address | None = None
    ok_cseq: int = 0
    ok_next: float | None = None
    ok_interval: float = T1
    ok_giveup: float | None = None
    bye_after_ack: bool = False
    reinvite_tx: ServerInviteTransaction | None = None
    offerless: bool = False
    linger_until: float | None = None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _quote_display(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _end_reason(status: int) -> str:
    if status in (486, 600):
        return "busy"
    if status == 487:
        return "cancelled"
    if status in (603, 403):
        return "declined"
    if status == 408:
        return "timeout"
    return "rejected"


class UserAgent:
    """Calls and registrations over one local SIP address, with no I/O of its own."""

    def __init__(self, *, local_host: str, local_port: int, transport: str = "udp",
                 user_agent: str = "Branchline/0.1", instance_id: str, t1: float = T1,
                 t2: float = T2) -> None:
        self.local_host = local_host
        self.local_port = local_port
        self.transport = transport.upper()
        self.reliable = self.transport != "UDP"
        self.user_agent = user_agent
        self.instance_id = instance_id
        self.t1 = t1
        self.t2 = t2
        self.stats: dict[str, int] = {
            "received": 0, "sent": 0, "malformed": 0, "dropped": 0,
            "stray_responses": 0, "internal_errors": 0,
        }
        self._txl = TransactionLayer()
        self._owners: dict[tuple[str, ...], _Handler] = {}
        self._accounts: dict[str, RegistrationClient] = {}
        self._removing: set[str] = set()
        self._calls: dict[str, _Call] = {}
        self._events: deque[UaEvent] = deque()
        self._out: list[tuple[bytes, Address]] = []

    # -- runtime I/O -----------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Feed one datagram from `addr`; never raises."""
        self.stats["received"] += 1
        try:
            if not data.strip(b"\r\n"):
                return  # CRLF keep-alive (RFC 5626)
            try:
                msg = parse_message(data)
            except SipParseError as exc:
                self._malformed(exc, addr)
                return
            if isinstance(msg, Response):
                self._on_response(msg, now)
            else:
                self._on_request(msg, addr, now)
        except Exception as exc:  # the contract: one bad packet must not stop the agent
            self.stats["internal_errors"] += 1
            self._events.append(MessageDropped(f"internal error: {type(exc).__name__}", addr))
        self._pull_registration_events()

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """Drain everything queued for the network, as (bytes, destination)."""
        out, self._out = self._out, []
        for tx in self._txl.all():
            if tx.dest is None:
                continue
            out.extend((bytes(m), tx.dest) for m in tx.messages_to_send())
        for reg in self._accounts.values():
            out.extend((bytes(m), reg.dest) for m in reg.messages_to_send())
        self._collect()
        self.stats["sent"] += len(out)
        return out

    def transport_error(self, addr: Address, now: float) -> None:
        """The adapter saw ICMP unreachable (or a send failure) for `addr`."""
        for tx in self._txl.all():
            if tx.dest == addr and not tx.terminated:
                self._route(tx, tx.transport_error(now), now)
        for reg in self._accounts.values():
            if reg.dest == addr:
                reg.transport_error(now)
        self._pull_registration_events()

    def get_timer(self) -> float | None:
        """Earliest absolute deadline the runtime must call `handle_timer` at."""
        times = [self._txl.get_timer()]
        times.extend(reg.get_timer() for reg in self._accounts.values())
        for call in self._calls.values():
            times.extend((call.ok_next, call.cancel_deadline, call.linger_until))
        due = [t for t in times if t is not None]
        return min(due) if due else None

    def handle_timer(self, now: float) -> None:
        """Run every timer due at `now`."""
        for tx, events in self._txl.handle_timer(now):
            self._route(tx, events, now)
        for reg in list(self._accounts.values()):
            deadline = reg.get_timer()
            if deadline is not None and deadline <= now:
                reg.handle_timer(now)
        for call in list(self._calls.values()):
            self._call_timers(call, now)
        self._pull_registration_events()

    def next_event(self) -> UaEvent | None:
        """The oldest undelivered event, or None."""
        return self._events.popleft() if self._events else None

    # -- registrations ---------------------------------------------------------------

    def add_account(self, account_id: str, settings: AccountSettings, now: float) -> None:
        """Start registering `account_id` (replaces an account of the same id)."""
        if not settings.instance_id:
            settings = replace(settings, instance_id=self.instance_id)
        reg = RegistrationClient(account_id, settings, local_host=self.local_host,
                                 local_port=self.local_port, transport=self.transport,
                                 user_agent=self.user_agent, t1=self.t1)
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

    def invite(self, *, target_uri: str, from_uri: str, dest: Address, sdp: bytes,
               account_id: str | None = None, display_name: str | None = None,
               now: float) -> str:
        """Place a call; returns its Call-ID, the key of every later event and method."""
        call_id = generate_call_id(self.local_host)
        tag = generate_tag()
        from_value = f"<{from_uri}>;tag={tag}"
        if display_name:
            from_value = f"{_quote_display(display_name)} {from_value}"
        user = from_uri.split(":", 1)[-1].split("@", 1)[0] if "@" in from_uri else None
        req = build_request(
            "INVITE", target_uri, from_addr=from_value, to_addr=f"<{target_uri}>",
            call_id=call_id, cseq=1, via=self._via(), contact=self._contact(user),
            body=sdp, content_type=SDP if sdp else None,
            extra=[("Allow", ALLOW), ("User-Agent", self.user_agent)])
        tx = ClientInviteTransaction(req, now, reliable=self.reliable, t1=self.t1,
                                     t2=self.t2, dest=dest)
        call = _Call(call_id, True, dest, tag, req, tx, CallState.CALLING,
                     account_id=account_id)
        self._calls[call_id] = call
        self._track(tx, lambda ev, t: self._on_invite_client_events(call, tx, ev, t))
        return call_id

    def cancel(self, call_id: str, now: float) -> None:
        """Abandon an unanswered outgoing call (CANCEL once a provisional arrived, 9.1)."""
        call = self._calls.get(call_id)
        if call is None or not call.uac or call.state not in (CallState.CALLING,
                                                              CallState.EARLY):
            return
        if call.cancel_requested:
            return
        call.cancel_requested = True
        call.cancel_deadline = now + 64 * self.t1
        if call.provisional_seen:
            self._send_cancel(call, now)

    def bye(self, call_id: str, now: float) -> None:
        """Hang up in any state: CANCEL, 480, or BYE as the state requires."""
        call = self._calls.get(call_id)
        if call is None or call.state is CallState.ENDED:
            return
        if call.uac and call.state in (CallState.CALLING, CallState.EARLY):
            self.cancel(call_id, now)
        elif not call.uac and call.state in (CallState.INCOMING, CallState.EARLY):
            self.reject(call_id, 480, now)
        elif call.ok is not None:  # our 2xx not yet ACKed: BYE must wait (RFC 3261 15)
            call.bye_after_ack = True
            self._end(call, "local hangup", None, now)
        else:
            self._send_bye(call, now)
            self._end(call, "local hangup", None, now)

    # -- incoming calls --------------------------------------------------------------

    def ringing(self, call_id: str, now: float, *, sdp: bytes | None = None) -> None:
        """Tell the caller we alert: 180, or 183 with early-media SDP."""
        call = self._uas_pending(call_id)
        if call is None:
            return
        resp = self._dialog_response(call, call.invite, 183 if sdp else 180, sdp)
        if call.dialog is None:
            call.dialog = Dialog.from_uas_request(call.invite, call.local_tag, early=True)
        call.state = CallState.EARLY
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
        call.state = CallState.CONFIRMED
        assert isinstance(call.invite_tx, ServerInviteTransaction)
        call.invite_tx.send_response(resp, now)
        self._start_2xx_retransmission(call, resp, call.invite_tx, now)

    def answer_reinvite(self, call_id: str, sdp: bytes, now: float) -> None:
        """Answer the re-INVITE announced by `CallUpdated` with our SDP."""
        call = self._calls.get(call_id)
        if call is None or call.reinvite_tx is None or call.reinvite_tx.final_sent:
            return
        tx = call.reinvite_tx
        resp = self._dialog_response(call, tx.request, 200, sdp)
        tx.send_response(resp, now)
        self._start_2xx_retransmission(call, resp, tx, now)

    def reject_reinvite(self, call_id: str, status: int, now: float) -> None:
        """Refuse a re-INVITE (e.g. 488 for an SDP we cannot accept); the call goes on."""
        call = self._calls.get(call_id)
        if call is None or call.reinvite_tx is None or call.reinvite_tx.final_sent:
            return
        call.reinvite_tx.send_response(
            make_response(call.reinvite_tx.request, status, to_tag=call.local_tag), now)

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

    def call_state(self, call_id: str) -> str | None:
        """The call's state name, or None for unknown calls (for the control socket)."""
        call = self._calls.get(call_id)
        return call.state.value if call is not None else None

    # -- plumbing --------------------------------------------------------------------

    def _host(self) -> str:
        host = self.local_host
        return f"[{host}]" if ":" in host and not host.startswith("[") else host

    def _via(self) -> str:
        return (f"SIP/2.0/{self.transport} {self._host()}:{self.local_port}"
                f";branch={generate_branch()};rport")

    def _contact(self, user: str | None) -> str:
        userinfo = f"{user}@" if user else ""
        param = "" if self.transport == "UDP" else f";transport={self.transport.lower()}"
        return f"<sip:{userinfo}{self._host()}:{self.local_port}{param}>"

    def _track(self, tx: Transaction, handler: _Handler | None = None) -> None:
        self._txl.add(tx)
        if handler is not None:
            self._owners[tx.key] = handler

    def _route(self, tx: Transaction, events: list[TxEvent], now: float) -> None:
        handler = self._owners.get(tx.key)
        if handler is not None and events:
            handler(events, now)

    def _collect(self) -> None:
        live = {tx.key for tx in self._txl.all() if not tx.terminated}
        self._txl.remove_terminated()
        self._owners = {k: h for k, h in self._owners.items() if k in live}

    def _pull_registration_events(self) -> None:
        for account_id, reg in list(self._accounts.items()):
            self._events.extend(reg.events())
            if account_id in self._removing and reg.done:
                self._removing.discard(account_id)
                self._accounts.pop(account_id, None)

    def _end(self, call: _Call, reason: str, status: int | None, now: float) -> None:
        if call.state is CallState.ENDED:
            return
        call.state = CallState.ENDED
        call.cancel_deadline = None
        if not call.bye_after_ack:
            call.ok = None
            call.ok_next = None
        call.linger_until = now + 64 * self.t1
        self._events.append(CallEnded(call.call_id, reason, status))

    def _uas_pending(self, call_id: str) -> _Call | None:
        call = self._calls.get(call_id)
        if call is None or call.uac or call.state not in (CallState.INCOMING, CallState.EARLY):
            return None
        return call

    def _dialog_response(self, call: _Call, request: Request, status: int,
                         sdp: bytes | None) -> Response:
        resp = make_response(request, status, to_tag=call.local_tag)
        for rr in request.headers.get_lines("Record-Route"):
            resp.headers.add("Record-Route", rr)
        user = None
        try:
            user = request.request_uri.user
        except SipError:
            pass
        resp.headers.add("Contact", self._contact(user))
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
        if _is_ip(hop.host):
            return hop.host_port(5061 if hop.scheme == "sips" else 5060)
        return fallback

    def _send_request(self, call: _Call, method: str, now: float,
                      handler: _Handler | None = None) -> None:
        assert call.dialog is not None
        req = call.dialog.create_request(method, via=self._via(),
                                         extra=[("User-Agent", self.user_agent)])
        tx = ClientNonInviteTransaction(req, now, reliable=self.reliable, t1=self.t1,
                                        t2=self.t2, dest=self._dialog_dest(call.dialog,
                                                                           call.peer))
        self._track(tx, handler)

    def _send_bye(self, call: _Call, now: float) -> None:
        if call.dialog is not None:
            self._send_request(call, "BYE", now)

    def _respond(self, req: Request, status: int, dest: Address, now: float, *,
                 to_tag: str | None = None, extra: list[tuple[str, str]] | None = None,
                 tx: ServerTransaction | None = None) -> ServerTransaction:
        if tx is None:
            tx = (ServerInviteTransaction(req, now, self.reliable, t1=self.t1, t2=self.t2,
                                          dest=dest)
                  if req.method.upper() == "INVITE" else
                  ServerNonInviteTransaction(req, now, self.reliable, t1=self.t1, t2=self.t2,
                                             dest=dest))
            self._track(tx)
        if to_tag is None and status > 100 and req.to_tag is None:
            to_tag = generate_tag()
        resp = make_response(req, status, to_tag=to_tag if status > 100 else None)
        for name, value in extra or []:
            resp.headers.add(name, value)
        tx.send_response(resp, now)
        return tx

    def _malformed(self, exc: SipParseError, addr: Address) -> None:
        self.stats["malformed"] += 1
        self._events.append(MessageDropped(exc.reason, addr))
        req = exc.message
        if not isinstance(req, Request) or req.method.upper() == "ACK":
            return
        try:
            resp = make_response(req, exc.status if exc.status >= 400 else 400, exc.reason)
            for name in ("Via", "From", "To", "Call-ID", "CSeq"):
                if name not in resp.headers:
                    return
            self._out.append((bytes(resp), self._response_dest(req, addr)))
        except (SipError, ValueError, UnicodeError):
            return

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
            self._out.append((bytes(call.ack), call.ack_dest))  # 2xx after Timer M
            return
        self.stats["stray_responses"] += 1

    def _on_invite_client_events(self, call: _Call, tx: ClientInviteTransaction,
                                 events: list[TxEvent], now: float) -> None:
        for event in events:
            if isinstance(event, ResponseReceived):
                resp = event.response
                if 200 <= resp.status < 300:
                    self._on_invite_2xx(call, resp, now)
                elif tx is call.invite_tx:
                    self._on_invite_response(call, resp, now)
            elif isinstance(event, TransactionTimedOut) and tx is call.invite_tx:
                if call.cancel_requested:
                    self._end(call, "cancelled", None, now)
                elif event.reason == "transport error":
                    self._end(call, "transport error", 503, now)
                else:
                    self._end(call, "timeout", 408, now)

    def _on_invite_response(self, call: _Call, resp: Response, now: float) -> None:
        status = resp.status
        if status < 200:
            call.provisional_seen = True
            if call.cancel_requested:
                self._send_cancel(call, now)
                return
            if status == 100 or call.state is CallState.ENDED:
                return
            if resp.to_tag and call.dialog is None:
                call.dialog = Dialog.from_uac_response(call.invite, resp)
            call.state = CallState.EARLY
            self._events.append(CallProgress(call.call_id, status, resp.body or None))
            return
        if status in (401, 407) and not call.cancel_requested and self._retry_with_auth(
                call, resp, now):
            return
        if call.cancel_requested:
            self._end(call, "cancelled", status, now)
        elif status in (401, 407):
            self._end(call, "authentication failed", status, now)
        else:
            self._end(call, _end_reason(status), status, now)

    def _on_invite_2xx(self, call: _Call, resp: Response, now: float) -> None:
        if call.dialog is not None and not call.dialog.early:
            if resp.to_tag == call.dialog.remote_tag:
                if call.ack is not None and call.ack_dest is not None:
                    self._out.append((bytes(call.ack), call.ack_dest))
                return
            # a second fork answered: ACK it and hang it up
            extra = Dialog.from_uac_response(call.invite, resp)
            dest = self._dialog_dest(extra, call.peer)
            self._out.append((bytes(extra.create_ack(call.invite.cseq.number,
                                                     via=self._via())), dest))
            bye = extra.create_request("BYE", via=self._via())
            self._track(ClientNonInviteTransaction(bye, now, reliable=self.reliable,
                                                   t1=self.t1, t2=self.t2, dest=dest))
            return
        if call.dialog is None or call.dialog.remote_tag != resp.to_tag:
            call.dialog = Dialog.from_uac_response(call.invite, resp)
        else:
            call.dialog.confirm(resp)
        dest = self._dialog_dest(call.dialog, call.peer)
        call.ack = call.dialog.create_ack(call.invite.cseq.number, via=self._via())
        call.ack_dest = dest
        self._out.append((bytes(call.ack), dest))
        if call.cancel_requested or call.state is CallState.ENDED:
            self._send_bye(call, now)  # answered while we were cancelling
            self._end(call, "cancelled", None, now)
            return
        call.state = CallState.CONFIRMED
        call.cancel_deadline = None
        self._events.append(CallAnswered(call.call_id, resp.body))

    def _retry_with_auth(self, call: _Call, resp: Response, now: float) -> bool:
        reg = self._accounts.get(call.account_id or "")
        if reg is None:
            return False
        proxy = resp.status == 407
        raw = resp.headers.get("Proxy-Authenticate" if proxy else "WWW-Authenticate")
        try:
            challenge = Challenge.parse(raw or "")
        except SipError:
            return False
        if challenge.nonce == call.auth_nonce and not challenge.stale:
            return False  # answered once already: credentials are wrong
        if challenge.nonce != call.auth_nonce:
            call.auth_nc = 0
        call.auth_nonce = challenge.nonce
        call.auth_nc += 1
        old = call.invite
        headers = old.headers.copy()
        headers.set("Via", self._via())
        headers.set("CSeq", f"{old.cseq.number + 1} INVITE")
        headers.remove("Authorization")
        headers.remove("Proxy-Authorization")
        settings = reg.settings
        headers.add("Proxy-Authorization" if proxy else "Authorization", build_authorization(
            challenge, method="INVITE", uri=old.uri,
            username=settings.auth_username or reg.username, password=settings.password,
            nc=call.auth_nc))
        req = Request("INVITE", old.uri, headers, old.body)
        tx = ClientInviteTransaction(req, now, reliable=self.reliable, t1=self.t1, t2=self.t2,
                                     dest=call.peer)
        call.invite = req
        call.invite_tx = tx
        call.provisional_seen = False
        self._track(tx, lambda ev, t: self._on_invite_client_events(call, tx, ev, t))
        return True

    def _send_cancel(self, call: _Call, now: float) -> None:
        if call.cancel_sent:
            return
        call.cancel_sent = True
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
                                        reliable=self.reliable, t1=self.t1, t2=self.t2,
                                        dest=call.peer)
        self._track(tx)

    # -- requests --------------------------------------------------------------------

    def _response_dest(self, req: Request, addr: Address) -> Address:
        """RFC 3261 18.2.2 with RFC 3581: source address, rport or sent-by port."""
        try:
            via = req.top_via
        except SipError:
            return addr
        if via.rport is not None or self.reliable:
            return addr
        return (addr[0], via.port or 5060)

    def _stamp_via(self, req: Request, addr: Address) -> None:
        vias = req.headers.get_all("Via")
        top = Via.parse(vias[0])
        if top.rport is not None:
            top.params["rport"] = str(addr[1])
            top.params["received"] = addr[0]
        elif top.host.strip("[]") != addr[0]:
            top.params["received"] = addr[0]
        else:
            return
        req.headers.set("Via", ", ".join([str(top), *vias[1:]]))

    def _on_request(self, req: Request, addr: Address, now: float) -> None:
        try:
            self._stamp_via(req, addr)
        except SipError:
            pass
        dest = self._response_dest(req, addr)
        method = req.method.upper()
        tx = self._txl.match_request(req)
        if tx is not None:
            for event in tx.receive(req, now):
                if isinstance(event, RequestReceived):
                    self._on_ack(event.request, now)
            return
        if method == "ACK":
            self._on_ack(req, now)
        elif method == "CANCEL":
            self._on_cancel(req, dest, now)
        elif req.to_tag:
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
        return [("Allow", ALLOW), ("Accept", SDP), ("Supported", ""),
                ("User-Agent", self.user_agent)]

    def _on_invite(self, req: Request, addr: Address, dest: Address, now: float) -> None:
        existing = self._calls.get(req.call_id)
        if existing is not None and existing.state is not CallState.ENDED:
            self._respond(req, 482, dest, now)  # merged/looped request (8.2.2.2)
            return
        content_type = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if req.body and content_type != SDP:
            self._respond(req, 415, dest, now, extra=[("Accept", SDP)])
            return
        required = req.headers.get_all("Require")
        if required:
            self._respond(req, 420, dest, now, extra=[("Unsupported", ", ".join(required))])
            return
        from_addr = req.from_addr
        tx = ServerInviteTransaction(req, now, self.reliable, t1=self.t1, t2=self.t2,
                                     dest=dest)
        self._track(tx)
        tx.send_response(make_response(req, 100), now)
        call = _Call(req.call_id, False, addr, generate_tag(), req, tx, CallState.INCOMING,
                     offerless=not req.body)
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

    def _find_dialog_call(self, req: Request) -> _Call | None:
        call = self._calls.get(req.call_id)
        if call is None or call.dialog is None:
            return None
        if incoming_request_dialog_id(req) != call.dialog.id:
            return None
        return call

    def _on_ack(self, req: Request, now: float) -> None:
        call = self._find_dialog_call(req)
        if call is None or call.ok is None or req.cseq.number != call.ok_cseq:
            self.stats["dropped"] += 1
            return
        call.ok = None
        call.ok_next = None
        call.ok_giveup = None
        if call.bye_after_ack:
            call.bye_after_ack = False
            self._send_bye(call, now)
            return
        if call.offerless and req.body:
            call.offerless = False
            self._events.append(CallUpdated(call.call_id, req.body))

    def _on_in_dialog(self, req: Request, dest: Address, now: float) -> None:
        method = req.method.upper()
        call = self._find_dialog_call(req)
        if call is None or call.state is CallState.ENDED:
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
            pending = call.reinvite_tx is not None and not call.reinvite_tx.final_sent
            if pending or call.ok is not None:
                self._respond(req, 500, dest, now, extra=[("Retry-After", "2")])
                return
            tx = ServerInviteTransaction(req, now, self.reliable, t1=self.t1, t2=self.t2,
                                         dest=dest)
            self._track(tx)
            tx.send_response(make_response(req, 100), now)
            call.dialog.refresh_target(req)
            call.reinvite_tx = tx
            self._events.append(CallUpdated(call.call_id, req.body))
        elif method in ("OPTIONS", "INFO"):
            extra = self._capabilities() if method == "OPTIONS" else None
            self._respond(req, 200, dest, now, extra=extra)
        else:
            self._respond(req, 405, dest, now, extra=[("Allow", ALLOW)])

    # -- call timers -----------------------------------------------------------------

    def _start_2xx_retransmission(self, call: _Call, resp: Response,
                                  tx: ServerInviteTransaction, now: float) -> None:
        call.ok = resp
        call.ok_dest = tx.dest
        call.ok_cseq = tx.request.cseq.number
        if self.reliable:
            call.ok_next = None
        else:
            call.ok_interval = self.t1
            call.ok_next = now + self.t1
        call.ok_giveup = now + 64 * self.t1

    def _call_timers(self, call: _Call, now: float) -> None:
        if call.ok is not None and call.ok_giveup is not None and call.ok_giveup <= now:
            call.ok = None
            call.ok_next = None
            call.ok_giveup = None
            call.bye_after_ack = False
            self._send_bye(call, now)  # 13.3.1.4: confirmed but no ACK: end the session
            self._end(call, "no ACK", None, now)
        elif call.ok is not None and call.ok_next is not None and call.ok_next <= now:
            if call.ok_dest is not None:
                self._out.append((bytes(call.ok), call.ok_dest))
            call.ok_interval = min(call.ok_interval * 2, self.t2)
            call.ok_next = now + call.ok_interval
            if call.ok_giveup is not None:
                call.ok_next = min(call.ok_next, call.ok_giveup)
        if call.cancel_deadline is not None and call.cancel_deadline <= now:
            call.cancel_deadline = None
            self._end(call, "cancelled", None, now)  # 9.1: no final after 64*T1
        if call.linger_until is not None and call.linger_until <= now and call.ok is None:
            self._calls.pop(call.call_id, None)
