"""SIP MESSAGE (RFC 3428) in the user agent: building, the transaction, auth, failover, UAS."""

from __future__ import annotations

from ua_wire import drain, events, make_ua, raw_request, requests, responses

from gateway.runtime.edge import SipEdge, StaticUsers
from gateway.security.acl import SourceAcl
from gateway.security.ratelimit import RateLimiter
from gateway.sip import auth
from gateway.sip.auth import parse_authorization, verify_response
from gateway.sip.events import (
    MessageDelivered,
    MessageFailed,
    MessageReceived,
    Respond,
)
from gateway.sip.message import Request, make_response
from gateway.sip.registration import AccountSettings
from gateway.sip.target import Target
from gateway.sip.ua import UserAgent

A_ADDR = ("127.0.0.1", 5060)
PBX = ("127.0.0.1", 5080)
TEXT = "Grüezi! 3 parts → one text €".encode()


def send(ua: UserAgent, **kw: object) -> str:
    args: dict[str, object] = dict(target_uri="sip:sms@pbx.example",
                                   from_uri="sip:+41791234567@branch.example",
                                   body=TEXT, dest=PBX, now=0.0)
    args.update(kw)
    return ua.send_message(**args)  # type: ignore[arg-type]


def only_message(ua: UserAgent) -> Request:
    (msg,) = [m for _, m in requests(drain(ua), "MESSAGE")]
    return msg


def with_account(ua: UserAgent) -> None:
    ua.add_account("trunk", AccountSettings(aor="sip:100@pbx.example", registrar_host=PBX[0],
                                            registrar_port=PBX[1], username="100",
                                            password="pw"), 0.0)
    ua.messages_out()  # the REGISTER; nobody answers it here


def test_message_request_is_pager_mode_and_202_reports_delivered() -> None:
    ua = make_ua(A_ADDR)
    handle = send(ua)
    out = drain(ua)
    ((o, msg),) = requests(out, "MESSAGE")
    assert o.dest == PBX and o.transport == "udp"
    assert msg.uri == "sip:sms@pbx.example"
    assert msg.body == TEXT
    assert msg.headers.get("Content-Type") == "text/plain;charset=UTF-8"
    assert msg.headers.get("Content-Length") is None or \
        msg.headers.get("Content-Length") == str(len(TEXT))
    assert msg.cseq.number == 1 and msg.cseq.method == "MESSAGE"
    assert msg.call_id == handle and msg.from_tag and msg.to_tag is None
    assert msg.to_addr.uri.user == "sms" and msg.from_addr.uri.user == "+41791234567"
    assert msg.headers.get("Contact") is None  # no dialog, nothing to contact
    assert str(len(TEXT)).encode() in bytes(msg)
    assert events(ua) == []
    ua.receive_datagram(bytes(make_response(msg, 100)), PBX, 0.05)
    assert events(ua) == []
    ua.receive_datagram(bytes(make_response(msg, 202, to_tag="x")), PBX, 0.1)
    assert events(ua) == [MessageDelivered(handle, 202)]
    assert ua.table_sizes()["messages_out"] == 0


def test_407_is_answered_with_the_best_challenge_and_retried() -> None:
    ua = make_ua(A_ADDR)
    with_account(ua)
    handle = send(ua, account_id="trunk")
    first = only_message(ua)
    resp = make_response(first, 407, to_tag="px")
    resp.headers.add("Proxy-Authenticate", 'Digest realm="pbx.example", nonce="m", qop="auth"')
    resp.headers.add("Proxy-Authenticate",
                     'Digest realm="pbx.example", nonce="s", algorithm=SHA-256, qop="auth"')
    ua.receive_datagram(bytes(resp), PBX, 0.1)
    second = only_message(ua)
    assert second.call_id == first.call_id and second.from_tag == first.from_tag
    assert second.cseq.number == 2 and second.branch != first.branch
    assert second.body == TEXT
    params = parse_authorization(second.headers.get("Proxy-Authorization") or "")
    assert params["algorithm"] == "SHA-256" and params["nonce"] == "s"
    assert params["username"] == "100" and params["uri"] == "sip:sms@pbx.example"
    assert verify_response(params, method="MESSAGE", password="pw")
    assert events(ua) == []
    ua.receive_datagram(bytes(resp), PBX, 0.15)  # the 407 again (UDP resend): absorbed
    assert requests(drain(ua), "MESSAGE") == [] and ua.stats["stray_responses"] == 0
    ua.receive_datagram(bytes(make_response(second, 200, to_tag="y")), PBX, 0.2)
    assert events(ua) == [MessageDelivered(handle, 200)]


