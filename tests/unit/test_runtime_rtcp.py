"""RTCP through RtpEndpoint on real loopback sockets: the port above RTP, reports from tick()."""

from __future__ import annotations

import asyncio
import socket

from gateway.dsp import SILENCE_FRAME
from gateway.media.rtcp import Bye, ReceiverReport, SenderReport, SourceDescription, parse_compound
from gateway.media.stream import MediaStream
from gateway.runtime.rtp import RtpEndpoint

PORTS = (42000, 42998)


def stream(remote: tuple[str, int], ssrc: int, now: float = 0.0) -> MediaStream:
    return MediaStream(codec="PCMU", payload_type=0, dtmf_pt=None, remote_addr=remote,
                       ssrc=ssrc, seq=1, timestamp=1, now=now, wallclock_offset=1.7e9)


def test_endpoint_binds_the_rtcp_port_above_rtp_and_skips_a_pair_half_taken() -> None:
    async def scenario() -> tuple[int, int, int, bool]:
        first = await RtpEndpoint.open("127.0.0.1", PORTS)
        blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            blocker.bind(("127.0.0.1", first.port + 3))  # the RTCP half of the next pair
            second = await RtpEndpoint.open("127.0.0.1", (first.port, PORTS[1]))
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                probe.bind(("127.0.0.1", second.rtcp_port))
                rtcp_free = True
            except OSError:
                rtcp_free = False
            finally:
                probe.close()
            ports = (first.port, second.port, second.rtcp_port, rtcp_free)
            second.close()
        finally:
            blocker.close()
            first.close()
        return ports

    first, second, second_rtcp, rtcp_was_free = asyncio.run(scenario())
    assert second == first + 4 and second_rtcp == second + 1
    assert not rtcp_was_free  # the endpoint holds its RTCP port


def test_ticks_exchange_reports_on_the_rtcp_ports_with_rtt() -> None:
    async def scenario() -> tuple[MediaStream, MediaStream, int]:
        loop = asyncio.get_running_loop()
        a = await RtpEndpoint.open("127.0.0.1", PORTS)
        b = await RtpEndpoint.open("127.0.0.1", PORTS)
        a_stream = stream(("127.0.0.1", b.port), 0xA, loop.time())
        b_stream = stream(("127.0.0.1", a.port), 0xB, loop.time())
        for s in (a_stream, b_stream):
            s._rtcp.interval = 0.2  # reports every 0.1-0.3 s instead of 2.5-7.5 s
            s._rtcp.next_report = loop.time() + 0.1
        a.attach(a_stream)
        b.attach(b_stream)
        stray = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            # RTP sent to B's RTCP port is refused there, never played
            stray.sendto(bytes([0x80, 0]) + bytes(170), ("127.0.0.1", b.rtcp_port))
            start = loop.time()
            while loop.time() - start < 10.0 and (
                    a_stream.rtcp_stats()["rtt_ms"] is None
                    or b_stream.rtcp_stats()["rtt_ms"] is None):
                now = loop.time()
                a_stream.push_frame(SILENCE_FRAME)
                b_stream.push_frame(SILENCE_FRAME)
                a.tick(now)
                b.tick(now)
                await asyncio.sleep(0.020)
            b.send_bye(loop.time(), "done")
            await asyncio.sleep(0.05)
            return a_stream, b_stream, b.not_rtcp
        finally:
            a.close()
            b.close()
            stray.close()

    a_stream, b_stream, not_rtcp = asyncio.run(scenario())
    sa, sb = a_stream.rtcp_stats(), b_stream.rtcp_stats()
    assert sa["sent"] >= 1 and sb["sent"] >= 2  # B's last one is the BYE
    assert sa["received"] == sb["sent"] and sb["received"] == sa["sent"]
    assert sa["rtt_ms"] is not None and 0.0 <= sa["rtt_ms"] < 100.0
    assert sb["rtt_ms"] is not None and 0.0 <= sb["rtt_ms"] < 100.0
    assert a_stream._rtcp.byes == 1
    assert not_rtcp == 1 and b_stream.stats()["packets_received"] > 0


def test_compound_report_from_tick_is_sr_then_sdes() -> None:
    a = stream(("127.0.0.1", 9), 0xA)
    for k in range(500):
        a.push_frame(SILENCE_FRAME)
        a.send_due(k * 0.020)
        data = a.rtcp_due(k * 0.020)
        if data is not None:
            break
    assert data is not None
    packets = parse_compound(data)
    assert isinstance(packets[0], SenderReport) and packets[0].packet_count == k + 1
    assert packets[1] == SourceDescription.cname(0xA, "0000000a@branchline")
    final = parse_compound(a.rtcp_bye(k * 0.020 + 1) or b"")
    assert isinstance(final[0], SenderReport | ReceiverReport) and final[-1] == Bye((0xA,))
