"""Redirects, re-INVITE with 491 glare, session timers and INFO DTMF (fake clock)."""

from __future__ import annotations

import random

from ua_wire import (
    ANSWER,
    HOLD,
    OFFER,
    drain,
    events,
    make_ua,
    raw_request,
    reply,
    requests,
    responses,
)

from gateway.sip.events import (
    CallAnswered,
    CallEnded,
    CallUpdated,
    DtmfInfo,
    IncomingCall,
    ReinviteAnswered,
    ReinviteFailed,
)
from gateway.sip.message import Request, Response, parse_message
from gateway.sip.ua import UserAgent

A = ("127.0.0.1", 5060)
B = ("127.0.0.1", 5070)
PEER = ("127.0.0.1", 5080)


class Net:
    """Two agents back to back; `log` keeps (now, src, message)."""

    def __init__(self, a: UserAgent, b: UserAgent) -> None:
        self.uas = {A: a, B: b}
        self.log: list[tuple[float, tuple[str, int], Request | Response]] = []

    def pump(self, now: float) -> None:
        for _ in range(50):
            moved = False
            for src, ua in self.uas.items():
                for out in ua.messages_out():
                    moved = True
                    self.log.append((now, src, parse_message(out.data)))
                    if out.dest in self.uas:
                        self.uas[out.dest].receive_datagram(out.data, src, now)
            if not moved:
                return

    def run(self, start: float, end: float) -> None:
        now = start
        while True:
            due = [d for ua in self.uas.values() if (d := ua.get_timer()) is not None]
            if not due or min(due) > end:
                return
            now = max(now, min(due))
            for ua in self.uas.values():
                ua.handle_timer(now)
            self.pump(now)

    def sent(self, src: tuple[str, int], method: str) -> list[tuple[float, Request]]:
        return [(t, m) for t, s, m in self.log
                if s == src and isinstance(m, Request) and m.method == method]


def _call(seed_a: int = 1, seed_b: int = 2) -> tuple[Net, UserAgent, UserAgent, str]:
    a = make_ua(A, rng=random.Random(seed_a))
    b = make_ua(B, rng=random.Random(seed_b))
    net = Net(a, b)
    call_id = a.invite(target_uri="sip:200@127.0.0.1:5070", from_uri="sip:100@127.0.0.1",
                       dest=B, sdp=OFFER, now=0.0)
    net.pump(0.0)
    events(b)
    b.answer(call_id, ANSWER, 0.1)
    net.pump(0.1)
    assert events(a) == [CallAnswered(call_id, ANSWER)]
    return net, a, b, call_id


def _advance(ua: UserAgent, until: float) -> None:
    """Fire every deadline up to `until`, draining output as a network would."""
    while (t := ua.get_timer()) is not None and t <= until:
        ua.handle_timer(t)
        for _, msg in drain(ua):
            assert not (isinstance(msg, Request) and msg.method in ("BYE", "INVITE")), msg


# -- 3xx redirects -----------------------------------------------------------------------


def _invite_raw(ua: UserAgent) -> tuple[str, Request]:
    call_id = ua.invite(target_uri="sip:200@127.0.0.1:5080", from_uri="sip:100@127.0.0.1",
                        dest=PEER, sdp=OFFER, now=0.0)
    ((_, inv),) = requests(drain(ua), "INVITE")
    return call_id, inv


def test_302_is_followed_to_the_contact_with_ack_for_the_302() -> None:
    ua = make_ua(A)
    call_id, inv = _invite_raw(ua)
    ua.receive_datagram(reply(inv, 302, extra="Contact: <sip:300@127.0.0.1:5090>"), PEER, 0.1)
    out = drain(ua)
    assert [o.dest for o, _ in requests(out, "ACK")] == [PEER]
    ((o2, inv2),) = requests(out, "INVITE")
    assert o2.dest == ("127.0.0.1", 5090) and inv2.uri == "sip:300@127.0.0.1:5090"
    assert inv2.call_id == call_id and inv2.cseq.number == inv.cseq.number + 1
    assert events(ua) == []


