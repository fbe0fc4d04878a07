"""validate_request: the RFC 3261 8.2 refusals, their order and the headers they carry."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.sip.message import Request, parse_message
from gateway.sip.validate import UasPolicy, validate_request

_TORTURE = Path(__file__).resolve().parents[1] / "data" / "rfc4475"


def _req(
    method: str = "INVITE",
    uri: str = "sip:201@gw.example",
    extra: str = "",
    body: bytes = b"",
    max_forwards: str = "70",
    to_tag: str = "",
) -> Request:
    head = (
        f"{method} {uri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKaaa;rport\r\n"
        f"Max-Forwards: {max_forwards}\r\n"
        "From: <sip:100@127.0.0.1>;tag=f1\r\n"
        f"To: <sip:201@gw.example>{to_tag}\r\n"
        "Call-ID: c1@127.0.0.1\r\n"
        f"CSeq: 1 {method}\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    msg = parse_message(head.encode() + body)
    assert isinstance(msg, Request)
    return msg


SDP_BODY = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"


def test_plain_invite_passes() -> None:
    assert validate_request(_req(extra="Content-Type: application/sdp\r\n", body=SDP_BODY)) is None


def test_unknown_scheme_gets_416_with_to_tag() -> None:
    resp = validate_request(_req(uri="im:user@example.com"))
    assert resp is not None and resp.status == 416
    assert resp.to_tag is not None
    assert resp.call_id == "c1@127.0.0.1" and resp.top_via.branch == "z9hG4bKaaa"


def test_tel_refused_by_default_and_accepted_by_policy() -> None:
    req = _req(uri="tel:+4930123456")
    resp = validate_request(req)
    assert resp is not None and resp.status == 416
    assert validate_request(req, UasPolicy(accept_tel=True)) is None


def test_bad_sip_uri_host_gets_400() -> None:
    req = _req()
    req.uri = "sip:user@bad_host-!"  # the parser refuses this; a hand-built request may not
    resp = validate_request(req)
    assert resp is not None and resp.status == 400


def test_same_via_twice_is_a_loop() -> None:
    via = "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKaaa\r\n"
    resp = validate_request(_req(extra=via))
    assert resp is not None and resp.status == 482


def test_spiral_with_new_branch_is_not_a_loop() -> None:
    via = "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKbbb\r\n"
    assert validate_request(_req(extra=via)) is None


def test_zero_max_forwards_483_but_options_and_in_dialog_pass() -> None:
    resp = validate_request(_req(max_forwards="0"))
    assert resp is not None and resp.status == 483
    assert validate_request(_req("OPTIONS", max_forwards="0")) is None
    assert validate_request(_req("BYE", max_forwards="0", to_tag=";tag=t9")) is None
    assert validate_request(_req(max_forwards="0"), UasPolicy(refuse_zero_max_forwards=False)) is None


def test_unknown_require_gets_420_listing_only_unknown_tags() -> None:
    resp = validate_request(_req(extra="Require: timer, foo\r\nRequire: bar\r\n"))
    assert resp is not None and resp.status == 420
    assert resp.headers.get_all("Unsupported") == ["foo", "bar"]


def test_require_timer_is_supported_and_set_is_configurable() -> None:
    assert validate_request(_req(extra="Require: timer\r\n")) is None
    resp = validate_request(_req(extra="Require: timer\r\n"), UasPolicy(supported=frozenset()))
    assert resp is not None and resp.status == 420


def test_cancel_with_require_is_not_refused() -> None:
    assert validate_request(_req("CANCEL", extra="Require: foo\r\n")) is None


def test_unknown_body_type_gets_415_with_accept() -> None:
    resp = validate_request(_req(extra="Content-Type: text/html\r\n", body=b"<p>hi</p>"))
    assert resp is not None and resp.status == 415
    assert resp.headers.get("Accept") == "application/sdp"


def test_content_encoding_gzip_gets_415() -> None:
    extra = "Content-Type: application/sdp\r\nContent-Encoding: gzip\r\n"
    resp = validate_request(_req(extra=extra, body=SDP_BODY))
    assert resp is not None and resp.status == 415
    assert resp.headers.get("Accept-Encoding") == "identity"


def test_order_416_before_420_before_415() -> None:
    extra = "Require: foo\r\nContent-Type: text/html\r\n"
    first = validate_request(_req(uri="mailto:x@example.com", extra=extra, body=b"x"))
    assert first is not None and first.status == 416
    second = validate_request(_req(extra=extra, body=b"x"))
    assert second is not None and second.status == 420


def test_invite_accepting_no_sdp_gets_406() -> None:
    resp = validate_request(_req(extra="Accept: text/plain\r\n"))
    assert resp is not None and resp.status == 406
    assert validate_request(_req(extra="Accept: application/*\r\n")) is None


def test_ack_is_never_answered() -> None:
    assert validate_request(_req("ACK", uri="im:x@example.com", extra="Require: foo\r\n")) is None


def test_info_dtmf_relay_passes_and_other_methods_are_left_alone() -> None:
    info = _req("INFO", to_tag=";tag=t1", extra="Content-Type: application/dtmf-relay\r\n",
                body=b"Signal=5\r\nDuration=160\r\n")
    assert validate_request(info) is None
    message = _req("MESSAGE", extra="Content-Type: text/plain\r\n", body=b"hello")
    assert validate_request(message) is None


# RFC 4475 application-layer messages the parser accepts: the refusal each one names.
TORTURE_STATUS = {
    "unkscm": 416,  # 3.3.2 unknown scheme
    "novelsc": 416,  # 3.3.3 novel scheme
    "bext01": 420,  # 3.3.5 unknown Require
    "invut": 415,  # 3.3.6 unknown Content-Type
    "sdp01": 406,  # 3.3.15 Accept without application/sdp
    "zeromf": None,  # 3.3.11 OPTIONS with Max-Forwards 0: answered normally
    "regaut01": None,  # 3.3.7 the registrar challenges
    "cparam01": None,
    "cparam02": None,
    "regescrt": None,
    "inv2543": None,  # 3.4 RFC 2543 INVITE must be understood
    "badbranch": None,
    "wsinv": None,
    "esc01": None,
    "lwsdisp": None,
}


@pytest.mark.parametrize("name", sorted(TORTURE_STATUS))
def test_torture_refusals(name: str) -> None:
    msg = parse_message((_TORTURE / f"{name}.dat").read_bytes())
    assert isinstance(msg, Request)
    resp = validate_request(msg)
    expected = TORTURE_STATUS[name]
    if expected is None:
        assert resp is None
    else:
        assert resp is not None and resp.status == expected
        assert resp.call_id == msg.call_id
        if expected == 420:
            assert resp.headers.get_all("Unsupported") == [
                "nothingSupportsThis", "nothingSupportsThisEither"]
