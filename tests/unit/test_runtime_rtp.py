"""The asyncio adapters: the audio clock on a fake loop, RTP endpoints on real loopback sockets."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable
from typing import Any

import pytest

from gateway.dsp import SILENCE_FRAME
from gateway.media.stream import MediaEvent, MediaStream, RemoteLatched
from gateway.media.telephone_event import DigitReceived
from gateway.runtime.clock import LEAD, AudioClock
from gateway.runtime.rtp import RtpEndpoint

# ---------------------------------------------------------------- AudioClock on a fake loop


class FakeHandle:
    def __init__(self, when: float, callback: Callable[[], Any]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """Just enough of an event loop: a settable clock and a record of call_at requests."""

    def __init__(self, t: float) -> None:
        self.t = t
        self.handles: list[FakeHandle] = []

    def time(self) -> float:
        return self.t

    def call_at(self, when: float, callback: Callable[[], Any]) -> FakeHandle:
        handle = FakeHandle(when, callback)
        self.handles.append(handle)
        return handle

    def sleep(self, seconds: float) -> None:
        """The clock's precise sleep to its deadline, on this clock."""
        self.t += seconds

    def fire_next(self, lateness: float = 0.0) -> float:
        handle = self.handles[-1]
        assert not handle.cancelled
        self.t = max(self.t, handle.when + lateness)
        handle.callback()
        return handle.when


def test_clock_deadlines_are_anchored_and_never_drift() -> None:
    loop = FakeLoop(1000.0)
    clock = AudioClock(loop, sleep=loop.sleep, max_lead=LEAD)  # type: ignore[arg-type]
    seen: list[float] = []
    clock.add(seen.append)
    clock.start()
    rng = random.Random(5)
    whens = [loop.fire_next(rng.uniform(0.0, 0.012)) for _ in range(3000)]
    # each timer was armed `lead` before exactly t0 + n * 20 ms, however late the last one ran
    assert all(abs(w + clock.lead - (1000.0 + n * 0.020)) < 1e-9 for n, w in enumerate(whens))
    assert loop.handles[-1].when + clock.lead == pytest.approx(1000.0 + 3000 * 0.020, abs=1e-9)
    assert clock.ticks == 3000 and len(seen) == 3000
    assert seen == sorted(seen)  # callbacks get the loop's time
    assert clock.late == 0 and clock.skipped == 0


def test_clock_catches_up_short_stalls_and_skips_long_ones() -> None:
    loop = FakeLoop(0.0)
    clock = AudioClock(loop, max_burst=5, sleep=loop.sleep,  # type: ignore[arg-type]
                       max_lead=LEAD)  # a fixed lead: these check the anchoring
    calls: list[float] = []
    clock.add(calls.append)
    clock.start()
    loop.fire_next()  # slot 0 on time
    loop.fire_next(clock.lead + 0.050)  # slot 1 fired at 70 ms: slots 1, 2, 3 are due
    assert len(calls) == 4 and clock.late == 2
    # catch-up calls carry their own slot times; the newest gets the loop's time
    assert calls[1:] == [pytest.approx(0.020), pytest.approx(0.040), pytest.approx(0.070)]
    assert loop.handles[-1].when + clock.lead == pytest.approx(0.080)
    loop.fire_next(clock.lead + 1.0)  # slot 4 at 1.08 s: slots 4..54 are due; run 1, skip 50
    assert len(calls) == 5 and clock.skipped == 50
    assert loop.handles[-1].when + clock.lead == pytest.approx(1.100)


def test_stream_on_the_clock_keeps_one_frame_per_packet_through_a_stall() -> None:
    loop = FakeLoop(0.0)
    clock = AudioClock(loop, sleep=loop.sleep, max_lead=LEAD)  # type: ignore[arg-type]
    media = stream(("127.0.0.1", 9), 1)
    sent: list[bytes] = []
    voice = b"\x10\x00" * 160  # not silence, so a stand-in silence packet would show

    def tick(now: float) -> None:
        media.push_frame(voice)
        sent.extend(media.send_due(now))

    clock.add(tick)
    clock.start()
    for lateness in (0.0, 0.0, 0.065, 0.0, 0.031, 0.0, 0.0):
        loop.fire_next(lateness)
    assert len(sent) == clock.ticks
    assert media.stats()["frames_missing"] == 0 and media.stats()["frames_dropped"] == 0


def test_clock_survives_a_failing_callback_and_stops_cleanly() -> None:
    loop = FakeLoop(0.0)
    clock = AudioClock(loop, sleep=loop.sleep, max_lead=LEAD)  # type: ignore[arg-type]
    good: list[float] = []

    def bad(now: float) -> None:
        raise RuntimeError("boom")

    clock.add(bad)
    clock.add(good.append)
    clock.start()
    for _ in range(3):
        loop.fire_next()
    assert len(good) == 3 and clock.errors == 3
    clock.remove(bad)
    loop.fire_next()
    assert clock.errors == 3 and len(good) == 4
    pending = loop.handles[-1]
    clock.stop()
    assert pending.cancelled and not clock.running


def test_clock_on_a_real_loop_ticks() -> None:
    async def scenario() -> tuple[int, bool]:
        clock = AudioClock()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        count = 0

        def tick(now: float) -> None:
            nonlocal count
            count += 1
            if count == 5 and not done.done():
                done.set_result(None)

        clock.add(tick)
        clock.start()
        await asyncio.wait_for(done, timeout=10)
        clock.stop()
        return count, clock.running

    count, running = asyncio.run(scenario())
    assert count >= 5 and not running


