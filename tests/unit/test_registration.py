"""Registration client: digest auth, refresh, probes, unreachable registrar, recovery."""

from __future__ import annotations

import pytest

from gateway.sip.auth import parse_authorization, verify_response
from gateway.sip.events import RegistrationStateChanged
from gateway.sip.message import Request, Response, make_response, parse_message
from gateway.sip.registration import (
    AccountSettings,
    RegistrationClient,
    RegPhase,
    refresh_delay,
)

NONCE = "abc123nonce"


def settings(**kw: object) -> AccountSettings:
    base: dict[str, object] = dict(
        aor="sip:1001@pbx.example", registrar_host="127.0.0.1", registrar_port=5080,
        username="1001", password="s3cret", instance_id="urn:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427",
    )
    base.update(kw)
    return AccountSettings(**base)  # type: ignore[arg-type]


def client(**kw: object) -> RegistrationClient:
    return RegistrationClient("trunk", settings(**kw), local_host="127.0.0.1", local_port=5060)


def wire(req: Request) -> Request:
    parsed = parse_message(bytes(req))
    assert isinstance(parsed, Request)
    return parsed


def reply(req: Request, status: int, *, nonce: str = NONCE, stale: bool = False,
          expires: int | None = None) -> Response:
    resp = make_response(req, status, to_tag="regtag")
    if status == 401:
        value = f'Digest realm="pbx.example", nonce="{nonce}", qop="auth", algorithm=MD5'
        if stale:
            value += ", stale=true"
        resp.headers.add("WWW-Authenticate", value)
    if status == 200 and expires is not None:
        resp.headers.add("Contact", "<sip:other@10.0.0.7>;expires=3600")
        contact = req.headers.get("Contact") or ""
        uri = contact.split(";")[0]
        resp.headers.add("Contact", f"{uri};expires={expires}")
    parsed = parse_message(bytes(resp))
    assert isinstance(parsed, Response)
    return parsed


def sent(rc: RegistrationClient) -> list[Request]:
    return [wire(m) for m in rc.messages_to_send()]


def register_ok(rc: RegistrationClient, now: float, expires: int = 600) -> None:
    (req,) = sent(rc)
    assert req.method == "REGISTER"
    assert rc.receive_response(reply(req, 200, expires=expires), now)


def test_refresh_delay_rule() -> None:
    assert refresh_delay(600) == 300
    assert refresh_delay(60) == 30
    assert refresh_delay(20) == 10  # expires-30 would be negative
    assert refresh_delay(1) > 0


def test_register_401_then_authorization_then_200_and_refresh() -> None:
    rc = client()
    rc.start(0.0)
    (first,) = sent(rc)
    assert first.method == "REGISTER" and first.uri == "sip:pbx.example"
    assert first.headers.get("Expires") == "600"
    assert "+sip.instance=\"<urn:uuid:1b4e28ba" in (first.headers.get("Contact") or "")
    assert "Authorization" not in first.headers

    assert rc.receive_response(reply(first, 401), 0.05)
    assert rc.events() == []
    (second,) = sent(rc)
    assert second.call_id == first.call_id
    assert second.cseq.number == first.cseq.number + 1
    assert second.branch != first.branch
    params = parse_authorization(second.headers.get("Authorization") or "")
    assert params["qop"] == "auth" and params["nc"] == "00000001"
    assert params["nonce"] == NONCE and params["username"] == "1001"
    assert params["uri"] == "sip:pbx.example"
    assert verify_response(params, method="REGISTER", password="s3cret")

    assert rc.receive_response(reply(second, 200, expires=120), 0.1)
    assert rc.events() == [RegistrationStateChanged("trunk", True, "registered", 120)]
    assert rc.registered and rc.granted_expires == 120
    # refresh at min(60, 90) = 60 s after the 200, before expiry
    refresh_due = rc.state()["next_refresh"]
    assert refresh_due == pytest.approx(60.1)

    # run to the refresh; answer the probes on the way
    now = 0.1
    while (deadline := rc.get_timer()) is not None and deadline < 60.1:
        now = deadline
        rc.handle_timer(now)
        for req in sent(rc):
            assert req.method == "OPTIONS"
            rc.receive_response(reply(req, 200), now)
    rc.handle_timer(60.1)
    refresh = [r for r in sent(rc) if r.method == "REGISTER"]
    assert len(refresh) == 1
    assert refresh[0].call_id == first.call_id
    assert refresh[0].cseq.number == second.cseq.number + 1
    # a second challenge with the same nonce on a fresh request: nc grows
    rc.receive_response(reply(refresh[0], 401), 60.2)
    (third,) = [r for r in sent(rc) if r.method == "REGISTER"]
    assert parse_authorization(third.headers.get("Authorization") or "")["nc"] == "00000002"


