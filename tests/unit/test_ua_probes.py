"""OPTIONS probes in the user agent (trunk health): one event per probe, any answer counts."""

from __future__ import annotations

from ua_wire import drain, events, make_ua, requests

from gateway.sip.events import OptionsAnswered, OptionsFailed
from gateway.sip.message import Request, make_response
from gateway.sip.target import Target
from gateway.sip.ua import UserAgent

A_ADDR = ("127.0.0.1", 5060)
PBX = ("127.0.0.1", 5080)


def probe(ua: UserAgent, **kw: object) -> str:
    args: dict[str, object] = dict(target_uri="sip:pbx.example", from_uri="sip:gw@branch",
                                   dest=PBX, timeout=0.5, now=0.0)
    args.update(kw)
    return ua.send_options(**args)  # type: ignore[arg-type]


def only_options(ua: UserAgent) -> Request:
    (msg,) = [m for _, m in requests(drain(ua), "OPTIONS")]
    return msg


def run_timers(ua: UserAgent, until: float) -> float:
    now = 0.0
    while (deadline := ua.get_timer()) is not None and deadline <= until:
        now = deadline
        ua.handle_timer(now)
    return now


def test_options_request_and_any_final_answer_reports_answered() -> None:
    ua = make_ua(A_ADDR)
    handle = probe(ua)
    ((o, req),) = requests(drain(ua), "OPTIONS")
    assert o.dest == PBX and o.transport == "udp"
    assert req.uri == "sip:pbx.example" and req.call_id == handle
    assert req.cseq.method == "OPTIONS" and req.from_tag and req.to_tag is None
    ua.receive_datagram(bytes(make_response(req, 100)), PBX, 0.05)
    assert events(ua) == []  # a provisional is no answer yet
    ua.receive_datagram(bytes(make_response(req, 404, to_tag="x")), PBX, 0.1)
    assert events(ua) == [OptionsAnswered(handle, 404)]
    # a resend of the same answer says nothing twice
    ua.receive_datagram(bytes(make_response(req, 404, to_tag="x")), PBX, 0.12)
    assert events(ua) == []
    assert ua.table_sizes()["probes"] == 0


def test_unanswered_probe_fails_after_its_own_timeout_not_timer_f() -> None:
    ua = make_ua(A_ADDR)
    handle = probe(ua, timeout=0.3, now=0.0)
    req = only_options(ua)
    run_timers(ua, 0.29)
    assert events(ua) == []
    run_timers(ua, 10.0)
    assert events(ua) == [OptionsFailed(handle, "timeout")]
    assert ua.table_sizes()["probes"] == 0
    # a late answer is not a second outcome
    ua.receive_datagram(bytes(make_response(req, 200, to_tag="late")), PBX, 1.0)
    assert events(ua) == []


def test_timeout_fires_at_the_deadline() -> None:
    ua = make_ua(A_ADDR)
    handle = probe(ua, timeout=0.25, now=10.0)
    drain(ua)
    assert ua.get_timer() == 10.25
    ua.handle_timer(10.25)
    assert events(ua) == [OptionsFailed(handle, "timeout")]


def test_every_target_is_probed_and_fails_only_when_all_fail() -> None:
    ua = make_ua(A_ADDR)
    targets = [Target("udp", "127.0.0.1", 5081), Target("udp", "127.0.0.1", 5082)]
    handle = probe(ua, dest=targets, timeout=1.0)
    sent = requests(drain(ua), "OPTIONS")
    assert [o.dest for o, _ in sent] == [("127.0.0.1", 5081), ("127.0.0.1", 5082)]
    assert {m.call_id for _, m in sent} == {handle}
    assert len({m.headers.get("Via") for _, m in sent}) == 2  # one transaction each
    ua.transport_error(("127.0.0.1", 5081), 0.1)
    assert events(ua) == []  # the other target may still answer
    ua.transport_error(("127.0.0.1", 5082), 0.2)
    assert events(ua) == [OptionsFailed(handle, "transport error")]
    assert ua.table_sizes()["probes"] == 0
    # one silent, one bouncing: a timeout
    second = probe(ua, dest=targets, timeout=1.0, now=2.0)
    drain(ua)
    ua.transport_error(("127.0.0.1", 5081), 2.1)
    ua.handle_timer(3.0)
    assert events(ua) == [OptionsFailed(second, "timeout")]


def test_a_live_secondary_answers_for_the_trunk_and_becomes_sticky() -> None:
    ua = make_ua(A_ADDR)
    targets = [Target("udp", "127.0.0.1", 5081), Target("tcp", "127.0.0.1", 5082)]
    handle = probe(ua, dest=targets, timeout=1.0)
    sent = requests(drain(ua), "OPTIONS")
    (o, second) = sent[1]
    assert o.transport == "tcp" and "SIP/2.0/TCP" in (second.headers.get("Via") or "")
    ua.receive_datagram(bytes(make_response(second, 200, to_tag="y")), o.dest, 0.5,
                        transport="tcp")
    assert events(ua) == [OptionsAnswered(handle, 200)]  # at once, not at the deadline
    ua.handle_timer(1.0)  # the silent primary times out
    assert events(ua) == []  # one outcome per probe
    # calls (and the next probe) now start at the target that answered
    ua.invite(target_uri="sip:200@pbx", from_uri="sip:100@gw", dest=targets, sdp=b"v=0\r\n",
              now=1.1)
    ((o, _),) = requests(drain(ua), "INVITE")
    assert o.dest == ("127.0.0.1", 5082)


def test_transport_listener_hears_every_transport_error() -> None:
    ua = make_ua(A_ADDR)
    heard: list[tuple[tuple[str, int], str, float]] = []
    ua.transport_listener = lambda addr, transport, now: heard.append((addr, transport, now))
    ua.transport_error(PBX, 2.0, transport="TCP")
    assert heard == [(PBX, "tcp", 2.0)]


def test_probes_do_not_disturb_calls_or_each_other() -> None:
    ua = make_ua(A_ADDR)
    first = probe(ua, now=0.0)
    second = probe(ua, now=0.0)
    reqs = {m.call_id: m for _, m in requests(drain(ua), "OPTIONS")}
    assert set(reqs) == {first, second}
    ua.receive_datagram(bytes(make_response(reqs[second], 200, to_tag="a")), PBX, 0.1)
    assert events(ua) == [OptionsAnswered(second, 200)]
    ua.handle_timer(0.5)
    assert events(ua) == [OptionsFailed(first, "timeout")]
