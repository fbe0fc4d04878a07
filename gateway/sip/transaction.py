"""SIP transactions (RFC 3261 section 17, with the Accepted state of RFC 6026), sans-IO.

Everything that decides a transaction's next state lives in the four `_TABLE`s below:
`(state, input) -> (next state, actions)`. An input missing from a table is absorbed
(a late response, a stray retransmission). An action that names a `Timer` (re)starts it;
entering a state cancels every timer that state does not list in its `_TIMERS` entry.

Nothing here reads the clock or touches a socket: `now` (monotonic seconds) goes in,
events come back, `messages_to_send()` drains what must go out and `get_timer()` is the
next absolute deadline. The caller passes the destination around with `dest`.

Choices worth knowing:
- A server INVITE transaction sends 100 Trying by itself 200 ms after the request if the
  TU has not responded by then (RFC 3261 17.2.1). The user agent usually answers at once.
- Timers that are zero on reliable transports (D, I, J, K) become deadlines equal to
  `now`; the next `handle_timer(now)` finishes the transaction.
- A transport error (ICMP unreachable, send failure) is reported like a timeout, with
  `TransactionTimedOut(reason="transport error")` (RFC 3261 8.1.3.1).
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar, Final

from gateway.sip.message import Headers, Request, Response

T1 = 0.5
T2 = 4.0
T4 = 5.0
TRYING_DELAY = 0.2

Message = Request | Response
TransactionKey = tuple[str, ...]
Address = tuple[str, int]


class TxState(Enum):
    """The states of RFC 3261 figures 5-8 plus RFC 6026 Accepted."""

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class Timer(Enum):
    """RFC 3261 timer names; TRYING is the 200 ms automatic 100 of 17.2.1."""

    A = "A"
    B = "B"
    D = "D"
    E = "E"
    F = "F"
    G = "G"
    H = "H"
    I = "I"  # noqa: E741 - the RFC's name
    J = "J"
    K = "K"
    L = "L"
    M = "M"
    TRYING = "Trying"


class Input(Enum):
    """What can happen to a transaction apart from a timer firing."""

    PROVISIONAL = "1xx received"
    SUCCESS = "2xx received"
    FAILURE = "300-699 received"
    REQUEST = "request retransmission"
    ACK = "ACK"
    TU_PROVISIONAL = "TU sends 1xx"
    TU_SUCCESS = "TU sends 2xx"
    TU_FAILURE = "TU sends 300-699"
    TRANSPORT_ERROR = "transport error"


class Action(Enum):
    """Side effects a transition asks for, executed in table order."""

    PASS_TO_TU = "pass response/request to TU"
    RETRANSMIT = "retransmit request"
    SEND_ACK = "send ACK for non-2xx"
    SEND_RESPONSE = "send TU response"
    RESEND_RESPONSE = "resend last response"
    SEND_TRYING = "send 100 Trying"
    REPORT_TIMEOUT = "report timeout"
    REPORT_TRANSPORT_ERROR = "report transport error"


Step = tuple[TxState, tuple[Action | Timer, ...]]
Table = dict[tuple[TxState, Input | Timer], Step]


@dataclass(frozen=True)
class ResponseReceived:
    """A response the TU must see (every 1xx, the first non-2xx final, every 2xx)."""

    response: Response


@dataclass(frozen=True)
class RequestReceived:
    """A request the server transaction passes up (an ACK that matched an Accepted INVITE)."""

    request: Request


@dataclass(frozen=True)
class TransactionTimedOut:
    """No (final) response in time, or the transport failed; the TU treats it as 408/503."""

    reason: str = "timeout"


@dataclass(frozen=True)
class TransactionTerminated:
    """The transaction is gone; the TU may forget it."""


TxEvent = ResponseReceived | RequestReceived | TransactionTimedOut | TransactionTerminated


class TransactionUsageError(RuntimeError):
    """The TU asked for something the transaction's state forbids (a local bug)."""


def _status_input(status: int, *, local: bool) -> Input:
    if status < 200:
        return Input.TU_PROVISIONAL if local else Input.PROVISIONAL
    if status < 300:
        return Input.TU_SUCCESS if local else Input.SUCCESS
    return Input.TU_FAILURE if local else Input.FAILURE


