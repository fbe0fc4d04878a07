"""SDES (RFC 4568): a=crypto parsing and printing, offers, answer choice and answer checks.

The sample line with lifetime and MKI is the example of RFC 4568 §4; its key decodes to
bytes that start 3D 2D 6E (base64 "PS1u").
"""

from __future__ import annotations

import base64
import struct

import pytest

from gateway.media.srtp import SrtpContext, SrtpError
from gateway.sip.errors import SdpError
from gateway.sip.sdes import (
    SUPPORTED_SUITES,
    CryptoAttribute,
    KeyParam,
    SdesError,
    accept_answer,
    add_crypto,
    choose_answer,
    crypto_attributes,
    make_offer,
    new_crypto,
)
from gateway.sip.sdp import MediaDescription, SessionDescription

RFC_KEY = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
RFC_LINE = f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|1:32"
OTHER_KEY = base64.b64encode(bytes(range(30))).decode()

OFFER_SDP = (
    "v=0\r\n"
    "o=- 1 1 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "m=audio 40000 RTP/SAVP 0 8\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=sendrecv\r\n"
    f"a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:{base64.b64encode(bytes(46)).decode()}\r\n"
    f"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^31|1:4\r\n"
    f"a=crypto:3 AES_CM_128_HMAC_SHA1_32 inline:{OTHER_KEY}|2^31\r\n"
    f"a=crypto:4 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}\r\n"
).encode()


def media(proto: str = "RTP/SAVP") -> MediaDescription:
    return MediaDescription(media="audio", port=40000, proto=proto, formats=[0])


# ----------------------------------------------------------------------- parsing


def test_parse_rfc_example_and_print_it_back() -> None:
    attr = CryptoAttribute.parse(RFC_LINE)
    assert (attr.tag, attr.suite, attr.session_params) == (1, "AES_CM_128_HMAC_SHA1_80", ())
    (key,) = attr.keys
    assert len(key.key_salt) == 30 and key.key_salt[:3] == b"\x3d\x2d\x6e"
    assert key.lifetime == 1 << 20
    assert key.mki == (1, 32)
    assert str(attr) == RFC_LINE
    assert attr.line() == "a=crypto:" + RFC_LINE


def test_master_key_and_salt_split_the_inline_key() -> None:
    attr = CryptoAttribute.parse(f"7 AES_CM_128_HMAC_SHA1_32 inline:{OTHER_KEY}")
    assert attr.master_key == bytes(range(16))
    assert attr.master_salt == bytes(range(16, 30))


def test_decimal_lifetime_and_session_params() -> None:
    attr = CryptoAttribute.parse(f"2  AES_CM_128_HMAC_SHA1_80\tinline:{OTHER_KEY}|1000 WSH=128 -X")
    assert attr.keys[0].lifetime == 1000
    assert attr.session_params == ("WSH=128", "-X")
    assert attr.problem() is None  # window hint and "-" extensions may be ignored
    assert str(attr) == f"2 AES_CM_128_HMAC_SHA1_80 inline:{OTHER_KEY}|1000 WSH=128 -X"


def test_lifetime_power_of_two_prints_as_exponent() -> None:
    assert str(KeyParam(bytes(30), lifetime=1 << 31)).endswith("|2^31")
    assert str(KeyParam(bytes(30), lifetime=1 << 31, mki=(5, 2))).endswith("|2^31|5:2")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1 AES_CM_128_HMAC_SHA1_80", "expected '<tag> <suite> inline:<key>'"),
        (f"x AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}", "tag 'x'"),
        (f"1234567890 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}", "1-9 digits"),
        (f"1 AES-CM inline:{RFC_KEY}", "suite 'AES-CM'"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:!!!!", "not base64"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:QUJD=A", "not base64"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:QUJ", "not valid base64"),
        (f"1 AES_CM_128_HMAC_SHA1_80 uri:{RFC_KEY}", "only 'inline'"),
        (f"1 AES_CM_128_HMAC_SHA1_80 {RFC_KEY}", "expected 'inline:<key>'"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|1:4|9", "too many '|'"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^x", "lifetime '2^x'"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|0", "at least one packet"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^65", "out of range"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|1:0", "must be 1..128"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|1:129", "must be 1..128"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|256:1", "does not fit in 1 bytes"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|1:a", "expected '<value>:<length>'"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|1:1|2:1", "two MKI"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|1:1|2^20", "before MKI"),
    ],
)
def test_malformed_lines_raise_naming_the_problem(value: str, message: str) -> None:
    with pytest.raises(SdesError, match=message.replace("^", r"\^").replace("|", r"\|")):
        CryptoAttribute.parse(value)


