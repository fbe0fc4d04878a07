"""SRTP in the media path (MediaStream with SrtpPair) and the per-trunk SRTP policy on SDP, pure."""

from __future__ import annotations

import secrets
import struct

import numpy as np
import pytest

from gateway.dsp import FRAME_SAMPLES, SAMPLE_RATE, g711
from gateway.media.rtp import RtpPacket
from gateway.media.secure import SrtpPair, srtp_pair
from gateway.media.srtp import SrtpContext
from gateway.media.stream import MediaStream, RemoteLatched
from gateway.media.telephone_event import DigitReceived
from gateway.sip.errors import SdpError
from gateway.sip.sdes import (
    CryptoAttribute,
    CryptoSelection,
    choose_answer,
    crypto_attributes,
    make_offer,
)
from gateway.sip.sdp import (
    MediaParams,
    SessionDescription,
    build_offer,
    params_from_answer,
)
from gateway.sip.sdp_secure import (
    check_policy,
    secure_answer,
    secure_from_answer,
    secure_offer,
)

A_ADDR = ("127.0.0.1", 40000)
B_ADDR = ("127.0.0.1", 40002)
SLOT = 0.020
SUITES = ["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"]


def keys() -> tuple[bytes, bytes]:
    return secrets.token_bytes(30), secrets.token_bytes(30)


def pairs(suite: str = SUITES[0]) -> tuple[SrtpPair, SrtpPair]:
    """A's and B's pairs: what A sends with, B receives with, and the other way round."""
    ka, kb = keys()
    return SrtpPair(suite, ka, kb), SrtpPair(suite, kb, ka)


def make(srtp: SrtpPair | None, *, remote: tuple[str, int] = B_ADDR, ssrc: int = 0x1234ABCD,
         seq: int = 1000, now: float = 0.0) -> MediaStream:
    return MediaStream(codec="PCMU", payload_type=0, dtmf_pt=101, remote_addr=remote,
                       ssrc=ssrc, seq=seq, timestamp=5000, now=now, srtp=srtp)


def tone(freq: float, amplitude: float, n_frames: int) -> list[bytes]:
    t = np.arange(n_frames * FRAME_SAMPLES) / SAMPLE_RATE
    pcm = np.round(amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2")
    return [pcm[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES].tobytes() for i in range(n_frames)]


def peak_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)[int(np.argmax(spectrum))])


def rms_db(x: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2))))


def run(a: MediaStream, b: MediaStream, frames: list[bytes], slots: int,
        start: float = 0.0) -> list[bytes]:
    """A sends `frames`, B hears; returns what B's earpiece played each slot."""
    heard = []
    for k in range(slots):
        now = start + k * SLOT
        if k < len(frames):
            a.push_frame(frames[k])
        for data in a.send_due(now):
            b.receive(data, A_ADDR, now)
        heard.append(b.pull_frame(now))
    return heard


@pytest.mark.parametrize("suite", SUITES)
def test_tone_crosses_an_srtp_call_intact_and_the_wire_is_encrypted(suite: str) -> None:
    pa, pb = pairs(suite)
    a, b = make(pa, seq=65500), make(pb, remote=A_ADDR)
    frames = tone(1000.0, 8000.0, 100)
    wire: list[bytes] = []
    heard = []
    for k in range(120):
        now = k * SLOT
        if k < len(frames):
            a.push_frame(frames[k])
        for data in a.send_due(now):
            wire.append(data)
            b.receive(data, A_ADDR, now)
        heard.append(b.pull_frame(now))
    tag_len = 10 if suite.endswith("_80") else 4
    # header stays readable, payload is not the G.711 we would send in the clear
    plain = RtpPacket.parse(wire[10][:-tag_len])
    assert len(wire[10]) == 12 + 160 + tag_len
    assert plain.sequence == (65500 + 10) & 0xFFFF
    assert plain.payload != g711.encode(frames[10], "PCMU")
    pcm = np.frombuffer(b"".join(heard), dtype="<i2")
    voiced = np.nonzero(np.abs(pcm) > 1000)[0]
    body = pcm[voiced[0] + 800: voiced[0] + 800 + 8000]
    assert peak_hz(body) == pytest.approx(1000.0, abs=2.0)
    sent = np.frombuffer(b"".join(frames), dtype="<i2")
    assert abs(rms_db(body) - rms_db(sent)) < 0.5
    st = b.stats()
    assert st["srtp"] == 1 and st["lost"] == 0
    assert st["packets_received"] == len(wire)  # the seq wrap did not break the ROC
    assert all(st[f"srtp_dropped_{r}"] == 0 for r in ("auth", "replay", "short", "malformed"))


