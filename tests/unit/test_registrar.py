"""The survivable registrar (gateway/sip/registrar.py): RFC 3261 10.3 as the module lists it,
and its wiring in the user agent behind the edge's digest check."""

from __future__ import annotations

import os

import pytest

from gateway.runtime.edge import SipEdge, StaticUsers
from gateway.security.acl import SourceAcl
from gateway.sip import auth
from gateway.sip.events import Accept, BindingsChanged, Respond
from gateway.sip.headers import NameAddr
from gateway.sip.message import Request, Response, build_request, parse_message
from gateway.sip.registrar import Binding, Limits, Registrar
from gateway.sip.ua import UserAgent

SRC = ("203.0.113.7", 40123)  # the phone's public (NATed) source
LIMITS = Limits(min_expires=60, max_expires=3600, default_expires=600, max_contacts=3)


def register(user: str = "201", *, contacts: tuple[str, ...] = ("<sip:201@192.168.1.20:5060>",),
             expires: str | None = None, call_id: str = "c1", cseq: int = 1,
             to_user: str | None = None, extra: tuple[tuple[str, str], ...] = ()) -> Request:
    headers = [("Contact", c) for c in contacts]
    if expires is not None:
        headers.append(("Expires", expires))
    headers.extend(extra)
    return build_request("REGISTER", "sip:gw.example", from_addr=f"<sip:{user}@gw.example>;tag=a",
                         to_addr=f"<sip:{to_user or user}@gw.example>", call_id=call_id,
                         cseq=cseq, via=f"SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK{call_id}.{cseq}",
                         extra=headers)


def reg(**kw: object) -> Registrar:
    return Registrar(kw.pop("limits", LIMITS), "gw.example", **kw)  # type: ignore[arg-type]


def contacts(answer: Respond) -> dict[str, str | None]:
    """Contact URI -> its expires, from a 200."""
    out: dict[str, str | None] = {}
    for name, value in answer.headers:
        if name == "Contact":
            na = NameAddr.parse(value)
            out[str(na.uri)] = na.params.get("expires")
    return out


# ---------------------------------------------------------------------- binding and expiry


def test_register_binds_with_the_source_and_transport_and_answers_every_contact() -> None:
    r = reg()
    answer = r.handle(register(expires="300"), SRC, "UDP", "201", 100.0)
    assert answer.status == 200
    assert contacts(answer) == {"sip:201@192.168.1.20:5060": "300"}
    [b] = r.lookup("201", 100.0)
    assert (b.contact, b.source, b.transport, b.expires_at) == (
        "sip:201@192.168.1.20:5060", SRC, "udp", 400.0)
    [event] = r.events()
    assert event == BindingsChanged("201", (b,))
    assert r.events() == []


def test_contact_expires_param_beats_the_header_and_the_default_applies_without_either() -> None:
    r = reg()
    r.handle(register(contacts=("<sip:201@10.0.0.1>;expires=120", "<sip:201@10.0.0.2>"),
                      expires="900"), SRC, "udp", "201", 0.0)
    got = {b.contact: b.expires_at for b in r.lookup("201", 0.0)}
    assert got == {"sip:201@10.0.0.1": 120.0, "sip:201@10.0.0.2": 900.0}
    r2 = reg()
    r2.handle(register(), SRC, "udp", "201", 0.0)
    assert r2.lookup("201", 0.0)[0].expires_at == 600.0


def test_too_brief_gets_423_with_min_expires_and_binds_nothing() -> None:
    r = reg()
    answer = r.handle(register(expires="30"), SRC, "udp", "201", 0.0)
    assert (answer.status, dict(answer.headers).get("Min-Expires")) == (423, "60")
    assert r.lookup("201", 0.0) == [] and r.events() == []


def test_too_long_is_shortened_to_max_expires() -> None:
    r = reg()
    answer = r.handle(register(expires="86400"), SRC, "udp", "201", 0.0)
    assert contacts(answer) == {"sip:201@192.168.1.20:5060": "3600"}


