"""SIP MESSAGE (RFC 3428, pager mode) both ways: SMS out to a SIP endpoint, SMS in from one.

Why it exists: every SMS a modem receives is handed to a configured SIP URI as a MESSAGE,
and a MESSAGE addressed to the gateway is an SMS to send. Both are out-of-dialog requests
in non-INVITE transactions; nothing here creates a dialog.

Sending (`send`): one MESSAGE per call, to an address or an ordered list of RFC 3263
targets (the next one is tried on a transport error, a 503 or a timeout). A 401/407 is
answered with the credentials of `account_id` (the best challenge is chosen by
`auth.challenge_from`), at most `MAX_AUTH_ROUNDS` times and never twice for one nonce
unless it is stale. The outcome is exactly one event per handle: `MessageDelivered` for a
2xx (200 or 202), `MessageFailed` otherwise, so the SMS queue can mark the delivery.

Receiving (`on_request`): after the request filter (the edge's ACL and digest rules) and
the validator let it through, a MESSAGE is held in its server transaction and reported as
`MessageReceived`. The runtime answers it with `answer(handle, status)`, normally 202
Accepted once the SMS is stored, so that the sender retries rather than loses it when we
cannot store it. A MESSAGE nobody answered within `answer_timeout` gets 500 (the sender's
Timer F would otherwise run out with nothing said); pending answers are bounded.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.sip.auth import build_authorization, challenge_from
from gateway.sip.errors import SipError
from gateway.sip.events import MessageDelivered, MessageFailed, MessageReceived
from gateway.sip.headers import generate_call_id, generate_tag
from gateway.sip.message import Request, Response, build_request
from gateway.sip.target import Target, TargetSet, as_targets
from gateway.sip.transaction import (
    ClientNonInviteTransaction,
    ResponseReceived,
    ServerTransaction,
    TransactionTimedOut,
    TxEvent,
    TxState,
)
from gateway.sip.ua_accounts import Registrations
from gateway.sip.ua_core import Address, SipCore

MAX_AUTH_ROUNDS = 3
#: Outgoing MESSAGEs in flight at once; beyond it `send` fails at once (the queue retries).
MAX_OUTGOING = 256
#: Incoming MESSAGEs waiting for the runtime's answer; beyond it new ones get 503.
MAX_UNANSWERED = 64
TEXT_PLAIN = "text/plain;charset=UTF-8"


@dataclass
class _Outgoing:
    """One MESSAGE we sent, until its final answer."""

    handle: str
    request: Request
    targets: list[Target]
    index: int
    tset: TargetSet | None
    account_id: str | None
    tx: ClientNonInviteTransaction | None = None
    tried: int = 1
    auth_nonce: str | None = None
    auth_nc: int = 0
    auth_rounds: int = 0


@dataclass
class _Incoming:
    """One MESSAGE received, until the runtime answered it."""

    request: Request
    tx: ServerTransaction
    dest: Address
    deadline: float
    headers: list[tuple[str, str]] = field(default_factory=list)


class Messages:
    """The user agent's MESSAGE part: our requests and their outcome, and the ones we get."""

    def __init__(self, core: SipCore, accounts: Registrations, *,
                 answer_timeout: float = 8.0, timeout: float | None = None) -> None:
        self._core = core
        self._accounts = accounts
        self.answer_timeout = answer_timeout
        self.timeout = timeout  # None: Timer F (64*T1)
        self._out: dict[str, _Outgoing] = {}
        self._in: OrderedDict[str, _Incoming] = OrderedDict()
        self._ids = itertools.count(1)

    # -- sending -----------------------------------------------------------------------

    def send(self, *, target_uri: str, body: bytes, content_type: str, from_uri: str,
             dest: Address | Sequence[Target], now: float, account_id: str | None = None,
             to_uri: str | None = None, extra: Sequence[tuple[str, str]] = ()) -> str:
        """Send one MESSAGE; returns its handle (the Call-ID), the key of its outcome event."""
        core = self._core
        targets = as_targets(dest, core.transport.lower())
        tset = core.target_set(targets) if len(targets) > 1 else None
        index = tset.start() if tset is not None else 0
        call_id = generate_call_id(core.local_host)
        req = build_request(
            "MESSAGE", target_uri, from_addr=f"<{from_uri}>;tag={generate_tag()}",
            to_addr=f"<{to_uri or target_uri}>", call_id=call_id, cseq=1,
            via=core.via(targets[index].transport), body=body, content_type=content_type,
            extra=[("User-Agent", core.user_agent), *extra])
        out = _Outgoing(call_id, req, targets, index, tset, account_id)
        if len(self._out) >= MAX_OUTGOING:
            core.emit(MessageFailed(call_id, None, "too many MESSAGEs in flight"))
            return call_id
        self._out[call_id] = out
        self._transmit(out, now)
        return call_id

    def _transmit(self, out: _Outgoing, now: float) -> None:
        core = self._core
        target = out.targets[out.index]
        tx = ClientNonInviteTransaction(out.request, now, reliable=target.reliable,
                                        timeout=self.timeout, t1=core.t1, t2=core.t2,
                                        dest=target.addr)
        tx.transport = target.transport
        tx.server_name = target.server_name
        out.tx = tx
        core.track(tx, lambda ev, t: self._on_events(out, tx, ev, t))

    def _reissue(self, out: _Outgoing, now: float,
                 auth: tuple[str, str] | None = None) -> None:
        """The same MESSAGE again: new branch and CSeq (RFC 3261 8.1.3.5, 22.2)."""
        old = out.request
        headers = old.headers.copy()
        headers.set("Via", self._core.via(out.targets[out.index].transport))
        headers.set("CSeq", f"{old.cseq.number + 1} MESSAGE")
        if auth is not None:
            headers.remove("Authorization")
            headers.remove("Proxy-Authorization")
            headers.add(*auth)
        out.request = Request("MESSAGE", old.uri, headers, old.body)
        if out.tx is not None and out.tx.state in (TxState.TRYING, TxState.PROCEEDING):
            out.tx.abandon()  # a completed one stays to absorb its response's resends
        self._transmit(out, now)

    def _fail_over(self, out: _Outgoing, now: float) -> bool:
        if out.tset is None:
            return False
        nxt = out.tset.next_after(out.index, out.tried)
        if nxt is None:
            return False
        self._core.stats["failovers"] += 1
        out.index = nxt
        out.tried += 1
        out.auth_nonce = None
        self._reissue(out, now)
        return True

    def _on_events(self, out: _Outgoing, tx: ClientNonInviteTransaction,
                   events: list[TxEvent], now: float) -> None:
        for event in events:
            if tx is not out.tx or out.handle not in self._out:
                return
            if isinstance(event, ResponseReceived):
                self._on_response(out, event.response, now)
            elif isinstance(event, TransactionTimedOut):
                if self._fail_over(out, now):
                    continue
                status = 503 if event.reason == "transport error" else 408
                self._finish(out, MessageFailed(out.handle, status, event.reason))

    def _on_response(self, out: _Outgoing, resp: Response, now: float) -> None:
        status = resp.status
        if status < 200:
            return
        if out.tset is not None and status != 503:
            out.tset.succeeded(out.index)
        if 200 <= status < 300:
            self._finish(out, MessageDelivered(out.handle, status))
            return
        if status == 503 and self._fail_over(out, now):
            return
        if status in (401, 407) and self._retry_with_auth(out, resp, now):
            return
        reason = f"{status} {resp.reason}".strip()
        if status in (401, 407):
            reason = f"{status} authentication failed"
        self._finish(out, MessageFailed(out.handle, status, reason))

    def _retry_with_auth(self, out: _Outgoing, resp: Response, now: float) -> bool:
        reg = self._accounts.get(out.account_id)
        if reg is None or out.auth_rounds >= MAX_AUTH_ROUNDS:
            return False
        try:
            challenge = challenge_from(resp)
        except SipError:
            return False
        if challenge.nonce == out.auth_nonce and not challenge.stale:
            return False  # answered once already: the credentials are wrong
        if challenge.nonce != out.auth_nonce:
            out.auth_nc = 0
        out.auth_nonce = challenge.nonce
        out.auth_nc += 1
        out.auth_rounds += 1
        settings = reg.settings
        value = build_authorization(
            challenge, method="MESSAGE", uri=out.request.uri,
            username=settings.auth_username or reg.username, password=settings.password,
            nc=out.auth_nc, body=out.request.body)
        header = "Proxy-Authorization" if resp.status == 407 else "Authorization"
        self._reissue(out, now, auth=(header, value))
        return True

    def _finish(self, out: _Outgoing, event: MessageDelivered | MessageFailed) -> None:
        self._out.pop(out.handle, None)
        self._core.emit(event)

    # -- receiving ---------------------------------------------------------------------

    def on_request(self, req: Request, addr: Address, dest: Address, now: float) -> None:
        """A MESSAGE the filter and validator accepted: hold it and tell the runtime."""
        core = self._core
        if len(self._in) >= MAX_UNANSWERED:
            core.respond(req, 503, dest, now, extra=[("Retry-After", "5")])
            return
        tx = core.server_tx(req, dest, now)
        handle = f"msg-{next(self._ids)}"
        self._in[handle] = _Incoming(req, tx, dest, now + self.answer_timeout)
        try:
            from_uri = str(req.from_addr.uri)
            to_uri = str(req.to_addr.uri)
        except SipError:
            self.answer(handle, 400, now)
            return
        content_type = (req.headers.get("Content-Type") or "text/plain").strip()
        core.emit(MessageReceived(handle, from_uri, to_uri, req.uri, content_type, req.body,
                                  addr))

    def answer(self, handle: str, status: int, now: float, *,
               reason: str | None = None) -> bool:
        """Send the final answer to a received MESSAGE; False if it is unknown or answered."""
        if not 200 <= status < 700:
            raise ValueError(f"a MESSAGE answer must be a final status, got {status}")
        pending = self._in.pop(handle, None)
        if pending is None:
            return False
        self._core.respond(pending.request, status, pending.dest, now, tx=pending.tx,
                           reason=reason)
        return True

    def get_timer(self) -> float | None:
        """When the oldest unanswered MESSAGE runs out of time."""
        if not self._in:
            return None
        return min(p.deadline for p in self._in.values())

    def handle_timer(self, now: float) -> None:
        """Answer 500 to MESSAGEs the runtime left unanswered for too long."""
        for handle in [h for h, p in self._in.items() if p.deadline <= now]:
            self.answer(handle, 500, now, reason="Not Handled In Time")

    def sizes(self) -> dict[str, int]:
        """Entries this part holds (flood tests check they stay bounded)."""
        return {"messages_out": len(self._out), "messages_in": len(self._in)}


__all__ = ["MAX_AUTH_ROUNDS", "MAX_OUTGOING", "MAX_UNANSWERED", "TEXT_PLAIN", "Messages"]