def test_sdes_errors_are_sdp_errors_so_callers_answer_488() -> None:
    with pytest.raises(SdpError):
        CryptoAttribute.parse("garbage")


# ------------------------------------------------------------- usable or not


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (f"1 AES_256_CM_HMAC_SHA1_80 inline:{RFC_KEY}", "AES_256_CM_HMAC_SHA1_80 .* not supported"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY};inline:{OTHER_KEY}", "2 keys"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:QUJDRA==", "key is 4 bytes"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|1:4", "MKI"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^50", "exceeds"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} UNENCRYPTED_SRTP", "UNENCRYPTED_SRTP"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} KDR=10", "KDR=10"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} FOO=1", "unknown session parameter 'FOO=1'"),
    ],
)
def test_unusable_lines_say_why(value: str, message: str) -> None:
    attr = CryptoAttribute.parse(value)
    problem = attr.problem()
    assert problem is not None
    assert pytest.raises(SdesError, lambda: attr.master_key).match(message)


# --------------------------------------------------------------------- offers


def test_new_crypto_makes_fresh_usable_keys() -> None:
    first, second = new_crypto(), new_crypto()
    assert first.problem() is None and second.problem() is None
    assert first.keys[0].key_salt != second.keys[0].key_salt
    assert len(first.keys[0].key_salt) == 30
    assert (first.tag, first.suite) == (1, "AES_CM_128_HMAC_SHA1_80")
    assert CryptoAttribute.parse(str(first)) == first


def test_new_crypto_refuses_suites_we_cannot_run() -> None:
    with pytest.raises(SdesError, match="AES_256_CM_HMAC_SHA1_80"):
        new_crypto(1, "AES_256_CM_HMAC_SHA1_80")
    with pytest.raises(SdesError, match="tag must be"):
        new_crypto(0)


def test_make_offer_numbers_tags_in_preference_order() -> None:
    offer = make_offer()
    assert [(a.tag, a.suite) for a in offer] == [
        (1, "AES_CM_128_HMAC_SHA1_80"),
        (2, "AES_CM_128_HMAC_SHA1_32"),
    ]
    assert offer[0].keys[0].key_salt != offer[1].keys[0].key_salt
    with pytest.raises(SdesError, match="at least one"):
        make_offer([])


# ---------------------------------------------------------- answering an offer


def test_choose_answer_takes_the_first_usable_line() -> None:
    offered = crypto_attributes(SessionDescription.parse(OFFER_SDP).media[0])
    assert [a.tag for a in offered] == [1, 2, 3, 4]
    selection = choose_answer(offered)
    # Tag 1 is AES-256 and tag 2 has an MKI: tag 3 is the first we can run.
    assert (selection.tag, selection.suite) == (3, "AES_CM_128_HMAC_SHA1_32")
    assert selection.remote.master_key == bytes(range(16))
    assert selection.local.tag == 3 and selection.local.suite == "AES_CM_128_HMAC_SHA1_32"
    assert selection.local.master_key != selection.remote.master_key
    assert selection.local.keys[0].lifetime is None and selection.local.keys[0].mki is None


def test_choose_answer_lists_every_refusal() -> None:
    offered = [
        CryptoAttribute.parse(f"1 AES_256_CM_HMAC_SHA1_80 inline:{RFC_KEY}"),
        CryptoAttribute.parse(f"2 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|1:4"),
    ]
    with pytest.raises(SdesError) as err:
        choose_answer(offered)
    assert "no acceptable a=crypto line" in str(err.value)
    assert "AES_256_CM_HMAC_SHA1_80 (tag 1)" in str(err.value)
    assert "tag 2 uses an MKI" in str(err.value)
    with pytest.raises(SdesError, match="no a=crypto line"):
        choose_answer([])


def test_choose_answer_skips_a_repeated_tag() -> None:
    offered = [
        CryptoAttribute.parse(f"1 AES_256_CM_HMAC_SHA1_80 inline:{RFC_KEY}"),
        CryptoAttribute.parse(f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}"),
        CryptoAttribute.parse(f"2 AES_CM_128_HMAC_SHA1_32 inline:{RFC_KEY}"),
    ]
    assert choose_answer(offered).tag == 2


# ------------------------------------------------------ checking the answer to ours


