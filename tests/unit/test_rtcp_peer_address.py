"""Where RTCP goes and whom it is taken from: SDP a=rtcp (RFC 3605), rtcp-mux (RFC 5761),
and latching on the peer's real RTCP source with the protections RTP latching has."""

from __future__ import annotations

import asyncio
import secrets
import socket

import pytest

from gateway.dsp import SILENCE_FRAME
from gateway.media.rtcp import ReceiverReport, compound, parse_compound
from gateway.media.rtp import RtpPacket
from gateway.media.secure import SrtpPair
from gateway.media.stream import MediaStream
from gateway.runtime.rtp import RtpEndpoint
from gateway.sip.errors import SdpError
from gateway.sip.sdp import (
    SessionDescription,
    answer_offer,
    build_offer,
    params_from_answer,
    rtcp_address,
)

PEER = ("192.0.2.10", 4000)
PORTS = (43000, 43998)


def sdp(extra: str, c: str = "192.0.2.10") -> SessionDescription:
    return SessionDescription.parse(
        f"v=0\r\no=- 1 1 IN IP4 {c}\r\ns=-\r\nc=IN IP4 {c}\r\nt=0 0\r\n"
        f"m=audio 4000 RTP/AVP 0\r\n{extra}".encode())


# ------------------------------------------------------------------ SDP


def test_a_rtcp_gives_the_port_and_optionally_the_address() -> None:
    offer = sdp("a=rtcp:5009\r\n")
    assert rtcp_address(offer, offer.media[0]) == ("192.0.2.10", 5009)
    offer = sdp("a=rtcp:53020 IN IP4 198.51.100.4\r\n")
    assert rtcp_address(offer, offer.media[0]) == ("198.51.100.4", 53020)
    offer = sdp("a=rtcp:53020 IN IP6 2001:db8::7\r\n")
    assert rtcp_address(offer, offer.media[0]) == ("2001:db8::7", 53020)
    offer = sdp("")
    assert rtcp_address(offer, offer.media[0]) is None


@pytest.mark.parametrize("line", ["a=rtcp:abc", "a=rtcp:0", "a=rtcp:70000",
                                  "a=rtcp:5009 IN IP4", "a=rtcp:5009 XX IP4 192.0.2.1"])
def test_a_malformed_a_rtcp_is_refused_by_name(line: str) -> None:
    offer = sdp(line + "\r\n")
    with pytest.raises(SdpError, match="a=rtcp"):
        rtcp_address(offer, offer.media[0])


def test_answering_an_offer_with_a_rtcp_sends_rtcp_there() -> None:
    _, params = answer_offer(sdp("a=rtcp:5009 IN IP4 198.51.100.4\r\n"), address="127.0.0.1",
                             port=30000, codecs=["PCMU"], session_id=1, session_version=1)
    assert params.rtcp_addr == ("198.51.100.4", 5009) and not params.rtcp_mux


def test_an_answer_with_a_rtcp_is_followed() -> None:
    offer = build_offer(address="127.0.0.1", port=30000, codecs=["PCMU"], session_id=1,
                        session_version=1)
    params = params_from_answer(offer, sdp("a=rtcp:4711\r\n"))
    assert params.rtcp_addr == ("192.0.2.10", 4711)


def test_rtcp_mux_offered_is_accepted_and_answered() -> None:
    answer, params = answer_offer(sdp("a=rtcp-mux\r\na=rtcp:4000\r\n"), address="127.0.0.1",
                                  port=30000, codecs=["PCMU"], session_id=1, session_version=1)
    assert params.rtcp_mux and params.rtcp_addr is None
    assert b"a=rtcp-mux\r\n" in bytes(answer)


def test_rtcp_mux_in_an_answer_we_did_not_offer_it_in_is_ignored() -> None:
    offer = build_offer(address="127.0.0.1", port=30000, codecs=["PCMU"], session_id=1,
                        session_version=1)
    assert b"rtcp-mux" not in bytes(offer)  # we do not offer it (docs/config.md)
    assert not params_from_answer(offer, sdp("a=rtcp-mux\r\n")).rtcp_mux


# ------------------------------------------------------------------ the pure stream