def test_redirect_loop_and_hop_limit_end_the_call_with_the_last_status() -> None:
    ua = make_ua(A)
    call_id, inv = _invite_raw(ua)
    # a redirect back to the original URI is not revisited
    ua.receive_datagram(reply(inv, 302, extra="Contact: <sip:200@127.0.0.1:5080>"), PEER, 0.1)
    assert requests(drain(ua), "INVITE") == []
    assert events(ua) == [CallEnded(call_id, "redirect failed", 302)]

    ua2 = make_ua(A)
    call_id2, cur = _invite_raw(ua2)
    hops = 0
    for n in range(5):
        ua2.receive_datagram(reply(cur, 301, extra=f"Contact: <sip:{400 + n}@127.0.0.1:5080>"),
                             PEER, 0.1 * (n + 1))
        new = requests(drain(ua2), "INVITE")
        if not new:
            break
        hops += 1
        cur = new[0][1]
    assert hops == 3
    assert events(ua2) == [CallEnded(call_id2, "redirect failed", 301)]


# -- re-INVITE and glare -----------------------------------------------------------------


def test_hold_reinvite_answered() -> None:
    net, a, b, call_id = _call()
    a.reinvite(call_id, HOLD, 1.0)
    net.pump(1.0)
    assert events(b) == [CallUpdated(call_id, HOLD)]
    b.answer_reinvite(call_id, ANSWER, 1.1)
    net.pump(1.1)
    assert events(a) == [ReinviteAnswered(call_id, ANSWER)]
    ((_, reinv),) = net.sent(A, "INVITE")[1:]
    acks = net.sent(A, "ACK")
    assert acks[-1][1].cseq.number == reinv.cseq.number
    net.run(1.1, 10.0)
    assert len([m for _, s, m in net.log if s == B and isinstance(m, Response)
                and m.status == 200 and m.cseq.method == "INVITE"]) == 2  # no 2xx resends


def test_reinvite_refused_reports_failure_and_call_goes_on() -> None:
    net, a, b, call_id = _call()
    a.reinvite(call_id, HOLD, 1.0)
    net.pump(1.0)
    events(b)
    b.reject_reinvite(call_id, 488, 1.1)
    net.pump(1.1)
    assert events(a) == [ReinviteFailed(call_id, 488)]
    assert a.call_state(call_id) == "confirmed"


def test_glare_gets_491_and_retries_after_rfc_delays() -> None:
    net, a, b, call_id = _call()
    a.reinvite(call_id, HOLD, 1.0)
    b.reinvite(call_id, HOLD, 1.0)
    net.pump(1.0)
    statuses = [m.status for _, _, m in net.log if isinstance(m, Response)
                and m.cseq.method == "INVITE" and m.status >= 400]
    assert statuses == [491, 491]
    assert a.stats["glare"] >= 1 and b.stats["glare"] >= 1
    # A owns the Call-ID: 2.1-4 s; B: 0-2 s. B retries first and is answered.
    b_retry = b.get_timer()
    assert b_retry is not None and 1.0 <= b_retry <= 3.0
    net.run(1.0, 3.05)
    assert [e for e in events(a) if isinstance(e, CallUpdated)] == [CallUpdated(call_id, HOLD)]
    a.answer_reinvite(call_id, HOLD, 3.1)
    net.pump(3.1)
    assert events(b) == [ReinviteAnswered(call_id, HOLD)]
    net.run(3.1, 5.1)
    retries = [t for t, m in net.sent(A, "INVITE")][1:]
    assert len(retries) == 2 and 3.1 <= retries[1] <= 5.0
    assert [e for e in events(b) if isinstance(e, CallUpdated)] == [CallUpdated(call_id, HOLD)]


# -- session timers ---------------------------------------------------------------------


def test_session_interval_below_minimum_gets_422() -> None:
    ua = make_ua(A)
    ua.receive_datagram(raw_request("INVITE", body=OFFER, extra="Session-Expires: 60"), B, 0.0)
    (resp,) = responses(drain(ua))
    assert resp.status == 422 and resp.headers.get("Min-SE") == "90"
    assert events(ua) == []


