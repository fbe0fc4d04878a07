"""The pure user agent: two instances wired back to back, datagrams passed by hand."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from gateway.sip.auth import parse_authorization
from gateway.sip.events import (
    CallAnswered,
    CallEnded,
    CallProgress,
    CallUpdated,
    IncomingCall,
    MessageDropped,
    RegistrationStateChanged,
    UaEvent,
)
from gateway.sip.message import Request, Response, make_response, parse_message
from gateway.sip.registration import AccountSettings
from gateway.sip.ua import UserAgent

A_ADDR = ("127.0.0.1", 5060)
B_ADDR = ("127.0.0.1", 5070)
OFFER = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
ANSWER = OFFER.replace(b"4000", b"4002")

def make_ua(addr: tuple[str, int], target_timeout: float = 1.5) -> UserAgent:
    return UserAgent(local_host=addr[0], local_port=addr[1], target_timeout=target_timeout,
                     instance_id="urn:uuid:00000000-0000-4000-8000-000000000001")


class Wire:
    """Moves datagrams between user agents; `drop` can lose chosen messages."""

    def __init__(self, *uas: UserAgent) -> None:
        self.uas = {(ua.local_host, ua.local_port): ua for ua in uas}
        self.log: list[tuple[float, tuple[str, int], tuple[str, int], Request | Response]] = []
        self.drop: Callable[[Request | Response], bool] = lambda m: False

    def pump(self, now: float) -> None:
        for _ in range(50):
            moved = False
            for src, ua in self.uas.items():
                for data, dest in ua.datagrams_to_send():
                    moved = True
                    msg = parse_message(data)
                    self.log.append((now, src, dest, msg))
                    if dest in self.uas and not self.drop(msg):
                        self.uas[dest].receive_datagram(data, src, now)
            if not moved:
                return

    def run_until(self, end: float) -> float:
        """Fire timers of every agent in time order up to `end`."""
        now = 0.0
        while True:
            deadlines = [d for ua in self.uas.values() if (d := ua.get_timer()) is not None]
            if not deadlines or min(deadlines) > end:
                return now
            now = min(deadlines)
            for ua in self.uas.values():
                ua.handle_timer(now)
            self.pump(now)

    def times(self, src: tuple[str, int], status: int) -> list[float]:
        """When `src` sent responses with `status`."""
        return [t for t, s, _, m in self.log
                if s == src and isinstance(m, Response) and m.status == status]

    def sent(self, src: tuple[str, int], kind: str) -> list[Request | Response]:
        """Messages from `src`: kind is a method ("BYE") or a status ("200")."""
        out: list[Request | Response] = []
        for _, s, _, msg in self.log:
            if s != src:
                continue
            if isinstance(msg, Request) and msg.method == kind:
                out.append(msg)
            if isinstance(msg, Response) and str(msg.status) == kind:
                out.append(msg)
        return out


def events(ua: UserAgent) -> list[UaEvent]:
    out: list[UaEvent] = []
    while (ev := ua.next_event()) is not None:
        out.append(ev)
    return out


def start_call(wire: Wire, a: UserAgent, now: float = 0.0) -> str:
    call_id = a.invite(target_uri="sip:200@127.0.0.1:5070", from_uri="sip:100@127.0.0.1",
                       dest=B_ADDR, sdp=OFFER, account_id=None, display_name="Front Desk",
                       now=now)
    wire.pump(now)
    return call_id


def test_full_call_between_two_agents() -> None:
    a, b = make_ua(A_ADDR), make_ua(B_ADDR)
    wire = Wire(a, b)
    call_id = start_call(wire, a)
    (incoming,) = events(b)
    assert incoming == IncomingCall(call_id=call_id, from_uri="sip:100@127.0.0.1",
                                    from_display="Front Desk", to_uri="sip:200@127.0.0.1:5070",
                                    request_uri="sip:200@127.0.0.1:5070", sdp=OFFER,
                                    source=A_ADDR)
    assert [m.status for m in wire.sent(B_ADDR, "100") if isinstance(m, Response)] == [100]
    invite = wire.sent(A_ADDR, "INVITE")[0]
    assert "rport" in (invite.headers.get("Via") or "")
    assert invite.headers.get("Contact") == "<sip:100@127.0.0.1:5060>"

    b.ringing(call_id, 0.1)
    wire.pump(0.1)
    assert events(a) == [CallProgress(call_id, 180, None)]
    b.answer(call_id, ANSWER, 0.2)
    wire.pump(0.2)
    assert events(a) == [CallAnswered(call_id, ANSWER)]
    (ack,) = wire.sent(A_ADDR, "ACK")
    assert ack.cseq.number == invite.cseq.number
    assert ack.branch != invite.branch
    assert a.call_state(call_id) == b.call_state(call_id) == "confirmed"

    # ACK arrived: no 2xx retransmission later
    wire.run_until(5.0)
    assert len(wire.sent(B_ADDR, "200")) == 1

    a.bye(call_id, 6.0)
    wire.pump(6.0)
    assert events(a) == [CallEnded(call_id, "local hangup", None)]
    assert events(b) == [CallEnded(call_id, "remote hangup", None)]
    (bye,) = wire.sent(A_ADDR, "BYE")
    assert bye.to_tag == wire.sent(B_ADDR, "200")[0].to_tag
    ok_bye = [m for m in wire.sent(B_ADDR, "200") if m.cseq.method == "BYE"]
    assert len(ok_bye) == 1
    assert a.call_state(call_id) == "ended"


def test_callee_hangs_up_with_bye_to_callers_contact() -> None:
    a, b = make_ua(A_ADDR), make_ua(B_ADDR)
    wire = Wire(a, b)
    call_id = start_call(wire, a)
    b.answer(call_id, ANSWER, 0.1)
    wire.pump(0.1)
    events(a), events(b)
    b.bye(call_id, 1.0)
    wire.pump(1.0)
    (bye,) = wire.sent(B_ADDR, "BYE")
    assert isinstance(bye, Request) and bye.uri == "sip:100@127.0.0.1:5060"
    assert events(a) == [CallEnded(call_id, "remote hangup", None)]
    assert events(b) == [CallEnded(call_id, "local hangup", None)]


def test_uas_retransmits_2xx_until_ack() -> None:
    a, b = make_ua(A_ADDR), make_ua(B_ADDR)
    wire = Wire(a, b)
    call_id = start_call(wire, a)
    wire.drop = lambda m: isinstance(m, Request) and m.method == "ACK"
    b.answer(call_id, ANSWER, 0.0)
    wire.pump(0.0)
    wire.run_until(3.6)
    times = [round(t, 3) for t in wire.times(B_ADDR, 200)]
    assert times == [0.0, 0.5, 1.5, 3.5]  # T1 doubling
    assert len(wire.sent(A_ADDR, "ACK")) == 4  # every 2xx re-ACKed end-to-end
    wire.drop = lambda m: False
    wire.run_until(7.6)  # next 2xx at 7.5 reaches A, whose ACK now arrives
    count = len(wire.sent(B_ADDR, "200"))
    wire.run_until(40.0)
    assert len(wire.sent(B_ADDR, "200")) == count  # stopped after the ACK
    assert not wire.sent(B_ADDR, "BYE")
    assert CallAnswered(call_id, ANSWER) in events(a)


def test_uas_gives_up_without_ack_and_sends_bye() -> None:
    a, b = make_ua(A_ADDR), make_ua(B_ADDR)
    wire = Wire(a, b)
    call_id = start_call(wire, a)
    wire.drop = lambda m: isinstance(m, Request) and m.method == "ACK"
    b.answer(call_id, ANSWER, 0.0)
    wire.pump(0.0)
    events(b)
    wire.run_until(31.9)
    assert not wire.sent(B_ADDR, "BYE")
    wire.run_until(32.1)
    assert len(wire.sent(B_ADDR, "BYE")) == 1
    assert events(b) == [CallEnded(call_id, "no ACK", None)]
    times = wire.times(B_ADDR, 200)
    gaps = [round(y - x, 3) for x, y in zip(times, times[1:], strict=False)]
    assert gaps[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(gaps) == pytest.approx(4.0)  # capped at T2


def test_server_transaction_absorbs_retransmitted_invite() -> None:
    a, b = make_ua(A_ADDR, target_timeout=60.0), make_ua(B_ADDR)
    wire = Wire(a, b)
    wire.drop = lambda m: isinstance(m, Response)  # A hears nothing: it retransmits
    call_id = start_call(wire, a)
    wire.run_until(1.6)
    assert len(wire.sent(A_ADDR, "INVITE")) == 3  # 0, 0.5, 1.5
    assert [type(e) for e in events(b)] == [IncomingCall]  # only once
    assert len(wire.sent(B_ADDR, "100")) == 3  # each retransmission answered with the last response
    b.ringing(call_id, 1.7)
    wire.pump(1.7)
    wire.drop = lambda m: False
    wire.run_until(1.8)
    a.receive_datagram(b"", B_ADDR, 1.8)  # a keep-alive is harmless
    assert events(a) == []


def test_cancel_gives_487_and_200() -> None:
    a, b = make_ua(A_ADDR), make_ua(B_ADDR)
    wire = Wire(a, b)
    call_id = start_call(wire, a)
    b.ringing(call_id, 0.1)
    wire.pump(0.1)
    events(a), events(b)
    a.cancel(call_id, 1.0)
    wire.pump(1.0)
    (cancel,) = wire.sent(A_ADDR, "CANCEL")
    invite = wire.sent(A_ADDR, "INVITE")[0]
    assert cancel.branch == invite.branch and cancel.cseq.number == invite.cseq.number
    statuses = [(m.status, m.cseq.method) for m in [*wire.sent(B_ADDR, "200"),
                                                    *wire.sent(B_ADDR, "487")]
                if isinstance(m, Response)]
    assert sorted(statuses) == [(200, "CANCEL"), (487, "INVITE")]
    assert events(b) == [CallEnded(call_id, "cancelled", 487)]
    assert events(a) == [CallEnded(call_id, "cancelled", 487)]
    (ack,) = wire.sent(A_ADDR, "ACK")  # hop-by-hop ACK from A's transaction
    assert ack.branch == invite.branch
    assert ack.to_tag == wire.sent(B_ADDR, "487")[0].to_tag


def test_cancel_before_any_provisional_waits_and_ends_call() -> None:
    a = make_ua(A_ADDR)
    wire = Wire(a)  # nobody at B
    call_id = start_call(wire, a)
    a.cancel(call_id, 0.1)
    wire.run_until(100.0)
    assert wire.sent(A_ADDR, "CANCEL") == []  # RFC 3261 9.1: not before a provisional
    assert events(a) == [CallEnded(call_id, "cancelled", None)]


def test_unanswered_invite_times_out() -> None:
    """With the silence timer out of the way, Timer B (64*T1) ends it after 7 sends."""
    a = make_ua(A_ADDR, target_timeout=64.0)
    wire = Wire(a)
    call_id = start_call(wire, a)
    wire.run_until(100.0)
    assert events(a) == [CallEnded(call_id, "timeout", 408)]
    assert len(wire.sent(A_ADDR, "INVITE")) == 7


def test_silent_single_target_ends_after_target_timeout() -> None:
    """One target, no answer at all: 408 "timeout" after `target_timeout` (1.5 s), not
    Timer B's 32 s, so a route's next target can be tried at once."""
    a = make_ua(A_ADDR)
    wire = Wire(a)
    call_id = start_call(wire, a)
    wire.run_until(1.49)
    assert events(a) == []
    wire.run_until(1.51)
    assert events(a) == [CallEnded(call_id, "timeout", 408)]
    assert len(wire.sent(A_ADDR, "INVITE")) == 2  # 0 and 0.5 s; 1.5 s was too late
    wire.run_until(40.0)
    assert events(a) == [] and len(wire.sent(A_ADDR, "INVITE")) == 2


def test_busy_rejection_reaches_caller() -> None:
    a, b = make_ua(A_ADDR), make_ua(B_ADDR)
    wire = Wire(a, b)
    call_id = start_call(wire, a)
    b.reject(call_id, 486, 0.1)
    wire.pump(0.1)
    assert events(a) == [CallEnded(call_id, "busy", 486)]
    assert events(b)[-1] == CallEnded(call_id, "rejected", 486)
    wire.run_until(40.0)
    assert len(wire.sent(B_ADDR, "486")) == 1  # ACK stopped Timer G


def test_reinvite_reported_and_answered() -> None:
    a, b = make_ua(A_ADDR), make_ua(B_ADDR)
    wire = Wire(a, b)
    call_id = start_call(wire, a)
    b.answer(call_id, ANSWER, 0.1)
    wire.pump(0.1)
    events(b)
    dialog = a._calls[call_id].dialog
    assert dialog is not None
    hold = OFFER + b"a=sendonly\r\n"
    reinvite = dialog.create_request("INVITE", via="SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKre1",
                                     body=hold, content_type="application/sdp",
                                     contact="<sip:100@127.0.0.1:5060>")
    b.receive_datagram(bytes(reinvite), A_ADDR, 1.0)
    assert events(b) == [CallUpdated(call_id, hold)]
    b.answer_reinvite(call_id, ANSWER + b"a=recvonly\r\n", 1.1)
    out = [parse_message(d) for d, _ in b.datagrams_to_send()]
    oks = [m for m in out if isinstance(m, Response) and m.status == 200]
    assert oks and oks[0].body.endswith(b"a=recvonly\r\n") and oks[0].cseq.method == "INVITE"
    ack = dialog.create_ack(reinvite.cseq.number, via="SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKa2")
    b.receive_datagram(bytes(ack), A_ADDR, 1.2)
    b.handle_timer(2.0)
    assert not [d for d, _ in b.datagrams_to_send() if d.startswith(b"SIP/2.0 200")]

    # an old CSeq inside the dialog is refused with 500
    stale = dialog.create_request("INFO", via="SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKold",
                                  cseq=1)
    b.receive_datagram(bytes(stale), A_ADDR, 3.0)
    (resp,) = [parse_message(d) for d, _ in b.datagrams_to_send()]
    assert isinstance(resp, Response) and resp.status == 500


OPTIONS = (
    b"OPTIONS sip:127.0.0.1:5070 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKopt1\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:mon@127.0.0.1>;tag=m1\r\nTo: <sip:127.0.0.1:5070>\r\n"
    b"Call-ID: opt-1\r\nCSeq: 7 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


def one_reply(ua: UserAgent, data: bytes, src: tuple[str, int] = ("127.0.0.1", 5090)
              ) -> tuple[Response, tuple[str, int]]:
    ua.receive_datagram(data, src, 0.0)
    out = ua.datagrams_to_send()
    assert len(out) == 1
    resp = parse_message(out[0][0])
    assert isinstance(resp, Response)
    return resp, out[0][1]


def test_options_out_of_dialog_advertises_capabilities() -> None:
    b = make_ua(B_ADDR)
    resp, dest = one_reply(b, OPTIONS)
    assert resp.status == 200
    assert "INVITE" in (resp.headers.get("Allow") or "")
    assert resp.headers.get("Accept") == "application/sdp"
    assert "Supported" in resp.headers
    assert resp.to_tag and resp.cseq.number == 7
    assert dest == ("127.0.0.1", 5090)


def test_unknown_method_405_and_unknown_dialog_481() -> None:
    b = make_ua(B_ADDR)
    resp, _ = one_reply(b, OPTIONS.replace(b"OPTIONS", b"PUBLISH"))
    assert resp.status == 405 and "BYE" in (resp.headers.get_all("Allow") or [])
    bye = OPTIONS.replace(b"OPTIONS", b"BYE").replace(b"To: <sip:127.0.0.1:5070>",
                                                      b"To: <sip:127.0.0.1:5070>;tag=zz")
    resp, _ = one_reply(b, bye)
    assert resp.status == 481


def test_rport_answer_goes_to_source_port_and_is_stamped() -> None:
    b = make_ua(B_ADDR)
    data = OPTIONS.replace(b"branch=z9hG4bKopt1", b"branch=z9hG4bKopt1;rport")
    resp, dest = one_reply(b, data, src=("192.0.2.9", 40000))
    assert dest == ("192.0.2.9", 40000)
    via = resp.top_via
    assert via.params["rport"] == "40000" and via.params["received"] == "192.0.2.9"


def test_malformed_request_gets_400_and_is_counted() -> None:
    b = make_ua(B_ADDR)
    bad = OPTIONS.replace(b"Content-Length: 0", b"Content-Length: 50")
    resp, _ = one_reply(b, bad)
    assert resp.status == 400 and "Content-Length" in resp.reason
    assert b.stats["malformed"] == 1
    (ev,) = events(b)
    assert isinstance(ev, MessageDropped) and ev.source == ("127.0.0.1", 5090)


def test_garbage_never_raises() -> None:
    b = make_ua(B_ADDR)
    rng = random.Random(4475)
    base = bytearray(OPTIONS.replace(b"OPTIONS", b"INVITE"))
    for i in range(400):
        data = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if i % 3 == 0:
            data = data[: rng.randrange(len(data))]
        b.receive_datagram(bytes(data), ("127.0.0.1", 5090), float(i))
        b.datagrams_to_send()
        b.handle_timer(float(i))
    b.receive_datagram(rng.randbytes(70000), ("127.0.0.1", 5090), 500.0)
    assert b.stats["internal_errors"] == 0
    assert b.stats["malformed"] > 0


def test_invite_proxy_auth_once_per_challenge() -> None:
    a = make_ua(A_ADDR)
    a.add_account("trunk", AccountSettings(aor="sip:100@pbx.example",
                                           registrar_host="127.0.0.1", registrar_port=5080,
                                           username="100", password="pw"), 0.0)
    a.datagrams_to_send()  # the REGISTER; nobody answers it here
    call_id = a.invite(target_uri="sip:555@pbx.example", from_uri="sip:100@pbx.example",
                       dest=("127.0.0.1", 5080), sdp=OFFER, account_id="trunk",
                       display_name=None, now=0.0)
    (first,) = [parse_message(d) for d, _ in a.datagrams_to_send()]
    assert isinstance(first, Request)

    def challenge(req: Request) -> bytes:
        resp = make_response(req, 407, to_tag="px")
        resp.headers.add("Proxy-Authenticate",
                         'Digest realm="pbx.example", nonce="n1", qop="auth"')
        return bytes(resp)

    a.receive_datagram(challenge(first), ("127.0.0.1", 5080), 0.1)
    out = [parse_message(d) for d, _ in a.datagrams_to_send()]
    methods = sorted(m.method for m in out if isinstance(m, Request))
    assert methods == ["ACK", "INVITE"]
    (second,) = [m for m in out if isinstance(m, Request) and m.method == "INVITE"]
    assert second.call_id == first.call_id and second.cseq.number == 2
    assert second.from_tag == first.from_tag
    params = parse_authorization(second.headers.get("Proxy-Authorization") or "")
    assert params["username"] == "100" and params["nc"] == "00000001"
    assert events(a) == []
    a.receive_datagram(challenge(second), ("127.0.0.1", 5080), 0.2)
    assert events(a) == [CallEnded(call_id, "authentication failed", 407)]


def test_account_registration_through_agent() -> None:
    a = make_ua(A_ADDR)
    a.add_account("trunk", AccountSettings(aor="sip:100@pbx.example",
                                           registrar_host="127.0.0.1", registrar_port=5080,
                                           username="100", password="pw"), 0.0)
    ((data, dest),) = a.datagrams_to_send()
    assert dest == ("127.0.0.1", 5080)
    req = parse_message(data)
    assert isinstance(req, Request) and req.method == "REGISTER"
    assert "urn:uuid:00000000-0000-4000-8000-000000000001" in (req.headers.get("Contact") or "")
    ok = make_response(req, 200, to_tag="r")
    ok.headers.add("Expires", "300")
    a.receive_datagram(bytes(ok), dest, 0.1)
    assert events(a) == [RegistrationStateChanged("trunk", True, "registered", 300)]
    assert a.registration_state("trunk")["registered"] is True
    a.remove_account("trunk", 1.0)
    ((data, _),) = a.datagrams_to_send()
    unreg = parse_message(data)
    assert isinstance(unreg, Request) and unreg.headers.get("Expires") == "0"
    a.receive_datagram(bytes(make_response(unreg, 200, to_tag="r")), dest, 1.1)
    assert events(a) == [RegistrationStateChanged("trunk", False, "unregistered", None)]
    assert a.registration_state("trunk")["phase"] == "unknown"


def test_cancel_requested_early_is_sent_once_when_provisionals_arrive() -> None:
    a = make_ua(A_ADDR)
    wire = Wire(a)
    call_id = start_call(wire, a)
    (invite,) = wire.sent(A_ADDR, "INVITE")
    assert isinstance(invite, Request)
    a.cancel(call_id, 0.1)
    assert a.datagrams_to_send() == []
    for status in (100, 180, 183):
        a.receive_datagram(bytes(make_response(invite, status, to_tag="b1")), B_ADDR, 0.2)
    cancels = [m for d, _ in a.datagrams_to_send()
               if isinstance(m := parse_message(d), Request) and m.method == "CANCEL"]
    assert len(cancels) == 1
    assert events(a) == []  # no CallProgress for a call being cancelled
    a.receive_datagram(bytes(make_response(invite, 487, to_tag="b1")), B_ADDR, 0.3)
    assert events(a) == [CallEnded(call_id, "cancelled", 487)]


def test_invite_answers_the_best_of_several_challenges_and_auth_int_hashes_the_sdp() -> None:
    import hashlib

    a = make_ua(A_ADDR)
    a.add_account("trunk", AccountSettings(aor="sip:100@pbx.example",
                                           registrar_host="127.0.0.1", registrar_port=5080,
                                           username="100", password="pw"), 0.0)
    a.datagrams_to_send()
    a.invite(target_uri="sip:555@pbx.example", from_uri="sip:100@pbx.example",
             dest=("127.0.0.1", 5080), sdp=OFFER, account_id="trunk", display_name=None,
             now=0.0)
    (first,) = [parse_message(d) for d, _ in a.datagrams_to_send()]
    assert isinstance(first, Request) and first.body == OFFER
    resp = make_response(first, 407, to_tag="px")
    for value in ('Digest realm="pbx.example", nonce="u", algorithm=SHA3-NEW, qop="auth"',
                  'Digest realm="pbx.example", nonce="m", algorithm=MD5, qop="auth-int"',
                  'Digest realm="pbx.example", nonce="s", algorithm=SHA-256, qop="auth-int"'):
        resp.headers.add("Proxy-Authenticate", value)
    a.receive_datagram(bytes(resp), ("127.0.0.1", 5080), 0.1)
    (second,) = [m for m in (parse_message(d) for d, _ in a.datagrams_to_send())
                 if isinstance(m, Request) and m.method == "INVITE"]
    p = parse_authorization(second.headers.get("Proxy-Authorization") or "")
    assert (p["algorithm"], p["nonce"], p["qop"]) == ("SHA-256", "s", "auth-int")

    def sha(data: str | bytes) -> str:
        return hashlib.sha256(data if isinstance(data, bytes) else data.encode()).hexdigest()

    # RFC 7616 3.4.3: for auth-int, A2 = Method:request-uri:H(entity-body)
    ha1 = sha("100:pbx.example:pw")
    ha2 = sha(f"INVITE:{second.uri}:{sha(second.body)}")
    assert second.body == OFFER
    assert p["response"] == sha(f"{ha1}:s:{p['nc']}:{p['cnonce']}:auth-int:{ha2}")


def test_invite_auth_int_alone_hashes_the_offer_sent() -> None:
    import hashlib

    a = make_ua(A_ADDR)
    a.add_account("trunk", AccountSettings(aor="sip:100@pbx.example",
                                           registrar_host="127.0.0.1", registrar_port=5080,
                                           username="100", password="pw"), 0.0)
    a.datagrams_to_send()
    a.invite(target_uri="sip:555@pbx.example", from_uri="sip:100@pbx.example",
             dest=("127.0.0.1", 5080), sdp=OFFER, account_id="trunk", display_name=None,
             now=0.0)
    (first,) = [parse_message(d) for d, _ in a.datagrams_to_send()]
    assert isinstance(first, Request)
    resp = make_response(first, 401, to_tag="px")
    resp.headers.add("WWW-Authenticate", 'Digest realm="r", nonce="n", qop="auth-int"')
    a.receive_datagram(bytes(resp), ("127.0.0.1", 5080), 0.1)
    (second,) = [m for m in (parse_message(d) for d, _ in a.datagrams_to_send())
                 if isinstance(m, Request) and m.method == "INVITE"]
    p = parse_authorization(second.headers.get("Authorization") or "")

    def md5(data: str | bytes) -> str:
        return hashlib.md5(data if isinstance(data, bytes) else data.encode()).hexdigest()

    ha2 = md5(f"INVITE:{second.uri}:{md5(OFFER)}")
    assert p["response"] == md5(f"{md5('100:r:pw')}:n:{p['nc']}:{p['cnonce']}:auth-int:{ha2}")