def test_401_again_for_the_same_nonce_fails_and_no_account_fails_at_once() -> None:
    ua = make_ua(A_ADDR)
    with_account(ua)
    handle = send(ua, account_id="trunk")

    def challenge(req: Request) -> bytes:
        resp = make_response(req, 401, to_tag="px")
        resp.headers.add("WWW-Authenticate", 'Digest realm="pbx.example", nonce="n1"')
        return bytes(resp)

    ua.receive_datagram(challenge(only_message(ua)), PBX, 0.1)
    retry = only_message(ua)
    assert "Authorization" in retry.headers
    ua.receive_datagram(challenge(retry), PBX, 0.2)
    assert events(ua) == [MessageFailed(handle, 401, "401 authentication failed")]
    other = send(ua)  # no account: a challenge cannot be answered
    ua.receive_datagram(challenge(only_message(ua)), PBX, 0.3)
    assert events(ua) == [MessageFailed(other, 401, "401 authentication failed")]
    assert ua.messages_out() == []


def test_refusal_and_udp_timeout_report_failure_once() -> None:
    ua = make_ua(A_ADDR)
    handle = send(ua)
    ua.receive_datagram(bytes(make_response(only_message(ua), 404, to_tag="z")), PBX, 0.1)
    assert events(ua) == [MessageFailed(handle, 404, "404 Not Found")]
    lost = send(ua, now=1.0)
    sent = len(requests(drain(ua), "MESSAGE"))
    now = 1.0
    while (deadline := ua.get_timer()) is not None and deadline < 100:
        now = deadline
        ua.handle_timer(now)
        sent += len(requests(drain(ua), "MESSAGE"))
    assert events(ua) == [MessageFailed(lost, 408, "timeout")]
    assert now == 1.0 + 64 * 0.5  # Timer F
    assert sent > 5  # Timer E retransmissions over UDP


def test_fails_over_to_the_next_target_on_transport_error_and_503() -> None:
    ua = make_ua(A_ADDR)
    targets = [Target("udp", "127.0.0.1", 5081), Target("udp", "127.0.0.1", 5082),
               Target("tcp", "127.0.0.1", 5083)]
    handle = send(ua, dest=targets)
    ((o, _),) = requests(drain(ua), "MESSAGE")
    assert o.dest == ("127.0.0.1", 5081)
    ua.transport_error(("127.0.0.1", 5081), 0.1)
    ((o, second),) = requests(drain(ua), "MESSAGE")
    assert o.dest == ("127.0.0.1", 5082)
    ua.receive_datagram(bytes(make_response(second, 503, to_tag="b")), o.dest, 0.2)
    ((o, third),) = requests(drain(ua), "MESSAGE")
    assert o.dest == ("127.0.0.1", 5083) and o.transport == "tcp"
    assert "SIP/2.0/TCP" in (third.headers.get("Via") or "")
    assert events(ua) == []
    ua.receive_datagram(bytes(make_response(third, 200, to_tag="c")), o.dest, 0.3,
                        transport="tcp")
    assert events(ua) == [MessageDelivered(handle, 200)]


def test_incoming_message_is_refused_405_unless_the_runtime_takes_messages() -> None:
    ua = make_ua(A_ADDR)
    src = ("127.0.0.1", 5070)
    ua.receive_datagram(raw_request("MESSAGE", body=b"x", content_type="text/plain",
                                    src=src), src, 0.0)
    (resp,) = responses(drain(ua))
    assert resp.status == 405 and events(ua) == []