def test_accept_answer_pairs_our_key_with_theirs() -> None:
    offer = make_offer()
    answer = CryptoAttribute.parse(f"2 AES_CM_128_HMAC_SHA1_32 inline:{OTHER_KEY}")
    selection = accept_answer(offer, [answer])
    assert selection.local is offer[1]
    assert selection.remote.master_key == bytes(range(16))
    assert selection.suite == "AES_CM_128_HMAC_SHA1_32"


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ([], "exactly one a=crypto line, got 0"),
        (
            [f"1 AES_CM_128_HMAC_SHA1_80 inline:{OTHER_KEY}"] * 2,
            "exactly one a=crypto line, got 2",
        ),
        ([f"9 AES_CM_128_HMAC_SHA1_80 inline:{OTHER_KEY}"], "tag 9, which we did not offer"),
        ([f"1 AES_CM_128_HMAC_SHA1_32 inline:{OTHER_KEY}"], "from suite AES_CM_128_HMAC_SHA1_80"),
        (["1 AES_CM_128_HMAC_SHA1_80 inline:QUJDRA=="], "unusable: tag 1 key is 4 bytes"),
    ],
)
def test_accept_answer_refuses_bad_answers(answers: list[str], message: str) -> None:
    with pytest.raises(SdesError, match=message):
        accept_answer(make_offer(), [CryptoAttribute.parse(a) for a in answers])


# ------------------------------------------------------------ SDP attributes


def test_crypto_attributes_strict_and_lenient() -> None:
    m = media()
    m.attributes += [
        ("rtcp-mux", None),
        ("crypto", f"1 AES_CM_128_HMAC_SHA1_80 inline:{OTHER_KEY}"),
        ("crypto", "2 AES_CM_128_HMAC_SHA1_80 inline:%%%"),
        ("crypto", None),
        ("crypto", f"3 AES_CM_128_HMAC_SHA1_32 inline:{OTHER_KEY}"),
    ]
    with pytest.raises(SdesError, match="not base64"):
        crypto_attributes(m)
    assert [a.tag for a in crypto_attributes(m, strict=False)] == [1, 3]


def test_add_crypto_appends_and_replaces_by_tag() -> None:
    m = media()
    m.attributes.append(("rtcp-mux", None))
    first, second = new_crypto(1), new_crypto(2, "AES_CM_128_HMAC_SHA1_32")
    add_crypto(m, first)
    add_crypto(m, second)
    rekeyed = new_crypto(1)
    add_crypto(m, rekeyed)
    assert m.attributes == [
        ("rtcp-mux", None),
        ("crypto", str(rekeyed)),
        ("crypto", str(second)),
    ]
    assert crypto_attributes(m) == [rekeyed, second]


def test_crypto_lines_survive_an_sdp_print_and_parse() -> None:
    sdp = SessionDescription.parse(OFFER_SDP)
    answer_media = media()
    selection = choose_answer(crypto_attributes(sdp.media[0]))
    add_crypto(answer_media, selection.local)
    sdp.media = [answer_media]
    body = bytes(sdp)
    assert f"a=crypto:{selection.local}\r\n".encode() in body
    reparsed = crypto_attributes(SessionDescription.parse(body).media[0])
    assert reparsed == [selection.local]


# --------------------------------------------------------- SDES drives SRTP


def _rtp(seq: int, ssrc: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc) + bytes([seq & 0xFF]) * 160


def test_negotiated_keys_carry_srtp_both_ways() -> None:
    offer = make_offer()
    answerer = choose_answer([CryptoAttribute.parse(str(a)) for a in offer])
    offerer = accept_answer(offer, [CryptoAttribute.parse(str(answerer.local))])
    assert offerer.suite == answerer.suite == SUPPORTED_SUITES[0]

    def ctx(attr: CryptoAttribute, suite: str) -> SrtpContext:
        return SrtpContext(attr.master_key, attr.master_salt, suite)

    a_send, a_recv = ctx(offerer.local, offerer.suite), ctx(offerer.remote, offerer.suite)
    b_send, b_recv = ctx(answerer.local, answerer.suite), ctx(answerer.remote, answerer.suite)
    assert b_recv.unprotect(a_send.protect(_rtp(1, 0xA))) == _rtp(1, 0xA)
    assert a_recv.unprotect(b_send.protect(_rtp(9, 0xB))) == _rtp(9, 0xB)
    # Each direction has its own key: b_recv holds the offerer's, not the answerer's own.
    with pytest.raises(SrtpError):
        b_recv.unprotect(b_send.protect(_rtp(2, 0xB)))


def test_add_crypto_collapses_repeated_lines_with_the_same_tag() -> None:
    m = media()
    stale = f"1 AES_CM_128_HMAC_SHA1_80 inline:{OTHER_KEY}"
    m.attributes += [("crypto", stale), ("ptime", "20"), ("crypto", stale)]
    fresh = new_crypto(1)
    add_crypto(m, fresh)
    assert m.attributes == [("crypto", str(fresh)), ("ptime", "20")]