def test_wrong_password_same_nonce_fails_and_retries_with_backoff() -> None:
    rc = client()
    rc.start(0.0)
    (first,) = sent(rc)
    rc.receive_response(reply(first, 401), 0.0)
    (second,) = sent(rc)
    rc.receive_response(reply(second, 401), 0.1)  # same nonce, not stale: wrong password
    (event,) = rc.events()
    assert not event.registered and "authentication failed" in event.reason
    assert not rc.registered
    assert sent(rc) == []
    assert rc.get_timer() == pytest.approx(1.1)  # retry base 1 s
    rc.handle_timer(1.1)
    (retry,) = sent(rc)
    assert retry.method == "REGISTER" and retry.call_id == first.call_id


def test_stale_nonce_is_not_a_wrong_password() -> None:
    rc = client()
    rc.start(0.0)
    (first,) = sent(rc)
    rc.receive_response(reply(first, 401), 0.0)
    (second,) = sent(rc)
    rc.receive_response(reply(second, 401, nonce="fresh", stale=True), 0.1)
    (third,) = sent(rc)
    assert parse_authorization(third.headers.get("Authorization") or "")["nonce"] == "fresh"
    assert rc.events() == []


def test_403_is_not_registered_and_never_gives_up() -> None:
    rc = client(retry_max=8.0)
    rc.start(0.0)
    now = 0.0
    gaps = []
    (req,) = sent(rc)
    for _ in range(6):
        rc.receive_response(reply(req, 403), now)
        failed_at = now
        regs: list[Request] = []
        while not regs:  # run timers (Timer K too) until the next attempt goes out
            deadline = rc.get_timer()
            assert deadline is not None
            now = deadline
            rc.handle_timer(now)
            regs = [r for r in sent(rc) if r.method == "REGISTER"]
        (req,) = regs
        gaps.append(round(now - failed_at, 3))
    assert gaps == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert not rc.registered
    events = rc.events()
    assert len(events) == 1 and events[0].reason == "403 Forbidden"  # no repeated noise


def test_unreachable_registrar_detected_by_probes_then_recovery_on_any_answer() -> None:
    rc = client()
    rc.start(0.0)
    register_ok(rc, 0.0)
    assert rc.events()[0].registered
    now = 0.0
    register_sends: dict[int, float] = {}  # CSeq -> first transmission time
    down_events: list[tuple[float, RegistrationStateChanged]] = []
    # nothing answers from here on
    while now < 150.0:
        deadline = rc.get_timer()
        assert deadline is not None
        now = deadline
        rc.handle_timer(now)
        for req in sent(rc):
            if req.method == "REGISTER":
                register_sends.setdefault(req.cseq.number, now)
        down_events.extend((now, ev) for ev in rc.events())
    # probes at 5 and 10 s, 2 s timeout each: down at 12 s, reported once
    assert [(round(t, 3), ev.registered, ev.reason) for t, ev in down_events] == [
        (12.0, False, "registrar unreachable")]
    assert not rc.registered and rc.phase is RegPhase.RECOVERING
    times = sorted(register_sends.values())
    gaps = [round(b - a, 2) for a, b in zip(times, times[1:], strict=False)]
    assert gaps[:4] == sorted(gaps[:4]) and gaps[0] < gaps[3]  # backoff grows...
    assert 30.0 <= max(gaps) <= 32.0  # ... capped at 30 s (plus the attempt's own timeout)

    # the registrar answers a probe, even with 405: REGISTER goes out at once
    while True:
        deadline = rc.get_timer()
        assert deadline is not None
        now = deadline
        rc.handle_timer(now)
        probes = [r for r in sent(rc) if r.method == "OPTIONS"]
        if probes:
            break
    rc.receive_response(reply(probes[-1], 405), now)
    (reg,) = [r for r in sent(rc) if r.method == "REGISTER"]
    assert not rc.registered  # not until the 200
    rc.receive_response(reply(reg, 200, expires=300), now + 0.01)
    (ev,) = rc.events()
    assert ev.registered and ev.expires == 300
    assert rc.state()["phase"] == "registered"