def test_incoming_message_is_reported_and_answered_202_by_the_runtime() -> None:
    ua = make_ua(A_ADDR, accept_messages=True)
    src = ("127.0.0.1", 5070)
    data = raw_request("MESSAGE", uri="sip:+41791112233@127.0.0.1:5060", body=b"send me",
                       content_type="text/plain", src=src)
    ua.receive_datagram(data, src, 0.0)
    assert drain(ua) == []  # no answer before the runtime stored it
    (event,) = events(ua)
    assert isinstance(event, MessageReceived)
    assert event.body == b"send me" and event.content_type == "text/plain"
    assert event.request_uri == "sip:+41791112233@127.0.0.1:5060"
    assert event.from_uri == "sip:200@127.0.0.1" and event.source == src
    ua.receive_datagram(data, src, 0.5)  # retransmission: absorbed, no second event
    assert events(ua) == [] and drain(ua) == []
    assert ua.answer_message(event.handle, 202, 0.6)
    (resp,) = responses(drain(ua))
    assert resp.status == 202 and resp.to_tag
    assert not ua.answer_message(event.handle, 202, 0.7)
    ua.receive_datagram(data, src, 0.8)  # retransmission after the answer: 202 again
    assert [r.status for r in responses(drain(ua))] == [202]


def test_unanswered_message_gets_500_and_filter_refusal_makes_no_event() -> None:
    ua = make_ua(A_ADDR, accept_messages=True)
    src = ("127.0.0.1", 5070)
    ua.receive_datagram(raw_request("MESSAGE", body=b"x", content_type="text/plain",
                                    src=src), src, 0.0)
    assert len(events(ua)) == 1
    deadline = ua.get_timer()
    assert deadline == 8.0
    ua.handle_timer(deadline)
    assert [r.status for r in responses(drain(ua))] == [500]
    assert ua.table_sizes()["messages_in"] == 0

    guarded = make_ua(A_ADDR, request_filter=lambda *a: Respond(401), accept_messages=True)
    guarded.receive_datagram(raw_request("MESSAGE", body=b"x", content_type="text/plain",
                                         src=src), src, 0.0)
    assert events(guarded) == []
    assert [r.status for r in responses(drain(guarded))] == [401]


def test_incoming_message_passes_the_edge_only_with_digest_credentials() -> None:
    """The real SipEdge as the filter: a stranger's MESSAGE is challenged, never reported;
    the same MESSAGE with a local user's digest is reported and answered 202."""
    edge = SipEdge(SourceAcl(()), realm="branch", nonce_secret=b"k" * 32,
                   users=StaticUsers({"alice": "alice-pw"}), limiter=RateLimiter())
    ua = make_ua(A_ADDR, request_filter=edge.filter, accept_messages=True)
    src = ("127.0.0.1", 5070)
    uri = "sip:+41791112233@127.0.0.1:5060"
    ua.receive_datagram(raw_request("MESSAGE", uri=uri, body=b"hi", content_type="text/plain",
                                    src=src), src, 100.0)
    (challenge,) = responses(drain(ua))
    assert challenge.status == 401 and events(ua) == []
    chosen = auth.challenge_from(challenge)
    value = auth.build_authorization(chosen, method="MESSAGE", uri=uri, username="alice",
                                     password="alice-pw")
    ua.receive_datagram(raw_request("MESSAGE", uri=uri, body=b"hi", content_type="text/plain",
                                    src=src, cseq=2, extra=f"Authorization: {value}"),
                        src, 100.5)
    assert drain(ua) == []
    (event,) = events(ua)
    assert isinstance(event, MessageReceived) and event.body == b"hi"
    ua.answer_message(event.handle, 202, 100.6)
    (resp,) = responses(drain(ua))
    assert resp.status == 202
