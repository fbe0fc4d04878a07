"""The user agent's plumbing: configuration, transactions, the outgoing queue, events.

`UserAgent` (gateway/sip/ua.py) is composed of objects with one job each:
- `SipCore` here: what every part needs to send and track messages (Via/Contact,
  transactions and their owners, responses, the event queue, stats, bounded target sets);
- `Registrations` (ua_accounts.py): the REGISTER clients, one per account;
- `CallTable` (ua_calls.py): the calls and their state machine (call_state.py), the
  answering side, the ACK and BYE, and the call timer map;
- `OutgoingCalls` (ua_outgoing.py): our INVITE: failover, redirects, auth, CANCEL;
- `Reoffers` (ua_reinvite.py): re-INVITE both ways, glare, session timers, INFO.
"""

from __future__ import annotations

import ipaddress
import random
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence

from gateway.sip.dialog import Dialog
from gateway.sip.errors import SipError, SipParseError
from gateway.sip.events import FilterVerdict, MessageDropped, UaEvent
from gateway.sip.headers import Via, generate_branch, generate_tag
from gateway.sip.message import Request, Response, make_response
from gateway.sip.target import Outgoing, Target, TargetSet
from gateway.sip.transaction import (
    T1,
    T2,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    ServerTransaction,
    Transaction,
    TransactionLayer,
    TxEvent,
)

Address = tuple[str, int]
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REFER, NOTIFY"
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


def dialog_dest(dialog: Dialog, fallback: Address) -> Address:
    """Where an in-dialog request goes: the first route or remote target if it is an IP."""
    try:
        hop = dialog.next_hop()
    except SipError:
        return fallback
    if is_ip(hop.host):
        return hop.host_port(5061 if hop.scheme == "sips" else 5060)
    return fallback


