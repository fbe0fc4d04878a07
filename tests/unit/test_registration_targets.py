"""Registration client: registrar targets replaced while running (the name resolved anew).

A trunk known by name whose DNS failed at boot has no targets; the client sends nothing (a
bare name would make the transport resolve it on the event loop). When DNS answers, `set_targets` must get the account
registered at once, not at its next backoff retry; a live binding is left alone.
"""

from __future__ import annotations

from gateway.sip.message import Request, Response, make_response, parse_message
from gateway.sip.registration import NO_ADDRESS, AccountSettings, RegistrationClient, RegPhase
from gateway.sip.target import Target
from gateway.sip.ua import UserAgent

A = Target("udp", "127.0.0.21", 5071)
B = Target("udp", "127.0.0.22", 5073)


def client(targets: tuple[Target, ...] = ()) -> RegistrationClient:
    settings = AccountSettings(aor="sip:1001@carrier.test", registrar_host="carrier.test",
                               username="1001", password="s3cret", targets=targets)
    return RegistrationClient("1", settings, local_host="127.0.0.1", local_port=5060)


def out(rc: RegistrationClient) -> list[tuple[Request, Target]]:
    got = []
    for req, target in rc.outgoing():
        parsed = parse_message(bytes(req))
        assert isinstance(parsed, Request)
        got.append((parsed, target))
    return got


def ok(req: Request, expires: int = 600) -> Response:
    resp = make_response(req, 200, to_tag="t")
    resp.headers.add("Expires", str(expires))
    parsed = parse_message(bytes(resp))
    assert isinstance(parsed, Response)
    return parsed


def test_an_account_without_an_address_sends_nothing_and_registers_as_soon_as_dns_answers(
        ) -> None:
    rc = client()
    rc.start(0.0)
    assert out(rc) == []  # never a REGISTER to the bare name "carrier.test"
    [ev] = rc.events()
    assert not ev.registered and ev.reason == NO_ADDRESS
    assert not rc.registered and rc.phase is RegPhase.WAITING_RETRY
    assert rc.get_timer() is None  # nothing to retry until DNS hands over targets
    rc.handle_timer(100.0)
    assert out(rc) == []

    assert rc.set_targets([A, B], 0.5)
    [(req, target)] = [(r, t) for r, t in out(rc) if r.method == "REGISTER"]
    assert target == A
    assert rc.receive_response(ok(req), 0.52)
    [ev] = rc.events()
    assert ev.registered and rc.registered
    assert rc.settings.targets == (A, B)


def test_an_account_without_an_address_unregisters_without_sending() -> None:
    rc = client()
    rc.start(0.0)
    rc.unregister(1.0)
    assert out(rc) == [] and rc.done


def test_the_user_agent_hands_out_an_account_s_client() -> None:
    ua = UserAgent(local_host="127.0.0.1", local_port=5060, instance_id="urn:uuid:x")
    ua.add_account("1", AccountSettings(aor="sip:1001@carrier.test",
                                        registrar_host="carrier.test"), 0.0)
    client_ = ua.registration("1")
    assert isinstance(client_, RegistrationClient)
    assert ua.registration("2") is None
    assert ua.messages_out() == []  # no address yet: nothing goes out
    assert client_.set_targets([A], 1.0)
    [sent] = ua.messages_out()
    assert sent.dest == A.addr and sent.data.startswith(b"REGISTER ")


def test_a_live_binding_is_left_alone_and_the_next_refresh_uses_the_new_address() -> None:
    rc = client((A,))
    rc.start(0.0)
    [(req, target)] = out(rc)
    assert target == A
    rc.receive_response(ok(req, expires=120), 0.01)
    assert rc.registered
    assert rc.set_targets([B], 1.0)
    assert out(rc) == []  # nothing sent just because DNS changed
    assert rc.registered
    refresh = rc.state()["next_refresh"]
    assert isinstance(refresh, float)
    rc.handle_timer(refresh)
    [(req, target)] = [(r, t) for r, t in out(rc) if r.method == "REGISTER"]
    assert target == B


def test_unchanged_or_empty_answers_change_nothing() -> None:
    rc = client((A,))
    rc.start(0.0)
    assert not rc.set_targets([A], 0.1)
    assert not rc.set_targets([], 0.1)  # the last address is still the best guess
    assert rc.targets.targets == (A,)


def test_a_register_under_way_to_a_target_still_listed_is_not_restarted() -> None:
    rc = client((A,))
    rc.start(0.0)
    [(first, _)] = out(rc)
    assert rc.set_targets([B, A], 0.2)
    assert out(rc) == []  # the transaction to A carries on
    assert rc.receive_response(ok(first), 0.3)
    assert rc.registered