def client_key(msg: Message) -> TransactionKey:
    """Key a client transaction by top Via branch and CSeq method (RFC 3261 17.1.3)."""
    return (msg.branch or "", msg.cseq.method.upper())


def server_key(request: Request) -> TransactionKey:
    """Key a server transaction by branch, sent-by and method (17.2.3); ACK maps to INVITE."""
    method = request.method.upper()
    if method == "ACK":
        method = "INVITE"
    via = request.top_via
    branch = via.branch or ""
    if branch.startswith("z9hG4bK"):
        port = via.port if via.port is not None else (5061 if via.transport.upper() == "TLS" else 5060)
        return (branch, via.host.lower(), str(port), method)
    # RFC 2543 peer: a crude key good enough for retransmission matching.
    return ("rfc2543", request.call_id, request.from_tag or "", str(request.cseq.number),
            str(via), method)


class Transaction:
    """Common machinery: table-driven transitions, timers and the outgoing queue."""

    _TABLE: ClassVar[Table] = {}
    _TIMERS: ClassVar[dict[TxState, frozenset[Timer]]] = {}
    _BACKOFF: ClassVar[frozenset[Timer]] = frozenset({Timer.A, Timer.E, Timer.G})

    def __init__(self, request: Request, state: TxState, *, reliable: bool, t1: float,
                 t2: float, t4: float, dest: Address | None) -> None:
        self.request = request
        self._key: TransactionKey | None = None
        self._notify: Callable[[Transaction], None] | None = None  # set by TransactionLayer
        self.state = state
        self.reliable = reliable
        self.t1 = t1
        self.t2 = t2
        self.t4 = t4
        self.dest = dest
        self.transport = "udp"  # set by the TU: which socket `dest` is reached over
        self.server_name: str | None = None  # TLS name to verify, when transport is tls
        self._timers: dict[Timer, float] = {}
        self._interval: float | None = None
        self._outbox: list[Message] = []

    @property
    def key(self) -> TransactionKey:
        """Matching key; see `client_key` / `server_key`."""
        raise NotImplementedError

    @property
    def terminated(self) -> bool:
        """True once the transaction reached Terminated and can be dropped."""
        return self.state is TxState.TERMINATED

    def get_timer(self) -> float | None:
        """Earliest absolute deadline, or None when nothing is pending."""
        return min(self._timers.values()) if self._timers else None

    def handle_timer(self, now: float) -> list[TxEvent]:
        """Fire every timer due at `now`, earliest first."""
        events: list[TxEvent] = []
        for _ in range(64):  # a bound, in case a zero-length timer keeps rearming
            due = [(when, t) for t, when in self._timers.items() if when <= now]
            if not due:
                break
            _, timer = min(due, key=lambda item: item[0])
            del self._timers[timer]
            events.extend(self._step(timer, now, None))
        self._touch()
        return events

    def transport_error(self, now: float) -> list[TxEvent]:
        """The transport could not deliver our message: fail like a timeout."""
        return self._step(Input.TRANSPORT_ERROR, now, None)

    def abandon(self) -> None:
        """Stop at once, silently: the TU gave up on this target and tries another."""
        self.state = TxState.TERMINATED
        self._timers.clear()
        self._outbox.clear()
        self._touch()

    def messages_to_send(self) -> list[Message]:
        """Drain the messages queued for `dest`."""
        out, self._outbox = self._outbox, []
        return out

    # -- machinery -------------------------------------------------------------------

    def _step(self, inp: Input | Timer, now: float, msg: Message | None) -> list[TxEvent]:
        entry = self._TABLE.get((self.state, inp))
        if entry is None:
            return []
        new_state, actions = entry
        was_terminated = self.terminated
        self.state = new_state
        allowed = self._TIMERS.get(new_state, frozenset())
        for timer in list(self._timers):
            if timer not in allowed:
                del self._timers[timer]
        events: list[TxEvent] = []
        for action in actions:
            if isinstance(action, Timer):
                self._start(action, now)
            else:
                self._act(action, now, msg, events)
        if self.terminated and not was_terminated:
            self._timers.clear()
            events.append(TransactionTerminated())
        self._touch()
        return events

    def _touch(self) -> None:
        """Tell the layer this transaction may have output, a new deadline or an end."""
        if self._notify is not None:
            self._notify(self)

    def _duration(self, timer: Timer) -> float:
        sixty_four = 64 * self.t1
        fixed = {
            Timer.B: sixty_four, Timer.F: sixty_four, Timer.H: sixty_four,
            Timer.L: sixty_four, Timer.M: sixty_four,
            Timer.D: 0.0 if self.reliable else max(32.0, sixty_four),
            Timer.I: 0.0 if self.reliable else self.t4,
            Timer.J: 0.0 if self.reliable else sixty_four,
            Timer.K: 0.0 if self.reliable else self.t4,
            Timer.TRYING: TRYING_DELAY,
        }
        return fixed[timer]

    def _next_interval(self, timer: Timer) -> float:
        if self._interval is None:
            return self.t1
        if timer is Timer.A:
            return self._interval * 2
        if timer is Timer.E and self.state is TxState.PROCEEDING:
            return self.t2
        return min(self._interval * 2, self.t2)

    def _start(self, timer: Timer, now: float) -> None:
        if timer in self._BACKOFF:
            if self.reliable:
                return
            self._interval = self._next_interval(timer)
            self._timers[timer] = now + self._interval
        else:
            self._timers[timer] = now + self._duration(timer)

    def _act(self, action: Action, now: float, msg: Message | None,
             events: list[TxEvent]) -> None:
        if action is Action.REPORT_TIMEOUT:
            events.append(TransactionTimedOut("timeout"))
        elif action is Action.REPORT_TRANSPORT_ERROR:
            events.append(TransactionTimedOut("transport error"))
        elif action is Action.RETRANSMIT:
            self._outbox.append(self.request)
        else:
            raise AssertionError(f"unhandled action {action}")


