"""Receive-side jitter buffer: packets in at network pace, one 20 ms frame out per playout slot.

Packets are keyed by extended sequence number; playout follows RTP timestamps, so a silence
gap (the sender stopped during a pause) and a lost packet both give an empty slot without
confusing the order. The buffer adapts a little: a packet that misses its slot by one frame
stretches the delay by a frame and is still played; a late packet raises the target delay; a
buffer that stays deeper than needed for a second drops one frame; and a long quiet spell
(or a marker bit after silence) re-anchors playout at the current target.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Final

from gateway.media.rtp import RtpPacket, seq_distance, ts_distance

__all__ = ["JitterBuffer", "PlayoutState"]

MAX_DROPOUT: Final = 3000  # RFC 3550 A.1: a bigger forward jump must be confirmed first
RESYNC_AFTER_LATE: Final = 5  # this many late packets in a row means the sender jumped back
_RECENT: Final = 128  # played sequence numbers remembered for duplicate detection
_SHRINK_WINDOW: Final = 50  # slots (1 s) a buffer must stay too deep before a frame is dropped
_RELAX_AFTER: Final = 500  # slots (10 s) without late packets before the target steps down


class PlayoutState(Enum):
    """Where the buffer is: waiting for packets, filling up to the target, or playing."""

    IDLE = "idle"
    BUFFERING = "buffering"
    PLAYING = "playing"


@dataclass(frozen=True)
class _Entry:
    seq: int  # extended
    ts: int  # extended
    packet: RtpPacket
    arrival: float = 0.0


class JitterBuffer:
    """Bounded, reordering, mildly adaptive playout buffer for one RTP source at a time."""

    def __init__(
        self,
        *,
        capacity: int = 50,
        target_delay: float = 0.040,
        min_delay: float = 0.020,
        max_delay: float = 0.200,
        frame_interval: float = 0.020,
        clock_rate: int = 8000,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"jitter buffer capacity must be at least 1, got {capacity}")
        if not 0 < min_delay <= target_delay <= max_delay:
            raise ValueError(
                "jitter buffer delays must satisfy 0 < min <= target <= max, got "
                f"min={min_delay} target={target_delay} max={max_delay}"
            )
        self.capacity = capacity
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.frame_interval = frame_interval
        self.clock_rate = clock_rate
        self.frame_samples = round(clock_rate * frame_interval)
        self.target_delay = target_delay
        # counters, kept across resets so a call's totals survive an SSRC change
        self.accepted = 0
        self.duplicates = 0
        self.late = 0
        self.too_far = 0
        self.overflow = 0
        self.played = 0
        self.concealed = 0
        self.resets = 0
        self.resyncs = 0
        self.stretched = 0
        self.trimmed = 0
        self.delay_current = 0.0  # seconds the last played packet waited in the buffer
        self._delay_sum = 0.0
        self.missing = False  # the last slot, while playing, had no packet (conceal it)
        self._clear()

    def _clear(self) -> None:
        self.ssrc: int | None = None
        self.state = PlayoutState.IDLE
        self._packets: dict[int, _Entry] = {}
        self._top_seq: int | None = None  # highest extended sequence seen
        self._top_ts = 0  # extended timestamp of that packet
        self._last_played: int | None = None
        self._recent: deque[int] = deque(maxlen=_RECENT)
        self._play_ts = 0  # extended timestamp of the next sample to play
        self._start_at = 0.0
        self._late_run = 0
        self._far_seq: int | None = None
        self._empty_slots = 0
        self._slots_since_late = 0
        self._window_slots = 0
        self._window_min_depth: float | None = None
        self._transit: float | None = None
        self._jitter = 0.0  # RFC 3550 interarrival jitter, seconds

    # ---------------------------------------------------------------- inspection

    @property
    def jitter(self) -> float:
        """Smoothed interarrival jitter in seconds; it sets the floor of the target delay."""
        return self._jitter

    @property
    def depth(self) -> float:
        """Seconds of audio buffered ahead of the playout point (0 when not playing)."""
        if self.state is not PlayoutState.PLAYING or not self._packets:
            return 0.0
        newest = max(entry.ts for entry in self._packets.values())
        return max(0, newest + self.frame_samples - self._play_ts) / self.clock_rate

    @property
    def delay_mean(self) -> float:
        """Mean seconds a played packet waited here: the delay this buffer adds to the call."""
        return self._delay_sum / self.played if self.played else 0.0

    @property
    def concealed_fraction(self) -> float:
        """Share of playout slots with no packet to play (0.0 to 1.0)."""
        slots = self.played + self.concealed
        return self.concealed / slots if slots else 0.0

    def __len__(self) -> int:
        return len(self._packets)

    # ---------------------------------------------------------------- input

    def reset(self) -> None:
        """Forget everything buffered, e.g. when the codec changes in a re-INVITE."""
        self._clear()

    def put(self, packet: RtpPacket, now: float) -> bool:
        """Offer a received packet; False when it is dropped (duplicate, late, too far ahead)."""
        if self.ssrc is not None and packet.ssrc != self.ssrc:
            self.resets += 1
            self._clear()
        if self.ssrc is None or self._top_seq is None:
            self.ssrc = packet.ssrc
            return self._restart(packet, now)

        seq = self._top_seq + seq_distance(packet.sequence, self._top_seq & 0xFFFF)
        ts = self._top_ts + ts_distance(packet.timestamp, self._top_ts & 0xFFFFFFFF)
        if seq in self._packets or seq in self._recent:
            self.duplicates += 1
            return False
        self._update_jitter(ts, now)
        if self._last_played is not None and seq <= self._last_played:
            return self._drop_late(packet, now)
        if self.state is PlayoutState.PLAYING and ts < self._play_ts:
            just_missed = ts == self._play_ts - self.frame_samples
            room = self.depth + 2 * self.frame_interval <= self.max_delay + 1e-9
            if just_missed and room:
                # it missed its slot by one frame: play it now and run one frame later
                self._play_ts = ts
                self.stretched += 1
                self._raise_target()
            else:
                return self._drop_late(packet, now)

        base = self._last_played
        if base is None:
            base = (min(self._packets) if self._packets else seq) - 1
        if seq - base > MAX_DROPOUT:
            if self._far_seq is not None and packet.sequence == (self._far_seq + 1) & 0xFFFF:
                # two in a row far ahead: the sender jumped forward, follow it (RFC 3550 A.1)
                self.resyncs += 1
                return self._restart(packet, now)
            self._far_seq = packet.sequence
            self.too_far += 1
            return False
        self._far_seq = None
        self._late_run = 0

        if packet.marker and self.state is PlayoutState.PLAYING and not self._packets:
            self._anchor(now)  # talkspurt start after silence: a cheap moment to re-time
        self._store(_Entry(seq, ts, packet, now))
        while len(self._packets) > self.capacity:
            self._skip_oldest()
            self.overflow += 1
        if self.state is PlayoutState.IDLE:
            self._anchor(now)
        elif self.state is PlayoutState.PLAYING:
            self._limit_depth()
        return True

    def _restart(self, packet: RtpPacket, now: float) -> bool:
        ssrc = packet.ssrc
        target = self.target_delay
        self._clear()
        self.ssrc = ssrc
        self.target_delay = target
        self._update_jitter(packet.timestamp, now)
        self._store(_Entry(packet.sequence, packet.timestamp, packet, now))
        self._anchor(now)
        return True

    def _store(self, entry: _Entry) -> None:
        self._packets[entry.seq] = entry
        if self._top_seq is None or entry.seq > self._top_seq:
            self._top_seq = entry.seq
            self._top_ts = entry.ts
        self.accepted += 1

    def _drop_late(self, packet: RtpPacket, now: float) -> bool:
        self.late += 1
        self._late_run += 1
        self._raise_target()
        if self._late_run >= RESYNC_AFTER_LATE:
            # the sender's numbering went backwards for good (restart with the same SSRC)
            self.resyncs += 1
            return self._restart(packet, now)
        return False

    def _raise_target(self) -> None:
        self._slots_since_late = 0
        self.target_delay = min(self.max_delay, self.target_delay + self.frame_interval)

    def _jitter_floor(self) -> float:
        """Three times the jitter, in whole frames: covers nearly all arrivals on a steady path."""
        frames = math.ceil(3 * self._jitter / self.frame_interval - 1e-9)
        return max(self.min_delay, frames * self.frame_interval)

    def _anchor(self, now: float) -> None:
        floor = self._jitter_floor()
        self.target_delay = min(self.max_delay, max(self.target_delay, floor))
        self.state = PlayoutState.BUFFERING
        self._start_at = now + self.target_delay
        self._empty_slots = 0
        self._window_slots = 0
        self._window_min_depth = None

    def _skip_oldest(self) -> None:
        """Pass over the oldest buffered packet as though it had been played."""
        oldest = self._packets.pop(min(self._packets))
        if self.state is PlayoutState.PLAYING:
            self._play_ts = max(self._play_ts, oldest.ts + self.frame_samples)
        self._last_played = oldest.seq
        self._recent.append(oldest.seq)

    def _limit_depth(self) -> None:
        while len(self._packets) > 1 and self.depth > self.max_delay + 1e-9:
            # far more buffered than we ever want to hold: skip the oldest audio
            self._skip_oldest()
            self.overflow += 1
        if self.depth > self.max_delay + 1e-9:
            # one packet far ahead in time (a timestamp jump): shorten the wait to the target
            newest = next(iter(self._packets.values()))
            lead = round(self.target_delay * self.clock_rate)
            self._play_ts = newest.ts + self.frame_samples - lead

    def _update_jitter(self, ts: int, now: float) -> None:
        transit = now - ts / self.clock_rate
        if self._transit is not None:
            d = abs(transit - self._transit)
            if d <= self.max_delay:  # a bigger step is a timestamp jump, not network jitter
                self._jitter += (d - self._jitter) / 16
        self._transit = transit

    # ---------------------------------------------------------------- output

    def get(self, now: float) -> bytes | None:
        """The payload for this 20 ms slot, or None when there is nothing to play."""
        packet = self.get_packet(now)
        return None if packet is None else packet.payload

    def get_packet(self, now: float) -> RtpPacket | None:
        """Like get(), keeping the header (payload type, marker) for callers that need it."""
        self.missing = False
        if self.state is PlayoutState.IDLE:
            return None
        if self.state is PlayoutState.BUFFERING:
            if now < self._start_at - 1e-9:
                return None
            if not self._packets:
                self.state = PlayoutState.IDLE
                return None
            self._play_ts = self._packets[min(self._packets)].ts
            self.state = PlayoutState.PLAYING

        self._slots_since_late += 1
        if self._slots_since_late >= _RELAX_AFTER:
            self._slots_since_late = 0
            relaxed = self.target_delay - self.frame_interval
            self.target_delay = min(self.max_delay, max(self._jitter_floor(), relaxed))

        head = self._packets[min(self._packets)] if self._packets else None
        if head is not None and head.ts < self._play_ts + self.frame_samples:
            del self._packets[head.seq]
            self._play_ts = head.ts + self.frame_samples
            self._last_played = head.seq
            self._recent.append(head.seq)
            self.played += 1
            self.delay_current = max(0.0, now - head.arrival)
            self._delay_sum += self.delay_current
            self._empty_slots = 0
            self._watch_depth()
            return head.packet

        self._play_ts += self.frame_samples
        self.concealed += 1
        self.missing = True
        if not self._packets:
            self._empty_slots += 1
            if self._empty_slots * self.frame_interval >= self.max_delay - 1e-9:
                self.state = PlayoutState.IDLE  # the sender went quiet; re-anchor when it returns
                # those empty slots were the end of a talk spurt, not loss: uncount them
                self.concealed -= self._empty_slots
                self._empty_slots = 0
        return None

    def _watch_depth(self) -> None:
        depth = self.depth
        if self._window_min_depth is None or depth < self._window_min_depth:
            self._window_min_depth = depth
        self._window_slots += 1
        if self._window_slots < _SHRINK_WINDOW:
            return
        too_deep = self._window_min_depth > self.target_delay + self.frame_interval / 2
        self._window_slots = 0
        self._window_min_depth = None
        if too_deep and self._packets:
            # a second in which the buffer never came near the target: drop one frame
            self._skip_oldest()
            self.trimmed += 1
