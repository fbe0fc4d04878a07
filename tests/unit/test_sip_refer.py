"""REFER both ways (RFC 3515), Replaces (RFC 3891) and the sipfrag NOTIFYs, on a fake clock.

Two agents back to back: A holds a call with B and transfers it; B is transferred.
"""

from __future__ import annotations

import random

import pytest
from test_ua_dialog_features import A, B, Net, _call
from ua_wire import OFFER, events, make_ua, raw_request

from gateway.sip.errors import SipError
from gateway.sip.events import IncomingCall, ReferProgress, ReferReceived
from gateway.sip.message import Request, Response, parse_message
from gateway.sip.refer import (
    Replaces,
    parse_refer_to,
    parse_replaces,
    parse_sipfrag,
    refer_to_value,
    sipfrag,
)


def _answered(net: Net, src: tuple[str, int], method: str) -> list[int]:
    """Statuses sent back by `src` to `method` requests."""
    return [m.status for _, s, m in net.log
            if s == src and isinstance(m, Response) and m.cseq.method == method]


def test_refer_to_escapes_replaces_and_parses_back() -> None:
    rep = Replaces("abc@host", "tt;x", "ff")
    value = refer_to_value("sip:300@pbx.example", rep)
    assert value == "<sip:300@pbx.example?Replaces=abc%40host%3Bto-tag%3Dtt%3Bx%3Bfrom-tag%3Dff>"
    uri, replaces = parse_refer_to(value)
    assert uri == "sip:300@pbx.example"
    assert replaces == "abc@host;to-tag=tt;x;from-tag=ff"
    assert parse_refer_to("<sip:300@pbx.example>") == ("sip:300@pbx.example", None)
    assert parse_replaces("c1;from-tag=b;to-tag=a;early-only") == Replaces("c1", "a", "b", True)
    with pytest.raises(SipError):
        parse_replaces("c1;to-tag=a")
    assert parse_sipfrag(sipfrag(180)) == 180
    assert parse_sipfrag(b"SIP/2.0 603 Declined\r\n") == 603
    assert parse_sipfrag(b"garbage") is None


def test_blind_transfer_both_sides_refer_202_notify_100_then_200() -> None:
    net, a, b, call_id = _call()
    assert a.refer(call_id, "<sip:300@127.0.0.1>", 1.0, referred_by="<sip:100@127.0.0.1>")
    assert not a.refer(call_id, "<sip:301@127.0.0.1>", 1.0), "one transfer at a time"
    net.pump(1.0)
    got = [e for e in events(b) if isinstance(e, ReferReceived)]
    assert got == [ReferReceived(call_id, "sip:300@127.0.0.1", None, "<sip:100@127.0.0.1>", A)]
    refer = net.sent(A, "REFER")[0][1]
    assert refer.headers.get("Refer-To") == "<sip:300@127.0.0.1>"
    assert b.accept_refer(call_id, 1.1)
    net.pump(1.1)
    assert 202 in _answered(net, B, "REFER")
    notifies = [m for _, m in net.sent(B, "NOTIFY")]
    assert len(notifies) == 1
    assert (notifies[0].headers.get("Event") or "").startswith("refer")
    assert notifies[0].headers.get("Content-Type") == "message/sipfrag;version=2.0"
    assert (notifies[0].headers.get("Subscription-State") or "").startswith("active")
    assert events(a) == [ReferProgress(call_id, 202, False), ReferProgress(call_id, 100, False)]
    assert b.notify_refer(call_id, 180, 2.0)
    assert b.notify_refer(call_id, 200, 3.0)
    assert not b.notify_refer(call_id, 200, 3.1), "the final NOTIFY was the last"
    net.pump(3.0)
    assert events(a) == [ReferProgress(call_id, 180, False), ReferProgress(call_id, 200, True)]
    assert _answered(net, A, "NOTIFY") == [200, 200, 200]
    last = net.sent(B, "NOTIFY")[-1][1]
    assert (last.headers.get("Subscription-State") or "").startswith("terminated")
    assert last.body.startswith(b"SIP/2.0 200")