def test_peer_refresher_silent_means_bye_before_expiry() -> None:
    ua = make_ua(A)
    ua.receive_datagram(raw_request("INVITE", body=OFFER, extra="Supported: timer\n"
                                    "Session-Expires: 120;refresher=uac"), B, 0.0)
    (inc,) = events(ua)
    assert isinstance(inc, IncomingCall)
    ua.answer(inc.call_id, ANSWER, 0.0)
    ok = [r for r in responses(drain(ua)) if r.status == 200][0]
    assert ok.headers.get("Session-Expires") == "120;refresher=uac"
    assert ok.headers.get("Require") == "timer"
    ok_to = ok.headers.get("To") or ""
    ua.receive_datagram(raw_request("ACK", to_tag=ok_to.split("tag=")[1]), B, 0.1)
    _advance(ua, 87.9)
    assert requests(drain(ua), "BYE") == [] and events(ua) == []
    ua.handle_timer(88.0)  # 120 - min(32, 120/3)
    assert requests(drain(ua), "BYE")
    assert events(ua) == [CallEnded(inc.call_id, "session expired", None)]


def test_we_refresh_at_half_the_interval_with_same_sdp() -> None:
    ua = make_ua(A)
    call_id, inv = _invite_raw(ua)
    assert "timer" in (inv.headers.get("Supported") or "")
    ua.receive_datagram(reply(inv, 200, body=ANSWER, extra="Contact: <sip:200@127.0.0.1:5080>\n"
                              "Session-Expires: 100;refresher=uac\nRequire: timer"), PEER, 0.2)
    drain(ua)
    events(ua)
    _advance(ua, 50.1)
    assert requests(drain(ua), "INVITE") == []
    ua.handle_timer(50.2)
    ((_, refresh),) = requests(drain(ua), "INVITE")
    assert refresh.body == OFFER and refresh.to_tag == "peer1"
    assert (refresh.headers.get("Session-Expires") or "").startswith("100")
    ua.receive_datagram(reply(refresh, 200, body=ANSWER,
                              extra="Session-Expires: 100;refresher=uac"), PEER, 50.3)
    assert requests(drain(ua), "ACK")
    assert events(ua) == []  # a refresh is not reported as a re-INVITE outcome
    _advance(ua, 100.2)
    assert requests(drain(ua), "INVITE") == []
    ua.handle_timer(100.3)
    assert len(requests(drain(ua), "INVITE")) == 1


def test_422_to_our_invite_retries_with_min_se() -> None:
    ua = make_ua(A)
    _, inv = _invite_raw(ua)
    ua.receive_datagram(reply(inv, 422, extra="Min-SE: 600"), PEER, 0.1)
    ((_, again),) = requests(drain(ua), "INVITE")
    assert again.headers.get("Session-Expires") == "600"
    assert again.cseq.number == inv.cseq.number + 1


# -- INFO DTMF ---------------------------------------------------------------------------


def _established_uas() -> tuple[UserAgent, str, str]:
    ua = make_ua(A)
    ua.receive_datagram(raw_request("INVITE", body=OFFER), B, 0.0)
    (inc,) = events(ua)
    assert isinstance(inc, IncomingCall)
    ua.answer(inc.call_id, ANSWER, 0.0)
    ok = [r for r in responses(drain(ua)) if r.status == 200][0]
    tag = (ok.headers.get("To") or "").split("tag=")[1]
    ua.receive_datagram(raw_request("ACK", to_tag=tag), B, 0.1)
    return ua, inc.call_id, tag


def test_info_dtmf_relay_and_dtmf_bodies_become_events() -> None:
    ua, call_id, tag = _established_uas()
    ua.receive_datagram(raw_request("INFO", cseq=2, to_tag=tag, body=b"Signal=5\r\nDuration=160\r\n",
                                    content_type="application/dtmf-relay"), B, 1.0)
    ua.receive_datagram(raw_request("INFO", cseq=3, to_tag=tag, body=b"11",
                                    content_type="application/dtmf"), B, 1.1)
    assert [r.status for r in responses(drain(ua))] == [200, 200]
    assert events(ua) == [DtmfInfo(call_id, "5", 160), DtmfInfo(call_id, "#", None)]


def test_info_with_other_body_gets_415_with_accept() -> None:
    ua, _, tag = _established_uas()
    ua.receive_datagram(raw_request("INFO", cseq=2, to_tag=tag, body=b"<x/>",
                                    content_type="application/xml"), B, 1.0)
    (resp,) = responses(drain(ua))
    assert resp.status == 415
    assert "application/dtmf-relay" in ", ".join(resp.headers.get_all("Accept"))
    assert events(ua) == []
