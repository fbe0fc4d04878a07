"""The pure SIP user agent: the one object the runtime drives (aioquic style).

Messages and `now` go in through `receive_datagram`, `handle_timer` and the call/account
methods; what to send comes out of `messages_out()` (bytes, destination, transport, TLS
name; `datagrams_to_send()` is the older UDP-only view of the same queue), the next
deadline from `get_timer`, and what happened from `next_event`. No sockets, no clock, no
DNS: targets are passed in already resolved (see gateway/sip/target.py).

The agent is composed of parts with one job each (see gateway/sip/ua_core.py): the
plumbing (`SipCore`), accounts (`Registrations`), the call table with its state machine
(`CallTable`, call_state.py), our INVITE (`OutgoingCalls`), later offers (`Reoffers`)
and pager-mode MESSAGE both ways (`Messages`, ua_messages.py), OPTIONS probes for trunk
health (`Probes`, ua_probes.py), REFER both ways (`Referrals`, refer.py) and message-summary
subscriptions (`Subscriptions`, subscribe.py), whose methods come from `TransferAndMwi`
(ua_features.py).
This module takes messages in, routes them to the part that owns them and merges timers.

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
- Tables are bounded: a full server transaction table (`max_server_transactions`) first
  evicts its oldest transaction that only absorbs retransmissions (stats["evicted"]);
  with none left new requests get a stateless 503 (stats["overload"]). Beyond `max_calls`
  calls not yet ended, new INVITEs get 503; ended calls linger 64*T1 for retransmissions
  in a bound of their own (4 * max_calls, oldest evicted first).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from gateway.sip.call_state import ESTABLISHED, SETTING_UP, Call, CallState
from gateway.sip.errors import SipError, SipParseError
from gateway.sip.events import Accept, Drop, MessageDropped, Respond, UaEvent
from gateway.sip.info import DTMF_RELAY, dtmf_relay_body
from gateway.sip.message import Request, Response, parse_message
from gateway.sip.refer import Referrals
from gateway.sip.registrar import Registrar
from gateway.sip.registration import AccountSettings, RegistrationClient
from gateway.sip.subscribe import Subscriptions
from gateway.sip.target import Outgoing, Target
from gateway.sip.transaction import T1, T2, RequestReceived
from gateway.sip.ua_accounts import Registrations
from gateway.sip.ua_calls import CallTable
from gateway.sip.ua_core import (
    ALLOW,
    MAX_CALLS,
    SDP,
    Address,
    RequestFilter,
    SipCore,
    Validator,
)
from gateway.sip.ua_features import TransferAndMwi
from gateway.sip.ua_messages import TEXT_PLAIN, Messages
from gateway.sip.ua_outgoing import OutgoingCalls
from gateway.sip.ua_probes import Probes
from gateway.sip.ua_reinvite import Reoffers

__all__ = ["ALLOW", "SDP", "Address", "CallState", "RequestFilter", "UserAgent"]


def _load_validator() -> Validator | None:
    try:
        from gateway.sip import validate
    except ImportError:
        return None
    func = getattr(validate, "validate_request", None)
    return func if callable(func) else None


class UserAgent(TransferAndMwi):
    """Calls and registrations over one local SIP identity, with no I/O of its own.

    Constructor keywords: local_host, local_port, transport ("udp" default for Via and
    Contact when a destination names none), user_agent, instance_id, t1, t2,
    target_timeout (1.5 s: silence before failing over to the next target),
    request_filter (security hook, see the module docstring), validator (defaults to
    gateway.sip.validate.validate_request), max_server_transactions (1000), max_calls,
    ports ({"tcp": 5060, "tls": 5061} when those listen elsewhere than local_port),
    rng (random.Random for the 491 back-off; injectable for tests) and accept_messages
    (False: a MESSAGE addressed to us gets 405 as before; True once the runtime routes
    `MessageReceived` somewhere, e.g. to a modem, and answers it).
    """

    def __init__(self, *, local_host: str, local_port: int, transport: str = "udp",
                 user_agent: str = "Branchline/0.1", instance_id: str, t1: float = T1,
                 t2: float = T2, target_timeout: float = 1.5,
                 request_filter: RequestFilter | None = None,
                 validator: Validator | None = None,
                 max_server_transactions: int = 1000, max_calls: int = MAX_CALLS,
                 ports: dict[str, int] | None = None,
                 rng: random.Random | None = None, accept_messages: bool = False) -> None:
        self._core = SipCore(local_host=local_host, local_port=local_port,
                             transport=transport, user_agent=user_agent,
                             instance_id=instance_id, t1=t1, t2=t2,
                             max_server_transactions=max_server_transactions, ports=ports,
                             rng=rng)
        self.request_filter = request_filter
        self.accept_messages = accept_messages
        #: The local phones' registrar: REGISTERs the filter authenticated go to it (with
        #: the user of `Accept.user`); None answers REGISTER with 405.
        self.registrar: Registrar | None = None
        #: Told (addr, transport, now) of every transport error (the trunk health monitor).
        self.transport_listener: Callable[[Address, str, float], None] | None = None
        self.validator = validator if validator is not None else _load_validator()
        self._accounts = Registrations(self._core)
        self._table = CallTable(self._core, max_calls=max_calls)
        self._outgoing = OutgoingCalls(self._core, self._table, self._accounts,
                                       target_timeout=target_timeout)
        self._reoffers = Reoffers(self._core, self._table)
        self._messages = Messages(self._core, self._accounts)
        self._probes = Probes(self._core)
        self._refers = Referrals(self._core, self._table)
        self._subs = Subscriptions(self._core, self._accounts)
        missing = self._table.missing_handlers()
        if missing:
            raise AssertionError(f"call timers without a handler: {sorted(t.name for t in missing)}")

    # -- what the runtime reads ------------------------------------------------------------

    @property
    def local_host(self) -> str:
        """The host in our Via and Contact."""
        return self._core.local_host

    @property
    def local_port(self) -> int:
        """The port in our Via and Contact (UDP, and other transports unless in `ports`).

        Settable: the runtime learns the port it bound only after building the agent.
        """
        return self._core.local_port

    @local_port.setter
    def local_port(self, port: int) -> None:
        self._core.local_port = port

    @property
    def ports(self) -> dict[str, int]:
        """Listening port per transport where it differs from `local_port` (settable)."""
        return self._core.ports

    @ports.setter
    def ports(self, ports: dict[str, int]) -> None:
        self._core.ports = dict(ports)

    @property
    def transport(self) -> str:
        """The default transport, upper case ("UDP")."""
        return self._core.transport

    @property
    def stats(self) -> dict[str, int]:
        """Counters: received, sent, malformed, dropped, filtered, overload, glare, ...

        ``evicted``: server transactions forgotten while only absorbing retransmissions,
        to make room in a full table (see `TransactionLayer`).
        """
        stats = self._core.stats
        stats["evicted"] = self._core.txl.evicted
        return stats

    @property
    def _calls(self) -> dict[str, Call]:
        """The call table (tests look at dialogs and states through it)."""
        return self._table.calls

    # -- runtime I/O -----------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Address, now: float, *,
                         transport: str = "udp") -> None:
        """Feed one whole SIP message from `addr`; never raises.

        For TCP/TLS the transport layer frames the stream (Content-Length) and passes one
        message per call, with `transport="tcp"` or `"tls"`; responses to requests that
        arrived that way go back over the same transport to `addr`.
        """
        core = self._core
        core.stats["received"] += 1
        core.rx_transport = transport.lower()
        try:
            if not data.strip(b"\r\n"):
                return  # CRLF keep-alive (RFC 5626)
            try:
                msg = parse_message(data)
            except SipParseError as exc:
                core.malformed(exc, addr)
                return
            if isinstance(msg, Response):
                self._on_response(msg, now)
            else:
                self._on_request(msg, addr, now)
        except Exception as exc:  # the contract: one bad packet must not stop the agent
            core.stats["internal_errors"] += 1
            core.emit(MessageDropped(f"internal error: {type(exc).__name__}", addr))
        finally:
            core.rx_transport = "udp"
        self._accounts.pull_events()

    def messages_out(self) -> list[Outgoing]:
        """Drain everything queued for the network, each with its transport and TLS name."""
        out = self._core.take_output()
        out.extend(self._accounts.take_output())
        self._core.stats["sent"] += len(out)
        return out

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """Legacy UDP view of `messages_out()` (same queue): (bytes, destination) pairs.

        The runtime switches to `messages_out()` once it has TCP/TLS sockets; until then
        everything here is sent over UDP whatever transport it was meant for.
        """
        return [(o.data, o.dest) for o in self.messages_out()]

    def transport_error(self, addr: Address, now: float, *, transport: str = "udp") -> None:
        """The adapter saw ICMP unreachable, a refused connection or a send failure.

        Besides failing what is in flight to `addr`, it is passed to `transport_listener`
        when one is set (trunk health counts it), with the transport in lower case.
        """
        transport = transport.lower()
        core = self._core
        if self.transport_listener is not None:
            self.transport_listener(addr, transport, now)
        for tx in core.txl.all():
            if tx.dest == addr and tx.transport == transport and not tx.terminated:
                core.route(tx, tx.transport_error(now), now)
        self._accounts.transport_error(addr, transport, now)
        self._accounts.pull_events()

    def get_timer(self) -> float | None:
        """Earliest absolute deadline the runtime must call `handle_timer` at."""
        times = [self._core.txl.get_timer(), self._accounts.get_timer(),
                 self._table.get_timer(), self._messages.get_timer(),
                 self._subs.get_timer(), self._refers.get_timer(),
                 self.registrar.get_timer() if self.registrar is not None else None]
        due = [t for t in times if t is not None]
        return min(due) if due else None

    def handle_timer(self, now: float) -> None:
        """Run every timer due at `now`."""
        for tx, events in self._core.txl.handle_timer(now):
            self._core.route(tx, events, now)
        self._accounts.handle_timer(now)
        self._table.handle_timer(now)
        self._messages.handle_timer(now)
        self._subs.handle_timer(now)
        self._refers.handle_timer(now)
        if self.registrar is not None:
            self.registrar.expire(now)
            for event in self.registrar.events():
                self._core.emit(event)
        self._accounts.pull_events()

    def next_event(self) -> UaEvent | None:
        """The oldest undelivered event, or None."""
        events = self._core.events
        if not events and self.registrar is not None:
            events.extend(self.registrar.events())  # e.g. bindings restored at start
        return events.popleft() if events else None

    def table_sizes(self) -> dict[str, int]:
        """How many entries each internal table holds (flood tests check they stay bounded)."""
        return {**self._core.sizes(), "calls": len(self._table.calls),
                **self._messages.sizes(), **self._probes.sizes(),
                **self._refers.sizes(), **self._subs.sizes()}

    # -- accounts --------------------------------------------------------------------------

    def add_account(self, account_id: str, settings: AccountSettings, now: float) -> None:
        """Start registering `account_id` (replaces an account of the same id).

        With `settings.targets` the REGISTER fails over like an INVITE and shares the
        sticky target choice with calls that pass the same targets to `invite`.
        """
        self._accounts.add(account_id, settings, now)
        self._accounts.pull_events()  # e.g. "no address" when nothing could be sent

    def remove_account(self, account_id: str, now: float) -> None:
        """Unregister; the account disappears once the registrar answered or timed out."""
        self._accounts.remove(account_id, now)

    def registration_state(self, account_id: str) -> dict[str, object]:
        """Snapshot for the control socket: registered, phase, expires, reason..."""
        return self._accounts.state(account_id)

    def registration(self, account_id: str) -> RegistrationClient | None:
        """The registration client of `account_id` (None when there is no such account).

        The runtime uses it to hand an account new registrar targets when DNS moves them
        (`RegistrationClient.set_targets`).
        """
        return self._accounts.get(account_id)

    def trunk_down(self, account_id: str, now: float) -> None:
        """The account's trunk is DOWN (trunk health): not registered, nothing sent."""
        reg = self._accounts.get(account_id)
        if reg is not None:
            reg.trunk_down(now)
            self._accounts.pull_events()

    def register_now(self, account_id: str, now: float) -> None:
        """The account's trunk is back: REGISTER at once unless registered already."""
        reg = self._accounts.get(account_id)
        if reg is not None:
            reg.register_now(now)
            self._accounts.pull_events()

    # -- calls -----------------------------------------------------------------------------

    def invite(self, *, target_uri: str, from_uri: str, dest: Address | Sequence[Target],
               sdp: bytes, account_id: str | None = None, display_name: str | None = None,
               asserted_identity: str | None = None, privacy: bool = False,
               now: float, extra: Sequence[tuple[str, str]] = ()) -> str:
        """Place a call; returns its Call-ID, the key of every later event and method.

        `dest` is an address (sent over the agent's default transport) or an ordered
        list of RFC 3263 targets, tried in turn with failover.
        """
        return self._outgoing.invite(target_uri=target_uri, from_uri=from_uri, dest=dest,
                                     sdp=sdp, account_id=account_id,
                                     display_name=display_name,
                                     asserted_identity=asserted_identity, privacy=privacy,
                                     now=now, extra=extra)

    def cancel(self, call_id: str, now: float) -> None:
        """Abandon an unanswered outgoing call (CANCEL once a provisional arrived, 9.1)."""
        self._outgoing.cancel(call_id, now)

    def bye(self, call_id: str, now: float) -> None:
        """Hang up in any state: CANCEL, 480, or BYE as the state requires."""
        call = self._table.get(call_id)
        if call is None or call.over:
            return
        if call.state in SETTING_UP:
            self._outgoing.cancel(call_id, now)
        elif call.state in (CallState.INCOMING, CallState.RINGING):
            self._table.reject(call_id, 480, now)
        else:
            self._table.hang_up(call, now)

    def call_state(self, call_id: str) -> str | None:
        """The call's state name, or None for unknown calls (for the control socket)."""
        return self._table.state_name(call_id)

    def ringing(self, call_id: str, now: float, *, sdp: bytes | None = None) -> None:
        """Tell the caller we alert: 180, or 183 with early-media SDP."""
        self._table.ringing(call_id, now, sdp=sdp)

    def answer(self, call_id: str, sdp: bytes, now: float) -> None:
        """Accept an incoming call with our SDP; 2xx is retransmitted until the ACK."""
        self._table.answer(call_id, sdp, now)

    def reject(self, call_id: str, status: int, now: float) -> None:
        """Refuse an incoming call with a 300-699 status."""
        self._table.reject(call_id, status, now)

    def reinvite(self, call_id: str, sdp: bytes, now: float) -> None:
        """Send a new offer in an established call (hold, resume).

        The outcome is `ReinviteAnswered(call_id, sdp)` or `ReinviteFailed(call_id,
        status)`; a 491 (glare) is retried by itself after the RFC 3261 14.1 delay. A
        re-INVITE asked for while another offer is in progress fails at once with 491.
        """
        self._reoffers.reinvite(call_id, sdp, now)

    def answer_reinvite(self, call_id: str, sdp: bytes, now: float) -> None:
        """Answer the re-INVITE announced by `CallUpdated` with our SDP."""
        self._reoffers.answer_reinvite(call_id, sdp, now)

    def reject_reinvite(self, call_id: str, status: int, now: float) -> None:
        """Refuse a re-INVITE (e.g. 488 for an SDP we cannot accept); the call goes on."""
        self._reoffers.reject_reinvite(call_id, status, now)

    # -- MESSAGE (RFC 3428) ------------------------------------------------------------

    def send_message(self, *, target_uri: str, body: bytes, from_uri: str,
                     dest: Address | Sequence[Target], now: float,
                     content_type: str = TEXT_PLAIN, account_id: str | None = None,
                     to_uri: str | None = None,
                     extra: Sequence[tuple[str, str]] = ()) -> str:
        """Send an out-of-dialog MESSAGE; returns its handle (Call-ID).

        The outcome is exactly one `MessageDelivered(handle, status)` (2xx) or
        `MessageFailed(handle, status, reason)`. A 401/407 is answered with the
        credentials of `account_id`; `dest` fails over like an INVITE's.
        """
        return self._messages.send(target_uri=target_uri, body=body,
                                   content_type=content_type, from_uri=from_uri, dest=dest,
                                   now=now, account_id=account_id, to_uri=to_uri,
                                   extra=extra)

    def send_dtmf_info(self, call_id: str, digit: str, duration_ms: int, now: float) -> bool:
        """A key press as SIP INFO (application/dtmf-relay) in an established call."""
        call = self._table.get(call_id)
        if call is None or call.over or call.dialog is None or call.state not in ESTABLISHED:
            return False
        self._table.send_request(call, "INFO", now, body=dtmf_relay_body(digit, duration_ms),
                                 content_type=DTMF_RELAY)
        return True

    def answer_message(self, handle: str, status: int, now: float) -> bool:
        """Answer a `MessageReceived` (202 once stored); False if unknown or answered."""
        return self._messages.answer(handle, status, now)

    # -- OPTIONS probes (trunk health) ----------------------------------------------------

    def send_options(self, *, target_uri: str, from_uri: str,
                     dest: Address | Sequence[Target], timeout: float, now: float) -> str:
        """Probe a next hop with one OPTIONS; returns its handle (Call-ID).

        The outcome is exactly one `OptionsAnswered(handle, status)` (any final response)
        or `OptionsFailed(handle, reason)` (nothing final within `timeout`, or the transport
        failed on every target). See gateway/sip/ua_probes.py.
        """
        return self._probes.send(target_uri=target_uri, from_uri=from_uri, dest=dest,
                                 timeout=timeout, now=now)

    # -- routing what comes in -------------------------------------------------------------

    def _on_response(self, resp: Response, now: float) -> None:
        core = self._core
        tx = core.txl.match_response(resp)
        if tx is not None:
            core.route(tx, tx.receive(resp, now), now)
            return
        if self._accounts.receive_response(resp, now) or self._outgoing.absorb_stray(resp):
            return
        core.stats["stray_responses"] += 1

    def _on_request(self, req: Request, addr: Address, now: float) -> None:
        core = self._core
        try:
            core.stamp_via(req, addr)
        except SipError:
            pass
        dest = core.response_dest(req, addr)
        method = req.method.upper()
        tx = core.txl.match_request(req)
        if tx is not None:  # retransmission or ACK for a non-2xx: absorbed here
            for event in tx.receive(req, now):
                if isinstance(event, RequestReceived):
                    self._table.on_ack(event.request, now)
            return
        if method == "ACK":
            self._table.on_ack(req, now)
            return
        if method == "CANCEL" and core.txl.invite_for_cancel(req) is not None:
            self._table.on_cancel(req, dest, now)
            return
        in_dialog = self._table.is_in_dialog(req) or (
            method == "NOTIFY" and self._subs.in_dialog(req))
        user: str | None = None  # the local user the filter authenticated
        if self.request_filter is not None:
            verdict = self.request_filter(req, addr, core.rx_transport, now, in_dialog)
            if isinstance(verdict, Drop):
                core.stats["filtered"] += 1
                return
            if isinstance(verdict, Respond):
                core.stats["filter_responded"] += 1
                if core.txl.server_full():  # a flood of challenges must not grow the table
                    core.stats["overload"] += 1
                    core.stateless(req, verdict.status, dest, list(verdict.headers))
                else:
                    core.respond(req, verdict.status, dest, now, reason=verdict.reason,
                                 extra=list(verdict.headers))
                return
            if isinstance(verdict, Accept):
                user = verdict.user
        if self.validator is not None:
            refusal = self.validator(req)
            if refusal is not None:
                core.stats["invalid"] += 1
                core.send_response_tx(req, refusal, dest, now)
                return
        if core.txl.server_full():
            if method == "REGISTER" and self.registrar is not None:
                # Phones re-register all day: each answer would hold a transaction for
                # Timer J (32 s), so a few dozen a second fill the table. A REGISTER that
                # passed the digest check is answered without one instead of 503 (the
                # registrar takes a retransmission as the same request again).
                core.stats["stateless_registers"] = core.stats.get("stateless_registers", 0) + 1
                self._on_register(self.registrar, req, addr, user, dest, now, stateless=True)
                return
            core.stats["overload"] += 1
            core.stateless(req, 503, dest, [("Retry-After", "5")])
            return
        if method == "CANCEL":
            core.respond(req, 481, dest, now)
        elif method == "REGISTER" and self.registrar is not None:
            self._on_register(self.registrar, req, addr, user, dest, now)
        elif method == "NOTIFY" and self._subs.handles(req):
            self._subs.on_notify(req, addr, dest, now)
        elif req.to_tag:
            self._on_in_dialog(req, addr, dest, now)
        elif method == "INVITE":
            self._table.on_invite(req, addr, dest, now)
        elif method == "OPTIONS":
            core.respond(req, 200, dest, now, extra=self._capabilities())
        elif method == "MESSAGE" and self.accept_messages:
            self._messages.on_request(req, addr, dest, now)
        elif method == "NOTIFY":
            core.stats["refused_notify"] += 1  # nothing of ours: refused and counted
            core.respond(req, 481, dest, now)
        elif method in ("BYE", "INFO", "REFER"):
            core.respond(req, 481, dest, now)
        else:
            core.respond(req, 405, dest, now, extra=[("Allow", ALLOW)])

    def _on_register(self, registrar: Registrar, req: Request, addr: Address,
                     user: str | None, dest: Address, now: float,
                     stateless: bool = False) -> None:
        """Bind (or refuse) an authenticated REGISTER; its changes become events."""
        answer = registrar.handle(req, addr, self._core.rx_transport, user, now)
        if stateless:
            self._core.stateless(req, answer.status, dest, list(answer.headers))
        else:
            self._core.respond(req, answer.status, dest, now, reason=answer.reason,
                               extra=list(answer.headers))
        for event in registrar.events():
            self._core.emit(event)

    def _capabilities(self) -> list[tuple[str, str]]:
        return [("Allow", ALLOW), ("Accept", SDP), ("Supported", "timer, replaces"),
                ("User-Agent", self._core.user_agent)]

    def _on_in_dialog(self, req: Request, addr: Address, dest: Address, now: float) -> None:
        core = self._core
        method = req.method.upper()
        call = self._table.find_dialog_call(req)
        if call is None or call.over:
            core.respond(req, 481, dest, now)
            return
        assert call.dialog is not None
        if not call.dialog.check_remote_cseq(req):
            core.respond(req, 500, dest, now, extra=[("Retry-After", "1")])
            return
        if method == "BYE":
            self._table.on_bye(call, req, dest, now)
        elif method == "INVITE":
            self._reoffers.on_reinvite(call, req, dest, now)
        elif method == "OPTIONS":
            core.respond(req, 200, dest, now, extra=self._capabilities())
        elif method == "INFO":
            self._reoffers.on_info(call, req, dest, now)
        elif method == "REFER":
            self._refers.on_refer(call, req, addr, dest, now)
        elif method == "NOTIFY":
            self._refers.on_notify(call, req, addr, dest, now)
        elif method == "MESSAGE" and self.accept_messages:
            self._messages.on_request(req, dest, dest, now)
        else:
            core.respond(req, 405, dest, now, extra=[("Allow", ALLOW)])
