"""The SIP edge filter: trunks trusted, strangers challenged alike, guessers locked out.

Everything runs on a fake clock (`now` values); responses are rendered the way the user
agent renders a `Respond` verdict, so "identical answers" is checked on the wire bytes.
"""

from __future__ import annotations

import logging
import re
import textwrap
from dataclasses import dataclass

import pytest

from gateway.config.loader import load_config_text
from gateway.runtime.edge import (
    MAX_NONCES,
    SipEdge,
    StaticUsers,
    build_edge,
    build_route_guard,
    trunk_sources_pinned,
)
from gateway.security.acl import SourceAcl
from gateway.security.events import LOGGER_NAME
from gateway.security.permissions import Allowed, CallSource, Denied
from gateway.security.ratelimit import Budget, RateLimiter, RateLimits
from gateway.security.routeguard import RouteGuard, default_policies
from gateway.sip import auth
from gateway.sip.events import Accept, Drop, Respond
from gateway.sip.headers import generate_tag
from gateway.sip.message import Request, Response, make_response, parse_message
from gateway.sip.registration import AccountSettings, RegistrationClient

TRUNK_IP = "192.0.2.10"
TRUNK_PORT = 5060
SCANNER = ("203.0.113.7", 5072)
PHONE = ("10.0.0.23", 5060)
REALM = "branch-7"
USERS = {"alice": "alice-Pa55word", "bob": "bob-Pa55word"}
SECRET = b"0123456789abcdef0123456789abcdef"


@dataclass(frozen=True)
class HP:
    host: str
    port: int


@dataclass(frozen=True)
class Trunk:
    name: str
    registrar: HP
    proxy: HP


TRUNKS = (Trunk("main", HP(TRUNK_IP, TRUNK_PORT), HP(TRUNK_IP, TRUNK_PORT)),)


def make_edge(*, pin_ports: bool = True, local_networks: tuple[str, ...] | None = None,
              limits: RateLimits | None = None,
              algorithms: tuple[str, ...] = auth.SERVER_ALGORITHMS) -> SipEdge:
    acl = SourceAcl(trunk_sources_pinned(TRUNKS, pin_ports=pin_ports),
                    local_networks=local_networks)
    return SipEdge(acl, realm=REALM, nonce_secret=SECRET, users=StaticUsers(USERS),
                   limiter=RateLimiter(limits), digest_algorithms=algorithms)


def request(method: str, user: str, *, src: tuple[str, int] = SCANNER, call_id: str = "c1",
            authz: str | None = None, cseq: int = 1, to_tag: str | None = None,
            ruri: str | None = None) -> Request:
    """A request for `user`@gateway shaped like a scanner's (REGISTER names the user in To)."""
    uri = "sip:gw.example" if method == "REGISTER" else f"sip:{user}@gw.example"
    uri = ruri or uri
    to = f"<sip:{user}@gw.example>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {src[0]}:{src[1]};branch=z9hG4bK{call_id}{cseq};rport",
        "Max-Forwards: 70",
        f"From: <sip:{user}@gw.example>;tag=ft{call_id}",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:{user}@{src[0]}:{src[1]}>",
    ]
    if authz is not None:
        lines.append(f"Authorization: {authz}")
    lines += ["Content-Length: 0", "", ""]
    msg = parse_message("\r\n".join(lines).encode())
    assert isinstance(msg, Request)
    return msg


def render(req: Request, verdict: Respond) -> bytes:
    """The bytes the user agent sends for a Respond verdict (make_response + headers)."""
    resp = make_response(req, verdict.status, verdict.reason, to_tag=generate_tag())
    for name, value in verdict.headers:
        resp.headers.add(name, value)
    return bytes(resp)


def normalise(wire: bytes, user: str) -> bytes:
    """Mask what legitimately differs per request: nonce, tags, Call-ID, Via, the name probed."""
    text = wire.decode()
    text = re.sub(r'nonce="[^"]*"', 'nonce="N"', text)
    text = re.sub(r"tag=[^;\r\n>]+", "tag=T", text)
    text = re.sub(r"(?m)^Call-ID: .*$", "Call-ID: C", text)
    text = re.sub(r"(?m)^Via: .*$", "Via: V", text)
    text = text.replace(f"sip:{user}@", "sip:USER@")
    return text.encode()