def test_bindings_expire_on_the_timer_with_an_event() -> None:
    r = reg()
    r.handle(register(expires="60"), SRC, "udp", "201", 10.0)
    r.handle(register("202", contacts=("<sip:202@10.0.0.2>",), expires="120"), SRC, "udp",
             "202", 10.0)
    r.events()
    assert r.get_timer() == 70.0
    r.expire(69.9)
    assert len(r) == 2
    r.expire(70.0)
    assert r.lookup("201", 70.0) == [] and len(r.lookup("202", 70.0)) == 1
    assert r.events() == [BindingsChanged("201", ())]
    assert r.get_timer() == 130.0
    # a refresh moves the deadline: the old one is not reported any more
    r.handle(register("202", contacts=("<sip:202@10.0.0.2>",), expires="600", cseq=2),
             SRC, "udp", "202", 100.0)
    assert r.get_timer() == 700.0
    r.expire(130.0)
    assert len(r.lookup("202", 130.0)) == 1


def test_lookup_hides_a_binding_past_its_time_before_the_timer_ran() -> None:
    r = reg()
    r.handle(register(expires="60"), SRC, "udp", "201", 0.0)
    assert r.lookup("201", 59.0) and r.lookup("201", 60.0) == []


def test_expires_zero_removes_one_contact_and_keeps_the_others() -> None:
    r = reg()
    r.handle(register(contacts=("<sip:201@10.0.0.1>", "<sip:201@10.0.0.2>")), SRC, "udp",
             "201", 0.0)
    answer = r.handle(register(contacts=("<sip:201@10.0.0.1>;expires=0",), cseq=2), SRC,
                      "udp", "201", 1.0)
    assert list(contacts(answer)) == ["sip:201@10.0.0.2"]


def test_star_with_expires_zero_removes_everything() -> None:
    r = reg()
    r.handle(register(contacts=("<sip:201@10.0.0.1>", "<sip:201@10.0.0.2>")), SRC, "udp",
             "201", 0.0)
    r.events()
    answer = r.handle(register(contacts=("*",), expires="0", call_id="other"), SRC, "udp",
                      "201", 1.0)
    assert answer.status == 200 and contacts(answer) == {}
    assert r.lookup("201", 1.0) == [] and r.events() == [BindingsChanged("201", ())]


@pytest.mark.parametrize("bad", [
    {"contacts": ("*",), "expires": "60"},
    {"contacts": ("*",)},
    {"contacts": ("*", "<sip:201@10.0.0.1>"), "expires": "0"},
    {"contacts": ("<tel:+4930123>",)},
    {"contacts": ("<sip:201@10.0.0.1>",), "expires": "soon"},
    {"contacts": ("<sip:201@10.0.0.1>;expires=-1",)},
])
def test_star_misuse_and_bad_contacts_get_400(bad: dict[str, object]) -> None:
    r = reg()
    r.handle(register(), SRC, "udp", "201", 0.0)
    answer = r.handle(register(cseq=2, **bad), SRC, "udp", "201", 1.0)  # type: ignore[arg-type]
    assert answer.status == 400
    assert len(r.lookup("201", 1.0)) == 1


def test_a_request_without_contact_is_a_query_listing_the_bindings_with_time_left() -> None:
    r = reg()
    r.handle(register(expires="600"), SRC, "udp", "201", 0.0)
    r.events()
    answer = r.handle(register(contacts=(), cseq=2), SRC, "udp", "201", 100.0)
    assert contacts(answer) == {"sip:201@192.168.1.20:5060": "500"}
    assert r.events() == []


# ---------------------------------------------------------------------- ordering, limits


def test_same_call_id_with_an_old_cseq_is_refused_500_and_changes_nothing() -> None:
    r = reg()
    r.handle(register(expires="600", cseq=5), SRC, "udp", "201", 0.0)
    r.events()
    answer = r.handle(register(expires="0", cseq=4), SRC, "udp", "201", 1.0)
    assert answer.status == 500 and dict(answer.headers).get("Retry-After") == "1"
    assert len(r.lookup("201", 1.0)) == 1 and r.events() == []
    for cseq in (5, 4):  # '*' with a CSeq not higher than a binding's of the same Call-ID
        stale_star = r.handle(register(contacts=("*",), expires="0", cseq=cseq), SRC, "udp",
                              "201", 1.0)
        assert stale_star.status == 500 and len(r.lookup("201", 1.0)) == 1
    assert r.stats["out_of_order"] == 3
    # a new Call-ID (the phone rebooted) replaces the binding whatever its CSeq
    assert r.handle(register(expires="0", cseq=1, call_id="c2"), SRC, "udp", "201",
                    1.0).status == 200
    assert r.lookup("201", 1.0) == []