# ---------------------------------------------------------------- RtpEndpoint on loopback

PORTS = (41000, 41998)


def stream(remote: tuple[str, int], ssrc: int) -> MediaStream:
    return MediaStream(codec="PCMU", payload_type=0, dtmf_pt=101, remote_addr=remote,
                       ssrc=ssrc, seq=ssrc & 0xFFFF, timestamp=ssrc, now=0.0)


def test_endpoint_binds_even_ports_and_skips_taken_ones() -> None:
    async def scenario() -> tuple[int, int, int]:
        first = await RtpEndpoint.open("127.0.0.1", PORTS)
        second = await RtpEndpoint.open("127.0.0.1", (first.port, first.port + 10))
        blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            blocker.bind(("127.0.0.1", second.port + 2))
            third = await RtpEndpoint.open("127.0.0.1", (second.port + 1, second.port + 10))
            ports = (first.port, second.port, third.port)
            third.close()
        finally:
            blocker.close()
            first.close()
            second.close()
        return ports

    first, second, third = asyncio.run(scenario())
    assert first % 2 == 0 and second % 2 == 0 and third % 2 == 0
    assert second > first  # the first port of its range was taken
    assert third == second + 4  # odd start rounded up, the taken port passed over


def test_endpoint_range_with_no_free_port_is_an_error() -> None:
    async def scenario() -> None:
        ep = await RtpEndpoint.open("127.0.0.1", PORTS)
        try:
            with pytest.raises(OSError, match="no free even UDP port"):
                await RtpEndpoint.open("127.0.0.1", (ep.port, ep.port + 1))
        finally:
            ep.close()

    asyncio.run(scenario())


def test_two_endpoints_exchange_audio_and_digits_over_loopback() -> None:
    async def scenario() -> tuple[list[MediaEvent], list[MediaEvent], dict[str, Any],
                                  dict[str, Any]]:
        loop = asyncio.get_running_loop()
        a = await RtpEndpoint.open("127.0.0.1", PORTS)
        b = await RtpEndpoint.open("127.0.0.1", PORTS)
        a_stream = stream(("127.0.0.1", b.port), 0x0A0A0A0A)
        # B was told a wrong port for A (as behind NAT) and must latch to where A really is
        b_stream = stream(("127.0.0.1", a.port + 1000), 0x0B0B0B0B)
        a.attach(a_stream)
        b.attach(b_stream)
        a_events: list[MediaEvent] = []
        b_events: list[MediaEvent] = []
        got_at_b: asyncio.Future[None] = loop.create_future()
        got_at_a: asyncio.Future[None] = loop.create_future()

        def on_b(ev: MediaEvent) -> None:
            b_events.append(ev)
            if isinstance(ev, DigitReceived) and not got_at_b.done():
                got_at_b.set_result(None)

        def on_a(ev: MediaEvent) -> None:
            a_events.append(ev)
            if isinstance(ev, DigitReceived) and not got_at_a.done():
                got_at_a.set_result(None)

        a.on_event = on_a
        b.on_event = on_b
        try:
            a_stream.send_dtmf("4", 0.0)
            for k in range(12):  # fake media time: the stream never reads a clock
                a_stream.push_frame(SILENCE_FRAME)
                a.tick(k * 0.020)
            await asyncio.wait_for(got_at_b, timeout=5)
            b_stream.send_dtmf("#", 0.0)
            for k in range(12):
                b_stream.push_frame(SILENCE_FRAME)
                b.tick(k * 0.020)
            await asyncio.wait_for(got_at_a, timeout=5)
        finally:
            a.close()
            b.close()
        return a_events, b_events, a_stream.stats(), b_stream.stats()

    a_events, b_events, a_stats, b_stats = asyncio.run(scenario())
    assert [e for e in b_events if isinstance(e, DigitReceived)] == [DigitReceived("4", 100)]
    assert [e for e in a_events if isinstance(e, DigitReceived)] == [DigitReceived("#", 100)]
    latched = [e for e in b_events if isinstance(e, RemoteLatched)]
    assert len(latched) == 1 and latched[0].new[1] != latched[0].old[1]
    # loopback keeps order: everything A sent up to its first end packet (slots 0-4) is in
    assert b_stats["packets_received"] >= 5 and a_stats["packets_received"] >= 5
    assert b_stats["dropped_malformed"] == 0 and b_stats["lost"] == 0
    assert b_stats["dropped_foreign"] == 0 and a_stats["remote_changes"] == 0


def test_a_range_is_searched_from_after_the_last_port_handed_out() -> None:
    """Ports go round-robin: with calls holding the bottom of the range, a new call binds at
    its first try instead of trying every port still held (one bind per port, not N)."""
    async def scenario() -> tuple[list[int], int, int]:
        loop = asyncio.get_running_loop()
        real = loop.create_datagram_endpoint
        binds = 0

        async def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal binds
            binds += 1
            return await real(*args, **kwargs)

        loop.create_datagram_endpoint = counting  # type: ignore[method-assign]
        span = (42000, 42099)
        held = [await RtpEndpoint.open("127.0.0.1", span) for _ in range(10)]
        binds = 0
        held[0].close()  # the lowest port is free again, but the search goes on from the top
        newest = await RtpEndpoint.open("127.0.0.1", span)
        ports = [ep.port for ep in held]
        for ep in held[1:] + [newest]:
            ep.close()
        return ports, newest.port, binds

    ports, newest, binds = asyncio.run(scenario())
    assert ports == list(range(ports[0], ports[0] + 20, 2))
    assert newest == ports[-1] + 2
    assert binds == 2  # RTP and RTCP, at the first port tried