def answer(challenge: Respond, req_method: str, user: str, password: str,
           uri: str = "sip:gw.example") -> str:
    value = dict(challenge.headers)["WWW-Authenticate"]
    return auth.build_authorization(auth.Challenge.parse(value), method=req_method, uri=uri,
                                    username=user, password=password, cnonce="abcdef")


def events(caplog: pytest.LogCaptureFixture, kind: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER_NAME and f"event={kind} " in r.getMessage()]


@pytest.fixture(autouse=True)
def _capture(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)


# ---------------------------------------------------------------------- trunks


def test_trunk_source_is_accepted_without_digest(caplog: pytest.LogCaptureFixture) -> None:
    edge = make_edge()
    v = edge.filter(request("INVITE", "101", src=(TRUNK_IP, TRUNK_PORT)), (TRUNK_IP, TRUNK_PORT),
                    "udp", 0.0, False)
    assert v == Accept()
    assert edge.call_source("c1", (TRUNK_IP, TRUNK_PORT)) == CallSource.trunk("main")
    assert not [r for r in caplog.records if r.name == LOGGER_NAME]


def test_trunk_ip_from_another_port_is_not_trusted_when_the_trunk_names_a_port() -> None:
    edge = make_edge()
    src = (TRUNK_IP, 5999)
    v = edge.filter(request("INVITE", "101", src=src), src, "udp", 0.0, False)
    assert isinstance(v, Respond) and v.status == 401
    assert edge.call_source("c1", src) is None


def test_unpinned_trunk_accepts_any_port() -> None:
    edge = make_edge(pin_ports=False)
    src = (TRUNK_IP, 5999)
    assert edge.filter(request("INVITE", "101", src=src), src, "udp", 0.0, False) == Accept()


def test_build_edge_from_config_trusts_the_trunk_registrar_port() -> None:
    config = load_config_text(textwrap.dedent("""
        gateway: {name: office-gw, state_dir: /tmp/x}
        sip: {listen: 127.0.0.1:5070, public_host: 127.0.0.1}
        trunks:
          - {name: main, registrar: "127.0.0.1:5090"}
        lines:
          - {name: "1", backend: sim, number: "101"}
        """), route_probe=lambda toward: None)
    edge = build_edge(config)
    assert edge.realm == "office-gw"
    good, bad = ("127.0.0.1", 5090), ("127.0.0.1", 40000)
    assert edge.filter(request("INVITE", "101", src=good), good, "udp", 0.0, False) == Accept()
    v = edge.filter(request("INVITE", "101", src=bad, call_id="x"), bad, "udp", 0.0, False)
    assert isinstance(v, Respond) and v.status == 401


# ---------------------------------------------------------------------- strangers


def test_unknown_source_without_credentials_gets_a_fresh_challenge(
        caplog: pytest.LogCaptureFixture) -> None:
    edge = make_edge()
    v = edge.filter(request("INVITE", "101"), SCANNER, "udp", 10.0, False)
    assert isinstance(v, Respond)
    assert (v.status, v.reason) == (401, "Unauthorized")
    ch = auth.Challenge.parse(dict(v.headers)["WWW-Authenticate"])
    assert ch.realm == REALM and ch.qop == ["auth"] and not ch.stale
    assert auth.check_nonce(SECRET, ch.nonce, 10.0)
    v2 = edge.filter(request("INVITE", "101", call_id="c2"), SCANNER, "udp", 10.0, False)
    assert isinstance(v2, Respond)
    assert dict(v2.headers)["WWW-Authenticate"] != dict(v.headers)["WWW-Authenticate"]
    [line] = events(caplog, "unknown-source")
    assert line.startswith(f"SECURITY event=unknown-source src={SCANNER[0]}:{SCANNER[1]} ")
    assert edge.call_source("c1", SCANNER) is None


@pytest.mark.parametrize("method", ["INVITE", "REGISTER", "SUBSCRIBE", "MESSAGE", "OPTIONS",
                                    "NOTIFY", "REFER", "INFO", "BYE"])
@pytest.mark.parametrize(("real", "fake"), [("101", "555"), ("102", "999")])
def test_real_and_fake_extensions_get_byte_identical_answers(method: str, real: str,
                                                               fake: str) -> None:
    edge = make_edge()
    answers = []
    for i, user in enumerate((real, fake)):
        req = request(method, user, call_id=f"probe{i}")
        v = edge.filter(req, SCANNER, "udp", 5.0, False)
        assert isinstance(v, Respond) and v.status == 401
        answers.append(normalise(render(req, v), user))
    assert answers[0] == answers[1]
    assert b"101" not in answers[1] and b"102" not in answers[1]