class ClientTransaction(Transaction):
    """Shared by both client types: feeds responses through the table."""

    @property
    def key(self) -> TransactionKey:
        """(branch, method) of the request we sent; parsed once, the request never changes."""
        if self._key is None:
            self._key = client_key(self.request)
        return self._key

    def receive(self, msg: Message, now: float) -> list[TxEvent]:
        """Feed a response that matched `key`; requests are ignored."""
        if not isinstance(msg, Response):
            return []
        return self._step(_status_input(msg.status, local=False), now, msg)

    def _act(self, action: Action, now: float, msg: Message | None,
             events: list[TxEvent]) -> None:
        if action is Action.PASS_TO_TU:
            assert isinstance(msg, Response)
            events.append(ResponseReceived(msg))
        elif action is Action.SEND_ACK:
            assert isinstance(msg, Response)
            self._outbox.append(self._build_ack(msg))
        else:
            super()._act(action, now, msg, events)

    def _build_ack(self, response: Response) -> Request:
        """ACK for a non-2xx final: same branch, To from the response (RFC 3261 17.1.1.3)."""
        req = self.request
        headers = Headers()
        headers.add("Via", req.headers.get_all("Via")[0])
        for route in req.headers.get_all("Route"):
            headers.add("Route", route)
        headers.add("Max-Forwards", "70")
        headers.add("From", req.headers.get("From") or "")
        headers.add("To", response.headers.get("To") or req.headers.get("To") or "")
        headers.add("Call-ID", req.call_id)
        headers.add("CSeq", f"{req.cseq.number} ACK")
        return Request("ACK", req.uri, headers)


_S = TxState
_I = Input
_A = Action


