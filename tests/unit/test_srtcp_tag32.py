"""libre's 32-bit SRTCP tag on the _32 suite: still dropped, but counted by its own name."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from gateway.media.rtcp import ReceiverReport, ReportBlock, SourceDescription, compound
from gateway.media.secure import SrtpPair
from gateway.media.srtcp_tag32 import authenticates_with_short_tag, srtcp_auth_key
from gateway.media.stream import MediaStream

SUITE = "AES_CM_128_HMAC_SHA1_32"


def report() -> bytes:
    block = ReportBlock(ssrc=0xA, fraction_lost=0, cumulative_lost=0, highest_seq=7, jitter=3,
                        lsr=0, dlsr=0)
    return compound([ReceiverReport(0xB, (block,)), SourceDescription.cname(0xB, "bob@x")])


def short_tagged(peer: SrtpPair, key: bytes) -> bytes:
    """libsrtp's SRTCP with its 80-bit tag replaced by libre's 32-bit one."""
    rfc = peer.send.protect_rtcp(report())
    body = rfc[:-10]
    return body + hmac.new(srtcp_auth_key(key), body, hashlib.sha1).digest()[:4]


def test_derived_srtcp_auth_key_reproduces_libsrtps_80_bit_tag() -> None:
    ours, theirs = secrets.token_bytes(30), secrets.token_bytes(30)
    packet = SrtpPair(SUITE, theirs, ours).send.protect_rtcp(report())
    mac = hmac.new(srtcp_auth_key(theirs), packet[:-10], hashlib.sha1).digest()
    assert mac[:10] == packet[-10:]  # RFC 3711 key derivation, checked against libsrtp


def test_short_tag_is_recognised_only_under_the_right_key_and_bytes() -> None:
    ours, theirs = secrets.token_bytes(30), secrets.token_bytes(30)
    packet = short_tagged(SrtpPair(SUITE, theirs, ours), theirs)
    assert authenticates_with_short_tag(theirs, packet)
    assert not authenticates_with_short_tag(ours, packet)
    damaged = bytearray(packet)
    damaged[9] ^= 1
    assert not authenticates_with_short_tag(theirs, bytes(damaged))
    assert not authenticates_with_short_tag(theirs, packet[:10])


def test_stream_drops_a_short_tagged_report_and_counts_it_as_tag32() -> None:
    ours, theirs = secrets.token_bytes(30), secrets.token_bytes(30)
    s = MediaStream(codec="PCMU", payload_type=0, dtmf_pt=None, remote_addr=("127.0.0.1", 4000),
                    ssrc=0xA, seq=1, timestamp=1, now=0.0, srtp=SrtpPair(SUITE, ours, theirs))
    peer = SrtpPair(SUITE, theirs, ours)
    s.receive(short_tagged(peer, theirs), ("127.0.0.1", 4001), 1.0)
    st = s.stats()
    assert st["srtcp_dropped_tag32"] == 1 and st["srtcp_dropped_auth"] == 0
    assert s.rtcp_stats()["received"] == 0  # never read: authentication is not weakened
    assert s.rtcp_addr == ("127.0.0.1", 4001)  # and it latched nothing
    # a forgery under libre's framing is an ordinary auth failure
    s.receive(short_tagged(peer, secrets.token_bytes(30)), ("127.0.0.1", 4001), 2.0)
    st = s.stats()
    assert st["srtcp_dropped_tag32"] == 1
    assert sum(v for k, v in st.items() if k.startswith("srtcp_dropped_")) == 2
    # the RFC framing from the same peer is read
    s.receive(peer.send.protect_rtcp(report()), ("127.0.0.1", 4001), 3.0)
    assert s.rtcp_stats()["received"] == 1