class SipCore:
    """Configuration, transactions, the outgoing queue and events, shared by the parts."""

    def __init__(self, *, local_host: str, local_port: int, transport: str, user_agent: str,
                 instance_id: str, t1: float = T1, t2: float = T2,
                 max_server_transactions: int = 1000, ports: dict[str, int] | None = None,
                 rng: random.Random | None = None) -> None:
        self.local_host = local_host
        self.local_port = local_port
        self.transport = transport.upper()
        self.user_agent = user_agent
        self.instance_id = instance_id
        self.t1 = t1
        self.t2 = t2
        self.ports = dict(ports or {})
        self.rng = rng or random.Random()
        self.stats: dict[str, int] = {
            "received": 0, "sent": 0, "malformed": 0, "dropped": 0,
            "stray_responses": 0, "internal_errors": 0, "filtered": 0,
            "filter_responded": 0, "invalid": 0, "overload": 0, "failovers": 0,
            "redirects": 0, "glare": 0, "session_expired": 0,
        }
        self.txl = TransactionLayer(max_server=max_server_transactions)
        self.events: deque[UaEvent] = deque(maxlen=10000)
        self.rx_transport = "udp"  # transport of the message being handled now
        self._owners: dict[tuple[str, ...], Handler] = {}
        self._out: list[Outgoing] = []
        self._target_sets: OrderedDict[tuple[Target, ...], TargetSet] = OrderedDict()

    # -- output ----------------------------------------------------------------------

    def emit(self, event: UaEvent) -> None:
        """Queue an event for `UserAgent.next_event`."""
        self.events.append(event)

    def send_to(self, msg: Request | Response, dest: Address, target: Target) -> None:
        """Queue one message outside any transaction (ACK for 2xx, our 2xx resends)."""
        self._out.append(Outgoing(bytes(msg), dest, target.transport, target.server_name))

    def take_output(self) -> list[Outgoing]:
        """Drain the queue and what transactions want sent; forget finished transactions."""
        out, self._out = self._out, []
        touched = self.txl.take_dirty()
        for tx in touched:
            if tx.dest is None:
                continue
            out.extend(Outgoing(bytes(m), tx.dest, tx.transport, tx.server_name)
                       for m in tx.messages_to_send())
        for key in self.txl.forget_terminated(touched):
            self._owners.pop(key, None)
        return out

    def resend(self, resp: Response, dest: Address) -> None:
        """Send `resp` again outside any transaction (a retransmission nobody absorbed)."""
        self._out.append(Outgoing(bytes(resp), dest, self.rx_transport))

    def sizes(self) -> dict[str, int]:
        """Entries per table this object holds."""
        client, server = self.txl.counts()
        return {"client_transactions": client, "server_transactions": server,
                "owners": len(self._owners), "target_sets": len(self._target_sets),
                "events": len(self.events)}

    # -- addressing --------------------------------------------------------------------

    def host(self) -> str:
        """Our host, bracketed when it is an IPv6 literal."""
        host = self.local_host
        return f"[{host}]" if ":" in host and not host.startswith("[") else host

    def port(self, transport: str) -> int:
        """The port we listen on for `transport`."""
        return self.ports.get(transport.lower(), self.local_port)

    def via(self, transport: str = "udp") -> str:
        """A fresh Via (new branch, rport) for a request sent over `transport`."""
        transport = transport.upper() if transport.lower() != "udp" else self.transport
        return (f"SIP/2.0/{transport} {self.host()}:{self.port(transport)}"
                f";branch={generate_branch()};rport")

    def contact(self, user: str | None, transport: str = "udp") -> str:
        """Our Contact: ;transport=tcp or ;transport=tls on stream transports.

        A sip: URI with transport=tls rather than sips:, as RFC 5630 advises: the peer
        reached us with a sip: URI, and several common stacks refuse a sips: Contact then.
        """
        userinfo = f"{user}@" if user else ""
        transport = transport.lower() if transport.lower() != "udp" else self.transport.lower()
        port = self.port(transport)
        param = "" if transport == "udp" else f";transport={transport}"
        return f"<sip:{userinfo}{self.host()}:{port}{param}>"

    def target_set(self, targets: Sequence[Target]) -> TargetSet:
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

    def response_dest(self, req: Request, addr: Address) -> Address:
        """RFC 3261 18.2.2 with RFC 3581: source address, rport or sent-by port."""
        try:
            via = req.top_via
        except SipError:
            return addr
        if via.rport is not None or self.rx_transport != "udp":
            return addr
        return (addr[0], via.port or 5060)

    def stamp_via(self, req: Request, addr: Address) -> None:
        """Add received/rport to the top Via of an incoming request (RFC 3581)."""
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

    # -- transactions ------------------------------------------------------------------

    def track(self, tx: Transaction, handler: Handler | None = None) -> None:
        """Add `tx` to the table; `handler` gets its events."""
        self.txl.add(tx)
        if handler is not None:
            self._owners[tx.key] = handler

    def route(self, tx: Transaction, events: list[TxEvent], now: float) -> None:
        """Hand a transaction's events to its owner."""
        handler = self._owners.get(tx.key)
        if handler is not None and events:
            handler(events, now)

    def send_request(self, req: Request, target: Target, dest: Address, now: float,
                     handler: Handler | None = None) -> ClientNonInviteTransaction:
        """Send a non-INVITE request in a new client transaction to `dest`."""
        tx = ClientNonInviteTransaction(req, now, reliable=target.reliable, t1=self.t1,
                                        t2=self.t2, dest=dest)
        tx.transport = target.transport
        tx.server_name = target.server_name
        self.track(tx, handler)
        return tx

    def invite_tx(self, req: Request, target: Target, dest: Address,
                  now: float) -> ClientInviteTransaction:
        """A client INVITE transaction to `dest` over `target`'s transport (not tracked yet)."""
        tx = ClientInviteTransaction(req, now, reliable=target.reliable, t1=self.t1,
                                     t2=self.t2, dest=dest)
        tx.transport = target.transport
        tx.server_name = target.server_name
        return tx

    def server_tx(self, req: Request, dest: Address, now: float) -> ServerTransaction:
        """A tracked server transaction for `req`, over the transport it came by."""
        reliable = self.rx_transport != "udp"
        tx: ServerTransaction
        if req.method.upper() == "INVITE":
            tx = ServerInviteTransaction(req, now, reliable, t1=self.t1, t2=self.t2, dest=dest)
        else:
            tx = ServerNonInviteTransaction(req, now, reliable, t1=self.t1, t2=self.t2,
                                            dest=dest)
        tx.transport = self.rx_transport
        self.track(tx)
        return tx

    def respond(self, req: Request, status: int, dest: Address, now: float, *,
                to_tag: str | None = None, extra: list[tuple[str, str]] | None = None,
                tx: ServerTransaction | None = None,
                reason: str | None = None) -> ServerTransaction:
        """Answer `req` from a server transaction (a new one unless `tx` is given)."""
        if tx is None:
            tx = self.server_tx(req, dest, now)
        if to_tag is None and status > 100 and req.to_tag is None:
            to_tag = generate_tag()
        resp = make_response(req, status, reason, to_tag=to_tag if status > 100 else None)
        for name, value in extra or []:
            resp.headers.add(name, value)
        tx.send_response(resp, now)
        return tx

    def send_response_tx(self, req: Request, resp: Response, dest: Address,
                         now: float) -> None:
        """Send a ready-made refusal (from the validator) through a server transaction."""
        if req.method.upper() == "ACK":
            return
        if self.txl.server_full():
            self._out.append(Outgoing(bytes(resp), dest, self.rx_transport))
            return
        self.server_tx(req, dest, now).send_response(resp, now)

    def stateless(self, req: Request, status: int, dest: Address,
                  extra: list[tuple[str, str]]) -> None:
        """Answer without a transaction (overload): nothing is kept."""
        if req.method.upper() == "ACK":
            return
        try:
            resp = make_response(req, status, to_tag=generate_tag())
        except (SipError, ValueError):
            return
        for name, value in extra:
            resp.headers.add(name, value)
        self._out.append(Outgoing(bytes(resp), dest, self.rx_transport))

    def malformed(self, exc: SipParseError, addr: Address) -> None:
        """Count and report an unparsable message; answer 400 when enough was readable."""
        self.stats["malformed"] += 1
        self.events.append(MessageDropped(exc.reason, addr))
        req = exc.message
        if not isinstance(req, Request) or req.method.upper() == "ACK":
            return
        try:
            resp = make_response(req, exc.status if exc.status >= 400 else 400, exc.reason)
            for name in ("Via", "From", "To", "Call-ID", "CSeq"):
                if name not in resp.headers:
                    return
            self._out.append(Outgoing(bytes(resp), self.response_dest(req, addr),
                                      self.rx_transport))
        except (SipError, ValueError, UnicodeError):
            return
