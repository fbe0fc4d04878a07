"""SRTP on libsrtp: the limits the hand-made RFC 3711 code lacked, each as a test.

Packets libsrtp would never send (an SRTCP index of our choosing, the E flag cleared, SRTP
for thousands of SSRCs) are built with the independent reference in srtp_reference.py.
Memory is measured with tracemalloc: it sees every Python allocation (the old bitmap
replay window was a Python int), not libsrtp's own C allocations, so the SSRC bound is
also checked by counting the streams the context holds.
"""

from __future__ import annotations

import base64
import struct
import tracemalloc
from collections.abc import Callable
from typing import get_args

import pytest
from srtp_reference import srtcp_packet, srtp_packet

from gateway.media.secure import DROP_REASONS, SrtpPair, srtp_pair
from gateway.media.srtp import MAX_SSRCS, ErrorReason, SrtpContext, SrtpError
from gateway.media.stream import MediaStream
from gateway.sip.sdes import CryptoAttribute, CryptoSelection, choose_answer

KEY = bytes(range(16))
SALT = bytes(range(100, 114))
MIB = 1 << 20


def rtp(seq: int, ssrc: int = 0x11223344, payload: bytes = b"\x55" * 160) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc) + payload


def rtcp_sr(ssrc: int = 0x11223344) -> bytes:
    sr = struct.pack("!BBHI", 0x80, 200, 6, ssrc) + bytes(range(20))
    sdes = struct.pack("!BBHI", 0x81, 202, 3, ssrc) + b"\x01\x04host" + b"\x00\x00"
    return sr + sdes


def reason(call: Callable[[], object]) -> str:
    with pytest.raises(SrtpError) as err:
        call()
    return err.value.reason


def traced_peak(call: Callable[[], object]) -> int:
    """Peak bytes of Python memory allocated while ``call`` runs."""
    tracemalloc.start()
    try:
        call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


def stream(pair: SrtpPair) -> MediaStream:
    return MediaStream(codec="PCMU", payload_type=0, dtmf_pt=None, remote_addr=("127.0.0.1", 4000),
                       ssrc=0x1234ABCD, seq=1, timestamp=0, now=0.0, srtp=pair)


# ------------------------------------------------------------ SRTCP index jump


def test_srtcp_index_jump_to_2_31_minus_1_is_accepted_in_bounded_memory() -> None:
    receiver = SrtpContext(KEY, SALT)
    first = srtcp_packet(KEY, SALT, rtcp_sr(), 0)
    top = srtcp_packet(KEY, SALT, rtcp_sr(), (1 << 31) - 1)
    assert receiver.unprotect_rtcp(first) == rtcp_sr()
    results: list[bytes] = []
    peak = traced_peak(lambda: results.append(receiver.unprotect_rtcp(top)))
    # RFC 3711 3.3.2: an authenticated index ahead of the window moves it, however far.
    assert results == [rtcp_sr()]
    assert peak < 2 * MIB, f"{peak / MIB:.1f} MiB for one SRTCP packet"
    # The window now sits at the top: the same packet again and the old low indices are out.
    assert reason(lambda: receiver.unprotect_rtcp(top)) == "replay"
    assert reason(lambda: receiver.unprotect_rtcp(srtcp_packet(KEY, SALT, rtcp_sr(), 1))) == "replay"


def test_srtcp_index_jump_is_bounded_for_every_new_ssrc_too() -> None:
    receiver = SrtpContext(KEY, SALT)
    packets = [
        srtcp_packet(KEY, SALT, rtcp_sr(ssrc), index)
        for ssrc in range(1, 9)
        for index in (0, (1 << 31) - 1)
    ]
    peak = traced_peak(lambda: [receiver.unprotect_rtcp(p) for p in packets])
    assert peak < 2 * MIB, f"{peak / MIB:.1f} MiB for {len(packets)} SRTCP packets"


# --------------------------------------------------------------- SSRC bound


