"""Issue 11 must-hold 3: a call through a lossy, jittery path stays continuous, and the MOS
the gateway reports matches the E-model of the impairment.

baresip (1 kHz tone, auto-answer) is called over SIP by the test; our side of the call runs
on RtpEndpoint + MediaStream, the daemon's media path (jitter buffer, concealment, RTCP,
the statistics `branchline status` shows). Our SDP points baresip at a UDP relay written for
this test. Towards us the relay delays every RTP packet by 20 ms plus a uniform 0-30 ms
(30 ms of jitter, which reorders packets 20 ms apart), holds every 25th packet back 25 ms
more (reordering), and drops 3 % at random; RTCP gets the same delays and no loss. What
we send goes straight through.

- The earpiece stream (pull_frame, what a handset is played) has no gap over 60 ms.
- The MOS in the stream's stats is within 0.3 of the G.107 value computed from what the
  relay is known to do: 3 % random loss, one-way delay = mean relay delay (35 ms) +
  packetisation (20 ms) + a playout buffer deep enough for the 30 ms spread (30 ms).
"""

from __future__ import annotations

import asyncio
import random
import secrets
from typing import Any, cast

import numpy as np
import pytest

from gateway.dsp import FRAME_SAMPLES, SAMPLE_RATE, SILENCE_FRAME
from gateway.media.quality import mos, r_factor
from gateway.media.stream import MediaStream
from gateway.runtime.rtp import RtpEndpoint
from gateway.sip.sdp import SessionDescription, build_offer, params_from_answer

from .conftest import BaresipFactory
from .peers.ports import free_udp_port
from .test_tls_srtp import RTP_RANGE, MiniUa, new_stream

pytestmark = [pytest.mark.peers, pytest.mark.slow]

SLOT = FRAME_SAMPLES / SAMPLE_RATE
BASE_DELAY = 0.020
JITTER = 0.030
LOSS = 0.03
REORDER_EVERY = 25
CALL_SECONDS = 20.0


class _Side(asyncio.DatagramProtocol):
    def __init__(self, relay: Relay, rtcp: bool) -> None:
        self.relay = relay
        self.rtcp = rtcp
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.relay.received(self, data, (str(addr[0]), int(addr[1])))


class Relay:
    """Two sockets (RTP on an even port, RTCP above it) between baresip and our endpoint."""

    def __init__(self, ours: tuple[int, int], seed: int = 11) -> None:
        self.ours = ours  # our RTP and RTCP ports
        self.theirs: dict[bool, tuple[str, int]] = {}
        self.rng = random.Random(seed)
        self.sides: dict[bool, _Side] = {}
        self.port = 0
        self.forwarded = 0
        self.dropped = 0
        self.delays: list[float] = []
        self._count = 0

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(50):
            port = free_udp_port()
            if port % 2:
                continue
            try:
                _, rtp = await loop.create_datagram_endpoint(
                    lambda: _Side(self, False), local_addr=("127.0.0.1", port))
                _, rtcp = await loop.create_datagram_endpoint(
                    lambda: _Side(self, True), local_addr=("127.0.0.1", port + 1))
            except OSError:
                continue
            self.sides = {False: rtp, True: rtcp}
            self.port = port
            return
        raise RuntimeError("no even UDP port pair free for the relay")

    def close(self) -> None:
        for side in self.sides.values():
            if side.transport is not None:
                side.transport.close()

    def received(self, side: _Side, data: bytes, addr: tuple[str, int]) -> None:
        assert side.transport is not None
        ours = ("127.0.0.1", self.ours[side.rtcp])
        if addr == ours:  # ours goes straight to baresip
            dest = self.theirs.get(side.rtcp)
            if dest is not None:
                side.transport.sendto(data, dest)
            return
        self.theirs.setdefault(side.rtcp, addr)
        delay = BASE_DELAY + self.rng.uniform(0.0, JITTER)
        if not side.rtcp:
            self._count += 1
            if self.rng.random() < LOSS:
                self.dropped += 1
                return
            if self._count % REORDER_EVERY == 0:
                delay += 0.025
            self.forwarded += 1
            self.delays.append(delay)
        transport = side.transport
        asyncio.get_running_loop().call_later(delay, transport.sendto, data, ours)