def test_wire_matches_an_independent_srtp_context() -> None:
    ka, kb = keys()
    a = make(SrtpPair(SUITES[0], ka, kb))
    a.push_frame(tone(440.0, 4000.0, 1)[0])
    (data,) = a.send_due(0.0)
    rx = SrtpContext(ka[:16], ka[16:], SUITES[0])  # the peer's receiver built from our key
    packet = RtpPacket.parse(rx.unprotect(data))
    assert packet.ssrc == 0x1234ABCD and packet.payload_type == 0 and len(packet.payload) == 160


def test_forged_replayed_short_and_plain_packets_are_dropped_and_counted() -> None:
    pa, pb = pairs()
    a, b = make(pa), make(pb, remote=A_ADDR)
    a.push_frame(tone(1000.0, 8000.0, 1)[0])
    (good,) = a.send_due(0.0)
    assert b.receive(good, A_ADDR, 0.0) == []
    assert b.stats()["packets_received"] == 1
    a.push_frame(tone(1000.0, 8000.0, 1)[0])
    (second,) = a.send_due(0.02)
    tampered = bytearray(second)
    tampered[20] ^= 0x01
    b.receive(bytes(tampered), A_ADDR, 0.02)  # one payload bit flipped
    b.receive(good, A_ADDR, 0.02)  # replayed
    b.receive(good[:14], A_ADDR, 0.02)  # shorter than header + tag
    plain = RtpPacket(payload_type=0, sequence=1002, timestamp=5160, ssrc=0x1234ABCD,
                      payload=bytes(160))
    b.receive(bytes(plain), A_ADDR, 0.02)  # a downgrade: unauthenticated RTP
    st = b.stats()
    assert st["srtp_dropped_auth"] == 2
    assert st["srtp_dropped_replay"] == 1
    assert st["srtp_dropped_short"] == 1
    assert st["packets_received"] == 1
    b.receive(second, A_ADDR, 0.04)  # the genuine packet still gets through after all that
    assert b.stats()["packets_received"] == 2


def test_forged_packets_from_elsewhere_cannot_steal_the_latched_address() -> None:
    pa, pb = pairs()
    a, b = make(pa), make(pb, remote=A_ADDR)
    evil = ("203.0.113.9", 5004)
    for k in range(3):
        a.push_frame(tone(1000.0, 8000.0, 1)[0])
        for data in a.send_due(k * SLOT):
            b.receive(data, A_ADDR, k * SLOT)
    for seq in range(5000, 5010):  # in-sequence but unauthenticated: would pass probation
        pkt = RtpPacket(payload_type=0, sequence=seq, timestamp=seq * 160, ssrc=7,
                        payload=bytes(160))
        assert not any(isinstance(e, RemoteLatched)
                       for e in b.receive(bytes(pkt) + bytes(10), evil, 1.0))
    assert b.remote_addr == A_ADDR
    assert b.stats()["srtp_dropped_auth"] == 10


