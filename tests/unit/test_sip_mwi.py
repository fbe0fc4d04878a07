"""Message waiting: SUBSCRIBE message-summary with digest auth and refresh, NOTIFY in the
subscription and unsolicited from the trunk, refusals counted (fake clock, raw peer)."""

from __future__ import annotations

import pytest
from ua_wire import drain, make_ua, raw_request, reply, requests
from ua_wire import events as all_events

from gateway.sip.errors import SipError
from gateway.sip.events import MessageSummary, Respond, SubscriptionChanged
from gateway.sip.message import Request, Response, parse_message
from gateway.sip.registration import AccountSettings
from gateway.sip.subscribe import Summary, parse_summary, refresh_at
from gateway.sip.target import Outgoing
from gateway.sip.ua import UserAgent

US = ("127.0.0.1", 5060)
SERVER = ("127.0.0.1", 5090)
VM = "sip:*97@127.0.0.1:5090"
BODY = b"Messages-Waiting: yes\r\nMessage-Account: sip:*97@pbx\r\nVoice-Message: 2/8 (1/0)\r\n"


def _ua() -> UserAgent:
    ua = make_ua(US)
    ua.add_account("l1", AccountSettings(aor="sip:100@127.0.0.1", registrar_host="127.0.0.1",
                                         registrar_port=5090, username="100",
                                         password="secret"), 0.0)
    drain(ua)
    events(ua)
    return ua


def _subscribe(ua: UserAgent, now: float = 0.0) -> Request:
    ua.subscribe_mwi("l1", target_uri=VM, from_uri="sip:100@127.0.0.1", dest=SERVER,
                     expires=3600, now=now, account_id="l1")
    ((out, sub),) = requests(drain(ua), "SUBSCRIBE")
    assert out.dest == SERVER
    return sub


def _notify(sub: Request, body: bytes, *, cseq: int = 1, src: tuple[str, int] = SERVER,
            state: str = "active;expires=3600") -> bytes:
    return raw_request("NOTIFY", call_id=sub.call_id, cseq=cseq, from_tag="srv",
                       to_tag=sub.from_tag, src=src,
                       extra=f"Event: message-summary\nSubscription-State: {state}",
                       body=body, content_type="application/simple-message-summary")


def events(ua: UserAgent) -> list[object]:
    """The agent's subscription events (registration events left out)."""
    return [e for e in all_events(ua) if isinstance(e, (MessageSummary, SubscriptionChanged))]


def _next_subscribe(ua: UserAgent, now: float) -> tuple[float, list[tuple[Outgoing, Request]]]:
    """Run the agent's timers (answering nothing) until it sends a SUBSCRIBE."""
    while (due := ua.get_timer()) is not None and due < now + 4000:
        ua.handle_timer(due)
        subs = requests(drain(ua), "SUBSCRIBE")
        if subs:
            return due, subs
    raise AssertionError("no SUBSCRIBE sent")


def _statuses(ua: UserAgent) -> list[int]:
    return [m.status for _, m in drain(ua) if isinstance(m, Response)]


def test_parse_summary() -> None:
    assert parse_summary(BODY) == Summary(True, 2, 8)
    assert parse_summary(b"Messages-Waiting: no\r\n") == Summary(False)
    with pytest.raises(SipError):
        parse_summary(b"Voice-Message: 1/0\r\n")
    with pytest.raises(SipError):
        parse_summary(b"Messages-Waiting: maybe\r\n")
    assert refresh_at(0.0, 3600) == 3240.0
    assert refresh_at(0.0, 60) == 30.0