def make(remote: tuple[str, int] = PEER, *, rtcp_addr: tuple[str, int] | None = None,
         srtp: SrtpPair | None = None) -> MediaStream:
    return MediaStream(codec="PCMU", payload_type=0, dtmf_pt=None, remote_addr=remote,
                       ssrc=0xA, seq=1, timestamp=1, now=0.0, srtp=srtp, rtcp_addr=rtcp_addr)


def rr(ssrc: int = 0xB) -> bytes:
    return compound([ReceiverReport(ssrc, ())])


def test_rtcp_goes_to_the_sdp_a_rtcp_address_until_the_peer_sends_some() -> None:
    s = make(rtcp_addr=("192.0.2.10", 5009))
    assert s.rtcp_addr == ("192.0.2.10", 5009)
    assert make().rtcp_addr == ("192.0.2.10", 4001)


def test_rtcp_latches_on_the_first_good_report_from_the_peer_ip() -> None:
    s = make()
    s.receive(rr(), ("192.0.2.10", 61001), 1.0)
    assert s.rtcp_addr == ("192.0.2.10", 61001)
    assert s.rtcp_stats()["received"] == 1


def test_a_stranger_cannot_take_rtcp_nor_feed_reports() -> None:
    s = make()
    s.receive(rr(), ("203.0.113.9", 4001), 1.0)
    assert s.rtcp_addr == ("192.0.2.10", 4001)
    assert s.stats()["rtcp_dropped_foreign"] == 1 and s.rtcp_stats()["received"] == 0


def test_a_malformed_report_latches_nothing() -> None:
    s = make()
    s.receive(rr()[:-2] + b"\x00", ("192.0.2.10", 61001), 1.0)
    assert s.rtcp_addr == ("192.0.2.10", 4001)
    assert s.rtcp_stats()["malformed"] == 1


def test_once_latched_another_port_needs_a_run_of_good_reports() -> None:
    s = make()
    s.receive(rr(), ("192.0.2.10", 61001), 1.0)
    moved = ("192.0.2.10", 61999)
    s.receive(rr(), moved, 2.0)
    s.receive(rr(), ("192.0.2.10", 61001), 3.0)  # the old source again: the run restarts
    s.receive(rr(), moved, 4.0)
    s.receive(rr(), moved, 5.0)
    assert s.rtcp_addr == ("192.0.2.10", 61001)
    s.receive(rr(), moved, 6.0)
    assert s.rtcp_addr == moved
    st = s.stats()
    assert st["rtcp_remote_changes"] == 1 and st["rtcp_dropped_foreign"] == 3


def test_rtcp_follows_rtp_that_moved_behind_nat() -> None:
    s = make()
    nat = ("198.51.100.7", 62000)
    s.receive(bytes(RtpPacket(0, 1, 160, 0xB, payload=b"\xff" * 160)), nat, 0.5)
    assert s.remote_addr == nat
    s.receive(rr(), ("203.0.113.9", 4001), 1.0)  # not the peer's IP: still refused
    assert s.stats()["rtcp_dropped_foreign"] == 1
    s.receive(rr(), ("198.51.100.7", 62500), 1.5)  # its NAT mapped RTCP to another port
    assert s.rtcp_addr == ("198.51.100.7", 62500)


def test_a_report_from_the_a_rtcp_address_is_accepted() -> None:
    s = make(rtcp_addr=("198.51.100.4", 5009))
    s.receive(rr(), ("198.51.100.4", 5009), 1.0)
    assert s.rtcp_stats()["received"] == 1 and s.rtcp_addr == ("198.51.100.4", 5009)


def keys() -> tuple[bytes, bytes]:
    return secrets.token_bytes(30), secrets.token_bytes(30)


def test_srtcp_latches_only_on_a_report_that_authenticates() -> None:
    ours, theirs = keys()
    s = make(srtp=SrtpPair("AES_CM_128_HMAC_SHA1_80", ours, theirs))
    forger = SrtpPair("AES_CM_128_HMAC_SHA1_80", secrets.token_bytes(30), ours)
    s.receive(forger.send.protect_rtcp(rr()), ("192.0.2.10", 61001), 1.0)
    assert s.rtcp_addr == ("192.0.2.10", 4001) and s.stats()["srtcp_dropped_auth"] == 1
    peer = SrtpPair("AES_CM_128_HMAC_SHA1_80", theirs, ours)
    s.receive(peer.send.protect_rtcp(rr()), ("192.0.2.10", 61002), 2.0)
    assert s.rtcp_addr == ("192.0.2.10", 61002) and s.rtcp_stats()["received"] == 1


