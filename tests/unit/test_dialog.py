"""Dialog creation and in-dialog request construction (RFC 3261 section 12)."""

from __future__ import annotations

from gateway.sip.dialog import Dialog, incoming_request_dialog_id, response_dialog_id
from gateway.sip.message import Request, Response, build_request, make_response, parse_message

VIA = "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKd1;rport"


def invite(extra: list[tuple[str, str]] | None = None, uri: str = "sip:bob@example.net") -> Request:
    return build_request(
        "INVITE", uri,
        from_addr='"Alice" <sip:alice@example.com>;tag=atag',
        to_addr="<sip:bob@example.net>", call_id="call-7@host", cseq=10, via=VIA,
        contact="<sip:alice@127.0.0.1:5060>", extra=extra,
    )


def answer(req: Request, status: int = 200, record_route: list[str] | None = None) -> Response:
    resp = make_response(req, status, to_tag="btag")
    for rr in record_route or []:
        resp.headers.add("Record-Route", rr)
    resp.headers.add("Contact", "<sip:bob@192.0.2.5:5062>")
    parsed = parse_message(bytes(resp))
    assert isinstance(parsed, Response)
    return parsed


def test_uac_dialog_from_2xx_reverses_record_route_and_targets_contact() -> None:
    req = invite()
    resp = answer(req, record_route=["<sip:p1.example;lr>", "<sip:p2.example;lr>"])
    d = Dialog.from_uac_response(req, resp)
    assert d.id == ("call-7@host", "atag", "btag") == response_dialog_id(resp)
    assert d.remote_target == "sip:bob@192.0.2.5:5062"
    assert d.route_set == ["<sip:p2.example;lr>", "<sip:p1.example;lr>"]
    assert not d.early
    bye = d.create_request("BYE", via=VIA)
    assert bye.uri == "sip:bob@192.0.2.5:5062"
    assert bye.headers.get_all("Route") == ["<sip:p2.example;lr>", "<sip:p1.example;lr>"]
    assert bye.cseq.number == 11 and bye.cseq.method == "BYE"
    assert bye.from_tag == "atag" and bye.to_tag == "btag"
    assert bye.from_addr.display == "Alice"
    assert d.next_hop().host == "p2.example"


def test_ack_for_2xx_uses_invite_cseq_and_does_not_bump() -> None:
    req = invite()
    d = Dialog.from_uac_response(req, answer(req))
    ack = d.create_ack(10, via="SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKack")
    assert ack.method == "ACK" and ack.cseq.number == 10 and ack.cseq.method == "ACK"
    assert ack.branch == "z9hG4bKack"
    info = d.create_request("INFO", via=VIA, body=b"Signal=5\r\n",
                            content_type="application/dtmf-relay")
    assert info.cseq.number == 11
    assert parse_message(bytes(info)).body == b"Signal=5\r\n"


def test_early_dialog_from_provisional_then_confirmed() -> None:
    req = invite()
    ringing = answer(req, 180, record_route=["<sip:p1.example;lr>"])
    d = Dialog.from_uac_response(req, ringing)
    assert d.early
    d.confirm(answer(req, 200, record_route=["<sip:p9.example;lr>"]))
    assert not d.early
    assert d.route_set == ["<sip:p9.example;lr>"]


def test_strict_route_puts_first_route_in_request_uri() -> None:
    req = invite()
    d = Dialog.from_uac_response(req, answer(req, record_route=["<sip:strict.example>"]))
    bye = d.create_request("BYE", via=VIA)
    assert bye.uri == "sip:strict.example"
    assert bye.headers.get_all("Route") == ["<sip:bob@192.0.2.5:5062>"]


def test_uas_dialog_and_remote_cseq_ordering() -> None:
    req = invite(extra=[("Record-Route", "<sip:p1.example;lr>")])
    d = Dialog.from_uas_request(req, "mytag")
    assert d.id == ("call-7@host", "mytag", "atag")
    assert d.remote_target == "sip:alice@127.0.0.1:5060"
    assert d.route_set == ["<sip:p1.example;lr>"]
    bye = d.create_request("BYE", via=VIA)
    assert bye.from_tag == "mytag" and bye.to_tag == "atag"
    assert str(bye.from_addr.uri) == "sip:bob@example.net"
    assert bye.cseq.number == 1

    def in_dialog(method: str, cseq: int) -> Request:
        r = build_request(method, "sip:bob@127.0.0.1",
                          from_addr="<sip:alice@example.com>;tag=atag",
                          to_addr="<sip:bob@example.net>;tag=mytag",
                          call_id="call-7@host", cseq=cseq, via=VIA)
        return r

    later = in_dialog("INFO", 11)
    assert incoming_request_dialog_id(later) == d.id
    assert d.check_remote_cseq(later)
    assert d.remote_seq == 11
    assert not d.check_remote_cseq(in_dialog("INFO", 9))  # lower -> caller answers 500
    assert d.check_remote_cseq(in_dialog("ACK", 10))


def test_secure_flag_for_sips_request_uri() -> None:
    req = invite(uri="sips:bob@example.net")
    d = Dialog.from_uas_request(req, "t")
    assert d.secure