class ClientInviteTransaction(ClientTransaction):
    """INVITE client transaction (figure 5 with RFC 6026): Timer A, B, D, M."""

    _TABLE: ClassVar[Table] = {
        (_S.CALLING, Timer.A): (_S.CALLING, (_A.RETRANSMIT, Timer.A)),
        (_S.CALLING, Timer.B): (_S.TERMINATED, (_A.REPORT_TIMEOUT,)),
        (_S.CALLING, _I.PROVISIONAL): (_S.PROCEEDING, (_A.PASS_TO_TU,)),
        (_S.PROCEEDING, _I.PROVISIONAL): (_S.PROCEEDING, (_A.PASS_TO_TU,)),
        (_S.CALLING, _I.SUCCESS): (_S.ACCEPTED, (_A.PASS_TO_TU, Timer.M)),
        (_S.PROCEEDING, _I.SUCCESS): (_S.ACCEPTED, (_A.PASS_TO_TU, Timer.M)),
        (_S.CALLING, _I.FAILURE): (_S.COMPLETED, (_A.SEND_ACK, _A.PASS_TO_TU, Timer.D)),
        (_S.PROCEEDING, _I.FAILURE): (_S.COMPLETED, (_A.SEND_ACK, _A.PASS_TO_TU, Timer.D)),
        (_S.COMPLETED, _I.FAILURE): (_S.COMPLETED, (_A.SEND_ACK,)),
        (_S.COMPLETED, Timer.D): (_S.TERMINATED, ()),
        (_S.ACCEPTED, _I.SUCCESS): (_S.ACCEPTED, (_A.PASS_TO_TU,)),
        (_S.ACCEPTED, Timer.M): (_S.TERMINATED, ()),
        (_S.CALLING, _I.TRANSPORT_ERROR): (_S.TERMINATED, (_A.REPORT_TRANSPORT_ERROR,)),
        (_S.PROCEEDING, _I.TRANSPORT_ERROR): (_S.TERMINATED, (_A.REPORT_TRANSPORT_ERROR,)),
        (_S.COMPLETED, _I.TRANSPORT_ERROR): (_S.TERMINATED, ()),
    }
    _TIMERS: ClassVar[dict[TxState, frozenset[Timer]]] = {
        _S.CALLING: frozenset({Timer.A, Timer.B}),
        _S.COMPLETED: frozenset({Timer.D}),
        _S.ACCEPTED: frozenset({Timer.M}),
    }

    def __init__(self, request: Request, now: float, *, reliable: bool = False,
                 t1: float = T1, t2: float = T2, t4: float = T4,
                 dest: Address | None = None) -> None:
        super().__init__(request, _S.CALLING, reliable=reliable, t1=t1, t2=t2, t4=t4,
                         dest=dest)
        self._outbox.append(request)
        self._start(Timer.A, now)
        self._start(Timer.B, now)


class ClientNonInviteTransaction(ClientTransaction):
    """Non-INVITE client transaction (figure 6): Timer E, F (or a custom timeout), K."""

    _TABLE: ClassVar[Table] = {
        (_S.TRYING, Timer.E): (_S.TRYING, (_A.RETRANSMIT, Timer.E)),
        (_S.PROCEEDING, Timer.E): (_S.PROCEEDING, (_A.RETRANSMIT, Timer.E)),
        (_S.TRYING, Timer.F): (_S.TERMINATED, (_A.REPORT_TIMEOUT,)),
        (_S.PROCEEDING, Timer.F): (_S.TERMINATED, (_A.REPORT_TIMEOUT,)),
        (_S.TRYING, _I.PROVISIONAL): (_S.PROCEEDING, (_A.PASS_TO_TU,)),
        (_S.PROCEEDING, _I.PROVISIONAL): (_S.PROCEEDING, (_A.PASS_TO_TU,)),
        (_S.TRYING, _I.SUCCESS): (_S.COMPLETED, (_A.PASS_TO_TU, Timer.K)),
        (_S.TRYING, _I.FAILURE): (_S.COMPLETED, (_A.PASS_TO_TU, Timer.K)),
        (_S.PROCEEDING, _I.SUCCESS): (_S.COMPLETED, (_A.PASS_TO_TU, Timer.K)),
        (_S.PROCEEDING, _I.FAILURE): (_S.COMPLETED, (_A.PASS_TO_TU, Timer.K)),
        (_S.COMPLETED, Timer.K): (_S.TERMINATED, ()),
        (_S.TRYING, _I.TRANSPORT_ERROR): (_S.TERMINATED, (_A.REPORT_TRANSPORT_ERROR,)),
        (_S.PROCEEDING, _I.TRANSPORT_ERROR): (_S.TERMINATED, (_A.REPORT_TRANSPORT_ERROR,)),
    }
    _TIMERS: ClassVar[dict[TxState, frozenset[Timer]]] = {
        _S.TRYING: frozenset({Timer.E, Timer.F}),
        _S.PROCEEDING: frozenset({Timer.E, Timer.F}),
        _S.COMPLETED: frozenset({Timer.K}),
    }

    def __init__(self, request: Request, now: float, reliable: bool = False,
                 timeout: float | None = None, *, t1: float = T1, t2: float = T2,
                 t4: float = T4, dest: Address | None = None) -> None:
        super().__init__(request, _S.TRYING, reliable=reliable, t1=t1, t2=t2, t4=t4,
                         dest=dest)
        self.timeout = timeout
        self._outbox.append(request)
        self._start(Timer.E, now)
        self._start(Timer.F, now)

    def _duration(self, timer: Timer) -> float:
        if timer is Timer.F and self.timeout is not None:
            return self.timeout
        return super()._duration(timer)