def test_a_reinvite_takes_the_new_a_rtcp_and_forgets_the_latch() -> None:
    s = make()
    s.receive(rr(), ("192.0.2.10", 61001), 1.0)
    s.update_remote(("192.0.2.20", 6000), "PCMU", 0, None, rtcp_addr=("192.0.2.20", 6100))
    assert s.rtcp_addr == ("192.0.2.20", 6100)
    s.update_remote(("192.0.2.20", 6000), "PCMU", 0, None, rtcp_mux=True)
    assert s.rtcp_addr == ("192.0.2.20", 6000)


# ------------------------------------------------------------------ real sockets


def test_endpoint_sends_rtcp_to_a_rtcp_then_to_where_the_peer_sends_from() -> None:
    async def scenario() -> tuple[bytes, bytes, bool, int]:
        loop = asyncio.get_running_loop()
        ep = await RtpEndpoint.open("127.0.0.1", PORTS)
        rtp_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        declared = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # its a=rtcp port
        actual = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # where it sends from
        for sock in (rtp_sock, declared, actual):
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
        try:
            s = MediaStream(codec="PCMU", payload_type=0, dtmf_pt=None,
                            remote_addr=rtp_sock.getsockname(), ssrc=0xA, seq=1, timestamp=1,
                            now=loop.time(), rtcp_addr=declared.getsockname())
            ep.attach(s)
            s._rtcp.next_report = loop.time()
            s.push_frame(SILENCE_FRAME)
            ep.tick(loop.time())
            first = await loop.sock_recv(declared, 2048)
            actual.sendto(rr(), ("127.0.0.1", ep.rtcp_port))
            await asyncio.sleep(0.05)
            s._rtcp.next_report = loop.time()
            ep.tick(loop.time())
            second = await asyncio.wait_for(loop.sock_recv(actual, 2048), 2.0)
            try:
                declared.recv(2048)
                leaked = True
            except BlockingIOError:
                leaked = False
            return first, second, leaked, s.rtcp_stats()["received"]
        finally:
            ep.close()
            for sock in (rtp_sock, declared, actual):
                sock.close()

    first, second, leaked, received = asyncio.run(scenario())
    assert parse_compound(first)[0].ssrc == 0xA
    assert parse_compound(second)[0].ssrc == 0xA and received == 1 and not leaked


def test_with_rtcp_mux_reports_share_the_rtp_ports_both_ways() -> None:
    async def scenario() -> tuple[bytes, int, int]:
        loop = asyncio.get_running_loop()
        ep = await RtpEndpoint.open("127.0.0.1", PORTS)
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        try:
            s = MediaStream(codec="PCMU", payload_type=0, dtmf_pt=None,
                            remote_addr=peer.getsockname(), ssrc=0xA, seq=1, timestamp=1,
                            now=loop.time(), rtcp_mux=True)
            ep.attach(s)
            peer.sendto(rr(), ("127.0.0.1", ep.port))  # RTCP on our RTP port
            await asyncio.sleep(0.05)
            s._rtcp.next_report = loop.time() + 1.0
            got = b""
            deadline = loop.time() + 3.0
            while loop.time() < deadline:
                s.push_frame(SILENCE_FRAME)
                ep.tick(loop.time())
                try:
                    data = peer.recv(2048)
                except BlockingIOError:
                    await asyncio.sleep(0.02)
                    continue
                if 192 <= data[1] <= 223:
                    got = data
                    break
            return got, s.rtcp_stats()["received"], s.stats()["packets_received"]
        finally:
            ep.close()
            peer.close()

    got, received, rtp_received = asyncio.run(scenario())
    assert got and parse_compound(got)[0].ssrc == 0xA
    assert received == 1 and rtp_received == 0