def test_probe_success_keeps_registration_and_single_failure_tolerated() -> None:
    rc = client(down_after=2)
    rc.start(0.0)
    register_ok(rc, 0.0)
    rc.events()
    rc.handle_timer(5.0)
    (probe,) = sent(rc)
    assert probe.method == "OPTIONS" and probe.uri == "sip:pbx.example"
    rc.handle_timer(7.0)  # probe timeout 2 s: first failure
    assert rc.registered and rc.events() == []
    rc.handle_timer(10.0)
    (probe2,) = [r for r in sent(rc) if r.method == "OPTIONS"]
    rc.receive_response(reply(probe2, 404), 10.1)  # any answer proves reachability
    rc.handle_timer(12.0)
    rc.handle_timer(15.0)
    (probe3,) = [r for r in sent(rc) if r.method == "OPTIONS"]
    assert probe3.call_id != probe2.call_id
    assert rc.registered and rc.events() == []


def test_transport_error_counts_as_probe_failure() -> None:
    rc = client(down_after=2)
    rc.start(0.0)
    register_ok(rc, 0.0)
    rc.events()
    rc.handle_timer(5.0)
    sent(rc)
    rc.transport_error(5.01)
    rc.handle_timer(10.0)
    sent(rc)
    rc.transport_error(10.01)
    (ev,) = rc.events()
    assert not ev.registered and ev.reason == "registrar unreachable"


def test_unregister_sends_expires_zero_and_reports_done() -> None:
    rc = client()
    rc.start(0.0)
    register_ok(rc, 0.0)
    rc.events()
    rc.unregister(1.0)
    (req,) = sent(rc)
    assert req.method == "REGISTER" and req.headers.get("Expires") == "0"
    assert "expires=0" in (req.headers.get("Contact") or "")
    rc.receive_response(reply(req, 200), 1.1)
    (ev,) = rc.events()
    assert not ev.registered and ev.reason == "unregistered"
    assert rc.done and rc.get_timer() is None


def test_unregister_gives_up_after_timeout() -> None:
    rc = client(unregister_timeout=3.0)
    rc.start(0.0)
    register_ok(rc, 0.0)
    rc.events()
    rc.unregister(1.0)
    while (deadline := rc.get_timer()) is not None:
        rc.handle_timer(deadline)
    (ev,) = rc.events()
    assert not ev.registered and rc.done
    assert "timed out" in ev.reason


def test_several_challenges_the_client_answers_sha256_and_skips_an_unknown_one() -> None:
    rc = client()
    rc.start(0.0)
    (first,) = sent(rc)
    resp = make_response(first, 401, to_tag="regtag")
    for alg, nonce in (("SHA-1024-FUTURE", "n-unknown"), ("MD5", "n-md5"),
                       ("SHA-256", "n-sha")):
        resp.headers.add("WWW-Authenticate",
                         f'Digest realm="pbx.example", nonce="{nonce}", qop="auth", '
                         f"algorithm={alg}")
    parsed = parse_message(bytes(resp))
    assert isinstance(parsed, Response)
    assert rc.receive_response(parsed, 0.05)
    (second,) = sent(rc)
    params = parse_authorization(second.headers.get("Authorization") or "")
    assert (params["algorithm"], params["nonce"]) == ("SHA-256", "n-sha")
    assert len(params["response"]) == 64
    assert verify_response(params, method="REGISTER", password="s3cret")
    assert rc.events() == []