def test_ten_thousand_ssrcs_hold_bounded_state_and_the_excess_is_refused_and_counted() -> None:
    receiver = SrtpContext(KEY, SALT)
    wires = [srtp_packet(KEY, SALT, rtp(1, ssrc=0x10000 + n)) for n in range(10_000)]
    reasons: dict[str, int] = {}

    def feed() -> None:
        for wire in wires:
            try:
                receiver.unprotect(wire)
                reasons["ok"] = reasons.get("ok", 0) + 1
            except SrtpError as exc:
                reasons[exc.reason] = reasons.get(exc.reason, 0) + 1

    peak = traced_peak(feed)
    assert reasons == {"ok": MAX_SSRCS, "ssrc_limit": 10_000 - MAX_SSRCS}
    assert receiver.ssrcs == MAX_SSRCS  # streams with state: the cap, not 10,000
    assert receiver.ssrcs_refused == 10_000 - MAX_SSRCS
    assert peak < 1 * MIB, f"{peak / MIB:.1f} MiB for 10,000 SSRCs"
    # The streams that got in keep working; a refused SSRC stays refused, SRTCP included.
    assert receiver.unprotect(srtp_packet(KEY, SALT, rtp(2, ssrc=0x10000))) == rtp(2, ssrc=0x10000)
    late = 0x10000 + MAX_SSRCS
    assert reason(lambda: receiver.unprotect(srtp_packet(KEY, SALT, rtp(2, ssrc=late)))) == (
        "ssrc_limit"
    )
    assert reason(lambda: receiver.unprotect_rtcp(srtcp_packet(KEY, SALT, rtcp_sr(late), 0))) == (
        "ssrc_limit"
    )


def test_forged_packets_for_new_ssrcs_do_not_use_up_the_cap() -> None:
    receiver = SrtpContext(KEY, SALT)
    for n in range(3 * MAX_SSRCS):
        forged = rtp(1, ssrc=0x20000 + n) + bytes(10)
        assert reason(lambda f=forged: receiver.unprotect(f)) == "auth"  # type: ignore[misc]
    assert receiver.ssrcs == 0 and receiver.ssrcs_refused == 0
    assert receiver.unprotect(srtp_packet(KEY, SALT, rtp(1))) == rtp(1)


def test_the_media_stream_counts_ssrcs_over_the_cap() -> None:
    ka, kb = bytes(range(30)), bytes(range(30, 60))
    b = stream(SrtpPair("AES_CM_128_HMAC_SHA1_80", kb, ka))
    for n in range(MAX_SSRCS + 5):
        b.receive(srtp_packet(ka[:16], ka[16:], rtp(7, ssrc=0x30000 + n)), ("127.0.0.1", 4002), 0.0)
    st = b.stats()
    assert st["srtp_dropped_ssrc_limit"] == 5
    assert st["srtp_dropped_auth"] == 0


# ---------------------------------------------------------------- SRTCP E=0


def test_srtcp_with_the_e_flag_cleared_is_refused() -> None:
    receiver = SrtpContext(KEY, SALT)
    clear = srtcp_packet(KEY, SALT, rtcp_sr(), 5, encrypt=False)  # tag is right
    assert reason(lambda: receiver.unprotect_rtcp(clear)) == "unencrypted"
    assert receiver.ssrcs == 0  # refused before it could make a stream
    # The refusal used up nothing: the same index, encrypted, still gets through.
    assert receiver.unprotect_rtcp(srtcp_packet(KEY, SALT, rtcp_sr(), 5)) == rtcp_sr()
    assert reason(lambda: receiver.unprotect_rtcp(clear)) == "unencrypted"


def test_the_media_stream_drops_unencrypted_srtcp() -> None:
    ka, kb = bytes(range(30)), bytes(range(30, 60))
    b = stream(SrtpPair("AES_CM_128_HMAC_SHA1_80", kb, ka))
    b.receive(srtcp_packet(ka[:16], ka[16:], rtcp_sr(), 1, encrypt=False), ("127.0.0.1", 4002), 0)
    st = b.stats()
    assert st["srtcp_dropped_unencrypted"] == 1 and st["rtcp_received"] == 0


# ------------------------------------------------------------------- replay


