from gateway.sip.events import CallEnded, IncomingCall
from gateway.sip.message import parse_message
from gateway.sip.ua import UserAgent

INVITE = (
    b"INVITE sip:102@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKunans1;rport\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:100@127.0.0.2>;tag=f1\r\nTo: <sip:102@127.0.0.1>\r\n"
    b"Call-ID: unanswered@127.0.0.2\r\nCSeq: 1 INVITE\r\nContact: <sip:100@127.0.0.2>\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def test_invite_the_application_never_answers_gets_480_and_is_forgotten() -> None:
    ua = UserAgent(local_host="127.0.0.1", local_port=5060, instance_id="urn:uuid:0")
    ua.receive_datagram(INVITE, ("127.0.0.2", 5060), 0.0)
    assert isinstance(ua.next_event(), IncomingCall)
    ua.datagrams_to_send()
    now = 0.0
    statuses = []
    while (timer := ua.get_timer()) is not None and now < 400:
        now = timer
        ua.handle_timer(now)
        for data, _ in ua.datagrams_to_send():
            msg = parse_message(data)
            statuses.append(getattr(msg, "status", None))
    assert 480 in statuses
    events = []
    while (ev := ua.next_event()) is not None:
        events.append(ev)
    assert any(isinstance(e, CallEnded) and e.status == 480 for e in events), events
    sizes = ua.table_sizes()
    assert sizes["calls"] == 0 and sizes["server_transactions"] == 0, sizes
