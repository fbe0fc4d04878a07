"""The request filter hook, the validator hook and bounded tables (fake clock)."""

from __future__ import annotations

from ua_wire import ANSWER, OFFER, drain, events, make_ua, raw_request, responses

from gateway.sip.events import Accept, Drop, FilterVerdict, IncomingCall, Respond
from gateway.sip.message import Request, Response, make_response

A = ("127.0.0.1", 5060)
B = ("127.0.0.1", 5070)


class Recorder:
    def __init__(self, verdict: FilterVerdict | None) -> None:
        self.verdict = verdict
        self.calls: list[tuple[str, tuple[str, int], str, bool]] = []

    def __call__(self, req: Request, src: tuple[str, int], transport: str, now: float,
                 in_dialog: bool) -> FilterVerdict | None:
        self.calls.append((req.method, src, transport, in_dialog))
        return self.verdict


def test_drop_verdict_sends_nothing_creates_nothing_and_counts() -> None:
    f = Recorder(Drop("unknown source"))
    ua = make_ua(A, request_filter=f)
    ua.receive_datagram(raw_request("INVITE", body=OFFER), B, 0.0)
    assert drain(ua) == [] and events(ua) == []
    assert ua.stats["filtered"] == 1
    assert ua.table_sizes()["server_transactions"] == 0 and ua.table_sizes()["calls"] == 0
    assert f.calls == [("INVITE", B, "udp", False)]


def test_respond_verdict_answers_without_event_or_call() -> None:
    f = Recorder(Respond(403, "Forbidden", (("Warning", '399 gw "no"'),)))
    ua = make_ua(A, request_filter=f)
    ua.receive_datagram(raw_request("INVITE", body=OFFER), B, 0.0)
    (resp,) = responses(drain(ua))
    assert resp.status == 403 and resp.headers.get("Warning") == '399 gw "no"'
    assert events(ua) == [] and ua.call_state("c1@peer") is None


def test_filter_skips_ack_and_retransmissions_and_flags_in_dialog() -> None:
    f = Recorder(Accept())
    ua = make_ua(A, request_filter=f)
    invite = raw_request("INVITE", body=OFFER, branch="z9hG4bKone")
    ua.receive_datagram(invite, B, 0.0)
    ua.receive_datagram(invite, B, 0.1)  # retransmission: absorbed by the transaction
    (inc,) = events(ua)
    assert isinstance(inc, IncomingCall)
    ua.answer(inc.call_id, ANSWER, 0.2)
    ok = [r for r in responses(drain(ua)) if r.status == 200][0]
    tag = (ok.headers.get("To") or "").split("tag=")[1]
    ua.receive_datagram(raw_request("ACK", to_tag=tag), B, 0.3)
    ua.receive_datagram(raw_request("BYE", cseq=2, to_tag=tag), B, 1.0)
    ua.receive_datagram(raw_request("BYE", call_id="other", to_tag="x"), B, 1.1)
    assert f.calls == [("INVITE", B, "udp", False), ("BYE", B, "udp", True),
                       ("BYE", B, "udp", False)]


def test_validator_refusal_is_sent_and_stops_processing() -> None:
    def validator(req: Request) -> Response | None:
        return make_response(req, 416) if req.method == "INVITE" else None

    ua = make_ua(A, validator=validator)
    ua.receive_datagram(raw_request("INVITE", body=OFFER), B, 0.0)
    assert [r.status for r in responses(drain(ua))] == [416]
    assert events(ua) == [] and ua.stats["invalid"] == 1


def test_default_validator_refuses_max_forwards_zero() -> None:
    ua = make_ua(A)
    data = raw_request("INVITE", body=OFFER).replace(b"Max-Forwards: 70", b"Max-Forwards: 0")
    ua.receive_datagram(data, B, 0.0)
    assert [r.status for r in responses(drain(ua))] == [483]
    assert events(ua) == []


def test_server_transactions_are_bounded_and_overflow_gets_503() -> None:
    ua = make_ua(A, max_server_transactions=20)
    statuses: list[int] = []
    for n in range(200):  # INVITEs nobody answers: their transactions stay live
        ua.receive_datagram(raw_request("INVITE", call_id=f"o{n}", body=OFFER), B, 0.0)
        statuses.extend(r.status for r in responses(drain(ua)))
    assert statuses.count(100) == 20 and statuses.count(503) == 180
    assert ua.stats["overload"] == 180
    assert ua.table_sizes()["server_transactions"] <= 20
    for n in range(20):
        ua.reject(f"o{n}", 486, 0.0)
    drain(ua)
    # once the transactions time out (Timer J), new requests are served again
    while (t := ua.get_timer()) is not None and t <= 40.0:
        ua.handle_timer(t)
        drain(ua)
    ua.receive_datagram(raw_request("OPTIONS", call_id="late"), B, 40.0)
    assert [r.status for r in responses(drain(ua))] == [200]


def test_calls_are_bounded() -> None:
    ua = make_ua(A, max_calls=5)
    for n in range(50):
        ua.receive_datagram(raw_request("INVITE", call_id=f"i{n}", body=OFFER), B, 0.0)
    out = responses(drain(ua))
    assert sum(1 for r in out if r.status == 503) == 45
    assert ua.table_sizes()["calls"] == 5
    assert len([e for e in events(ua) if isinstance(e, IncomingCall)]) == 5