def test_the_same_cseq_again_is_a_retransmission_answered_200_and_not_applied() -> None:
    r = reg()
    r.handle(register(expires="600", cseq=5), SRC, "udp", "201", 0.0)
    r.events()
    again = r.handle(register(expires="0", cseq=5), SRC, "udp", "201", 10.0)
    assert again.status == 200
    assert contacts(again) == {"sip:201@192.168.1.20:5060": "590"}  # not removed, not renewed
    assert r.events() == [] and r.stats["retransmissions"] == 1


def test_a_higher_cseq_refreshes() -> None:
    r = reg()
    r.handle(register(expires="100", cseq=1), SRC, "udp", "201", 0.0)
    assert r.handle(register(expires="200", cseq=2), SRC, "udp", "201", 50.0).status == 200
    assert r.lookup("201", 50.0)[0].expires_at == 250.0
    assert r.stats["refreshed"] == 1 and r.stats["registered"] == 1


def test_max_contacts_drops_the_oldest_and_refuses_a_request_listing_too_many() -> None:
    r = reg()
    for i in range(4):
        r.handle(register(contacts=(f"<sip:201@10.0.0.{i}>",), call_id=f"c{i}"), SRC, "udp",
                 "201", float(i))
    assert sorted(b.contact for b in r.lookup("201", 4.0)) == [
        "sip:201@10.0.0.1", "sip:201@10.0.0.2", "sip:201@10.0.0.3"]
    many = tuple(f"<sip:201@10.0.1.{i}>" for i in range(4))
    answer = r.handle(register(contacts=many, call_id="c9"), SRC, "udp", "201", 5.0)
    assert answer.status == 403
    assert len(r.lookup("201", 5.0)) == 3


def test_the_same_uri_spelled_differently_is_one_binding() -> None:
    r = reg()
    r.handle(register(contacts=("<sip:201@Phone.Example:5060>",)), SRC, "udp", "201", 0.0)
    r.handle(register(contacts=("<sip:201@phone.example:5060>",), cseq=2), SRC, "udp", "201",
             1.0)
    assert len(r.lookup("201", 1.0)) == 1


def test_instance_id_is_kept_and_a_rebooted_phone_replaces_its_old_binding() -> None:
    r = reg()
    inst = '"<urn:uuid:00000000-0000-1000-8000-000a95a0e128>"'
    r.handle(register(contacts=(f"<sip:201@192.168.1.20:5060>;+sip.instance={inst};reg-id=1",),
                      call_id="boot1"), ("203.0.113.7", 40000), "udp", "201", 0.0)
    answer = r.handle(register(contacts=(f"<sip:201@192.168.1.20:5062>;+sip.instance={inst}"
                                         ";reg-id=1",), call_id="boot2"),
                      ("203.0.113.7", 41000), "udp", "201", 10.0)
    [b] = r.lookup("201", 10.0)
    assert (b.contact, b.source, b.instance, b.reg_id) == (
        "sip:201@192.168.1.20:5062", ("203.0.113.7", 41000), inst, "1")
    [value] = [v for n, v in answer.headers if n == "Contact"]
    assert f"+sip.instance={inst}" in value and "reg-id=1" in value


# ---------------------------------------------------------------------- who may register


def test_to_user_must_be_the_authenticated_user() -> None:
    r = reg()
    answer = r.handle(register("202"), SRC, "udp", "201", 0.0)
    assert answer.status == 403
    assert r.lookup("202", 0.0) == [] and r.lookup("201", 0.0) == []