def test_transfer_failure_is_final_and_refused_refer_is_final() -> None:
    net, a, b, call_id = _call()
    a.refer(call_id, "<sip:300@127.0.0.1>", 1.0)
    net.pump(1.0)
    b.accept_refer(call_id, 1.0)
    b.notify_refer(call_id, 486, 2.0)
    net.pump(2.0)
    assert events(a)[-1] == ReferProgress(call_id, 486, True)
    # a second transfer, refused by the transferee
    assert a.refer(call_id, "<sip:301@127.0.0.1>", 3.0)
    net.pump(3.0)
    events(b)
    assert b.reject_refer(call_id, 603, 3.1)
    net.pump(3.1)
    assert events(a) == [ReferProgress(call_id, 603, True)]


def test_attended_transfer_replaces_names_the_dialog_for_its_peer() -> None:
    net, a, b, call_id = _call()
    value = a.replaces(call_id)
    assert value is not None
    rep = parse_replaces(value)
    call = a._calls[call_id]
    assert call.dialog is not None
    assert (rep.to_tag, rep.from_tag) == (call.dialog.remote_tag, call.dialog.local_tag)
    # B, receiving an INVITE with that Replaces, finds its own leg of this call
    assert b.replaced_call(value) == call_id
    assert a.replaced_call(value) is None, "from A's side the tags are the other way round"
    assert b.replaced_call(f"{call_id};to-tag=nope;from-tag=x") is None


def test_invite_with_replaces_and_require_replaces_is_announced() -> None:
    ua = make_ua(A)
    ua.receive_datagram(raw_request(
        "INVITE", extra="Replaces: c9@x;to-tag=a;from-tag=b\nRequire: replaces",
        body=OFFER, content_type="application/sdp"), B, 0.0)
    incoming = [e for e in events(ua) if isinstance(e, IncomingCall)]
    assert incoming and incoming[0].replaces == "c9@x;to-tag=a;from-tag=b"


def test_refer_or_notify_from_another_address_is_refused_and_counted() -> None:
    net, a, b, call_id = _call()
    call = b._calls[call_id]
    assert call.dialog is not None
    d = call.dialog
    stranger = ("127.0.0.9", 5099)
    for method, stat in (("REFER", "refused_refer"), ("NOTIFY", "refused_notify")):
        before = b.stats[stat]
        raw = raw_request(method, call_id=call_id, cseq=50 if method == "REFER" else 51,
                          from_tag=d.remote_tag, to_tag=d.local_tag, src=stranger,
                          extra="Refer-To: <sip:900@evil.example>\nEvent: refer")
        b.receive_datagram(raw, stranger, 4.0)
        out = [parse_message(o.data) for o in b.messages_out()]
        assert [m.status for m in out if isinstance(m, Response)] == [403]
        assert b.stats[stat] == before + 1
        assert not [e for e in events(b) if isinstance(e, ReferReceived)]


def test_refer_without_refer_to_gets_400_and_notify_without_refer_481() -> None:
    net, a, b, call_id = _call()
    d = b._calls[call_id].dialog
    assert d is not None
    b.receive_datagram(raw_request("REFER", call_id=call_id, cseq=60, from_tag=d.remote_tag,
                                   to_tag=d.local_tag, src=A), A, 4.0)
    b.receive_datagram(raw_request("NOTIFY", call_id=call_id, cseq=61, from_tag=d.remote_tag,
                                   to_tag=d.local_tag, src=A, extra="Event: refer",
                                   body=b"SIP/2.0 200 OK\r\n",
                                   content_type="message/sipfrag"), A, 4.0)
    out = [parse_message(o.data) for o in b.messages_out()]
    assert [(m.cseq.method, m.status) for m in out if isinstance(m, Response)] == [
        ("REFER", 400), ("NOTIFY", 481)]


def test_refer_outside_a_dialog_gets_481() -> None:
    ua = make_ua(A, rng=random.Random(3))
    ua.receive_datagram(raw_request("REFER", extra="Refer-To: <sip:1@x>"), B, 0.0)
    out = [parse_message(o.data) for o in ua.messages_out()]
    assert [m.status for m in out if isinstance(m, Response)] == [481]
    assert not isinstance(out[0], Request)


def test_refer_left_unanswered_gets_500() -> None:
    net, a, b, call_id = _call()
    a.refer(call_id, "<sip:300@127.0.0.1>", 1.0)
    net.pump(1.0)
    assert [e for e in events(b) if isinstance(e, ReferReceived)]
    net.run(1.0, 1.0 + 9.0)
    assert 500 in _answered(net, B, "REFER")
    assert events(a)[-1] == ReferProgress(call_id, 500, True)
    assert not b.accept_refer(call_id, 11.0), "too late"