def test_dtmf_events_travel_protected() -> None:
    pa, pb = pairs()
    a, b = make(pa), make(pb, remote=A_ADDR)
    digits: list[str] = []
    for k in range(40):
        now = k * SLOT
        if k == 2:
            a.send_dtmf("7", now, duration_ms=100)
        a.push_frame(tone(300.0, 1000.0, 1)[0])
        for data in a.send_due(now):
            for ev in b.receive(data, A_ADDR, now):
                if isinstance(ev, DigitReceived):
                    digits.append(ev.digit)
    assert digits == ["7"]
    assert b.stats()["dtmf_received"] == 1


def test_srtcp_in_is_authenticated_and_out_is_protected() -> None:
    pa, pb = pairs()
    a, b = make(pa), make(pb, remote=A_ADDR)
    # a minimal RTCP receiver report from A (PT 201, no report blocks)
    rr = struct.pack("!BBHI", 0x80, 201, 1, 0x1234ABCD)
    srtcp = a.protect_rtcp(rr)
    assert srtcp is not None and srtcp != rr and len(srtcp) == len(rr) + 4 + 10
    b.receive(srtcp, A_ADDR, 0.0)
    b.receive(srtcp, A_ADDR, 0.0)  # replayed
    b.receive(rr, A_ADDR, 0.0)  # plain RTCP on a secure call
    st = b.stats()
    assert st["rtcp_received"] == 1
    assert st["srtcp_dropped_replay"] == 1
    assert st["srtcp_dropped_short"] + st["srtcp_dropped_auth"] == 1
    assert make(None).protect_rtcp(rr) == rr  # plain calls send RTCP as it is


def test_rekey_on_reinvite_and_same_keys_keep_the_contexts() -> None:
    pa, pb = pairs()
    a, b = make(pa), make(pb, remote=A_ADDR)
    heard = run(a, b, tone(1000.0, 8000.0, 20), 25)
    assert any(f != heard[0] for f in heard)
    same = SrtpPair(pb.suite, pb.local_key, pb.remote_key)
    b.set_srtp(same)
    assert b.srtp is pb  # a fresh context on the same key would reuse keystream
    assert b.stats()["srtp_rekeys"] == 0
    pa2, pb2 = pairs()
    a.set_srtp(pa2)
    got = b.stats()["packets_received"]
    run(a, b, tone(1000.0, 8000.0, 5), 5, start=1.0)
    assert b.stats()["packets_received"] == got  # B still has the old key: all refused
    assert b.stats()["srtp_dropped_auth"] == 5
    b.set_srtp(pb2)
    run(a, b, tone(1000.0, 8000.0, 5), 5, start=2.0)
    assert b.stats()["packets_received"] == got + 5
    assert b.stats()["srtp_rekeys"] == 1


def test_plain_stream_reports_srtp_off_and_refuses_nothing_for_it() -> None:
    a, b = make(None), make(None, remote=A_ADDR)
    run(a, b, tone(1000.0, 8000.0, 5), 5)
    st = b.stats()
    assert st["srtp"] == 0 and st["packets_received"] == 5 and st["srtp_dropped_auth"] == 0


def test_pair_checks_its_keys_and_builds_from_sdes() -> None:
    with pytest.raises(ValueError, match="30 bytes"):
        SrtpPair(SUITES[0], bytes(29), bytes(30))
    with pytest.raises(ValueError, match="differ"):
        SrtpPair(SUITES[0], bytes(30), bytes(30))
    with pytest.raises(ValueError, match="unsupported"):
        SrtpPair("AES_256_CM_HMAC_SHA1_80", *keys())
    offer = make_offer()
    sel = choose_answer(offer)
    pair = srtp_pair(sel)
    assert pair is not None and pair.suite == "AES_CM_128_HMAC_SHA1_80"
    assert pair.remote_key == offer[0].keys[0].key_salt
    assert pair.local_key == sel.local.keys[0].key_salt
    assert srtp_pair(None) is None
    assert "local_key" not in repr(pair)