def test_no_authenticated_user_is_refused() -> None:
    r = reg()
    assert r.handle(register(), SRC, "udp", None, 0.0).status == 403
    assert len(r) == 0


def test_only_configured_users_hold_bindings() -> None:
    r = reg(users=["201"])
    assert r.handle(register("999"), SRC, "udp", "999", 0.0).status == 404
    assert r.handle(register("201"), SRC, "udp", "201", 0.0).status == 200


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        Registrar(Limits(min_expires=0), "x")
    with pytest.raises(ValueError):
        Registrar(Limits(max_contacts=0), "x")
    with pytest.raises(ValueError):
        Registrar(Limits(min_expires=700), "x")


# ---------------------------------------------------------------------- snapshot


def test_snapshot_and_restore_keep_bindings_with_the_time_left() -> None:
    r = reg()
    inst = '"<urn:uuid:1>"'
    r.handle(register(contacts=(f"<sip:201@10.0.0.1>;+sip.instance={inst}",), expires="600",
                      cseq=7), SRC, "tcp", "201", 1000.0)
    r.handle(register("202", contacts=("<sip:202@10.0.0.2>",), expires="60"), SRC, "udp",
             "202", 1000.0)
    snap = r.snapshot(1030.0)
    assert len(snap["bindings"]) == 2  # type: ignore[arg-type]
    fresh = reg(users=["201"])  # 202 is no longer a configured phone
    assert fresh.restore(snap, 5.0) == 1
    [b] = fresh.lookup("201", 5.0)
    assert b == Binding("201", "sip:201@10.0.0.1", SRC, "tcp", 575.0, "c1", 7, inst, None, -25.0)
    assert fresh.events() == [BindingsChanged("201", (b,))]
    assert fresh.get_timer() == 575.0
    # the ordering check survives the restart too
    again = register(contacts=(f"<sip:201@10.0.0.9>;+sip.instance={inst}",), cseq=6)
    assert fresh.handle(again, SRC, "udp", "201", 6.0).status == 500


def test_restore_skips_expired_and_malformed_rows() -> None:
    r = reg()
    good = {"user": "201", "contact": "sip:201@10.0.0.1", "source": ["1.2.3.4", 5],
            "transport": "udp", "expires_in": 30, "call_id": "c", "cseq": 1,
            "instance": None, "reg_id": None}
    rows = [good, {**good, "contact": "sip:201@10.0.0.2", "expires_in": 0},
            {**good, "contact": "not a uri"}, {**good, "source": "1.2.3.4"}, "junk",
            {**good, "cseq": "1"}]
    assert r.restore({"version": 1, "bindings": rows}, 0.0) == 1
    with pytest.raises(ValueError):
        r.restore({"version": 99, "bindings": []}, 0.0)


# ---------------------------------------------------------------------- in the user agent


def ua_with(filter_user: str | None, *, registrar: bool = True) -> UserAgent:
    ua = UserAgent(local_host="192.0.2.1", local_port=5060, instance_id="urn:uuid:x",
                   request_filter=lambda *a: Accept(user=filter_user))
    if registrar:
        ua.registrar = reg()
    return ua


def send(ua: UserAgent, req: Request, now: float = 0.0,
         src: tuple[str, int] = SRC) -> Response:
    ua.receive_datagram(bytes(req), src, now)
    [out] = ua.messages_out()
    resp = parse_message(out.data)
    assert isinstance(resp, Response)
    assert out.dest == (src[0], 5060)  # no rport in our Via: the sent-by port
    return resp


def test_ua_without_a_registrar_answers_405() -> None:
    assert send(ua_with("201", registrar=False), register()).status == 405


def test_ua_hands_register_to_the_registrar_with_the_filter_s_user() -> None:
    ua = ua_with("201")
    resp = send(ua, register(expires="120"), 5.0)
    assert resp.status == 200 and resp.to_tag
    assert resp.headers.get("Contact") == "<sip:201@192.168.1.20:5060>;expires=120"
    event = ua.next_event()
    assert isinstance(event, BindingsChanged) and event.user == "201"
    assert event.bindings[0].source == SRC
    timer = ua.get_timer()
    assert timer is not None and timer <= 125.0
    ua.handle_timer(124.9)
    assert ua.next_event() is None
    ua.handle_timer(125.0)
    assert ua.next_event() == BindingsChanged("201", ())


