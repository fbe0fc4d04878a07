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


def test_transport_error_moves_to_the_next_target_then_fails() -> None:
    ua = make_ua(A_ADDR)
    targets = [Target("udp", "127.0.0.1", 5081), Target("udp", "127.0.0.1", 5082)]
    handle = probe(ua, dest=targets, timeout=1.0)
    ((o, _),) = requests(drain(ua), "OPTIONS")
    assert o.dest == ("127.0.0.1", 5081)
    ua.transport_error(("127.0.0.1", 5081), 0.1)
    ((o, second),) = requests(drain(ua), "OPTIONS")
    assert o.dest == ("127.0.0.1", 5082) and second.cseq.number == 2
    assert events(ua) == []
    ua.transport_error(("127.0.0.1", 5082), 0.2)
    assert events(ua) == [OptionsFailed(handle, "transport error")]
    assert requests(drain(ua), "OPTIONS") == []


def test_second_target_answers_and_keeps_its_deadline() -> None:
    ua = make_ua(A_ADDR)
    targets = [Target("udp", "127.0.0.1", 5081), Target("tcp", "127.0.0.1", 5082)]
    handle = probe(ua, dest=targets, timeout=1.0)
    drain(ua)
    ua.transport_error(("127.0.0.1", 5081), 0.4)
    ((o, second),) = requests(drain(ua), "OPTIONS")
    assert o.transport == "tcp" and "SIP/2.0/TCP" in (second.headers.get("Via") or "")
    assert ua.get_timer() == 1.0  # the probe's deadline, not a fresh second
    ua.receive_datagram(bytes(make_response(second, 200, to_tag="y")), o.dest, 0.5,
                        transport="tcp")
    assert events(ua) == [OptionsAnswered(handle, 200)]


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