# ------------------------------------------------------------- SDP policy (sdp_secure)
def answer_as(policy: str, offer: SessionDescription, current: CryptoSelection | None = None
              ) -> tuple[SessionDescription, MediaParams, CryptoSelection | None]:
    """secure_answer as the gateway calls it, on RTP port 30000."""
    return secure_answer(policy, offer, address="127.0.0.1", port=30000,
                         codecs=["PCMU", "PCMA"], session_id=7, session_version=1,
                         current=current)


def plain_offer(port: int = 20000) -> SessionDescription:
    return build_offer(address="127.0.0.1", port=port, codecs=["PCMU"], session_id=1,
                       session_version=1)


def reparse(sdp: SessionDescription) -> SessionDescription:
    return SessionDescription.parse(bytes(sdp))


def peer_sdp(*streams: tuple[str, list[CryptoAttribute]]) -> SessionDescription:
    """An offer from a peer with one m=audio per (proto, crypto lines)."""
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0"]
    for k, (proto, cryptos) in enumerate(streams):
        lines += [f"m=audio {20000 + 2 * k} {proto} 0 101", "a=rtpmap:101 telephone-event/8000"]
        lines += [c.line() for c in cryptos]
    return SessionDescription.parse(("\r\n".join(lines) + "\r\n").encode())


def test_offer_off_is_plain_avp() -> None:
    sdp, pending = secure_offer("off", plain_offer())
    m = reparse(sdp).media[0]
    assert m.proto == "RTP/AVP" and crypto_attributes(m) == []
    assert pending.offered == ()


def test_offer_offer_is_avp_with_keys_and_require_is_savp() -> None:
    base = plain_offer()
    best, p1 = secure_offer("offer", base)
    req, p2 = secure_offer("require", base)
    assert base.media[0].proto == "RTP/AVP" and not base.media[0].attributes  # input untouched
    mb, mr = reparse(best).media[0], reparse(req).media[0]
    assert mb.proto == "RTP/AVP" and mr.proto == "RTP/SAVP"
    assert [c.suite for c in crypto_attributes(mb)] == SUITES
    assert [c.tag for c in crypto_attributes(mr)] == [1, 2]
    assert crypto_attributes(mb)[0].keys != crypto_attributes(mr)[0].keys  # fresh keys each time
    assert "inline" not in repr(p1) and len(p2.offered) == 2


@pytest.mark.parametrize("policy", ["offer", "require"])
def test_offer_answer_round_trip_gives_matching_pairs(policy: str) -> None:
    offer, pending = secure_offer(policy, plain_offer())
    answer, params, sel = answer_as(policy, reparse(offer))
    assert sel is not None and params.codec == "PCMU"
    answer = reparse(answer)
    assert answer.media[0].proto == offer.media[0].proto
    ours = secure_from_answer(pending, answer)
    assert ours is not None and ours.suite == sel.suite == SUITES[0]
    assert params_from_answer(offer, answer).remote_addr == ("127.0.0.1", 30000)
    # the two sides' pairs interoperate: the caller's send key is the callee's receive key
    caller, callee = srtp_pair(ours), srtp_pair(sel)
    assert caller is not None and callee is not None
    a, b = make(caller), make(callee, remote=A_ADDR)
    run(a, b, tone(1000.0, 8000.0, 3), 3)
    assert b.stats()["packets_received"] == 3 and b.stats()["srtp_dropped_auth"] == 0


def test_best_effort_offer_answered_plain_means_plain_rtp() -> None:
    offer, pending = secure_offer("offer", plain_offer())
    answer, _, sel = answer_as("off", reparse(offer))
    assert sel is None and crypto_attributes(reparse(answer).media[0]) == []
    assert secure_from_answer(pending, reparse(answer)) is None


def test_require_fails_an_answer_without_keys() -> None:
    offer, pending = secure_offer("require", plain_offer())
    plain = peer_sdp(("RTP/SAVP", []))
    with pytest.raises(SdpError, match="requires SRTP"):
        secure_from_answer(pending, plain)


