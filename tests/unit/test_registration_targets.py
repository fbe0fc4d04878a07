"""Registration client: registrar targets replaced while running (the name resolved anew).

A trunk known by name whose DNS failed at boot has no targets; the client falls back to the
bare name, which cannot be sent to. When DNS answers, `set_targets` must get the account
registered at once, not at its next backoff retry; a live binding is left alone.
"""

from __future__ import annotations

from gateway.sip.message import Request, Response, make_response, parse_message
from gateway.sip.registration import AccountSettings, RegistrationClient, RegPhase
from gateway.sip.target import Target

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


def test_an_account_failing_for_want_of_an_address_registers_as_soon_as_dns_answers() -> None:
    rc = client()
    rc.start(0.0)
    [(req, target)] = out(rc)
    assert target.host == "carrier.test"  # the bare name: nowhere to send it
    rc.transport_error(0.01)
    assert not rc.registered and rc.phase is RegPhase.RECOVERING
    retry = rc.state()["next_retry"]
    assert isinstance(retry, float) and retry > 0.5
    rc.events()

    assert rc.set_targets([A, B], 0.5)
    [(req, target)] = [(r, t) for r, t in out(rc) if r.method == "REGISTER"]
    assert target == A  # now, not at the retry
    assert rc.receive_response(ok(req), 0.52)
    [ev] = rc.events()
    assert ev.registered and rc.registered
    assert rc.settings.targets == (A, B)


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