def test_replayed_srtp_is_refused_across_the_sequence_wrap() -> None:
    sender, receiver = SrtpContext(KEY, SALT), SrtpContext(KEY, SALT)
    wires = [sender.protect(rtp(seq % 65536)) for seq in range(65530, 65540)]
    for wire in wires:
        receiver.unprotect(wire)
    assert receiver.receive_roc(0x11223344) == 1
    for wire in (wires[0], wires[5], wires[-1]):  # before, at and after the wrap
        assert reason(lambda w=wire: receiver.unprotect(w)) == "replay"  # type: ignore[misc]


def test_replayed_srtcp_is_refused() -> None:
    sender, receiver = SrtpContext(KEY, SALT), SrtpContext(KEY, SALT)
    wires = [sender.protect_rtcp(rtcp_sr()) for _ in range(3)]
    assert receiver.unprotect_rtcp(wires[2]) == rtcp_sr()
    assert receiver.unprotect_rtcp(wires[0]) == rtcp_sr()  # late but new
    for wire in (wires[0], wires[2]):
        assert reason(lambda w=wire: receiver.unprotect_rtcp(w)) == "replay"  # type: ignore[misc]


# ------------------------------------------------------------- key lifetime


def test_key_lifetime_counts_srtp_and_srtcp_and_then_refuses_both() -> None:
    sender = SrtpContext(KEY, SALT, lifetime=4)
    for seq in range(3):
        sender.protect(rtp(seq))
    sender.protect_rtcp(rtcp_sr())
    assert sender.expired
    assert reason(lambda: sender.protect(rtp(3))) == "expired"
    assert reason(lambda: sender.protect_rtcp(rtcp_sr())) == "expired"
    receiver = SrtpContext(KEY, SALT, lifetime=3)
    peer = SrtpContext(KEY, SALT)
    wires = [peer.protect(rtp(seq)) for seq in range(4)]
    srtcp = peer.protect_rtcp(rtcp_sr())
    assert reason(lambda: receiver.unprotect(wires[0][:-1] + b"\x00")) == "auth"  # not counted
    for wire in wires[:3]:
        receiver.unprotect(wire)
    assert receiver.expired
    assert reason(lambda: receiver.unprotect(wires[3])) == "expired"
    assert reason(lambda: receiver.unprotect_rtcp(srtcp)) == "expired"


def test_sdes_key_lifetime_reaches_the_media_path() -> None:
    remote_key = bytes(range(30))
    offered = CryptoAttribute.parse(
        "1 AES_CM_128_HMAC_SHA1_80 inline:" + base64.b64encode(remote_key).decode() + "|2^4"
    )
    selection = choose_answer([offered])
    made = srtp_pair(selection)
    assert made is not None and made.remote_lifetime == 16
    b = stream(made)
    peer = SrtpContext(remote_key[:16], remote_key[16:])
    for seq in range(20):
        b.receive(peer.protect(rtp(seq, ssrc=0xAB)), ("127.0.0.1", 4002), seq * 0.02)
    st = b.stats()
    assert st["packets_received"] == 16  # |2^4|
    assert st["srtp_dropped_expired"] == 4
    pair = b.srtp
    assert pair is not None and pair.receive.expired and not pair.send.expired


def test_our_own_key_lifetime_stops_sending() -> None:
    local_key, remote_key = bytes(range(30)), bytes(range(30, 60))
    ours = CryptoAttribute.parse(
        "1 AES_CM_128_HMAC_SHA1_80 inline:" + base64.b64encode(local_key).decode() + "|2"
    )
    theirs = CryptoAttribute.parse(
        "1 AES_CM_128_HMAC_SHA1_80 inline:" + base64.b64encode(remote_key).decode()
    )
    pair = SrtpPair.from_selection(CryptoSelection(local=ours, remote=theirs))
    pair.send.protect(rtp(1))
    pair.send.protect(rtp(2))
    assert reason(lambda: pair.send.protect(rtp(3))) == "expired"
    assert not pair.receive.expired


def test_every_refusal_reason_has_a_counter() -> None:
    assert set(DROP_REASONS) == set(get_args(ErrorReason))
    assert {"unencrypted", "ssrc_limit", "expired", "auth", "replay"} <= set(DROP_REASONS)