def test_best_effort_answer_with_bad_crypto_fails_instead_of_downgrading() -> None:
    offer, pending = secure_offer("offer", plain_offer())
    wrong_tag = CryptoAttribute(9, SUITES[0], crypto_attributes(offer.media[0])[0].keys)
    with pytest.raises(SdpError, match="did not offer"):
        secure_from_answer(pending, peer_sdp(("RTP/AVP", [wrong_tag])))


def test_off_offer_refuses_a_savp_answer() -> None:
    _, pending = secure_offer("off", plain_offer())
    with pytest.raises(SdpError, match="RTP/SAVP"):
        secure_from_answer(pending, peer_sdp(("RTP/SAVP", make_offer()[:1])))


def test_off_answers_plain_ignoring_keys_and_refuses_savp_only() -> None:
    answer, _, sel = answer_as("off", peer_sdp(("RTP/AVP", make_offer())))
    assert sel is None and crypto_attributes(answer.media[0]) == []
    with pytest.raises(SdpError, match="srtp: off"):
        answer_as("off", peer_sdp(("RTP/SAVP", make_offer())))


def test_require_refuses_plain_offers_and_unusable_keys() -> None:
    with pytest.raises(SdpError, match="requires SRTP"):
        answer_as("require", peer_sdp(("RTP/AVP", [])))
    aes256 = CryptoAttribute(1, "AES_256_CM_HMAC_SHA1_80", make_offer()[0].keys)
    with pytest.raises(SdpError, match="not supported"):
        answer_as("require", peer_sdp(("RTP/SAVP", [aes256])))


def test_require_accepts_a_best_effort_avp_offer_that_carries_keys() -> None:
    offered = make_offer()
    answer, _, sel = answer_as("require", peer_sdp(("RTP/AVP", offered)))
    assert sel is not None and sel.remote == offered[0]
    m = reparse(answer).media[0]
    assert m.proto == "RTP/AVP" and [c.tag for c in crypto_attributes(m)] == [1]


def test_offer_policy_answers_plain_when_the_peer_has_no_keys() -> None:
    answer, params, sel = answer_as("offer", peer_sdp(("RTP/AVP", [])))
    assert sel is None and params.remote_addr == ("127.0.0.1", 20000)


def test_two_stream_offer_picks_the_secure_one_or_the_plain_one_by_policy() -> None:
    offer = peer_sdp(("RTP/AVP", []), ("RTP/SAVP", make_offer()))
    answer, params, sel = answer_as("offer", offer)
    answer = reparse(answer)
    assert sel is not None and params.remote_addr == ("127.0.0.1", 20002)
    assert [m.port for m in answer.media] == [0, 30000]
    assert answer.media[1].proto == "RTP/SAVP" and len(crypto_attributes(answer.media[1])) == 1
    answer, params, sel = answer_as("off", offer)
    assert sel is None and params.remote_addr == ("127.0.0.1", 20000)
    assert [m.port for m in reparse(answer).media] == [30000, 0]


def test_reinvite_with_the_same_keys_keeps_the_selection() -> None:
    offered = make_offer()
    _, _, first = answer_as("require", peer_sdp(("RTP/SAVP", offered)))
    assert first is not None
    answer, _, again = answer_as("require", peer_sdp(("RTP/SAVP", offered)), first)
    assert again is first
    assert crypto_attributes(answer.media[0]) == [first.local]
    _, _, rekeyed = answer_as("require", peer_sdp(("RTP/SAVP", make_offer())), first)
    assert rekeyed is not None and rekeyed.local != first.local


def test_policy_names_are_checked() -> None:
    assert check_policy("require") == "require"
    with pytest.raises(ValueError, match="srtp policy"):
        check_policy("mandatory")
    with pytest.raises(ValueError, match="srtp policy"):
        secure_offer("yes", plain_offer())
