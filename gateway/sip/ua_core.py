"""Core of the pure SIP user agent: I/O contract, plumbing, bounds and request intake.

`UserAgent` (gateway/sip/ua.py) is built in three layers so no file grows too large:
`UaCore` here (network in/out, timers, transactions, the security filter and validation
hooks), `UaCalls` in ua_calls.py (placing and answering calls, failover, redirects) and
`UserAgent` in ua.py (in-dialog requests, re-INVITE, session timers, INFO).

Hooks the lower layer calls and the upper layers implement are the `_on_*` methods that
raise NotImplementedError here.
"""

from __future__ import annotations

import ipaddress
import random
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence

from gateway.sip.call_state import Call
from gateway.sip.dialog import incoming_request_dialog_id
from gateway.sip.errors import SipError, SipParseError
from gateway.sip.events import Drop, FilterVerdict, MessageDropped, Respond, UaEvent
from gateway.sip.headers import Via, generate_branch, generate_tag
from gateway.sip.message import Request, Response, make_response, parse_message
from gateway.sip.registration import RegistrationClient
from gateway.sip.target import Outgoing, Target, TargetSet
from gateway.sip.transaction import (
    T1,
    T2,
    RequestReceived,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    ServerTransaction,
    Transaction,
    TransactionLayer,
    TxEvent,
)

Address = tuple[str, int]
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO"
SDP = "application/sdp"
Handler = Callable[[list[TxEvent], float], None]
RequestFilter = Callable[[Request, Address, str, float, bool], FilterVerdict | None]
Validator = Callable[[Request], Response | None]
MAX_CALLS = 500
MAX_TARGET_SETS = 64


