"""The INVITE dialog usage's state table and timer map (gateway/sip/call_state.py).

The table itself: complete, no dead ends, illegal entries raise, timers follow the state.
Then the user agent driven through whole calls, checking after every message that each
call holds only timers its state allows, and the composed agent handling every timer.
"""

from __future__ import annotations

import random
from collections import deque

import pytest
from ua_wire import ANSWER, HOLD, OFFER, drain, events, make_ua, raw_request, reply, requests

from gateway.sip.call_state import (
    Call,
    CallInput,
    CallState,
    CallStateError,
    CallTimer,
    Reaction,
    timers_allowed,
    transition,
)
from gateway.sip.events import CallEnded, CallUpdated, IncomingCall, ReinviteFailed
from gateway.sip.message import Response, build_request
from gateway.sip.target import Target
from gateway.sip.transaction import ServerInviteTransaction
from gateway.sip.ua import UserAgent
from gateway.sip.ua_calls import CallTable
from gateway.sip.ua_core import SipCore

A = ("127.0.0.1", 5060)
B = ("127.0.0.1", 5070)


def _call(state: CallState) -> Call:
    req = build_request("INVITE", "sip:200@127.0.0.1", from_addr="<sip:100@127.0.0.1>;tag=1",
                        to_addr="<sip:200@127.0.0.1>", call_id="c1", cseq=1,
                        via="SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx")
    tx = ServerInviteTransaction(req, 0.0, False, dest=B)
    return Call("c1", False, B, "t1", req, tx, state, Target("udp", *B))


# -- the table -----------------------------------------------------------------------------


def test_every_state_has_an_entry_for_every_input() -> None:
    for state in CallState:
        for inp in CallInput:
            entry = transition(state, inp)
            assert isinstance(entry, CallState | Reaction), (state, inp, entry)


