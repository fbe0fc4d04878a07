"""The INVITE dialog usage as one explicit state machine, sans-IO.

Everything that decides where a call stands lives here, in the style of transaction.py:
`_TABLE` maps `(state, input) -> next state`, or to `IGNORED` (the input can arrive and
changes nothing; the agent may still answer it, e.g. with 481) or `ILLEGAL` (reaching it
is a bug in the agent: `Call.fire` raises `CallStateError`). Every state names a reaction
to every input; the table is checked for that when this module loads.

A call keeps one map of named timers (`Call.timers`, timer -> absolute deadline).
`_TIMERS` lists the timers each state may hold; entering a state cancels the others, and
arming a timer the current state does not allow raises `CallStateError`.

Both roles share the machine. UAC: CALLING -> PROCEEDING (100) -> EARLY (1xx with a tag)
-> CONFIRMED on 2xx; hanging up before the answer goes through CANCEL_WAIT (no provisional
yet, CANCEL must wait for one, RFC 3261 9.1) or CANCELLING. UAS: INCOMING -> RINGING ->
ACCEPTED (our 2xx, waiting for the ACK) -> CONFIRMED. In a confirmed call an offer in
flight is a state of its own (OFFER_SENT, OFFER_RECEIVED, REANSWERED while our 2xx to a
re-INVITE waits for its ACK). ENDING is a call we hung up before the ACK for our 2xx came:
the BYE follows the ACK (RFC 3261 15). `CallEnded` is reported on entering ENDING or ENDED.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from gateway.sip.dialog import Dialog
from gateway.sip.message import Request, Response
from gateway.sip.target import Target, TargetSet
from gateway.sip.transaction import ClientInviteTransaction, ServerInviteTransaction

Address = tuple[str, int]


class CallState(Enum):
    """Where a call stands; `public` is the coarse name the control socket shows."""

    CALLING = "calling"
    PROCEEDING = "proceeding"
    EARLY = "early"
    CANCEL_WAIT = "cancel-wait"
    CANCELLING = "cancelling"
    INCOMING = "incoming"
    RINGING = "ringing"
    ACCEPTED = "accepted"
    CONFIRMED = "confirmed"
    OFFER_SENT = "offer-sent"
    OFFER_RECEIVED = "offer-received"
    REANSWERED = "reanswered"
    ENDING = "ending"
    ENDED = "ended"

    @property
    def public(self) -> str:
        """calling / incoming / early / confirmed / ended, as before the states were split."""
        return _PUBLIC[self]


class CallInput(Enum):
    """What can happen to a call; timers feed the machine through these too."""

    TRYING = "100 received"
    PROVISIONAL = "101-199 received"
    ANSWERED = "2xx to our INVITE received"
    REISSUED = "INVITE sent again (auth, failover, redirect, 422)"
    RING = "we sent 180/183"
    ANSWER = "we sent 2xx to their INVITE"
    ACKED = "ACK for our 2xx"
    NO_ACK = "no ACK for our 2xx within 64*T1"
    CANCEL = "application cancels"
    HANGUP = "application hangs up"
    OFFER_SENT = "we sent a re-INVITE"
    OFFER_DONE = "our re-INVITE completed"
    OFFER_RECEIVED = "their re-INVITE handed to the application"
    OFFER_ANSWERED = "we sent 2xx to their re-INVITE"
    OFFER_REFUSED = "we refused their re-INVITE"
    END = "call over: failure, BYE, timeout"


class Reaction(Enum):
    """A table entry that is not a next state."""

    IGNORED = "ignored"
    ILLEGAL = "illegal"


class CallTimer(Enum):
    """The call-level timers (transaction timers live in transaction.py)."""

    TARGET = "no response from this target: fail over"
    CANCEL = "no final response 64*T1 after CANCEL"
    ALERT = "incoming call left unanswered too long"
    OK_RETRANSMIT = "resend our 2xx (T1 doubling to T2)"
    OK_GIVEUP = "no ACK for our 2xx within 64*T1"
    REINVITE_RETRY = "re-send our re-INVITE after 491 back-off"
    SESSION_REFRESH = "refresh the session (RFC 4028, we refresh)"
    SESSION_EXPIRE = "session expired (RFC 4028, they refresh)"
    LINGER = "forget an ended call"


class CallStateError(RuntimeError):
    """The agent asked the call machine for a transition its table forbids (a local bug)."""


S = CallState
I = CallInput  # noqa: E741 - short aliases keep the table one row per state
_ = Reaction.IGNORED
X = Reaction.ILLEGAL
Entry = CallState | Reaction

_COLUMNS: tuple[CallInput, ...] = (
    I.TRYING, I.PROVISIONAL, I.ANSWERED, I.REISSUED, I.RING, I.ANSWER, I.ACKED, I.NO_ACK,
    I.CANCEL, I.HANGUP, I.OFFER_SENT, I.OFFER_DONE, I.OFFER_RECEIVED, I.OFFER_ANSWERED,
    I.OFFER_REFUSED, I.END)

# One row per state, one column per input in `_COLUMNS` order:
#   TRYING PROVISIONAL ANSWERED REISSUED | RING ANSWER ACKED NO_ACK | CANCEL HANGUP |
#   OFFER_SENT OFFER_DONE OFFER_RECEIVED OFFER_ANSWERED OFFER_REFUSED | END
_ROWS: dict[CallState, tuple[Entry, ...]] = {
    S.CALLING: (S.PROCEEDING, S.EARLY, S.CONFIRMED, S.CALLING, X, X, _, X,
                S.CANCEL_WAIT, S.CANCEL_WAIT, X, X, _, _, _, S.ENDED),
    S.PROCEEDING: (_, S.EARLY, S.CONFIRMED, S.CALLING, X, X, _, X,
                   S.CANCELLING, S.CANCELLING, X, X, _, _, _, S.ENDED),
    S.EARLY: (_, S.EARLY, S.CONFIRMED, S.CALLING, X, X, _, X,
              S.CANCELLING, S.CANCELLING, X, X, _, _, _, S.ENDED),
    S.CANCEL_WAIT: (S.CANCELLING, S.CANCELLING, S.ENDED, X, X, X, _, X,
                    _, _, X, X, _, _, _, S.ENDED),
    S.CANCELLING: (_, _, S.ENDED, X, X, X, _, X,
                   _, _, X, X, _, _, _, S.ENDED),
    S.INCOMING: (X, X, X, X, S.RINGING, S.ACCEPTED, _, X,
                 _, S.ENDED, X, X, _, _, _, S.ENDED),
    S.RINGING: (X, X, X, X, S.RINGING, S.ACCEPTED, _, X,
                _, S.ENDED, X, X, _, _, _, S.ENDED),
    S.ACCEPTED: (X, X, X, X, _, _, S.CONFIRMED, S.ENDED,
                 _, S.ENDING, X, X, _, _, _, S.ENDED),
    S.CONFIRMED: (_, _, _, X, _, _, _, X,
                  _, S.ENDED, S.OFFER_SENT, _, S.OFFER_RECEIVED, _, _, S.ENDED),
    S.OFFER_SENT: (_, _, _, X, _, _, _, X,
                   _, S.ENDED, X, S.CONFIRMED, _, _, _, S.ENDED),
    S.OFFER_RECEIVED: (_, _, _, X, _, _, _, X,
                       _, S.ENDED, X, _, _, S.REANSWERED, S.CONFIRMED, S.ENDED),
    S.REANSWERED: (_, _, _, X, _, _, S.CONFIRMED, S.ENDED,
                   _, S.ENDING, X, _, _, _, _, S.ENDED),
    S.ENDING: (_, _, _, X, _, _, S.ENDED, S.ENDED,
               _, _, X, _, _, _, _, _),
    S.ENDED: (_, _, S.ENDED, X, _, _, _, _,
              _, _, X, _, _, _, _, _),
}


def _build(rows: dict[CallState, tuple[Entry, ...]]) -> dict[tuple[CallState, CallInput], Entry]:
    if set(rows) != set(CallState):
        raise AssertionError(f"call table lacks states {set(CallState) - set(rows)}")
    if set(_COLUMNS) != set(CallInput) or len(_COLUMNS) != len(CallInput):
        raise AssertionError("call table columns must name every input once")
    table: dict[tuple[CallState, CallInput], Entry] = {}
    for state, row in rows.items():
        if len(row) != len(_COLUMNS):
            raise AssertionError(f"call table row {state.name} has {len(row)} entries")
        for inp, entry in zip(_COLUMNS, row, strict=True):
            table[(state, inp)] = entry
    return table


_TABLE = _build(_ROWS)

_SESSION = frozenset({CallTimer.SESSION_REFRESH, CallTimer.SESSION_EXPIRE})
_TIMERS: dict[CallState, frozenset[CallTimer]] = {
    S.CALLING: frozenset({CallTimer.TARGET}),
    S.PROCEEDING: frozenset(),
    S.EARLY: frozenset(),
    S.CANCEL_WAIT: frozenset({CallTimer.CANCEL}),
    S.CANCELLING: frozenset({CallTimer.CANCEL}),
    S.INCOMING: frozenset({CallTimer.ALERT}),
    S.RINGING: frozenset(),
    S.ACCEPTED: frozenset({CallTimer.OK_RETRANSMIT, CallTimer.OK_GIVEUP}) | _SESSION,
    S.CONFIRMED: frozenset({CallTimer.REINVITE_RETRY}) | _SESSION,
    S.OFFER_SENT: _SESSION,
    S.OFFER_RECEIVED: frozenset({CallTimer.REINVITE_RETRY}) | _SESSION,
    S.REANSWERED: frozenset({CallTimer.OK_RETRANSMIT, CallTimer.OK_GIVEUP,
                             CallTimer.REINVITE_RETRY}) | _SESSION,
    S.ENDING: frozenset({CallTimer.OK_RETRANSMIT, CallTimer.OK_GIVEUP}),
    S.ENDED: frozenset({CallTimer.LINGER}),
}

_PUBLIC = {
    S.CALLING: "calling", S.PROCEEDING: "calling", S.CANCEL_WAIT: "calling",
    S.CANCELLING: "calling", S.EARLY: "early", S.INCOMING: "incoming", S.RINGING: "early",
    S.ACCEPTED: "confirmed", S.CONFIRMED: "confirmed", S.OFFER_SENT: "confirmed",
    S.OFFER_RECEIVED: "confirmed", S.REANSWERED: "confirmed", S.ENDING: "ended",
    S.ENDED: "ended",
}

#: states in which the call is set up and not yet over (in-dialog requests are served)
ESTABLISHED = frozenset({S.ACCEPTED, S.CONFIRMED, S.OFFER_SENT, S.OFFER_RECEIVED,
                         S.REANSWERED})
#: states in which our INVITE is still looking for its final answer (UAC)
SETTING_UP = frozenset({S.CALLING, S.PROCEEDING, S.EARLY, S.CANCEL_WAIT, S.CANCELLING})
#: states in which we sent a 2xx and wait for its ACK
AWAITING_ACK = frozenset({S.ACCEPTED, S.REANSWERED, S.ENDING})


def transition(state: CallState, inp: CallInput) -> Entry:
    """The table entry for `inp` in `state` (never missing)."""
    return _TABLE[(state, inp)]


def timers_allowed(state: CallState) -> frozenset[CallTimer]:
    """The timers a call in `state` may hold."""
    return _TIMERS[state]


@dataclass
class SentAnswer:
    """Our 2xx to an (re-)INVITE, retransmitted until the ACK with CSeq `cseq` comes."""

    response: Response
    dest: Address | None
    cseq: int
    interval: float


@dataclass
class OwnOffer:
    """Our re-INVITE: in flight (`tx` set) or waiting out a 491 back-off (`tx` None)."""

    sdp: bytes
    refresh: bool
    tx: ClientInviteTransaction | None = None


@dataclass
class Call:
    """Everything the agent keeps per call (both roles); internal to the ua modules."""

    call_id: str
    uac: bool
    peer: Address
    local_tag: str
    invite: Request
    invite_tx: ClientInviteTransaction | ServerInviteTransaction
    state: CallState
    target: Target
    account_id: str | None = None
    dialog: Dialog | None = None
    timers: dict[CallTimer, float] = field(default_factory=dict)
    auth_nonce: str | None = None
    auth_nc: int = 0
    ack: Request | None = None
    ack_dest: Address | None = None
    answer: SentAnswer | None = None
    their_offer: ServerInviteTransaction | None = None
    own_offer: OwnOffer | None = None
    # failover over RFC 3263 targets and 3xx redirects (UAC)
    targets: TargetSet | None = None
    target_index: int = 0
    tried: int = 1
    hops: int = 0
    visited: set[str] = field(default_factory=set)
    # session timers (RFC 4028)
    local_sdp: bytes = b""
    se_interval: int | None = None
    se_we_refresh: bool = False
    se_offer: int | None = None
    #: Told (call, deadline) of every timer armed: the call table's deadline heap.
    on_arm: Callable[[Call, float], None] | None = field(default=None, repr=False,
                                                        compare=False)

    def fire(self, inp: CallInput) -> CallState | None:
        """Apply `inp`: the new state, or None when the table ignores it here.

        Entering a state drops the timers it does not allow; an ILLEGAL entry raises.
        """
        entry = _TABLE[(self.state, inp)]
        if entry is Reaction.ILLEGAL:
            raise CallStateError(
                f"call {self.call_id}: {inp.name} ({inp.value}) is illegal in {self.state.name}")
        if entry is Reaction.IGNORED:
            return None
        assert isinstance(entry, CallState)
        self.state = entry
        allowed = _TIMERS[entry]
        for timer in [t for t in self.timers if t not in allowed]:
            del self.timers[timer]
        return entry

    def can(self, inp: CallInput) -> bool:
        """True when `inp` would move the call (neither ignored nor illegal here)."""
        return isinstance(_TABLE[(self.state, inp)], CallState)

    def arm(self, timer: CallTimer, deadline: float) -> None:
        """Set `timer` to fire at `deadline`; the current state must allow it."""
        if timer not in _TIMERS[self.state]:
            raise CallStateError(
                f"call {self.call_id}: timer {timer.name} is not valid in {self.state.name}")
        self.timers[timer] = deadline
        if self.on_arm is not None:
            self.on_arm(self, deadline)

    def disarm(self, timer: CallTimer) -> None:
        """Cancel `timer` if it is set."""
        self.timers.pop(timer, None)

    def get_timer(self) -> float | None:
        """The earliest deadline of this call, or None."""
        return min(self.timers.values()) if self.timers else None

    def pop_due(self, now: float) -> CallTimer | None:
        """Remove and return the earliest timer due at `now`, or None.

        One at a time: handling a timer may change the state and so drop others.
        """
        due = [(when, timer.name, timer) for timer, when in self.timers.items() if when <= now]
        if not due:
            return None
        timer = min(due)[2]
        del self.timers[timer]
        return timer

    @property
    def cancelling(self) -> bool:
        """The application gave up on this outgoing call before its answer."""
        return self.state in (S.CANCEL_WAIT, S.CANCELLING)

    @property
    def over(self) -> bool:
        """`CallEnded` was reported (ENDING or ENDED)."""
        return self.state in (S.ENDING, S.ENDED)


__all__ = [
    "AWAITING_ACK", "ESTABLISHED", "SETTING_UP", "Call", "CallInput", "CallState",
    "CallStateError", "CallTimer", "OwnOffer", "Reaction", "SentAnswer", "timers_allowed",
    "transition",
]