def test_ua_refuses_register_accepted_without_a_user_and_for_another_user() -> None:
    assert send(ua_with(None), register()).status == 403
    assert send(ua_with("202"), register()).status == 403


def test_edge_and_ua_together_digest_then_bind() -> None:
    edge = SipEdge(SourceAcl(()), realm="gw", nonce_secret=os.urandom(32),
                   users=StaticUsers({"201": "secret-201!", "202": "secret-202!"}),
                   digest_algorithms=("MD5",))
    ua = UserAgent(local_host="192.0.2.1", local_port=5060, instance_id="urn:uuid:x",
                   request_filter=edge.filter)
    ua.registrar = reg()
    first = send(ua, register(cseq=1), 0.0)
    assert first.status == 401
    challenge = auth.Challenge.parse(first.headers.get("WWW-Authenticate") or "")
    authz = auth.build_authorization(challenge, method="REGISTER", uri="sip:gw.example",
                                     username="201", password="secret-201!")
    ok = send(ua, register(cseq=2, extra=(("Authorization", authz),)), 1.0)
    assert ok.status == 200 and len(ua.registrar.lookup("201", 1.0)) == 1
    # 202's own password, registering 201's extension: refused
    authz2 = auth.build_authorization(challenge, method="REGISTER", uri="sip:gw.example",
                                      username="202", password="secret-202!", nc=2)
    other = send(ua, register("201", cseq=3, call_id="x", extra=(("Authorization", authz2),)),
                 2.0)
    assert other.status == 403
    # a wrong password never reaches the registrar
    bad = auth.build_authorization(challenge, method="REGISTER", uri="sip:gw.example",
                                   username="201", password="wrong-password", nc=3)
    assert send(ua, register(cseq=4, extra=(("Authorization", bad),)), 3.0).status == 403
    assert [b.call_id for b in ua.registrar.lookup("201", 3.0)] == ["c1"]


def _pending_invite(ua: UserAgent, call_id: str) -> None:
    """An INVITE the application has not answered: its transaction is not evictable."""
    invite = build_request("INVITE", "sip:202@gw.example", from_addr="<sip:201@gw>;tag=i",
                           to_addr="<sip:202@gw.example>", call_id=call_id, cseq=1,
                           via=f"SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK{call_id}")
    ua.receive_datagram(bytes(invite), SRC, 0.0)
    ua.messages_out()


def test_a_full_transaction_table_answers_registers_statelessly_not_503() -> None:
    ua = UserAgent(local_host="192.0.2.1", local_port=5060, instance_id="urn:uuid:x",
                   request_filter=lambda req, *a: Accept(user=req.to_addr.uri.user),
                   max_server_transactions=2)
    ua.registrar = reg()
    # two calls ringing hold the table: nothing in it only absorbs retransmissions
    _pending_invite(ua, "i1")
    _pending_invite(ua, "i2")
    statuses = [send(ua, register(str(200 + i), contacts=(f"<sip:{200 + i}@10.0.0.{i}>",),
                                  call_id=f"c{i}"), 0.1 * i).status for i in range(1, 6)]
    assert statuses == [200] * 5
    assert ua.table_sizes()["server_transactions"] == 2
    assert ua.stats["stateless_registers"] == 5 and ua.stats["overload"] == 0
    assert len(ua.registrar) == 5
    # the last one retransmitted (no transaction absorbs it): the same 200 again, no change
    ua.next_event()
    again = send(ua, register("205", contacts=("<sip:205@10.0.0.5>",), call_id="c5"), 1.0)
    assert again.status == 200 and ua.registrar.stats["retransmissions"] == 1
    # other requests still get the overload answer
    options = build_request("OPTIONS", "sip:gw.example", from_addr="<sip:201@gw>;tag=a",
                            to_addr="<sip:gw.example>", call_id="o1", cseq=1,
                            via="SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bKo1")
    assert send(ua, options, 1.0).status == 503