def longest_gap_ms(pcm: bytes) -> float:
    """Longest run of 5 ms blocks whose peak is under a tenth of the tone's usual peak."""
    x = np.abs(np.frombuffer(pcm, dtype="<i2").astype(np.float64))
    blocks = x[: x.size // 40 * 40].reshape(-1, 40).max(axis=1)
    loud = np.flatnonzero(blocks > 0)
    assert loud.size, "the earpiece heard nothing at all"
    blocks = blocks[loud[0]:loud[-1] + 1]
    quiet = blocks < 0.1 * np.median(blocks)
    longest = run = 0
    for q in quiet:
        run = run + 1 if q else 0
        longest = max(longest, run)
    return longest * 5.0


def test_lossy_jittery_path_stays_continuous_and_mos_matches_the_e_model(
    baresip_factory: BaresipFactory,
) -> None:
    bob = baresip_factory("bob", tone=1000, answer_mode="auto")

    async def scenario() -> tuple[MediaStream, bytes, Relay, float]:
        loop = asyncio.get_running_loop()
        ua = MiniUa()
        await ua.open()
        endpoint = await RtpEndpoint.open("127.0.0.1", RTP_RANGE)
        relay = Relay((endpoint.port, endpoint.rtcp_port))
        await relay.open()
        try:
            offer = build_offer(address="127.0.0.1", port=relay.port, codecs=["PCMU"],
                                session_id=secrets.randbits(31), session_version=1)
            dest = ("127.0.0.1", bob.sip_port)
            call_id = secrets.token_hex(8)
            ua.request("INVITE", bob.direct_uri, f"<{bob.direct_uri}>", call_id, 1, dest,
                       bytes(offer))
            ok = await ua.expect("INVITE", timeout=15)
            assert ok.status == 200, ok.start
            params = params_from_answer(offer, SessionDescription.parse(ok.body))
            ua.request("ACK", bob.direct_uri, ok.h("to"), call_id, 1, dest)
            host, port = params.remote_addr
            relay.theirs = {False: (host, port), True: (host, port + 1)}
            # we send to the relay too, so our reports measure the round trip through it
            stream = new_stream(("127.0.0.1", relay.port), params.codec,
                                params.payload_type, params.telephone_event_pt, None,
                                loop.time())
            endpoint.attach(stream)
            heard: list[bytes] = []
            start = loop.time()
            stalled = 0.0  # how late this process ran a 20 ms slot: host jitter, not the relay's
            for k in range(int(CALL_SECONDS / SLOT)):
                delay = start + k * SLOT - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                now = loop.time()
                stalled = max(stalled, now - (start + k * SLOT))
                stream.push_frame(SILENCE_FRAME)
                endpoint.tick(now)
                heard.append(stream.pull_frame(now))
            ua.request("BYE", bob.direct_uri, ok.h("to"), call_id, 2, dest)
            await ua.expect("BYE")
            return stream, b"".join(heard), relay, stalled
        finally:
            relay.close()
            endpoint.close()
            ua.close()

    # The test process itself plays the gateway's side. When the machine is loaded (the CI
    # runs three pytest processes on two cores) it can be descheduled for longer than the
    # playout buffer, which adds jitter the relay's model does not have; such a run says
    # nothing about the media path, so it is repeated (at most twice more) and reported.
    for attempt in range(3):
        stream, heard, relay, stalled = asyncio.run(scenario())
        if stalled <= 0.1:
            break
        print(f"attempt {attempt + 1}: this process ran {1000 * stalled:.0f} ms late; again")
    assert stalled <= 0.1, f"the test process stalled {1000 * stalled:.0f} ms on every attempt"
    st = stream.stats()
    rtcp = stream.rtcp_stats()
    expected_delay_ms = 1000 * (BASE_DELAY + JITTER / 2) + 20 + 1000 * JITTER
    expected = mos(r_factor(expected_delay_ms, 100 * LOSS))
    gap = longest_gap_ms(heard)
    print(f"relay: forwarded {relay.forwarded}, dropped {relay.dropped}; "
          f"stats: lost {st['lost']} late {st['late']} concealed {st['concealed_frames']} "
          f"({st['concealed_pct']:.2f} %), jb delay mean {st['jb_delay_mean_ms']:.1f} ms, "
          f"one-way {st['one_way_delay_ms']:.1f} ms, loss {st['effective_loss_pct']:.2f} %, "
          f"R {st['r_factor']:.1f}, MOS {st['mos']:.2f} vs E-model {expected:.2f}; "
          f"rtt {rtcp['rtt_ms']} ms; longest gap {gap:.0f} ms")
    assert relay.dropped > 0 and st["packets_received"] > 0.9 * CALL_SECONDS / SLOT
    assert st["lost"] >= relay.dropped - 2  # RTCP's count sees what the relay dropped
    assert rtcp["rtt_ms"] is not None  # the delay in the score comes from RTCP, too
    assert gap <= 60, gap
    assert st["concealed_frames"] >= relay.dropped  # every lost frame was filled in
    assert abs(st["mos"] - expected) <= 0.3, (st["mos"], expected)