class ServerTransaction(Transaction):
    """Shared by both server types: the TU answers through `send_response`."""

    def __init__(self, request: Request, state: TxState, *, reliable: bool, t1: float,
                 t2: float, t4: float, dest: Address | None) -> None:
        super().__init__(request, state, reliable=reliable, t1=t1, t2=t2, t4=t4, dest=dest)
        self.last_response: Response | None = None
        self._pending: Response | None = None

    @property
    def key(self) -> TransactionKey:
        """(branch, sent-by host, port, method) of the request that created us; parsed once."""
        if self._key is None:
            self._key = server_key(self.request)
        return self._key

    def receive(self, msg: Message, now: float) -> list[TxEvent]:
        """Feed a retransmitted request (or an ACK) that matched `key`."""
        if not isinstance(msg, Request):
            return []
        inp = Input.ACK if msg.method.upper() == "ACK" else Input.REQUEST
        return self._step(inp, now, msg)

    def send_response(self, response: Response, now: float) -> list[TxEvent]:
        """Hand the transaction a response to send; raises if the state forbids it."""
        inp = _status_input(response.status, local=True)
        if (self.state, inp) not in self._TABLE:
            raise TransactionUsageError(
                f"cannot send {response.status} in state {self.state.value}")
        self._pending = response
        try:
            return self._step(inp, now, None)
        finally:
            self._pending = None

    def _act(self, action: Action, now: float, msg: Message | None,
             events: list[TxEvent]) -> None:
        if action is Action.SEND_RESPONSE:
            assert self._pending is not None
            self.last_response = self._pending
            self._outbox.append(self._pending)
            self._timers.pop(Timer.TRYING, None)
        elif action is Action.RESEND_RESPONSE:
            if self.last_response is not None:
                self._outbox.append(self.last_response)
        elif action is Action.SEND_TRYING:
            if self.last_response is None:
                self.last_response = _trying(self.request)
                self._outbox.append(self.last_response)
        elif action is Action.PASS_TO_TU:
            assert isinstance(msg, Request)
            events.append(RequestReceived(msg))
        else:
            super()._act(action, now, msg, events)


def _trying(request: Request) -> Response:
    headers = Headers()
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        for value in request.headers.get_all(name):
            headers.add(name, value)
    return Response(100, "Trying", headers)


class ServerInviteTransaction(ServerTransaction):
    """INVITE server transaction (figure 7 with RFC 6026): Timer G, H, I, L, and auto 100."""

    _TABLE: ClassVar[Table] = {
        (_S.PROCEEDING, Timer.TRYING): (_S.PROCEEDING, (_A.SEND_TRYING,)),
        (_S.PROCEEDING, _I.REQUEST): (_S.PROCEEDING, (_A.RESEND_RESPONSE,)),
        (_S.PROCEEDING, _I.TU_PROVISIONAL): (_S.PROCEEDING, (_A.SEND_RESPONSE,)),
        (_S.PROCEEDING, _I.TU_SUCCESS): (_S.ACCEPTED, (_A.SEND_RESPONSE, Timer.L)),
        (_S.PROCEEDING, _I.TU_FAILURE): (_S.COMPLETED, (_A.SEND_RESPONSE, Timer.G, Timer.H)),
        (_S.PROCEEDING, _I.TRANSPORT_ERROR): (_S.TERMINATED, (_A.REPORT_TRANSPORT_ERROR,)),
        (_S.COMPLETED, _I.REQUEST): (_S.COMPLETED, (_A.RESEND_RESPONSE,)),
        (_S.COMPLETED, Timer.G): (_S.COMPLETED, (_A.RESEND_RESPONSE, Timer.G)),
        (_S.COMPLETED, Timer.H): (_S.TERMINATED, (_A.REPORT_TIMEOUT,)),
        (_S.COMPLETED, _I.ACK): (_S.CONFIRMED, (Timer.I,)),
        (_S.COMPLETED, _I.TRANSPORT_ERROR): (_S.TERMINATED, (_A.REPORT_TRANSPORT_ERROR,)),
        (_S.CONFIRMED, _I.REQUEST): (_S.CONFIRMED, ()),
        (_S.CONFIRMED, _I.ACK): (_S.CONFIRMED, ()),
        (_S.CONFIRMED, Timer.I): (_S.TERMINATED, ()),
        (_S.ACCEPTED, _I.REQUEST): (_S.ACCEPTED, ()),
        (_S.ACCEPTED, _I.ACK): (_S.ACCEPTED, (_A.PASS_TO_TU,)),
        (_S.ACCEPTED, _I.TU_SUCCESS): (_S.ACCEPTED, (_A.SEND_RESPONSE,)),
        (_S.ACCEPTED, Timer.L): (_S.TERMINATED, ()),
    }
    _TIMERS: ClassVar[dict[TxState, frozenset[Timer]]] = {
        _S.PROCEEDING: frozenset({Timer.TRYING}),
        _S.COMPLETED: frozenset({Timer.G, Timer.H}),
        _S.CONFIRMED: frozenset({Timer.I}),
        _S.ACCEPTED: frozenset({Timer.L}),
    }

    def __init__(self, request: Request, now: float, reliable: bool = False, *,
                 t1: float = T1, t2: float = T2, t4: float = T4,
                 dest: Address | None = None) -> None:
        super().__init__(request, _S.PROCEEDING, reliable=reliable, t1=t1, t2=t2, t4=t4,
                         dest=dest)
        self._start(Timer.TRYING, now)

    @property
    def final_sent(self) -> bool:
        """True once a final response went out (CANCEL then gets 200 and nothing else)."""
        return self.last_response is not None and self.last_response.status >= 200