def _ring_and_end(ua: object, call_id: str, now: float, *, answer: bool = False) -> None:
    """An INVITE from B that the application rejects (486), or answers and hangs up on."""
    from gateway.sip.ua import UserAgent
    assert isinstance(ua, UserAgent)
    invite = raw_request("INVITE", call_id=call_id, body=OFFER, branch=f"z9hG4bK{call_id}")
    ua.receive_datagram(invite, B, now)
    if answer:
        ua.answer(call_id, ANSWER, now)
        [ok] = [r for r in responses(drain(ua)) if r.status == 200]
        ack = raw_request("ACK", call_id=call_id, to_tag=ok.to_tag, branch=f"z9hG4bKa{call_id}")
        ua.receive_datagram(ack, B, now)
        ua.bye(call_id, now)
    else:
        ua.reject(call_id, 486, now)
    drain(ua)


def test_ended_calls_lingering_for_retransmissions_do_not_count_toward_max_calls() -> None:
    ua = make_ua(A, max_calls=5)
    for n in range(20):  # 20 calls come and go within the 32 s an ended call lingers
        _ring_and_end(ua, f"e{n}", 0.1 * n, answer=n % 2 == 0)
    assert ua.table_sizes()["calls"] == 20
    assert ua.call_state("e0") == "ended"
    assert ua.stats["overload"] == 0
    for n in range(5):  # five live calls still fit, the sixth does not
        ua.receive_datagram(raw_request("INVITE", call_id=f"live{n}", body=OFFER), B, 3.0)
    ua.receive_datagram(raw_request("INVITE", call_id="sixth", body=OFFER), B, 3.0)
    assert [r.status for r in responses(drain(ua))] == [100] * 5 + [503]
    assert sum(isinstance(e, IncomingCall) for e in events(ua)) == 20 + 5


def test_lingering_ended_calls_have_their_own_bound_oldest_evicted_first() -> None:
    ua = make_ua(A, max_calls=5)
    ua._table.max_ended = 8
    for n in range(30):
        _ring_and_end(ua, f"e{n}", 0.01 * n)
    assert ua.table_sizes()["calls"] == 8
    assert ua.call_state("e21") is None and ua.call_state("e22") == "ended"
    assert ua.stats["ended_evicted"] == 22
    # and they still go after 64*T1 by themselves
    while (t := ua.get_timer()) is not None and t <= 40.0:
        ua.handle_timer(t)
    assert ua.table_sizes()["calls"] == 0


def test_invite_resent_after_its_transaction_was_evicted_gets_the_same_answer() -> None:
    ua = make_ua(A, max_server_transactions=2)
    _ring_and_end(ua, "r1", 0.0)  # 486 sent; the INVITE transaction waits for the ACK
    ack = raw_request("ACK", call_id="r1", to_tag="x", branch="z9hG4bKr1")
    ua.receive_datagram(ack, B, 0.1)  # Confirmed: it only absorbs now
    for n in range(3):  # the second OPTIONS needs its room, the third the first one's
        ua.receive_datagram(raw_request("OPTIONS", call_id=f"o{n}"), B, 0.2)
        assert [r.status for r in responses(drain(ua))] == [200]
    assert ua.stats["evicted"] == 2 and ua.stats["overload"] == 0
    # the caller resends its INVITE: not a new call, not 482, but the 486 again
    again = raw_request("INVITE", call_id="r1", body=OFFER, branch="z9hG4bKr1")
    ua.receive_datagram(again, B, 0.3)
    assert [r.status for r in responses(drain(ua))] == [486]
    assert not [e for e in events(ua) if isinstance(e, IncomingCall)][1:]


def test_call_timers_come_from_the_deadline_heap_disarmed_ones_never_fire() -> None:
    ua = make_ua(A)
    ua.receive_datagram(raw_request("INVITE", call_id="a", body=OFFER, branch="z9hG4bKa"), B,
                        0.0)
    ua.receive_datagram(raw_request("INVITE", call_id="b", body=OFFER), B, 1.0)
    drain(ua)
    assert ua.get_timer() == 300.0  # a's alerting limit
    ua.reject("a", 486, 2.0)  # a: ALERT disarmed, LINGER 32 s
    drain(ua)
    ua.receive_datagram(raw_request("ACK", call_id="a", to_tag="x", branch="z9hG4bKa"), B, 2.0)
    assert ua.call_state("a") == "ended"
    ua.answer("b", ANSWER, 3.0)  # b: ALERT disarmed, 2xx resent from 3.5 until the ACK
    drain(ua)
    assert ua.get_timer() == 3.5
    ua.handle_timer(3.5)
    assert [r.status for r in responses(drain(ua))] == [200]
    while (t := ua.get_timer()) is not None and t < 300.0:
        ua.handle_timer(t)
        drain(ua)
    assert ua.call_state("a") is None  # forgotten after its 32 s
    assert not [e for e in events(ua) if type(e).__name__ == "CallEnded" and e.call_id == "a"][1:]
    assert ua.get_timer() is None or ua.get_timer() >= 300.0
