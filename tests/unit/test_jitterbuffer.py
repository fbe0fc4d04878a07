"""Jitter buffer: playout timing, reordering, duplicates, loss, late and far packets, wraps."""

from __future__ import annotations

import random

from gateway.media.jitterbuffer import JitterBuffer, PlayoutState
from gateway.media.rtp import RtpPacket

FRAME = 0.020


def pkt(seq: int, ts: int | None = None, *, ssrc: int = 0xABCD, marker: bool = False) -> RtpPacket:
    seq &= 0xFFFF
    ts = (seq * 160 if ts is None else ts) & 0xFFFFFFFF
    return RtpPacket(0, seq, ts, ssrc, payload=seq.to_bytes(2, "big"), marker=marker)


def label(payload: bytes | None) -> int | None:
    return None if payload is None else int.from_bytes(payload, "big")


def run(jb: JitterBuffer, arrivals: dict[int, list[RtpPacket]], slots: int) -> list[int | None]:
    """Tick `slots` times: at slot k, put the packets arriving then, then pull one frame."""
    out = []
    for k in range(slots):
        now = k * FRAME
        for p in arrivals.get(k, []):
            jb.put(p, now)
        out.append(label(jb.get(now)))
    return out


def test_playout_starts_after_target_delay_and_keeps_order() -> None:
    jb = JitterBuffer(target_delay=0.040)
    out = run(jb, {k: [pkt(k)] for k in range(10)}, 12)
    assert out[:2] == [None, None]  # 40 ms of buffering
    assert out[2:12] == list(range(10))
    assert jb.played == 10 and jb.late == 0


def test_reordered_packets_play_in_sequence() -> None:
    jb = JitterBuffer(target_delay=0.060)
    arrivals = {0: [pkt(0)], 1: [pkt(2)], 2: [pkt(1)], 3: [pkt(4), pkt(3)], 4: [pkt(5)]}
    out = run(jb, arrivals, 9)
    assert [x for x in out if x is not None] == [0, 1, 2, 3, 4, 5]


def test_duplicates_are_dropped_and_counted() -> None:
    jb = JitterBuffer()
    arrivals = {0: [pkt(0), pkt(0)], 1: [pkt(1)], 2: [pkt(2)], 4: [pkt(1)], 5: [pkt(3)]}
    out = run(jb, arrivals, 7)
    assert [x for x in out if x is not None] == [0, 1, 2, 3]
    assert jb.duplicates == 2  # one while buffered, one after it was played


def test_lost_packet_leaves_an_empty_slot_in_place() -> None:
    jb = JitterBuffer(target_delay=0.040)
    arrivals = {k: [pkt(k)] for k in range(8) if k != 3}
    out = run(jb, arrivals, 10)
    assert out[2:10] == [0, 1, 2, None, 4, 5, 6, 7]
    assert jb.concealed == 1


def test_packet_later_than_its_slot_is_dropped() -> None:
    jb = JitterBuffer(target_delay=0.040)
    arrivals = {k: [pkt(k)] for k in range(8) if k != 2}
    arrivals[7].append(pkt(2))  # arrives 100 ms after its slot
    out = run(jb, arrivals, 10)
    assert out[2:10] == [0, 1, None, 3, 4, 5, 6, 7]
    assert jb.late == 1
    assert jb.target_delay > 0.040  # a late packet asks for more delay next time


def test_packet_one_frame_late_stretches_delay_instead_of_being_lost() -> None:
    jb = JitterBuffer(target_delay=0.040)
    out = []
    for k in range(10):
        now = k * FRAME
        if k != 3:
            jb.put(pkt(k), now)
        out.append(label(jb.get(now)))
        if k == 5:
            jb.put(pkt(3), now)  # just after its slot (5) went out empty
    assert out[2:10] == [0, 1, 2, None, 3, 4, 5, 6]
    assert jb.stretched == 1 and jb.late == 0


def test_far_future_packet_is_dropped_until_the_jump_is_confirmed() -> None:
    jb = JitterBuffer(capacity=50)
    assert jb.put(pkt(0), 0.0)
    assert not jb.put(pkt(9000), 0.0)
    assert jb.too_far == 1
    assert not jb.put(pkt(4000), 0.01)  # not the successor of the first: still suspect
    assert jb.too_far == 2
    assert jb.put(pkt(4001), 0.02)  # the next in line confirms the jump: follow it
    assert jb.resyncs == 1
    assert label(jb.get(0.1)) == 4001