class ServerNonInviteTransaction(ServerTransaction):
    """Non-INVITE server transaction (figure 8): Timer J."""

    _TABLE: ClassVar[Table] = {
        (_S.TRYING, _I.REQUEST): (_S.TRYING, ()),
        (_S.TRYING, _I.TU_PROVISIONAL): (_S.PROCEEDING, (_A.SEND_RESPONSE,)),
        (_S.TRYING, _I.TU_SUCCESS): (_S.COMPLETED, (_A.SEND_RESPONSE, Timer.J)),
        (_S.TRYING, _I.TU_FAILURE): (_S.COMPLETED, (_A.SEND_RESPONSE, Timer.J)),
        (_S.PROCEEDING, _I.REQUEST): (_S.PROCEEDING, (_A.RESEND_RESPONSE,)),
        (_S.PROCEEDING, _I.TU_PROVISIONAL): (_S.PROCEEDING, (_A.SEND_RESPONSE,)),
        (_S.PROCEEDING, _I.TU_SUCCESS): (_S.COMPLETED, (_A.SEND_RESPONSE, Timer.J)),
        (_S.PROCEEDING, _I.TU_FAILURE): (_S.COMPLETED, (_A.SEND_RESPONSE, Timer.J)),
        (_S.COMPLETED, _I.REQUEST): (_S.COMPLETED, (_A.RESEND_RESPONSE,)),
        (_S.COMPLETED, Timer.J): (_S.TERMINATED, ()),
        (_S.TRYING, _I.TRANSPORT_ERROR): (_S.TERMINATED, (_A.REPORT_TRANSPORT_ERROR,)),
        (_S.PROCEEDING, _I.TRANSPORT_ERROR): (_S.TERMINATED, (_A.REPORT_TRANSPORT_ERROR,)),
        (_S.COMPLETED, _I.TRANSPORT_ERROR): (_S.TERMINATED, ()),
    }
    _TIMERS: ClassVar[dict[TxState, frozenset[Timer]]] = {
        _S.COMPLETED: frozenset({Timer.J}),
    }

    def __init__(self, request: Request, now: float, reliable: bool = False, *,
                 t1: float = T1, t2: float = T2, t4: float = T4,
                 dest: Address | None = None) -> None:
        super().__init__(request, _S.TRYING, reliable=reliable, t1=t1, t2=t2, t4=t4,
                         dest=dest)


AnyTransaction = (ClientInviteTransaction | ClientNonInviteTransaction
                  | ServerInviteTransaction | ServerNonInviteTransaction)