def test_every_state_can_reach_ended_and_every_state_is_reachable() -> None:
    edges = {s: {e for i in CallInput if isinstance(e := transition(s, i), CallState)}
             for s in CallState}
    for state in CallState:
        seen, todo = {state}, deque([state])
        while todo:
            for nxt in edges[todo.popleft()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        assert CallState.ENDED in seen, f"{state.name} is a dead end"
    reachable, todo = {CallState.CALLING, CallState.INCOMING}, deque(
        [CallState.CALLING, CallState.INCOMING])
    while todo:
        for nxt in edges[todo.popleft()] - reachable:
            reachable.add(nxt)
            todo.append(nxt)
    assert reachable == set(CallState)


def test_end_is_terminal_and_reported_once() -> None:
    assert {transition(s, CallInput.END) for s in CallState} - {CallState.ENDED} \
        == {Reaction.IGNORED}
    assert transition(CallState.ENDING, CallInput.END) is Reaction.IGNORED
    assert transition(CallState.ENDED, CallInput.END) is Reaction.IGNORED


def test_illegal_transition_raises_a_clear_error_and_changes_nothing() -> None:
    call = _call(CallState.INCOMING)
    call.arm(CallTimer.ALERT, 300.0)
    assert transition(CallState.INCOMING, CallInput.TRYING) is Reaction.ILLEGAL
    with pytest.raises(CallStateError, match=r"c1: TRYING .* illegal in INCOMING"):
        call.fire(CallInput.TRYING)
    assert call.state is CallState.INCOMING
    assert call.timers == {CallTimer.ALERT: 300.0}


def test_ignored_input_changes_neither_state_nor_timers() -> None:
    call = _call(CallState.CONFIRMED)
    call.arm(CallTimer.SESSION_EXPIRE, 50.0)
    assert call.fire(CallInput.RING) is None
    assert not call.can(CallInput.RING)
    assert call.state is CallState.CONFIRMED
    assert call.timers == {CallTimer.SESSION_EXPIRE: 50.0}


def test_entering_a_state_drops_the_timers_it_does_not_allow() -> None:
    call = _call(CallState.ACCEPTED)
    call.arm(CallTimer.OK_RETRANSMIT, 0.5)
    call.arm(CallTimer.OK_GIVEUP, 32.0)
    call.arm(CallTimer.SESSION_REFRESH, 900.0)
    assert call.fire(CallInput.ACKED) is CallState.CONFIRMED
    assert call.timers == {CallTimer.SESSION_REFRESH: 900.0}
    assert call.fire(CallInput.END) is CallState.ENDED
    assert call.timers == {}


def test_arming_a_timer_the_state_does_not_allow_raises() -> None:
    call = _call(CallState.INCOMING)
    for timer in CallTimer:
        if timer in timers_allowed(CallState.INCOMING):
            continue
        with pytest.raises(CallStateError, match=f"timer {timer.name} is not valid in INCOMING"):
            call.arm(timer, 1.0)
    assert call.timers == {}


def test_every_timer_belongs_to_some_state_and_due_timers_come_one_at_a_time() -> None:
    assert set().union(*(timers_allowed(s) for s in CallState)) == set(CallTimer)
    call = _call(CallState.ACCEPTED)
    call.arm(CallTimer.OK_GIVEUP, 2.0)
    call.arm(CallTimer.OK_RETRANSMIT, 1.0)
    assert call.get_timer() == 1.0
    assert call.pop_due(0.5) is None
    assert call.pop_due(5.0) is CallTimer.OK_RETRANSMIT
    assert call.pop_due(5.0) is CallTimer.OK_GIVEUP
    assert call.pop_due(5.0) is None


# -- the agent keeps the invariant through whole calls -----------------------------------------


def _check(*uas: UserAgent) -> None:
    for ua in uas:
        for call in ua._calls.values():  # noqa: SLF001 - the invariant is internal
            assert set(call.timers) <= timers_allowed(call.state), (call.state, call.timers)


class Net:
    """Two agents back to back, checking the timer invariant after every message."""

    def __init__(self, a: UserAgent, b: UserAgent) -> None:
        self.uas = {A: a, B: b}
        self.now = 0.0

    def pump(self) -> None:
        for _ in range(50):
            moved = False
            for src, ua in self.uas.items():
                for out in ua.messages_out():
                    moved = True
                    if out.dest in self.uas:
                        self.uas[out.dest].receive_datagram(out.data, src, self.now)
                        _check(*self.uas.values())
            if not moved:
                return

    def run(self, end: float) -> None:
        while True:
            due = [d for ua in self.uas.values() if (d := ua.get_timer()) is not None]
            if not due or min(due) > end:
                self.now = end
                return
            self.now = max(self.now, min(due))
            for ua in self.uas.values():
                ua.handle_timer(self.now)
                _check(*self.uas.values())
            self.pump()


def _state(ua: UserAgent, call_id: str) -> CallState:
    return ua._calls[call_id].state  # noqa: SLF001


def test_a_call_walks_the_table_and_keeps_only_valid_timers() -> None:
    a, b = make_ua(A, rng=random.Random(1)), make_ua(B, rng=random.Random(2))
    net = Net(a, b)
    call_id = a.invite(target_uri="sip:200@127.0.0.1:5070", from_uri="sip:100@127.0.0.1",
                       dest=B, sdp=OFFER, now=0.0)
    assert _state(a, call_id) is CallState.CALLING
    net.pump()
    assert _state(a, call_id) is CallState.PROCEEDING
    assert _state(b, call_id) is CallState.INCOMING
    assert set(b._calls[call_id].timers) == {CallTimer.ALERT}  # noqa: SLF001
    b.ringing(call_id, net.now)
    net.pump()
    assert (_state(a, call_id), _state(b, call_id)) == (CallState.EARLY, CallState.RINGING)
    b.answer(call_id, ANSWER, net.now)
    assert _state(b, call_id) is CallState.ACCEPTED
    net.pump()
    assert (_state(a, call_id), _state(b, call_id)) == (CallState.CONFIRMED,
                                                       CallState.CONFIRMED)
    a.reinvite(call_id, HOLD, net.now)
    assert _state(a, call_id) is CallState.OFFER_SENT
    net.pump()
    assert _state(b, call_id) is CallState.OFFER_RECEIVED
    b.answer_reinvite(call_id, HOLD, net.now)
    assert _state(b, call_id) is CallState.REANSWERED
    net.pump()
    assert (_state(a, call_id), _state(b, call_id)) == (CallState.CONFIRMED,
                                                       CallState.CONFIRMED)
    net.run(40.0)
    a.bye(call_id, net.now)
    net.pump()
    assert (_state(a, call_id), _state(b, call_id)) == (CallState.ENDED, CallState.ENDED)
    net.run(100.0)
    assert a.table_sizes()["calls"] == b.table_sizes()["calls"] == 0


def test_hangup_before_the_ack_waits_in_ending_then_sends_bye() -> None:
    ua = make_ua(A)
    ua.receive_datagram(raw_request("INVITE", body=OFFER), B, 0.0)
    (inc,) = events(ua)
    assert isinstance(inc, IncomingCall)
    ua.answer(inc.call_id, ANSWER, 0.0)
    ok = [m for _, m in drain(ua) if isinstance(m, Response) and m.status == 200][0]
    ua.bye(inc.call_id, 0.1)
    assert _state(ua, inc.call_id) is CallState.ENDING
    assert events(ua) == [CallEnded(inc.call_id, "local hangup", None)]
    assert requests(drain(ua), "BYE") == []
    tag = (ok.headers.get("To") or "").split("tag=")[1]
    ua.receive_datagram(raw_request("ACK", to_tag=tag), B, 0.2)
    assert len(requests(drain(ua), "BYE")) == 1
    assert _state(ua, inc.call_id) is CallState.ENDED
    assert events(ua) == []
    _check(ua)


def test_reinvite_inside_an_early_dialog_gets_500() -> None:
    """RFC 3261 14.2: an INVITE is in progress; the early call must not take a new offer."""
    ua = make_ua(A)
    ua.receive_datagram(raw_request("INVITE", body=OFFER), B, 0.0)
    (inc,) = events(ua)
    ua.ringing(inc.call_id, 0.1)
    ringing = [m for _, m in drain(ua) if isinstance(m, Response) and m.status == 180][0]
    tag = (ringing.headers.get("To") or "").split("tag=")[1]
    ua.receive_datagram(raw_request("INVITE", cseq=2, to_tag=tag, body=HOLD), B, 0.2)
    assert [m.status for _, m in drain(ua) if isinstance(m, Response)] == [500]
    assert events(ua) == []
    assert _state(ua, inc.call_id) is CallState.RINGING


def test_our_retry_after_491_waits_for_the_peers_reinvite_to_finish() -> None:
    """Glare resolved as RFC 3261 14.1 means: the peer's retry wins; ours follows its ACK."""
    ua = make_ua(A, rng=random.Random(3))
    ua.receive_datagram(raw_request("INVITE", body=OFFER), B, 0.0)
    (inc,) = events(ua)
    ua.answer(inc.call_id, ANSWER, 0.0)
    ok = [m for _, m in drain(ua) if isinstance(m, Response) and m.status == 200][0]
    tag = (ok.headers.get("To") or "").split("tag=")[1]
    ua.receive_datagram(raw_request("ACK", to_tag=tag), B, 0.1)
    ua.reinvite(inc.call_id, HOLD, 1.0)
    ((_, ours),) = requests(drain(ua), "INVITE")
    ua.receive_datagram(reply(ours, 491, to_tag=None), B, 1.1)
    drain(ua)
    ua.receive_datagram(raw_request("INVITE", cseq=2, to_tag=tag, body=OFFER), B, 1.2)
    assert events(ua) == [CallUpdated(inc.call_id, OFFER)]
    drain(ua)
    ua.handle_timer(4.0)  # the back-off (0-2 s for the callee) is over
    assert requests(drain(ua), "INVITE") == []
    assert _state(ua, inc.call_id) is CallState.OFFER_RECEIVED
    ua.answer_reinvite(inc.call_id, ANSWER, 4.1)
    drain(ua)
    ua.receive_datagram(raw_request("ACK", cseq=2, to_tag=tag), B, 4.2)
    ua.handle_timer(5.5)
    ((_, retried),) = requests(drain(ua), "INVITE")
    assert retried.body == HOLD
    assert _state(ua, inc.call_id) is CallState.OFFER_SENT
    assert events(ua) == []
    _check(ua)


def test_reinvite_while_our_answer_waits_for_its_ack_fails_with_491() -> None:
    ua = make_ua(A)
    ua.receive_datagram(raw_request("INVITE", body=OFFER), B, 0.0)
    (inc,) = events(ua)
    ua.answer(inc.call_id, ANSWER, 0.0)
    drain(ua)
    ua.reinvite(inc.call_id, HOLD, 0.1)
    assert events(ua) == [ReinviteFailed(inc.call_id, 491)]
    assert requests(drain(ua), "INVITE") == []


def test_call_state_keeps_its_coarse_public_names() -> None:
    ua = make_ua(A)
    ua.receive_datagram(raw_request("INVITE", body=OFFER), B, 0.0)
    (inc,) = events(ua)
    assert ua.call_state(inc.call_id) == "incoming"
    ua.ringing(inc.call_id, 0.0)
    assert ua.call_state(inc.call_id) == "early"
    ua.answer(inc.call_id, ANSWER, 0.0)
    assert ua.call_state(inc.call_id) == "confirmed"
    ua.bye(inc.call_id, 0.1)
    assert ua.call_state(inc.call_id) == "ended"


def test_every_call_timer_has_exactly_one_handler_in_the_composed_agent() -> None:
    core = SipCore(local_host="127.0.0.1", local_port=5060, transport="udp",
                   user_agent="t", instance_id="urn:uuid:0")
    table = CallTable(core)
    assert table.missing_handlers() == {CallTimer.TARGET, CallTimer.CANCEL,
                                        CallTimer.REINVITE_RETRY, CallTimer.SESSION_REFRESH,
                                        CallTimer.SESSION_EXPIRE}
    assert make_ua(A)._table.missing_handlers() == set()  # noqa: SLF001
    with pytest.raises(ValueError, match="LINGER already has a handler"):
        table.on_timer(CallTimer.LINGER, lambda call, now: None)