def is_ip(host: str) -> bool:
    """True for an IPv4/IPv6 literal (brackets allowed), which needs no DNS."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _load_validator() -> Validator | None:
    try:
        from gateway.sip import validate
    except ImportError:
        return None
    func = getattr(validate, "validate_request", None)
    return func if callable(func) else None


class UaCore:
    """Network I/O, timers, transactions and request intake shared by the agent layers."""

    def __init__(self, *, local_host: str, local_port: int, transport: str = "udp",
                 user_agent: str = "Branchline/0.1", instance_id: str, t1: float = T1,
                 t2: float = T2, target_timeout: float = 1.5,
                 request_filter: RequestFilter | None = None,
                 validator: Validator | None = None,
                 max_server_transactions: int = 1000, max_calls: int = MAX_CALLS,
                 ports: dict[str, int] | None = None,
                 rng: random.Random | None = None) -> None:
        self.local_host = local_host
        self.local_port = local_port
        self.transport = transport.upper()
        self.reliable = self.transport != "UDP"
        self.user_agent = user_agent
        self.instance_id = instance_id
        self.t1 = t1
        self.t2 = t2
        self.target_timeout = target_timeout
        self.request_filter = request_filter
        self.validator = validator if validator is not None else _load_validator()
        self.max_calls = max_calls
        self.max_alerting = 300.0  # seconds an incoming INVITE may stay unanswered
        self.ports = dict(ports or {})
        self.rng = rng or random.Random()
        self.stats: dict[str, int] = {
            "received": 0, "sent": 0, "malformed": 0, "dropped": 0,
            "stray_responses": 0, "internal_errors": 0, "filtered": 0,
            "filter_responded": 0, "invalid": 0, "overload": 0, "failovers": 0,
            "redirects": 0, "glare": 0, "session_expired": 0,
        }
        self._txl = TransactionLayer(max_server=max_server_transactions)
        self._owners: dict[tuple[str, ...], Handler] = {}
        self._accounts: dict[str, RegistrationClient] = {}
        self._removing: set[str] = set()
        self._calls: dict[str, Call] = {}
        self._events: deque[UaEvent] = deque(maxlen=10000)
        self._out: list[Outgoing] = []
        self._target_sets: OrderedDict[tuple[Target, ...], TargetSet] = OrderedDict()
        self._rx_transport = "udp"

    # -- runtime I/O -----------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Address, now: float, *,
                         transport: str = "udp") -> None:
        """Feed one whole SIP message from `addr`; never raises.

        For TCP/TLS the transport layer frames the stream (Content-Length) and passes one
        message per call, with `transport="tcp"` or `"tls"`; responses to requests that
        arrived that way go back over the same transport to `addr`.
        """
        self.stats["received"] += 1
        self._rx_transport = transport.lower()
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
        finally:
            self._rx_transport = "udp"
        self._pull_registration_events()

    def messages_out(self) -> list[Outgoing]:
        """Drain everything queued for the network, each with its transport and TLS name."""
        out, self._out = self._out, []
        touched = self._txl.take_dirty()
        for tx in touched:
            if tx.dest is None:
                continue
            out.extend(Outgoing(bytes(m), tx.dest, tx.transport, tx.server_name)
                       for m in tx.messages_to_send())
        for reg in self._accounts.values():
            out.extend(Outgoing(bytes(m), t.addr, t.transport, t.server_name)
                       for m, t in reg.outgoing())
        for key in self._txl.forget_terminated(touched):
            self._owners.pop(key, None)
        self.stats["sent"] += len(out)
        return out

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """Legacy UDP view of `messages_out()` (same queue): (bytes, destination) pairs.

        The runtime switches to `messages_out()` once it has TCP/TLS sockets; until then
        everything here is sent over UDP whatever transport it was meant for.
        """
        return [(o.data, o.dest) for o in self.messages_out()]

    def transport_error(self, addr: Address, now: float, *, transport: str = "udp") -> None:
        """The adapter saw ICMP unreachable, a refused connection or a send failure."""
        transport = transport.lower()
        for tx in self._txl.all():
            if tx.dest == addr and tx.transport == transport and not tx.terminated:
                self._route(tx, tx.transport_error(now), now)
        for reg in self._accounts.values():
            if reg.dest == addr and reg.target.transport == transport:
                reg.transport_error(now)
        self._pull_registration_events()

    def get_timer(self) -> float | None:
        """Earliest absolute deadline the runtime must call `handle_timer` at."""
        times = [self._txl.get_timer()]
        times.extend(reg.get_timer() for reg in self._accounts.values())
        times.extend(call.get_timer() for call in self._calls.values())
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

    def table_sizes(self) -> dict[str, int]:
        """How many entries each internal table holds (flood tests check they stay bounded)."""
        client, server = self._txl.counts()
        return {"client_transactions": client, "server_transactions": server,
                "calls": len(self._calls), "owners": len(self._owners),
                "target_sets": len(self._target_sets), "events": len(self._events)}

    # -- hooks the upper layers implement ---------------------------------------------

    def _on_response(self, resp: Response, now: float) -> None:
        raise NotImplementedError

    def _on_new_request(self, req: Request, addr: Address, dest: Address, now: float,
                        in_dialog: bool) -> None:
        raise NotImplementedError

    def _on_ack(self, req: Request, now: float) -> None:
        raise NotImplementedError

    def _on_cancel(self, req: Request, dest: Address, now: float) -> None:
        raise NotImplementedError

    def _call_timers(self, call: Call, now: float) -> None:
        raise NotImplementedError

    # -- request intake ----------------------------------------------------------------

    def _response_dest(self, req: Request, addr: Address) -> Address:
        """RFC 3261 18.2.2 with RFC 3581: source address, rport or sent-by port."""
        try:
            via = req.top_via
        except SipError:
            return addr
        if via.rport is not None or self._rx_transport != "udp":
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

    def _is_in_dialog(self, req: Request) -> bool:
        if not req.to_tag:
            return False
        call = self._calls.get(req.call_id)
        return (call is not None and call.dialog is not None
                and incoming_request_dialog_id(req) == call.dialog.id)

    def _on_request(self, req: Request, addr: Address, now: float) -> None:
        try:
            self._stamp_via(req, addr)
        except SipError:
            pass
        dest = self._response_dest(req, addr)
        method = req.method.upper()
        tx = self._txl.match_request(req)
        if tx is not None:  # retransmission or ACK for a non-2xx: absorbed here
            for event in tx.receive(req, now):
                if isinstance(event, RequestReceived):
                    self._on_ack(event.request, now)
            return
        if method == "ACK":
            self._on_ack(req, now)
            return
        if method == "CANCEL" and self._txl.invite_for_cancel(req) is not None:
            self._on_cancel(req, dest, now)
            return
        in_dialog = self._is_in_dialog(req)
        if self.request_filter is not None:
            verdict = self.request_filter(req, addr, self._rx_transport, now, in_dialog)
            if isinstance(verdict, Drop):
                self.stats["filtered"] += 1
                return
            if isinstance(verdict, Respond):
                self.stats["filter_responded"] += 1
                if self._txl.server_full():  # a flood of challenges must not grow the table
                    self.stats["overload"] += 1
                    self._stateless(req, verdict.status, dest, list(verdict.headers))
                else:
                    self._respond(req, verdict.status, dest, now, reason=verdict.reason,
                                  extra=list(verdict.headers))
                return
        if self.validator is not None:
            refusal = self.validator(req)
            if refusal is not None:
                self.stats["invalid"] += 1
                self._send_response_tx(req, refusal, dest, now)
                return
        if self._txl.server_full():
            self.stats["overload"] += 1
            self._stateless(req, 503, dest, [("Retry-After", "5")])
            return
        if method == "CANCEL":
            self._respond(req, 481, dest, now)
            return
        self._on_new_request(req, addr, dest, now, in_dialog)

    # -- plumbing --------------------------------------------------------------------

    def _host(self) -> str:
        host = self.local_host
        return f"[{host}]" if ":" in host and not host.startswith("[") else host

    def _port(self, transport: str) -> int:
        return self.ports.get(transport.lower(), self.local_port)

    def _via(self, transport: str = "udp") -> str:
        transport = transport.upper() if transport.lower() != "udp" else self.transport
        return (f"SIP/2.0/{transport} {self._host()}:{self._port(transport)}"
                f";branch={generate_branch()};rport")

    def _contact(self, user: str | None, transport: str = "udp") -> str:
        """Our Contact: ;transport=tcp or ;transport=tls on stream transports.

        A sip: URI with transport=tls rather than sips:, as RFC 5630 advises: the peer
        reached us with a sip: URI, and several common stacks refuse a sips: Contact then.
        """
        userinfo = f"{user}@" if user else ""
        transport = transport.lower() if transport.lower() != "udp" else self.transport.lower()
        port = self._port(transport)
        param = "" if transport == "udp" else f";transport={transport}"
        return f"<sip:{userinfo}{self._host()}:{port}{param}>"

    def _target_set(self, targets: Sequence[Target]) -> TargetSet:
        """The shared (sticky) set for these targets; bounded, oldest forgotten first."""
        key = tuple(targets)
        found = self._target_sets.get(key)
        if found is not None:
            self._target_sets.move_to_end(key)
            return found
        made = TargetSet(key)
        self._target_sets[key] = made
        while len(self._target_sets) > MAX_TARGET_SETS:
            self._target_sets.popitem(last=False)
        return made

    def _apply_target(self, tx: Transaction, target: Target) -> None:
        tx.transport = target.transport
        tx.server_name = target.server_name

    def _track(self, tx: Transaction, handler: Handler | None = None) -> None:
        self._txl.add(tx)
        if handler is not None:
            self._owners[tx.key] = handler

    def _route(self, tx: Transaction, events: list[TxEvent], now: float) -> None:
        handler = self._owners.get(tx.key)
        if handler is not None and events:
            handler(events, now)

    def _pull_registration_events(self) -> None:
        for account_id, reg in list(self._accounts.items()):
            self._events.extend(reg.events())
            if account_id in self._removing and reg.done:
                self._removing.discard(account_id)
                self._accounts.pop(account_id, None)

    def _server_tx(self, req: Request, dest: Address, now: float) -> ServerTransaction:
        reliable = self._rx_transport != "udp"
        tx: ServerTransaction
        if req.method.upper() == "INVITE":
            tx = ServerInviteTransaction(req, now, reliable, t1=self.t1, t2=self.t2, dest=dest)
        else:
            tx = ServerNonInviteTransaction(req, now, reliable, t1=self.t1, t2=self.t2,
                                            dest=dest)
        tx.transport = self._rx_transport
        self._track(tx)
        return tx

    def _respond(self, req: Request, status: int, dest: Address, now: float, *,
                 to_tag: str | None = None, extra: list[tuple[str, str]] | None = None,
                 tx: ServerTransaction | None = None,
                 reason: str | None = None) -> ServerTransaction:
        if tx is None:
            tx = self._server_tx(req, dest, now)
        if to_tag is None and status > 100 and req.to_tag is None:
            to_tag = generate_tag()
        resp = make_response(req, status, reason, to_tag=to_tag if status > 100 else None)
        for name, value in extra or []:
            resp.headers.add(name, value)
        tx.send_response(resp, now)
        return tx

    def _send_response_tx(self, req: Request, resp: Response, dest: Address,
                          now: float) -> None:
        """Send a ready-made refusal (from the validator) through a server transaction."""
        if req.method.upper() == "ACK":
            return
        if self._txl.server_full():
            self._out.append(Outgoing(bytes(resp), dest, self._rx_transport))
            return
        self._server_tx(req, dest, now).send_response(resp, now)

    def _stateless(self, req: Request, status: int, dest: Address,
                   extra: list[tuple[str, str]]) -> None:
        if req.method.upper() == "ACK":
            return
        try:
            resp = make_response(req, status, to_tag=generate_tag())
        except (SipError, ValueError):
            return
        for name, value in extra:
            resp.headers.add(name, value)
        self._out.append(Outgoing(bytes(resp), dest, self._rx_transport))

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
            self._out.append(Outgoing(bytes(resp), self._response_dest(req, addr),
                                      self._rx_transport))
        except (SipError, ValueError, UnicodeError):
            return