#: Server states in which a transaction only waits to absorb retransmissions: its final
#: answer went out and, on UDP, nothing more will be sent from it (a non-INVITE's Completed,
#: an INVITE's Confirmed after the ACK of a non-2xx, an INVITE's Accepted after a 2xx, whose
#: retransmissions and ACK the user agent's call table handles itself).
ABSORBING: Final[dict[type[Transaction], frozenset[TxState]]] = {
    ServerNonInviteTransaction: frozenset({TxState.COMPLETED}),
    ServerInviteTransaction: frozenset({TxState.CONFIRMED, TxState.ACCEPTED}),
}


def only_absorbing(tx: Transaction) -> bool:
    """True when `tx` could be forgotten now at the cost of a resend answered afresh."""
    states = ABSORBING.get(type(tx))
    return states is not None and tx.state in states


class TransactionLayer:
    """Holds live transactions and matches incoming messages to them (17.1.3, 17.2.3).

    The server table is bounded (`max_server`). When it is full, the oldest transaction
    that is `only_absorbing` is evicted to make room (`evicted` counts them); only when
    none is left does `server_full` say so (the user agent then answers 503 statelessly).
    An evicted transaction's request, if resent, is handled as new: the user agent and the
    edge recognise it as a retransmission and answer it the same way.
    """

    def __init__(self, *, max_server: int = 1000, max_client: int = 2000) -> None:
        self._client: dict[TransactionKey, ClientTransaction] = {}
        self._server: dict[TransactionKey, ServerTransaction] = {}
        self.max_server = max_server
        self.max_client = max_client
        # Server transactions in the order they began only absorbing (lazily cleaned: an
        # entry whose transaction moved on, ended or was replaced is skipped when met).
        self._absorbing: OrderedDict[int, ServerTransaction] = OrderedDict()
        self.evicted = 0
        # Work is proportional to what changed, not to what is alive: a flood of thousands
        # of transactions must not make every datagram cost a scan of all of them.
        self._dirty: dict[int, Transaction] = {}
        self._heap: list[tuple[float, int, Transaction]] = []
        self._seq = itertools.count()
        # Set when a tracked transaction terminates (every state change notifies us), so a
        # full table is only rescanned when a scan can free something: a table kept full by
        # live traffic must not cost a scan of every entry per request.
        self._server_ended = False
        self._client_ended = False

    def server_full(self) -> bool:
        """True when no new server transaction fits, even after evicting one that only
        absorbs retransmissions; the TU answers 503 statelessly."""
        if len(self._server) < self.max_server:
            return False
        if self._server_ended:
            self._server_ended = False
            self._server = {k: tx for k, tx in self._server.items() if not tx.terminated}
        while len(self._server) >= self.max_server and self._evict_one():
            pass
        return len(self._server) >= self.max_server

    def _evict_one(self) -> bool:
        """Forget the oldest server transaction that only absorbs; False if there is none."""
        absorbing = self._absorbing
        while absorbing:
            _, tx = absorbing.popitem(last=False)
            if tx.terminated or not only_absorbing(tx) or not self._tracked(tx):
                continue
            del self._server[tx.key]
            self.evicted += 1
            return True
        return False

    def client_full(self) -> bool:
        """True when no new client transaction fits (our own requests are bounded too)."""
        if len(self._client) < self.max_client:
            return False
        if self._client_ended:
            self._client_ended = False
            self._client = {k: tx for k, tx in self._client.items() if not tx.terminated}
        return len(self._client) >= self.max_client

    def absorbing(self) -> int:
        """Server transactions queued as evictable (an upper bound: some moved on)."""
        return len(self._absorbing)

    def counts(self) -> tuple[int, int]:
        """(client, server) transactions held, for stats and memory-bound tests."""
        return len(self._client), len(self._server)

    def add(self, tx: Transaction) -> None:
        """Start tracking `tx` (replaces a terminated one with the same key)."""
        if isinstance(tx, ClientTransaction):
            self._client[tx.key] = tx
        elif isinstance(tx, ServerTransaction):
            self._server[tx.key] = tx
        tx._notify = self._touched
        self._touched(tx)

    def _touched(self, tx: Transaction) -> None:
        self._dirty[id(tx)] = tx
        if tx.terminated:
            if isinstance(tx, ClientTransaction):
                self._client_ended = True
            else:
                self._server_ended = True
                self._absorbing.pop(id(tx), None)
        elif isinstance(tx, ServerTransaction) and id(tx) not in self._absorbing \
                and only_absorbing(tx):
            self._absorbing[id(tx)] = tx
        deadline = tx.get_timer()
        if deadline is not None:
            heapq.heappush(self._heap, (deadline, next(self._seq), tx))
            if len(self._heap) > 8 * (len(self._client) + len(self._server)) + 1024:
                self._rebuild_heap()

    def _rebuild_heap(self) -> None:
        self._heap = [(d, next(self._seq), tx) for tx in self.all()
                      if (d := tx.get_timer()) is not None]
        heapq.heapify(self._heap)

    def _tracked(self, tx: Transaction) -> bool:
        table: dict[TransactionKey, Any] = (
            self._client if isinstance(tx, ClientTransaction) else self._server)
        return table.get(tx.key) is tx

    def take_dirty(self) -> list[Transaction]:
        """Transactions touched since the last call: the only ones that can have output."""
        dirty = list(self._dirty.values())
        self._dirty.clear()
        return dirty

    def forget_terminated(self, txs: Iterable[Transaction]) -> list[TransactionKey]:
        """Drop the terminated ones among `txs`; returns the keys that are now free."""
        freed: list[TransactionKey] = []
        for tx in txs:
            if tx.terminated and self._tracked(tx):
                table: dict[TransactionKey, Any] = (
                    self._client if isinstance(tx, ClientTransaction) else self._server)
                del table[tx.key]
                freed.append(tx.key)
        return freed

    def match_response(self, response: Response) -> ClientTransaction | None:
        """The client transaction a response belongs to, if any."""
        try:
            return self._client.get(client_key(response))
        except Exception:  # a response without Via/CSeq matches nothing
            return None

    def match_request(self, request: Request) -> ServerTransaction | None:
        """The server transaction a retransmission, or an ACK for a non-2xx, belongs to."""
        try:
            return self._server.get(server_key(request))
        except Exception:
            return None

    def invite_for_cancel(self, cancel: Request) -> ServerInviteTransaction | None:
        """The INVITE server transaction a CANCEL targets (same key apart from method)."""
        try:
            key = server_key(cancel)
        except Exception:
            return None
        tx = self._server.get((*key[:-1], "INVITE"))
        return tx if isinstance(tx, ServerInviteTransaction) else None

    def all(self) -> list[Transaction]:
        """Every tracked transaction (for draining their outboxes)."""
        return [*self._client.values(), *self._server.values()]

    def get_timer(self) -> float | None:
        """Earliest deadline over all transactions (a heap with lazily dropped entries)."""
        heap = self._heap
        while heap:
            deadline, _, tx = heap[0]
            if tx.terminated or tx.get_timer() != deadline or not self._tracked(tx):
                heapq.heappop(heap)
                continue
            return deadline
        return None

    def handle_timer(self, now: float) -> list[tuple[Transaction, list[TxEvent]]]:
        """Fire due timers; returns the events per transaction so the TU can route them."""
        fired: list[tuple[Transaction, list[TxEvent]]] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, tx = heapq.heappop(heap)
            current = tx.get_timer()
            if tx.terminated or current is None or current > now or not self._tracked(tx):
                continue
            events = tx.handle_timer(now)  # re-queues its next deadline through _touched
            if events:
                fired.append((tx, events))
        return fired

    def remove_terminated(self) -> None:
        """Forget transactions that finished (call after draining their outboxes)."""
        self._client = {k: tx for k, tx in self._client.items() if not tx.terminated}
        self._server = {k: tx for k, tx in self._server.items() if not tx.terminated}
        self._absorbing = OrderedDict((i, tx) for i, tx in self._absorbing.items()
                                      if self._tracked(tx))


__all__ = [
    "ABSORBING", "T1", "T2", "T4", "Action", "AnyTransaction", "ClientInviteTransaction",
    "ClientNonInviteTransaction", "ClientTransaction", "Input", "RequestReceived",
    "ResponseReceived", "ServerInviteTransaction", "ServerNonInviteTransaction",
    "ServerTransaction", "Timer", "Transaction", "TransactionKey", "TransactionLayer",
    "TransactionTerminated", "TransactionTimedOut", "TransactionUsageError", "TxEvent",
    "TxState", "client_key", "only_absorbing", "server_key",
]