def test_out_of_dialog_bye_with_a_to_tag_still_gets_challenged() -> None:
    edge = make_edge()
    v = edge.filter(request("BYE", "101", to_tag="guess"), SCANNER, "udp", 0.0, False)
    assert isinstance(v, Respond) and v.status == 401


def test_credentials_for_another_realm_are_treated_as_none(
        caplog: pytest.LogCaptureFixture) -> None:
    edge = make_edge()
    foreign = auth.Challenge(realm="elsewhere", nonce="n", qop=["auth"])
    authz = auth.build_authorization(foreign, method="REGISTER", uri="sip:gw.example",
                                     username="alice", password=USERS["alice"])
    v = edge.filter(request("REGISTER", "alice", authz=authz), SCANNER, "udp", 0.0, False)
    assert isinstance(v, Respond) and v.status == 401
    assert events(caplog, "auth-failure") == []


def test_local_user_with_the_right_password_is_accepted(caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    edge = make_edge()
    challenge = edge.filter(request("INVITE", "alice", src=PHONE), PHONE, "udp", 0.0, False)
    assert isinstance(challenge, Respond)
    authz = answer(challenge, "INVITE", "alice", USERS["alice"], uri="sip:alice@gw.example")
    req = request("INVITE", "alice", src=PHONE, cseq=2, authz=authz)
    assert edge.filter(req, PHONE, "udp", 1.0, False) == Accept(user="alice")
    assert edge.call_source("c1", PHONE) == CallSource.local_user("alice")
    assert events(caplog, "auth-failure") == []
    # Known now: a later challenge round does not log this phone as an unknown source.
    caplog.clear()
    edge.filter(request("INVITE", "alice", src=PHONE, call_id="c9"), PHONE, "udp", 120.0, False)
    assert events(caplog, "unknown-source") == []


def test_right_password_with_an_old_nonce_is_challenged_again_as_stale(
        caplog: pytest.LogCaptureFixture) -> None:
    edge = make_edge()
    challenge = edge.filter(request("REGISTER", "bob"), SCANNER, "udp", 0.0, False)
    assert isinstance(challenge, Respond)
    authz = answer(challenge, "REGISTER", "bob", USERS["bob"])
    v = edge.filter(request("REGISTER", "bob", cseq=2, authz=authz), SCANNER, "udp", 301.0,
                    False)
    assert isinstance(v, Respond) and v.status == 401
    assert auth.Challenge.parse(dict(v.headers)["WWW-Authenticate"]).stale
    assert events(caplog, "auth-failure") == []


def test_wrong_password_and_unknown_user_are_indistinguishable(
        caplog: pytest.LogCaptureFixture) -> None:
    edge = make_edge()
    rendered = []
    for i, (user, password) in enumerate((("alice", "guess-1"), ("zed", "guess-1"))):
        challenge = edge.filter(request("REGISTER", user, call_id=f"r{i}"), SCANNER, "udp",
                                0.0, False)
        assert isinstance(challenge, Respond)
        req = request("REGISTER", user, call_id=f"r{i}", cseq=2,
                      authz=answer(challenge, "REGISTER", user, password))
        v = edge.filter(req, SCANNER, "udp", 1.0, False)
        assert v == Respond(403, "Forbidden")
        rendered.append(normalise(render(req, v), user))
    assert rendered[0] == rendered[1]
    failures = events(caplog, "auth-failure")
    assert len(failures) == 2
    assert 'user="alice"' in failures[0] and 'reason="bad password"' in failures[0]
    assert 'user="zed"' in failures[1] and 'reason="unknown user"' in failures[1]
    assert all("guess-1" not in line for line in failures)


def test_malformed_credentials_count_as_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    edge = make_edge()
    v = edge.filter(request("REGISTER", "alice", authz="Digest username=alice"), SCANNER, "udp",
                    0.0, False)
    assert v == Respond(403, "Forbidden")
    [line] = events(caplog, "auth-failure")
    assert 'reason="malformed credentials"' in line


def test_guesser_is_locked_out_after_the_auth_failure_budget(
        caplog: pytest.LogCaptureFixture) -> None:
    edge = make_edge()
    statuses: list[object] = []
    now = 0.0
    for i in range(8):
        challenge = edge.filter(request("REGISTER", "alice", call_id=f"g{i}"), SCANNER, "udp",
                                now, False)
        if not isinstance(challenge, Respond):
            statuses.append(type(challenge).__name__)
            continue
        authz = answer(challenge, "REGISTER", "alice", f"wrong-{i}")
        v = edge.filter(request("REGISTER", "alice", call_id=f"g{i}", cseq=2, authz=authz),
                        SCANNER, "udp", now, False)
        statuses.append(v.status if isinstance(v, Respond) else type(v).__name__)
        now += 0.5
    # five wrong guesses answered 403, then silence
    assert statuses == [403] * 5 + ["Drop"] * 3
    assert len(events(caplog, "auth-failure")) == 5
    [limited] = events(caplog, "rate-limited")
    assert 'bucket="auth-failure"' in limited
    # even the right password is not heard while locked out
    challenge = edge.filter(request("REGISTER", "alice", call_id="late"), SCANNER, "udp",
                            now + 10, False)
    assert isinstance(challenge, Drop)
    # one more try a minute later
    later = now + 61.0
    challenge = edge.filter(request("REGISTER", "alice", call_id="ok"), SCANNER, "udp", later,
                            False)
    assert isinstance(challenge, Respond) and challenge.status == 401
    ok = request("REGISTER", "alice", call_id="ok", cseq=2,
                 authz=answer(challenge, "REGISTER", "alice", USERS["alice"]))
    assert edge.filter(ok, SCANNER, "udp", later, False) == Accept(user="alice")


def test_flood_is_dropped_with_one_rate_limit_event_per_window(
        caplog: pytest.LogCaptureFixture) -> None:
    edge = make_edge(limits=RateLimits(request=Budget(rate=1.0, burst=10.0)))
    kinds = [type(edge.filter(request("OPTIONS", "101", call_id=f"f{i}"), SCANNER, "udp", 0.0,
                              False)).__name__ for i in range(50)]
    assert kinds == ["Respond"] * 10 + ["Drop"] * 40
    assert edge.stats["rate_limited"] == 40
    assert len(events(caplog, "rate-limited")) == 1
    # next window: one more event, carrying the count it stood for
    for i in range(20):
        edge.filter(request("OPTIONS", "101", call_id=f"h{i}"), SCANNER, "udp", 61.0, False)
    lines = events(caplog, "rate-limited")
    assert len(lines) == 2
    assert "suppressed=39" in lines[1]


def test_unknown_source_events_are_throttled_per_source(caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    edge = make_edge()
    other = ("203.0.113.99", 5060)
    for i in range(10):
        edge.filter(request("OPTIONS", "101", call_id=f"u{i}"), SCANNER, "udp", float(i), False)
    edge.filter(request("OPTIONS", "101", src=other), other, "udp", 5.0, False)
    lines = events(caplog, "unknown-source")
    assert len(lines) == 2
    assert f"src={other[0]}:" in lines[1]
    edge.filter(request("OPTIONS", "101", call_id="late"), SCANNER, "udp", 70.0, False)
    lines = events(caplog, "unknown-source")
    assert len(lines) == 3 and "suppressed=9" in lines[2]


def test_in_dialog_requests_are_accepted_but_still_rate_limited() -> None:
    edge = make_edge(limits=RateLimits(request=Budget(rate=1.0, burst=3.0)))
    verdicts = [edge.filter(request("INFO", "101", call_id="d", cseq=i, to_tag="x"), SCANNER,
                            "udp", 0.0, True) for i in range(5)]
    assert verdicts[:3] == [Accept()] * 3
    assert all(isinstance(v, Drop) for v in verdicts[3:])


@pytest.mark.parametrize("method", ["ACK", "CANCEL"])
def test_ack_and_cancel_cannot_be_challenged_so_pass_to_transaction_matching(
        method: str) -> None:
    edge = make_edge()
    assert edge.filter(request(method, "101"), SCANNER, "udp", 0.0, False) == Accept()
    assert edge.stats["unchallenged"] == 1


def test_source_outside_local_networks_is_dropped_with_an_event(
        caplog: pytest.LogCaptureFixture) -> None:
    edge = make_edge(local_networks=("10.0.0.0/8",))
    v = edge.filter(request("INVITE", "101"), SCANNER, "udp", 0.0, False)
    assert isinstance(v, Drop)
    assert len(events(caplog, "unknown-source")) == 1
    assert isinstance(edge.filter(request("INVITE", "101", src=PHONE), PHONE, "udp", 0.0, False),
                      Respond)


def test_source_that_is_not_an_address_is_dropped() -> None:
    edge = make_edge()
    assert isinstance(edge.filter(request("INVITE", "101"), ("not-an-ip", 5060), "udp", 0.0,
                                  False), Drop)


def test_edge_rejects_a_short_secret_and_a_quoting_realm() -> None:
    acl = SourceAcl(())
    with pytest.raises(ValueError):
        SipEdge(acl, realm="r", nonce_secret=b"short")
    with pytest.raises(ValueError):
        SipEdge(acl, realm='a"b', nonce_secret=SECRET)


# ---------------------------------------------------------------------- replays


def challenges(v: Respond) -> list[auth.Challenge]:
    return [auth.Challenge.parse(value) for name, value in v.headers
            if name == "WWW-Authenticate"]


def alice_in(edge: SipEdge, now: float = 0.0, call_id: str = "c1") -> str:
    """Alice calls in from her phone; returns the Authorization header that was accepted."""
    ch = edge.filter(request("INVITE", "alice", src=PHONE, call_id=call_id), PHONE, "udp", now,
                     False)
    assert isinstance(ch, Respond)
    authz = answer(ch, "INVITE", "alice", USERS["alice"], uri="sip:alice@gw.example")
    req = request("INVITE", "alice", src=PHONE, call_id=call_id, cseq=2, authz=authz)
    assert edge.filter(req, PHONE, "udp", now + 0.1, False) == Accept(user="alice")
    return authz


def test_captured_authorization_replayed_elsewhere_is_refused(
        caplog: pytest.LogCaptureFixture) -> None:
    edge = make_edge()
    authz = alice_in(edge)
    thief = ("198.51.100.66", 5060)
    # the same header on an INVITE to a premium number: other Request-URI, Call-ID, source
    toll = request("INVITE", "alice", src=thief, call_id="fraud1", authz=authz,
                   ruri="sip:0900123456@gw.example")
    assert edge.filter(toll, thief, "udp", 2.0, False) == Respond(403, "Forbidden")
    # the same Request-URI, but another Call-ID and source: the nonce count was used
    again = request("INVITE", "alice", src=thief, call_id="fraud2", authz=authz)
    v = edge.filter(again, thief, "udp", 3.0, False)
    assert isinstance(v, Respond) and v.status == 401
    assert all(ch.stale for ch in challenges(v))
    assert edge.call_source("fraud1", thief) is None
    assert edge.call_source("fraud2", thief) is None
    assert edge.stats["replayed"] == 1 and edge.stats["authenticated"] == 1
    failures = events(caplog, "auth-failure")
    assert len(failures) == 2
    assert 'reason="uri mismatch"' in failures[0] and f"src={thief[0]}:" in failures[0]
    assert 'reason="nonce count reused"' in failures[1]


def test_nonce_count_repeat_is_refused_and_the_next_count_accepted() -> None:
    edge = make_edge()
    authz = alice_in(edge)
    # a second request on the same dialog-less Call-ID from the same phone, same header
    same = request("INVITE", "alice", src=PHONE, cseq=3, authz=authz)
    v = edge.filter(same, PHONE, "udp", 5.0, False)
    assert isinstance(v, Respond) and v.status == 401
    nonce = auth.parse_authorization(authz)["nonce"]
    ch = auth.Challenge(realm=REALM, nonce=nonce, qop=["auth"])
    nc2 = auth.build_authorization(ch, method="INVITE", uri="sip:alice@gw.example",
                                   username="alice", password=USERS["alice"], nc=2)
    req = request("INVITE", "alice", src=PHONE, cseq=4, authz=nc2)
    assert edge.filter(req, PHONE, "udp", 6.0, False) == Accept(user="alice")
    assert edge.filter(req, PHONE, "udp", 7.0, False) != Accept()


def test_accepted_request_retransmitted_is_answered_again_not_counted_as_a_replay(
        caplog: pytest.LogCaptureFixture) -> None:
    edge = make_edge()
    authz = alice_in(edge)
    # the very request again (same Call-ID, CSeq, branch, source, header): its answer was
    # late or lost and no transaction absorbed the copy; many times, never a lock-out
    same = request("INVITE", "alice", src=PHONE, cseq=2, authz=authz)
    for i in range(20):
        assert edge.filter(same, PHONE, "udp", 0.2 + i * 0.01, False) == Accept(user="alice")
    assert edge.stats["retransmitted"] == 20 and edge.stats["replayed"] == 0
    assert events(caplog, "auth-failure") == [] and edge.stats["rate_limited"] == 0
    assert edge.call_source("c1", PHONE) == CallSource.local_user("alice")
    # the same header from another port of that address, or on another branch: a replay
    moved = request("INVITE", "alice", src=(PHONE[0], 5099), cseq=2, authz=authz)
    v = edge.filter(moved, (PHONE[0], 5099), "udp", 1.0, False)
    assert isinstance(v, Respond) and v.status == 401
    other_branch = parse_message(bytes(same).replace(b"branch=z9hG4bKc12", b"branch=z9hG4bKx"))
    assert isinstance(other_branch, Request)
    v = edge.filter(other_branch, PHONE, "udp", 1.1, False)
    assert isinstance(v, Respond) and v.status == 401
    assert edge.stats["replayed"] == 2 and edge.stats["retransmitted"] == 20


def test_answer_without_qop_is_refused_when_qop_was_offered(
        caplog: pytest.LogCaptureFixture) -> None:
    edge = make_edge()
    ch = edge.filter(request("REGISTER", "bob"), SCANNER, "udp", 0.0, False)
    assert isinstance(ch, Respond)
    [sha, md5] = challenges(ch)
    assert md5.qop == ["auth"]
    rfc2069 = auth.Challenge(realm=REALM, nonce=md5.nonce)  # the same nonce, no qop
    authz = auth.build_authorization(rfc2069, method="REGISTER", uri="sip:gw.example",
                                     username="bob", password=USERS["bob"])
    assert "qop=" not in authz
    v = edge.filter(request("REGISTER", "bob", cseq=2, authz=authz), SCANNER, "udp", 1.0,
                    False)
    assert v == Respond(403, "Forbidden")
    [line] = events(caplog, "auth-failure")
    assert 'reason="qop missing"' in line


def test_edge_offers_what_the_daemon_config_offers_by_default() -> None:
    """One default: a bare `SipEdge` challenges as the daemon does with no config key."""
    from gateway.config.schema import DEFAULT_DIGEST_ALGORITHMS

    edge = SipEdge(SourceAcl(()), realm=REALM, nonce_secret=SECRET, users=StaticUsers(USERS))
    ch = edge.filter(request("REGISTER", "bob"), SCANNER, "udp", 0.0, False)
    assert isinstance(ch, Respond)
    offered = [c.algorithm for c in challenges(ch)]
    assert offered == list(DEFAULT_DIGEST_ALGORITHMS) == ["MD5", "SHA-256"]


def test_challenge_offers_sha256_first_and_accepts_either_answer() -> None:
    edge = make_edge(algorithms=("SHA-256", "MD5"))
    ch = edge.filter(request("REGISTER", "bob"), SCANNER, "udp", 0.0, False)
    assert isinstance(ch, Respond)
    assert [name for name, _ in ch.headers] == ["WWW-Authenticate", "WWW-Authenticate"]
    offered = challenges(ch)
    assert [c.algorithm for c in offered] == ["SHA-256", "MD5"]
    assert offered[0].nonce == offered[1].nonce
    for nc, c in enumerate(offered, start=1):
        authz = auth.build_authorization(c, method="REGISTER", uri="sip:gw.example",
                                         username="bob", password=USERS["bob"], nc=nc)
        assert f"algorithm={c.algorithm}" in authz
        req = request("REGISTER", "bob", cseq=1 + nc, authz=authz)
        assert edge.filter(req, SCANNER, "udp", 1.0, False) == Accept(user="bob")
    assert len(auth.parse_authorization(
        answer_with(offered[0], "bob"))["response"]) == 64


def test_an_md5_only_offer_for_old_phones_refuses_other_algorithms(
        caplog: pytest.LogCaptureFixture) -> None:
    edge = SipEdge(SourceAcl(()), realm=REALM, nonce_secret=SECRET, users=StaticUsers(USERS),
                   digest_algorithms=("md5",))
    ch = edge.filter(request("REGISTER", "bob"), SCANNER, "udp", 0.0, False)
    assert isinstance(ch, Respond)
    [md5] = challenges(ch)
    assert md5.algorithm == "MD5"
    sha = auth.Challenge(realm=REALM, nonce=md5.nonce, algorithm="SHA-256", qop=["auth"])
    v = edge.filter(request("REGISTER", "bob", cseq=2, authz=answer_with(sha, "bob")), SCANNER,
                    "udp", 1.0, False)
    assert v == Respond(403, "Forbidden")
    assert 'reason="algorithm not offered"' in events(caplog, "auth-failure")[0]
    assert edge.filter(request("REGISTER", "bob", cseq=3, authz=answer_with(md5, "bob")),
                       SCANNER, "udp", 1.0, False) == Accept(user="bob")
    for bad in ((), ("SHA-1",), ("MD5-sess",)):
        with pytest.raises(ValueError, match="digest_algorithms"):
            SipEdge(SourceAcl(()), realm=REALM, nonce_secret=SECRET, digest_algorithms=bad)


def answer_with(ch: auth.Challenge, user: str) -> str:
    return auth.build_authorization(ch, method="REGISTER", uri="sip:gw.example", username=user,
                                    password=USERS[user])


def test_strangers_leave_no_nonce_state_and_logins_stay_bounded() -> None:
    edge = make_edge()
    for i in range(300):  # guessers, each from its own address: nothing is remembered
        src = (f"198.18.{i // 250}.{i % 250 + 1}", 5060)
        ch = edge.filter(request("REGISTER", "bob", src=src, call_id=f"s{i}"), src, "udp",
                         0.0, False)
        assert isinstance(ch, Respond)
        guess = auth.build_authorization(challenges(ch)[0], method="REGISTER",
                                         uri="sip:gw.example", username="bob",
                                         password=f"guess{i}")
        edge.filter(request("REGISTER", "bob", src=src, call_id=f"s{i}", cseq=2, authz=guess),
                    src, "udp", 0.0, False)
    assert edge.nonces_tracked == 0
    first: str | None = None
    logins = MAX_NONCES + 500
    for i in range(logins):
        src = (f"10.{i // 60000}.{i // 250 % 240}.{i % 250 + 1}", 5060)
        now = 1.0 + i * 0.01  # 4,596 logins in 46 s, all within the nonce lifetime
        ch = edge.filter(request("REGISTER", "bob", src=src, call_id=f"l{i}"), src, "udp",
                         now, False)
        assert isinstance(ch, Respond)
        authz = answer_with(challenges(ch)[1], "bob")
        first = first or authz
        assert edge.filter(request("REGISTER", "bob", src=src, call_id=f"l{i}", cseq=2,
                                   authz=authz), src, "udp", now, False) == Accept(user="bob")
    assert edge.nonces_tracked == MAX_NONCES
    # the first login's nonce was forgotten, yet its header is still not accepted again
    assert first is not None
    v = edge.filter(request("REGISTER", "bob", src=PHONE, call_id="late", authz=first), PHONE,
                    "udp", 60.0, False)
    assert isinstance(v, Respond) and v.status == 401 and all(c.stale for c in challenges(v))


def test_our_registration_client_against_the_edge_with_a_stale_nonce(
        caplog: pytest.LogCaptureFixture) -> None:
    """Our own client picks SHA-256 and, on stale=true, answers again without failing."""
    edge = make_edge()
    rc = RegistrationClient("local", AccountSettings(
        aor="sip:alice@gw.example", registrar_host=PHONE[0], registrar_port=5060,
        username="alice", password=USERS["alice"]), local_host="10.0.0.99", local_port=5060)
    rc.start(0.0)
    verdicts: list[object] = []
    sent: list[Request] = []
    # the client's answer to the first challenge is delayed past the nonce's lifetime
    for now in (0.0, 301.0, 301.5):
        [out] = rc.messages_to_send()
        req = parse_message(bytes(out))
        assert isinstance(req, Request)
        sent.append(req)
        v = edge.filter(req, ("10.0.0.99", 5060), "udp", now, False)
        verdicts.append(v)
        if isinstance(v, Respond):
            resp = parse_message(render(req, v))
            assert isinstance(resp, Response)
            rc.receive_response(resp, now)
    assert [getattr(v, "status", "accept") for v in verdicts] == [401, 401, "accept"]
    assert verdicts[-1] == Accept(user="alice")
    assert isinstance(verdicts[1], Respond) and all(c.stale for c in challenges(verdicts[1]))
    for req in sent[1:]:
        params = auth.parse_authorization(req.headers.get("Authorization") or "")
        assert params["algorithm"] == "SHA-256" and params["qop"] == "auth"
    assert events(caplog, "auth-failure") == []
    assert rc.events() == []  # no failure reported while it re-authenticated
    assert edge.stats["stale"] == 1 and edge.stats["authenticated"] == 1


# ---------------------------------------------------------------------- route permissions


def guard(**kwargs: object) -> RouteGuard:
    from gateway.security.permissions import Permissions

    return RouteGuard(Permissions(default_policies(trunks=["main"], lines=["1", "2"],
                                                   **kwargs)))  # type: ignore[arg-type]


def test_lines_may_use_trunk_routes_for_national_numbers() -> None:
    assert guard().check(CallSource.line("1"), "5551234", "trunk:main") == Allowed(
        "trunk:main", "5551234")
    assert guard().check(CallSource.local_user("alice"), "5551234", "trunk:main").allowed


@pytest.mark.parametrize("number", ["0033142345678", "011441234", "+441234", "19005551234",
                                    "09001234"])
def test_international_and_premium_stay_denied_and_are_logged(
        number: str, caplog: pytest.LogCaptureFixture) -> None:
    d = guard().check(CallSource.line("1"), number, "trunk:main", call_id="x1")
    assert isinstance(d, Denied) and d.code == "number" and d.status == 403
    [line] = events(caplog, "call-denied")
    assert line.startswith("SECURITY event=call-denied src=0.0.0.0:0 ")
    assert 'source="line:1"' in line


def test_allow_prefix_opens_one_country_only() -> None:
    g = guard(allow=("0044",))
    assert g.check(CallSource.line("1"), "00441234", "trunk:main").allowed
    assert not g.check(CallSource.line("1"), "00331234", "trunk:main").allowed


def test_trunk_calls_may_ring_lines_but_not_hairpin_out() -> None:
    g = guard()
    src = CallSource.trunk("main")
    assert g.check(src, "101", "local").allowed
    d = g.check(src, "5551234", "trunk:main", src_addr=(TRUNK_IP, TRUNK_PORT))
    assert isinstance(d, Denied) and d.code == "source"
    assert guard(trunk_hairpin=True).check(src, "5551234", "trunk:main").allowed


def test_gsm_and_fxo_are_closed_without_a_policy() -> None:
    for target in ("gsm", "gsm:1", "fxo"):
        d = guard().check(CallSource.line("1"), "5551234", target)
        assert isinstance(d, Denied) and d.code == "no-policy"


def test_unknown_line_may_not_use_a_trunk() -> None:
    d = guard().check(CallSource.line("lobby"), "5551234", "trunk:main")
    assert isinstance(d, Denied) and d.code == "source"


def test_admit_counts_and_release_frees() -> None:
    from gateway.security.permissions import Permissions, TargetPolicy

    g = RouteGuard(Permissions(default_policies(
        trunks=["main"], lines=["1"],
        extra=[TargetPolicy("trunk:main", sources=("1",), max_calls=1)])))
    assert g.admit("a", CallSource.line("1"), "5551234", "trunk:main").allowed
    d = g.admit("b", CallSource.line("1"), "5551234", "trunk:main")
    assert isinstance(d, Denied) and d.status == 503
    assert g.release("a")
    assert g.admit("b", CallSource.line("1"), "5551234", "trunk:main").allowed
    assert g.denied == {"busy": 1}


def test_build_route_guard_from_config() -> None:
    config = load_config_text(textwrap.dedent("""
        gateway: {name: office-gw, state_dir: /tmp/x}
        sip: {listen: 127.0.0.1:5070, public_host: 127.0.0.1}
        trunks:
          - {name: main, registrar: "127.0.0.1:5090"}
        lines:
          - {name: "kitchen", backend: sim, number: "101"}
        """), route_probe=lambda toward: None)
    g = build_route_guard(config)
    assert g.check(CallSource.line("kitchen"), "5551234", "trunk:main").allowed
    assert not g.check(CallSource.line("kitchen"), "0090123", "trunk:main").allowed
