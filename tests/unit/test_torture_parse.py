"""RFC 4475 torture messages through parse_message: the parser's verdict for each one.

Only the parser's part is checked here. Application-level answers (416, 420, 483, 505,
401...) come later in the daemon tests; where the parser itself can know the status it
gives a hint on SipParseError.status, which is checked too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.sip.errors import SipParseError
from gateway.sip.message import Request, Response, parse_message

TORTURE_DIR = Path(__file__).resolve().parents[1] / "data" / "rfc4475"

VALID = "valid"  # RFC 4475 3.1.1: must parse
INVALID = "invalid"  # must raise SipParseError (request -> 400/505, response -> drop)
ACCEPTED = "accepted"  # syntactically fine for the parser; a later layer decides

# name -> (verdict, status hint expected on SipParseError / note)
EXPECTED: dict[str, tuple[str, int | None]] = {
    # 3.1.1 valid messages
    "wsinv": (VALID, None),
    "intmeth": (VALID, None),
    "esc01": (VALID, None),
    "escnull": (VALID, None),
    "esc02": (VALID, None),
    "lwsdisp": (VALID, None),
    "longreq": (VALID, None),
    "dblreq": (VALID, None),
    "semiuri": (VALID, None),
    "transports": (VALID, None),
    "mpart01": (VALID, None),
    "unreason": (VALID, None),
    "noreason": (VALID, None),
    # 3.1.2 invalid messages
    "badinv01": (INVALID, 400),  # empty Via params, junk
    "clerr": (INVALID, 400),  # Content-Length larger than the datagram
    "ncl": (INVALID, 400),  # negative Content-Length
    "scalar02": (INVALID, 400),  # CSeq beyond 32 bits, Max-Forwards 300
    "scalarlg": (INVALID, 400),  # response with overlarge scalars: dropped
    "quotbal": (INVALID, 400),  # unbalanced quotes in To
    "ltgtruri": (INVALID, 400),  # Request-URI in <>
    "lwsruri": (INVALID, 400),  # whitespace inside Request-URI
    "lwsstart": (INVALID, 400),  # several spaces in the request line
    "trws": (INVALID, 400),  # trailing whitespace after SIP-Version
    "escruri": (INVALID, 400),  # headers in the Request-URI
    "regbadct": (INVALID, 400),  # Contact with ?headers but no <>
    "badaspec": (INVALID, 400),  # spaces inside <addr-spec>
    "baddn": (INVALID, 400),  # unquoted display name with a comma
    "badvers": (INVALID, 505),  # SIP/7.0
    "mismatch01": (INVALID, 400),  # CSeq method differs from request method
    "mismatch02": (INVALID, 400),  # RFC allows 400 as well as 501
    "bigcode": (INVALID, 400),  # status code out of range: response dropped
    # The parser does not interpret Date; RFC 4475 lets an element ignore a bad one.
    "baddate": (ACCEPTED, None),
    # 3.2 transaction layer: branch without magic cookie is matched the RFC 2543 way.
    "badbranch": (ACCEPTED, None),
    # 3.3 application layer: the parser accepts, except where a header it checks is broken.
    "insuf": (INVALID, 400),  # missing From/Call-ID/CSeq... : 400 per RFC
    "unkscm": (ACCEPTED, 416),  # request_uri raises with status 416
    "novelsc": (ACCEPTED, 416),
    # From/To carry http:/isbn: URIs; our name-addr parser knows sip/sips/tel only, so the
    # request is refused with 400 (the REGISTER cannot be honoured for a non-SIP AOR anyway).
    "unksm2": (INVALID, 400),
    "bext01": (ACCEPTED, None),  # 420 from the UA
    "invut": (ACCEPTED, None),  # 415 from the UA
    "regaut01": (ACCEPTED, None),  # 401 from the registrar
    "multi01": (INVALID, 400),  # several From/To/Call-ID/CSeq values: 400 per RFC
    "mcl01": (INVALID, 400),  # several Content-Length values: 400 per RFC
    "bcast": (ACCEPTED, None),  # response; the transaction layer decides
    "zeromf": (ACCEPTED, None),  # Max-Forwards 0: 483 from a proxy
    "cparam01": (ACCEPTED, None),
    "cparam02": (ACCEPTED, None),
    "regescrt": (ACCEPTED, None),
    "sdp01": (ACCEPTED, None),  # 415/488 from the UA
    # 3.4 backward compatibility
    "inv2543": (ACCEPTED, None),
}


def _load(name: str) -> bytes:
    return (TORTURE_DIR / f"{name}.dat").read_bytes()


def test_table_covers_every_message() -> None:
    assert {p.stem for p in TORTURE_DIR.glob("*.dat")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_verdict(name: str) -> None:
    verdict, status = EXPECTED[name]
    data = _load(name)
    if verdict == INVALID:
        with pytest.raises(SipParseError) as info:
            parse_message(data)
        assert info.value.reason
        assert info.value.status == status
        partial = info.value.message
        if partial is not None and isinstance(partial, Request):
            # Enough was read to build the 400 from the request's own headers.
            assert "Via" in partial.headers
        return
    msg = parse_message(data)
    assert isinstance(msg, (Request, Response))
    if isinstance(msg, Request):
        assert msg.cseq.method == msg.method
        if status is not None:
            with pytest.raises(SipParseError) as info:
                _ = msg.request_uri
            assert info.value.status == status
        else:
            assert msg.request_uri.scheme in ("sip", "sips")
    assert bytes(msg)  # serialises without error


def test_start_line_errors_still_give_headers_for_400() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(_load("lwsstart"))
    partial = info.value.message
    assert isinstance(partial, Request)
    assert partial.method == "INVITE"
    assert partial.call_id.startswith("lwsstart")


def test_details_of_valid_messages() -> None:
    dbl = parse_message(_load("dblreq"))
    assert isinstance(dbl, Request)
    assert dbl.method == "REGISTER" and dbl.body == b""  # second message ignored

    semi = parse_message(_load("semiuri"))
    assert isinstance(semi, Request)
    assert semi.request_uri.user == "user;par=u%40example.net"
    assert semi.request_uri.host == "example.com"

    esc = parse_message(_load("esc01"))
    assert isinstance(esc, Request)
    assert esc.request_uri.user == "sips%3Auser%40example.com"

    ws = parse_message(_load("wsinv"))
    assert isinstance(ws, Request)
    assert ws.to_tag == "1918181833n"
    assert ws.from_tag == "98asjd8"
    assert [v.transport for v in ws.vias] == ["UDP", "TCP", "UDP"]
    assert ws.vias[2].branch == "z9hG4bK30239"
    assert ws.headers.get("Max-Forwards") == "0068"
    assert ws.headers.get("Subject") == ""
    assert len(ws.body) == 150

    meth = parse_message(_load("intmeth"))
    assert isinstance(meth, Request)
    assert meth.method == "!interesting-Method0123456789_*+`.%indeed'~"

    mp = parse_message(_load("mpart01"))
    assert mp.headers.get("Content-Type") == "multipart/mixed;boundary=7a9cbec02ceef655"
    assert len(mp.body) == 553
    assert b"--7a9cbec02ceef655--" in mp.body

    no = parse_message(_load("noreason"))
    assert isinstance(no, Response) and no.status == 100 and no.reason == ""
    un = parse_message(_load("unreason"))
    assert isinstance(un, Response) and un.status == 200 and len(un.reason) > 10
