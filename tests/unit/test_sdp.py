"""SDP parsing/printing and RFC 3264 offer/answer for one audio stream."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sip.errors import SdpError
from gateway.sip.sdp import (
    MediaParams,
    SessionDescription,
    answer_offer,
    build_offer,
    params_from_answer,
)

OFFER = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 198.51.100.1\r\n"
    b"s=-\r\n"
    b"c=IN IP4 198.51.100.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 18 8 0 97\r\n"
    b"a=rtpmap:97 telephone-event/8000\r\n"
    b"a=fmtp:97 0-15\r\n"
    b"a=rtpmap:18 G729/8000\r\n"
    b"a=ptime:30\r\n"
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n"
    b"m=video 51372 RTP/AVP 31\r\n"
    b"a=rtpmap:31 H261/90000\r\n"
)


def _answer(offer: bytes, **kw: object) -> tuple[SessionDescription, MediaParams]:
    args: dict[str, object] = {
        "address": "127.0.0.1",
        "port": 40000,
        "codecs": ["PCMU", "PCMA"],
        "session_id": 1,
        "session_version": 1,
    }
    args.update(kw)
    return answer_offer(SessionDescription.parse(offer), **args)  # type: ignore[arg-type]


def test_parse_fields() -> None:
    sdp = SessionDescription.parse(OFFER)
    assert sdp.origin.session_id == 2890844526
    assert sdp.connection == "198.51.100.1"
    audio, video = sdp.media
    assert (audio.media, audio.port, audio.proto) == ("audio", 49170, "RTP/AVP")
    assert audio.formats == [18, 8, 0, 97]
    assert audio.codec(0) == ("PCMU", 8000, 1)  # static table, no rtpmap
    assert audio.codec(97) == ("telephone-event", 8000, 1)
    assert audio.fmtp == {97: "0-15"}
    assert audio.ptime == 30
    assert audio.direction == "sendrecv"
    assert audio.attributes[0][0] == "crypto"
    assert video.rtpmap[31] == ("H261", 90000, 1)


def test_round_trip_keeps_unknown_attributes() -> None:
    sdp = SessionDescription.parse(OFFER)
    data = bytes(sdp)
    assert b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n" in data
    assert data.endswith(b"\r\n") and b"\n" not in data.replace(b"\r\n", b"")
    assert SessionDescription.parse(data) == sdp


def test_session_direction_and_media_connection_override() -> None:
    sdp = SessionDescription.parse(
        b"v=0\no=- 1 1 IN IP4 10.0.0.1\ns=x\nc=IN IP4 10.0.0.1\nt=0 0\na=sendonly\n"
        b"m=audio 5000 RTP/AVP 0\nc=IN IP4 10.0.0.2\n"
        b"m=audio 5002 RTP/AVP 8\na=inactive\n"
    )
    first, second = sdp.media
    assert first.direction == "sendonly"
    assert second.direction == "inactive"
    assert sdp.media_address(first) == "10.0.0.2"
    assert sdp.media_address(second) == "10.0.0.1"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"v=1\r\n",
        b"v=0\r\ns=-\r\n",  # no origin
        b"v=0\r\no=- x 1 IN IP4 1.2.3.4\r\n",
        b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP 0\r\n",  # no c=
        b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 1.2.3.4\r\nm=audio 99999 RTP/AVP 0\r\n",
        b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP x\r\n",
        b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN XX 1.2.3.4\r\n",
        b"v=0\r\nbogus\r\n",
        b"v=0\r\n\xff\r\n",
    ],
)
def test_malformed(data: bytes) -> None:
    with pytest.raises(SdpError):
        SessionDescription.parse(data)


def test_build_offer() -> None:
    offer = build_offer(
        address="127.0.0.1", port=40000, codecs=["pcma", "PCMU"], session_id=7, session_version=2
    )
    data = bytes(offer)
    assert b"m=audio 40000 RTP/AVP 8 0 101\r\n" in data
    assert b"a=rtpmap:101 telephone-event/8000\r\n" in data
    assert b"a=fmtp:101 0-16\r\n" in data
    assert b"o=- 7 2 IN IP4 127.0.0.1\r\n" in data
    assert b"c=IN IP4 127.0.0.1\r\n" in data
    assert b"a=ptime:20\r\n" in data and b"a=sendrecv\r\n" in data
    nodtmf = build_offer(
        address="::1", port=4, codecs=["PCMU"], dtmf_pt=None, session_id=1, session_version=1
    )
    assert bytes(nodtmf).count(b"m=audio 4 RTP/AVP 0\r\n") == 1
    assert b"c=IN IP6 ::1" in bytes(nodtmf)
    with pytest.raises(SdpError):
        build_offer(address="x", port=1, codecs=["opus"], session_id=1, session_version=1)


def test_answer_picks_first_supported_in_offer_order_and_mirrors_dtmf() -> None:
    answer, params = _answer(OFFER)
    assert params == MediaParams(
        remote_addr=("198.51.100.1", 49170),
        codec="PCMA",
        payload_type=8,
        telephone_event_pt=97,
        ptime=30,
        direction="sendrecv",
        on_hold=False,
    )
    audio, video = answer.media
    assert audio.formats == [8, 97]
    assert audio.port == 40000
    assert video.port == 0  # same number of m= lines, video refused
    assert len(answer.media) == 2


@pytest.mark.parametrize(
    ("offer_dir", "ours", "hold"),
    [
        ("sendrecv", "sendrecv", False),
        ("sendonly", "recvonly", True),
        ("recvonly", "sendonly", False),
        ("inactive", "inactive", True),
    ],
)
def test_answer_direction(offer_dir: str, ours: str, hold: bool) -> None:
    offer = OFFER.replace(b"a=ptime:30\r\n", b"a=ptime:30\r\na=" + offer_dir.encode() + b"\r\n")
    answer, params = _answer(offer)
    assert answer.media[0].direction == ours
    assert params.direction == ours
    assert params.on_hold is hold


def test_old_style_hold_zero_address() -> None:
    answer, params = _answer(OFFER.replace(b"c=IN IP4 198.51.100.1", b"c=IN IP4 0.0.0.0"))
    assert params.on_hold
    assert params.direction == "recvonly"
    assert answer.media[0].direction == "recvonly"


def test_answer_rejects_no_common_codec_or_no_audio() -> None:
    with pytest.raises(SdpError):
        _answer(OFFER.replace(b"RTP/AVP 18 8 0 97", b"RTP/AVP 18 97"))
    with pytest.raises(SdpError):
        _answer(OFFER.replace(b"m=audio 49170", b"m=audio 0"))


def test_offer_answer_round_trip() -> None:
    offer = build_offer(
        address="127.0.0.1", port=40000, codecs=["PCMU", "PCMA"], session_id=1, session_version=1
    )
    answer, their_params = answer_offer(
        SessionDescription.parse(bytes(offer)),
        address="127.0.0.2",
        port=50000,
        codecs=["PCMA", "PCMU"],
        session_id=9,
        session_version=9,
    )
    assert their_params.codec == "PCMU"  # offerer's preference wins
    ours = params_from_answer(offer, SessionDescription.parse(bytes(answer)))
    assert ours == MediaParams(("127.0.0.2", 50000), "PCMU", 0, 101, 20, "sendrecv", False)


def test_params_from_answer_checks_codec_and_direction() -> None:
    offer = build_offer(
        address="127.0.0.1", port=40000, codecs=["PCMU"], session_id=1, session_version=1
    )
    base = b"v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n"
    held = SessionDescription.parse(base + b"m=audio 6000 RTP/AVP 0\r\na=sendonly\r\n")
    params = params_from_answer(offer, held)
    assert params.direction == "recvonly" and params.on_hold
    assert params.telephone_event_pt is None
    with pytest.raises(SdpError):
        params_from_answer(offer, SessionDescription.parse(base + b"m=audio 6000 RTP/AVP 8\r\n"))
    with pytest.raises(SdpError):
        params_from_answer(offer, SessionDescription.parse(base + b"m=audio 0 RTP/AVP 0\r\n"))


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=0, max_value=len(OFFER) - 1),
    st.integers(min_value=0, max_value=30),
    st.binary(max_size=10),
)
def test_fuzz_only_sdp_error(pos: int, cut: int, insert: bytes) -> None:
    data = OFFER[:pos] + insert + OFFER[pos + cut :]
    try:
        sdp = SessionDescription.parse(data)
        assert SessionDescription.parse(bytes(sdp)) == sdp
        _answer(data)
    except SdpError:
        pass