def test_capacity_bounds_the_buffer_keeping_the_newest() -> None:
    jb = JitterBuffer(capacity=50)
    accepted = sum(jb.put(pkt(k), 0.0) for k in range(60))
    assert accepted == 60
    assert len(jb) == 50 and jb.overflow == 10
    assert label(jb.get(1.0)) == 10


def test_burst_beyond_max_delay_skips_the_oldest_audio() -> None:
    jb = JitterBuffer(target_delay=0.040, max_delay=0.200)
    run(jb, {0: [pkt(0)], 1: [pkt(1)], 2: [pkt(2)]}, 3)
    assert jb.state is PlayoutState.PLAYING
    for k in range(3, 40):  # a 740 ms burst arriving at once
        jb.put(pkt(k), 0.06)
    assert jb.depth <= 0.200 + 1e-9
    assert jb.overflow > 0
    assert jb.overflow == 29  # 1..29 skipped, 30..39 (200 ms) kept
    assert label(jb.get(0.08)) == 30


def test_sequence_and_timestamp_wrap() -> None:
    jb = JitterBuffer(target_delay=0.040)
    first_ts = 2**32 - 3 * 160
    arrivals = {k: [pkt(65533 + k, first_ts + 160 * k)] for k in range(8)}
    out = run(jb, arrivals, 10)
    assert out[2:10] == [65533, 65534, 65535, 0, 1, 2, 3, 4]
    assert jb.late == 0 and jb.too_far == 0


def test_ssrc_change_resets_and_replays_the_new_source() -> None:
    jb = JitterBuffer(target_delay=0.040)
    arrivals: dict[int, list[RtpPacket]] = {k: [pkt(k)] for k in range(5)}
    for k in range(5, 12):
        arrivals[k] = [pkt(7000 + k, 99 * k, ssrc=0x1234)]
    out = run(jb, arrivals, 14)
    assert jb.resets == 1
    assert jb.ssrc == 0x1234
    assert out[2:5] == [0, 1, 2]
    # after the change the new source buffers afresh for the target delay, then plays in order
    assert [x for x in out[5:] if x is not None] == [7000 + k for k in range(5, 12)]
    assert out[5:7] == [None, None]


def test_marker_after_silence_reanchors_playout() -> None:
    jb = JitterBuffer(target_delay=0.040)
    arrivals: dict[int, list[RtpPacket]] = {k: [pkt(k)] for k in range(4)}
    # the sender pauses 140 ms (silence suppression): sequence continues, timestamp jumps
    arrivals[11] = [pkt(4, 4 * 160 + 7 * 160, marker=True)]
    arrivals[12] = [pkt(5, 5 * 160 + 7 * 160)]
    out = run(jb, arrivals, 16)
    assert out[2:6] == [0, 1, 2, 3]
    first_after = out.index(4)
    assert first_after == 13  # arrived at slot 11, played after the 40 ms target
    assert out[14] == 5


def test_long_quiet_spell_goes_idle_and_restarts_without_marker() -> None:
    jb = JitterBuffer(target_delay=0.040, max_delay=0.200)
    arrivals: dict[int, list[RtpPacket]] = {k: [pkt(k)] for k in range(3)}
    arrivals[40] = [pkt(3, 3 * 160)]  # timestamp did not move on while the sender was quiet
    arrivals[41] = [pkt(4, 4 * 160)]
    out = run(jb, arrivals, 45)
    assert jb.late == 0
    assert out[42:44] == [3, 4]


def test_jittery_arrivals_raise_the_target_delay() -> None:
    rng = random.Random(3)
    jb = JitterBuffer(target_delay=0.040)
    played = []
    arrivals: list[tuple[float, RtpPacket]] = []
    for k in range(500):
        arrivals.append((k * FRAME + rng.uniform(0.0, 0.080), pkt(k)))
    arrivals.sort(key=lambda a: a[0])
    i = 0
    for slot in range(540):
        now = slot * FRAME
        while i < len(arrivals) and arrivals[i][0] <= now:
            jb.put(arrivals[i][1], arrivals[i][0])
            i += 1
        got = label(jb.get(now))
        if got is not None:
            played.append(got)
    assert played == sorted(played)
    assert jb.target_delay >= 0.080
    assert jb.jitter > 0.005
    # after adapting, nearly everything plays
    assert len(played) >= 480
