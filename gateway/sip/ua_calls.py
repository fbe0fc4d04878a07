"""The call table: every call, its state machine and timer map, and the answering side.

`CallTable` owns the calls (`Call` in call_state.py). It answers incoming INVITEs
(ringing, answer, reject, CANCEL), takes the ACK for our 2xx and the BYE, ends calls in one
place (`end`, which reports `CallEnded` once) and runs the call timer map: each timer has
one handler, registered by the part that owns it (`on_timer`), so the table needs no
knowledge of failover or re-INVITE.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Callable

from gateway.sip.call_state import (
    ESTABLISHED,
    Call,
    CallInput,
    CallState,
    CallTimer,
    SentAnswer,
)
from gateway.sip.dialog import Dialog, incoming_request_dialog_id
from gateway.sip.errors import SipError
from gateway.sip.events import CallEnded, CallUpdated, IncomingCall
from gateway.sip.headers import generate_tag
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
from gateway.sip.target import Target
from gateway.sip.transaction import ClientNonInviteTransaction, ServerInviteTransaction
from gateway.sip.ua_core import ALLOW, MAX_CALLS, SDP, Address, Handler, SipCore, dialog_dest

TimerHandler = Callable[[Call, float], None]


# -- session timers (RFC 4028): what a 2xx says about the session interval -----------------


def answer_session_timer(call: Call, req: Request, resp: Response, now: float) -> None:
    """Our 2xx to an (re-)INVITE: echo Session-Expires with a refresher when asked."""
    resp.headers.add("Supported", "timer")
    se = parse_session_expires(req.headers.get("Session-Expires"))
    if se is None:
        if call.se_interval is not None and not call.se_we_refresh:
            arm_session(call, now)  # any re-INVITE from the refresher refreshes
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
    arm_session(call, now)


def adopt_session_timer(call: Call, resp: Response, now: float) -> None:
    """A 2xx to our (re-)INVITE: adopt the interval and refresher it names."""
    se = parse_session_expires(resp.headers.get("Session-Expires"))
    if se is None:
        call.se_interval = None
        call.disarm(CallTimer.SESSION_REFRESH)
        call.disarm(CallTimer.SESSION_EXPIRE)
        return
    call.se_interval = max(se[0], 1)
    call.se_we_refresh = (se[1] or "uac") == "uac"
    arm_session(call, now)


def arm_session(call: Call, now: float) -> None:
    """(Re)start the refresh or the expiry timer, whichever our role needs."""
    if call.se_interval is None:
        return
    if call.se_we_refresh:
        call.disarm(CallTimer.SESSION_EXPIRE)
        call.arm(CallTimer.SESSION_REFRESH, now + refresh_delay(call.se_interval))
    else:
        call.disarm(CallTimer.SESSION_REFRESH)
        call.arm(CallTimer.SESSION_EXPIRE, now + expiry_delay(call.se_interval))


def _same_request(a: Request, b: Request) -> bool:
    """True when `b` is `a` retransmitted: same CSeq and top Via branch (17.2.3)."""
    try:
        return (a.cseq.number == b.cseq.number and a.cseq.method == b.cseq.method
                and bool(a.top_via.branch) and a.top_via.branch == b.top_via.branch)
    except SipError:
        return False


class CallTable:
    """The calls of one agent, the UAS side of setting them up, and ending them."""

    def __init__(self, core: SipCore, *, max_calls: int = MAX_CALLS,
                 max_ended: int | None = None) -> None:
        self._core = core
        self.calls: dict[str, Call] = {}
        #: Calls not ENDED at most (new INVITEs beyond it get 503).
        self.max_calls = max_calls
        #: ENDED calls lingering for retransmissions at most; beyond it the oldest goes.
        self.max_ended = max_ended if max_ended is not None else 4 * max_calls
        self._ended: OrderedDict[str, Call] = OrderedDict()  # in the order they ended
        # Every armed deadline, lazily cleaned (disarmed, re-armed or forgotten calls are
        # skipped when met): the next deadline without a scan of every call.
        self._heap: list[tuple[float, int, Call]] = []
        self._seq = itertools.count()
        self.max_alerting = 300.0  # seconds an incoming INVITE may stay unanswered
        self._timer_handlers: dict[CallTimer, TimerHandler] = {
            CallTimer.ALERT: self._alert_expired,
            CallTimer.OK_RETRANSMIT: self._resend_answer,
            CallTimer.OK_GIVEUP: self._no_ack,
            CallTimer.LINGER: self._forget,
        }

    # -- lookup ------------------------------------------------------------------------

    def get(self, call_id: str) -> Call | None:
        """The call with this Call-ID, or None."""
        return self.calls.get(call_id)

    def add(self, call: Call) -> None:
        """Keep a new call (the caller checked `max_calls` where it applies)."""
        self._ended.pop(call.call_id, None)
        self.calls[call.call_id] = call
        call.on_arm = self._armed
        for deadline in call.timers.values():
            self._armed(call, deadline)

    def _armed(self, call: Call, deadline: float) -> None:
        heapq.heappush(self._heap, (deadline, next(self._seq), call))
        if len(self._heap) > 8 * len(self.calls) + 1024:
            self._heap = [(d, next(self._seq), c) for c in self.calls.values()
                          for d in set(c.timers.values())]
            heapq.heapify(self._heap)

    def _current(self, call: Call, deadline: float) -> bool:
        """True when `deadline` is still one of `call`'s timers and the call is ours."""
        return self.calls.get(call.call_id) is call and deadline in call.timers.values()

    @property
    def live(self) -> int:
        """Calls that count toward `max_calls`: every call not ENDED."""
        return len(self.calls) - len(self._ended)

    @property
    def ended(self) -> int:
        """ENDED calls kept for retransmissions (bounded by `max_ended`)."""
        return len(self._ended)

    def _ended_now(self, call: Call) -> None:
        """`call` reached ENDED: it lingers, in a table of its own, oldest evicted first."""
        self._ended[call.call_id] = call
        self._ended.move_to_end(call.call_id)
        while len(self._ended) > self.max_ended:
            call_id, old = self._ended.popitem(last=False)
            if self.calls.get(call_id) is old:
                del self.calls[call_id]
            self._core.stats["ended_evicted"] = self._core.stats.get("ended_evicted", 0) + 1

    def state_name(self, call_id: str) -> str | None:
        """The call's coarse state name, or None for unknown calls."""
        call = self.calls.get(call_id)
        return call.state.public if call is not None else None

    def find_dialog_call(self, req: Request) -> Call | None:
        """The call whose dialog `req` belongs to (Call-ID and both tags), or None."""
        call = self.calls.get(req.call_id)
        if call is None or call.dialog is None:
            return None
        if incoming_request_dialog_id(req) != call.dialog.id:
            return None
        return call

    def is_in_dialog(self, req: Request) -> bool:
        """True when `req` carries a To tag and matches a dialog we hold."""
        return bool(req.to_tag) and self.find_dialog_call(req) is not None

    # -- timers ------------------------------------------------------------------------

    def on_timer(self, timer: CallTimer, handler: TimerHandler) -> None:
        """Register the one handler of `timer` (the part that arms it owns it)."""
        if timer in self._timer_handlers:
            raise ValueError(f"timer {timer.name} already has a handler")
        self._timer_handlers[timer] = handler

    def missing_handlers(self) -> set[CallTimer]:
        """Timers nobody handles (the agent checks this is empty when built)."""
        return set(CallTimer) - set(self._timer_handlers)

    def get_timer(self) -> float | None:
        """The earliest deadline of any call."""
        heap = self._heap
        while heap:
            deadline, _, call = heap[0]
            if self._current(call, deadline):
                return deadline
            heapq.heappop(heap)
        return None

    def handle_timer(self, now: float) -> None:
        """Fire every call timer due at `now`, one at a time, earliest first per call."""
        heap = self._heap
        due: dict[int, Call] = {}
        while heap and heap[0][0] <= now:
            deadline, _, call = heapq.heappop(heap)
            if self._current(call, deadline):
                due[id(call)] = call
        for call in due.values():
            while (timer := call.pop_due(now)) is not None:
                self._timer_handlers[timer](call, now)

    def _forget(self, call: Call, now: float) -> None:
        if self.calls.get(call.call_id) is call:
            del self.calls[call.call_id]
        if self._ended.get(call.call_id) is call:
            del self._ended[call.call_id]

    def _alert_expired(self, call: Call, now: float) -> None:
        self._core.stats["unanswered"] = self._core.stats.get("unanswered", 0) + 1
        self.reject(call.call_id, 480, now)

    def _resend_answer(self, call: Call, now: float) -> None:
        answer = call.answer
        if answer is None:
            return
        if answer.dest is not None:
            self._core.send_to(answer.response, answer.dest, call.target)
        answer.interval = min(answer.interval * 2, self._core.t2)
        giveup = call.timers.get(CallTimer.OK_GIVEUP, now + answer.interval)
        call.arm(CallTimer.OK_RETRANSMIT, min(now + answer.interval, giveup))

    def _no_ack(self, call: Call, now: float) -> None:
        call.answer = None
        self.send_bye(call, now)  # 13.3.1.4: confirmed but no ACK: end the session
        self.end(call, "no ACK", None, now, CallInput.NO_ACK)

    # -- incoming INVITE and CANCEL ------------------------------------------------------

    def on_invite(self, req: Request, addr: Address, dest: Address, now: float) -> None:
        """A new INVITE outside any dialog: refuse it, or announce `IncomingCall`."""
        core = self._core
        existing = self.calls.get(req.call_id)
        if existing is not None and _same_request(existing.invite, req):
            # Its transaction was evicted (or is gone) before this resend: the same answer
            # again, never a second call (or a 482 to the caller's own retransmission).
            core.stats["untracked_retransmissions"] = \
                core.stats.get("untracked_retransmissions", 0) + 1
            # A 2xx is resent by the call's own timer until the ACK, as the Accepted state
            # of RFC 6026 leaves it; a 1xx or 300-699 goes again now.
            last = existing.invite_tx.last_response if isinstance(
                existing.invite_tx, ServerInviteTransaction) else None
            if last is not None and not 200 <= last.status < 300:
                core.resend(last, dest)
            return
        if existing is not None and not existing.over:
            core.respond(req, 482, dest, now)  # merged/looped request (8.2.2.2)
            return
        if self.live >= self.max_calls:
            core.stats["overload"] += 1
            core.respond(req, 503, dest, now, extra=[("Retry-After", "10")])
            return
        content_type = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if req.body and content_type != SDP:
            core.respond(req, 415, dest, now, extra=[("Accept", SDP)])
            return
        required = [tag.strip() for item in req.headers.get_all("Require")
                    for tag in item.split(",")
                    if tag.strip().lower() not in ("timer", "replaces")]
        if required:
            core.respond(req, 420, dest, now, extra=[("Unsupported", ", ".join(required))])
            return
        se = parse_session_expires(req.headers.get("Session-Expires"))
        if se is not None and se[0] < MIN_SE:
            core.respond(req, 422, dest, now, extra=[("Min-SE", str(MIN_SE))])
            return
        from_addr = req.from_addr
        tx = core.server_tx(req, dest, now)
        assert isinstance(tx, ServerInviteTransaction)
        tx.send_response(make_response(req, 100), now)
        target = Target(core.rx_transport, addr[0], addr[1])
        call = Call(req.call_id, False, addr, generate_tag(), req, tx, CallState.INCOMING,
                    target)
        # Safety net: an application that never answers must not keep the call forever.
        call.arm(CallTimer.ALERT, now + self.max_alerting)
        self.add(call)
        core.emit(IncomingCall(
            call_id=req.call_id, from_uri=str(from_addr.uri), from_display=from_addr.display,
            to_uri=str(req.to_addr.uri), request_uri=req.uri, sdp=req.body, source=addr,
            replaces=req.headers.get("Replaces"),
            alert_info=", ".join(req.headers.get_lines("Alert-Info")) or None))

    def on_cancel(self, req: Request, dest: Address, now: float) -> None:
        """CANCEL for an INVITE we hold: 200, then 487 to the INVITE unless answered."""
        core = self._core
        inv_tx = core.txl.invite_for_cancel(req)
        if inv_tx is None:
            core.respond(req, 481, dest, now)
            return
        call = self.calls.get(req.call_id)
        to_tag = call.local_tag if call is not None else None
        core.respond(req, 200, dest, now, to_tag=to_tag)
        if inv_tx.final_sent:
            return
        inv_tx.send_response(make_response(inv_tx.request, 487, to_tag=to_tag or generate_tag()),
                             now)
        if call is not None and call.invite_tx is inv_tx:
            self.end(call, "cancelled", 487, now)

    def ringing(self, call_id: str, now: float, *, sdp: bytes | None = None) -> None:
        """Tell the caller we alert: 180, or 183 with early-media SDP."""
        call = self._uas_pending(call_id)
        if call is None:
            return
        resp = self.dialog_response(call, call.invite, 183 if sdp else 180, sdp)
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
        resp = self.dialog_response(call, call.invite, 200, sdp)
        if call.dialog is None:
            call.dialog = Dialog.from_uas_request(call.invite, call.local_tag, early=False)
        call.dialog.confirm()
        call.fire(CallInput.ANSWER)
        answer_session_timer(call, call.invite, resp, now)
        call.local_sdp = sdp
        assert isinstance(call.invite_tx, ServerInviteTransaction)
        call.invite_tx.send_response(resp, now)
        self.start_2xx_retransmission(call, resp, call.invite_tx, now)

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
        self.end(call, "rejected", status, now)

    def _uas_pending(self, call_id: str) -> Call | None:
        call = self.calls.get(call_id)
        if call is None or call.uac or call.state not in (CallState.INCOMING,
                                                          CallState.RINGING):
            return None
        return call

    # -- ACK, BYE and the end ------------------------------------------------------------

    def start_2xx_retransmission(self, call: Call, resp: Response,
                                 tx: ServerInviteTransaction, now: float) -> None:
        """Resend our 2xx (UDP) until its ACK; give up after 64*T1 (RFC 3261 13.3.1.4)."""
        call.answer = SentAnswer(resp, tx.dest, tx.request.cseq.number, self._core.t1)
        if not tx.reliable:
            call.arm(CallTimer.OK_RETRANSMIT, now + self._core.t1)
        call.arm(CallTimer.OK_GIVEUP, now + 64 * self._core.t1)

    def on_ack(self, req: Request, now: float) -> None:
        """An ACK outside a transaction: the one for our 2xx, or stray."""
        call = self.find_dialog_call(req)
        if call is None or call.answer is None or req.cseq.number != call.answer.cseq:
            self._core.stats["dropped"] += 1
            return
        offerless = call.state is CallState.ACCEPTED and not call.invite.body
        call.answer = None
        if call.state is CallState.ENDING:
            self.send_bye(call, now)  # we hung up before this ACK (RFC 3261 15)
            self.end(call, "local hangup", None, now, CallInput.ACKED)
            return
        call.fire(CallInput.ACKED)
        if offerless and req.body:  # the answer to the offer in our 2xx
            self._core.emit(CallUpdated(call.call_id, req.body))

    def on_bye(self, call: Call, req: Request, dest: Address, now: float) -> None:
        """The peer hangs up (in an early or confirmed dialog)."""
        self._core.respond(req, 200, dest, now)
        if not call.uac and isinstance(call.invite_tx, ServerInviteTransaction) \
                and not call.invite_tx.final_sent:
            call.invite_tx.send_response(
                make_response(call.invite, 487, to_tag=call.local_tag), now)
        self.end(call, "remote hangup", None, now)

    def hang_up(self, call: Call, now: float) -> None:
        """Our side hangs up an answered call: BYE now, or after the ACK of our 2xx."""
        if call.over or call.state not in ESTABLISHED:
            return
        if call.answer is None:  # else our 2xx is not ACKed yet: BYE waits (RFC 3261 15)
            self.send_bye(call, now)
        self.end(call, "local hangup", None, now, CallInput.HANGUP)

    def end(self, call: Call, reason: str, status: int | None, now: float,
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
            call.arm(CallTimer.LINGER, now + 64 * self._core.t1)
            self._ended_now(call)
        if not was_over:
            self._core.emit(CallEnded(call.call_id, reason, status))

    # -- in-dialog messages --------------------------------------------------------------

    def dialog_response(self, call: Call, request: Request, status: int,
                        sdp: bytes | None) -> Response:
        """A response that sets up or refreshes the dialog: Record-Route, Contact, Allow."""
        resp = make_response(request, status, to_tag=call.local_tag)
        for rr in request.headers.get_lines("Record-Route"):
            resp.headers.add("Record-Route", rr)
        user = None
        try:
            user = request.request_uri.user
        except SipError:
            pass
        resp.headers.add("Contact", self._core.contact(user, call.target.transport))
        resp.headers.add("Allow", ALLOW)
        if sdp:
            resp.headers.add("Content-Type", SDP)
            resp.body = sdp
        return resp

    def dest(self, call: Call) -> Address:
        """Where the call's in-dialog requests go."""
        assert call.dialog is not None
        return dialog_dest(call.dialog, call.peer)

    def send_request(self, call: Call, method: str, now: float,
                     handler: Handler | None = None, *, body: bytes = b"",
                     content_type: str | None = None,
                     extra: list[tuple[str, str]] | None = None) -> ClientNonInviteTransaction:
        """Send a non-INVITE request in the call's dialog."""
        assert call.dialog is not None
        core = self._core
        req = call.dialog.create_request(
            method, via=core.via(call.target.transport), body=body,
            content_type=content_type,
            extra=[("User-Agent", core.user_agent), *(extra or [])])
        return core.send_request(req, call.target, self.dest(call), now, handler)

    def send_bye(self, call: Call, now: float) -> None:
        """BYE in the call's dialog, if it has one."""
        if call.dialog is not None:
            self.send_request(call, "BYE", now)


__all__ = ["CallTable", "adopt_session_timer", "answer_session_timer", "arm_session"]
