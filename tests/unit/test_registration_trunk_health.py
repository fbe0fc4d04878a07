"""Registration accounts under a trunk health monitor: no OPTIONS of their own, parked
while the trunk is DOWN ("trunk down", nothing sent), registered again at once on UP."""

from __future__ import annotations

from gateway.sip.events import RegistrationStateChanged
from gateway.sip.message import Request, Response, make_response, parse_message
from gateway.sip.registration import AccountSettings, RegistrationClient, RegPhase


def client(**kw: object) -> RegistrationClient:
    base: dict[str, object] = dict(aor="sip:1001@pbx.example", registrar_host="127.0.0.1",
                                   registrar_port=5080, username="1001", password="pw")
    base.update(kw)
    return RegistrationClient("line1", AccountSettings(**base),  # type: ignore[arg-type]
                              local_host="127.0.0.1", local_port=5060)


def sent(rc: RegistrationClient) -> list[Request]:
    out = []
    for m in rc.messages_to_send():
        parsed = parse_message(bytes(m))
        assert isinstance(parsed, Request)
        out.append(parsed)
    return out


def ok(req: Request) -> Response:
    resp = parse_message(bytes(make_response(req, 200, to_tag="t")))
    assert isinstance(resp, Response)
    resp.headers.add("Expires", "120")
    return resp


def run(rc: RegistrationClient, start: float, end: float) -> list[Request]:
    """Run the client's timers from `start` to `end`; everything it sent meanwhile."""
    out: list[Request] = []
    while (t := rc.get_timer()) is not None and t <= end:
        rc.handle_timer(max(t, start))
        out += sent(rc)
    return out


def test_without_its_own_probes_an_account_sends_no_options() -> None:
    rc = client(probe_interval=0.0)
    rc.start(0.0)
    (req,) = sent(rc)
    rc.receive_response(ok(req), 0.1)
    assert rc.registered
    methods = [r.method for r in run(rc, 0.1, 200.0)]
    assert "OPTIONS" not in methods
    assert methods and set(methods) == {"REGISTER"}  # refreshes still go out
    # with probes (the old behaviour) the same account would probe every 5 s
    probing = client()
    probing.start(0.0)
    (req,) = sent(probing)
    probing.receive_response(ok(req), 0.1)
    assert "OPTIONS" in [r.method for r in run(probing, 0.1, 20.0)]


def test_unreachable_registrar_without_probes_retries_register_not_options() -> None:
    rc = client(probe_interval=0.0)
    rc.start(0.0)
    sent(rc)
    methods = [r.method for r in run(rc, 0.0, 60.0)]
    assert "OPTIONS" not in methods and methods.count("REGISTER") >= 3
    assert not rc.registered and rc.phase is not RegPhase.RECOVERING


def test_trunk_down_parks_the_account_and_register_now_brings_it_back() -> None:
    rc = client(probe_interval=0.0)
    rc.start(0.0)
    (req,) = sent(rc)
    rc.receive_response(ok(req), 0.1)
    rc.events()
    rc.trunk_down(5.0)
    assert not rc.registered and rc.phase is RegPhase.TRUNK_DOWN
    assert rc.events() == [RegistrationStateChanged("line1", False, "trunk down", None)]
    assert rc.state()["reason"] == "trunk down"
    assert run(rc, 5.0, 500.0) == []  # nothing at all while the trunk is down
    rc.trunk_down(6.0)
    assert rc.events() == []  # said once
    rc.register_now(500.0)
    (again,) = sent(rc)
    assert again.method == "REGISTER" and again.call_id == req.call_id
    assert again.cseq.number > req.cseq.number
    rc.receive_response(ok(again), 500.1)
    assert rc.registered
    assert [e.registered for e in rc.events()] == [True]
    rc.register_now(501.0)  # already registered: nothing
    assert sent(rc) == []


def test_trunk_down_abandons_a_register_in_flight() -> None:
    rc = client(probe_interval=0.0)
    rc.start(0.0)
    (req,) = sent(rc)
    rc.trunk_down(0.2)
    assert not rc.receive_response(ok(req), 0.3)  # the late 200 belongs to nothing now
    assert not rc.registered