def test_subscribe_authenticates_refreshes_and_reports_notify() -> None:
    ua = _ua()
    sub = _subscribe(ua)
    assert sub.headers.get("Event") == "message-summary"
    assert sub.headers.get("Accept") == "application/simple-message-summary"
    assert sub.headers.get("Expires") == "3600"
    challenge = reply(sub, 401, extra='WWW-Authenticate: Digest realm="pbx", nonce="n1", '
                                      'algorithm=MD5')
    ua.receive_datagram(challenge, SERVER, 0.1)
    ((_, again),) = requests(drain(ua), "SUBSCRIBE")
    assert 'username="100"' in (again.headers.get("Authorization") or "")
    assert again.cseq.number == sub.cseq.number + 1 and again.call_id == sub.call_id
    ok = reply(again, 200, to_tag="srv", extra="Expires: 600\nContact: <sip:vm@127.0.0.1:5090>")
    ua.receive_datagram(ok, SERVER, 0.2)
    assert events(ua) == [SubscriptionChanged("l1", True, "200 subscribed", 600)]
    # the server's NOTIFY in the subscription
    ua.receive_datagram(_notify(sub, BODY), SERVER, 0.3)
    assert _statuses(ua) == [200]
    assert events(ua) == [MessageSummary("l1", "100", True, 2, 8, SERVER)]
    ua.receive_datagram(_notify(sub, b"Messages-Waiting: no\r\n", cseq=2), SERVER, 0.4)
    assert _statuses(ua) == [200]
    assert events(ua) == [MessageSummary("l1", "100", False, None, None, SERVER)]
    # refreshed in the dialog before the 600 s run out
    due, ((out, refresh),) = _next_subscribe(ua, 0.4)
    assert 0.2 + 300 <= due < 0.2 + 600 - 30
    assert refresh.call_id == sub.call_id and refresh.to_tag == "srv"
    assert refresh.uri == "sip:vm@127.0.0.1:5090"
    # the server ends it: a new subscription soon after
    ua.receive_datagram(_notify(sub, b"", cseq=3, state="terminated;reason=timeout"),
                        SERVER, due + 1)
    assert _statuses(ua) == [200]
    assert events(ua) == [SubscriptionChanged("l1", False, "terminated by server", None)]
    later, ((_, fresh),) = _next_subscribe(ua, due + 1)
    assert later - due <= 61
    assert fresh.call_id != sub.call_id and fresh.to_tag is None


def test_failed_subscribe_is_reported_and_retried() -> None:
    ua = _ua()
    sub = _subscribe(ua)
    ua.receive_datagram(reply(sub, 489), SERVER, 0.1)
    (ev,) = events(ua)
    assert isinstance(ev, SubscriptionChanged) and not ev.active and "489" in ev.reason
    due, again = _next_subscribe(ua, 0.1)
    assert due >= 60.0 and len(again) == 1


def test_unsolicited_notify_only_from_the_trunk() -> None:
    ua = _ua()
    body = b"Messages-Waiting: yes\r\n"
    raw = raw_request("NOTIFY", uri="sip:100@127.0.0.1:5060", src=SERVER,
                      extra="Event: message-summary", body=body,
                      content_type="application/simple-message-summary")
    ua.receive_datagram(raw, SERVER, 0.0)
    assert _statuses(ua) == [403], "no trunk host configured yet: refused"
    assert ua.stats["refused_notify"] == 1
    assert events(ua) == []
    ua.notify_sources = {"127.0.0.1"}
    ua.receive_datagram(raw.replace(b"CSeq: 1", b"CSeq: 2").replace(b"branch=", b"branch=x"),
                        SERVER, 0.1)
    assert _statuses(ua) == [200]
    assert events(ua) == [MessageSummary(None, "100", True, None, None, SERVER)]


def test_notify_in_subscription_from_a_stranger_is_refused() -> None:
    ua = _ua()
    sub = _subscribe(ua)
    stranger = ("127.0.0.7", 5099)
    ua.receive_datagram(_notify(sub, BODY, src=stranger), stranger, 0.1)
    assert _statuses(ua) == [403]
    assert ua.stats["refused_notify"] == 1
    assert events(ua) == []
    # a NOTIFY for nothing we hold: 481, counted too
    ua.receive_datagram(raw_request("NOTIFY", call_id="other", to_tag="zz", src=SERVER,
                                    extra="Event: message-summary"), SERVER, 0.2)
    assert _statuses(ua) == [481]


def test_bad_summary_body_gets_400() -> None:
    ua = _ua()
    sub = _subscribe(ua)
    ua.receive_datagram(_notify(sub, b"Messages-Waiting: perhaps\r\n"), SERVER, 0.1)
    out = [m for _, m in drain(ua) if isinstance(m, Response)]
    assert [m.status for m in out] == [400]
    assert parse_message(bytes(out[0])).reason.startswith("Messages-Waiting")
    assert events(ua) == []


def test_filter_sees_a_subscription_notify_as_in_dialog() -> None:
    seen: list[tuple[str, bool]] = []

    def challenge_strangers(req: Request, src: object, transport: str, now: float,
                            in_dialog: bool) -> Respond | None:
        seen.append((req.method, in_dialog))
        return None if in_dialog else Respond(401)

    ua = _ua()
    ua.request_filter = challenge_strangers
    sub = _subscribe(ua)
    ua.receive_datagram(_notify(sub, BODY), SERVER, 0.1)
    assert _statuses(ua) == [200]
    assert seen == [("NOTIFY", True)]
    assert [e for e in events(ua) if isinstance(e, MessageSummary)]
