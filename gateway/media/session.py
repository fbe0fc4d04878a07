"""The sending half of an RTP session: packet numbering and the 20 ms pacing schedule.

Timestamps come from the count of samples sent, never from a clock, so a late scheduler
shows up as jitter on the wire and never as a timestamp error. The pacing schedule is
anchored: the n-th slot is due at `start + n * interval`, so rounding and late wake-ups never
accumulate into drift.
"""

from __future__ import annotations

import math
import struct

from gateway.media.rtp import SEQ_MOD, TS_MOD

__all__ = ["PacingSchedule", "RtpSender"]

_PLAIN_HEADER = struct.Struct("!BBHII")  # V=2 P X CC, M PT, sequence, timestamp, SSRC


class RtpSender:
    """Numbers outgoing packets for one SSRC; `timestamp` is that of the next media sample."""

    def __init__(self, ssrc: int, payload_type: int, *, seq: int, timestamp: int) -> None:
        if not 0 <= ssrc < TS_MOD:
            raise ValueError(f"SSRC must be 0..2**32-1, got {ssrc}")
        if not 0 <= payload_type <= 127:
            raise ValueError(f"payload type must be 0..127, got {payload_type}")
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.seq = seq % SEQ_MOD
        self.timestamp = timestamp % TS_MOD
        self.packets_sent = 0
        self.octets_sent = 0

    def packetize(self, payload: bytes, samples: int, marker: bool = False) -> bytes:
        """Send `samples` worth of media now; the timestamp then moves on by that many."""
        data = self._emit(payload, self.payload_type, self.timestamp, marker)
        self.skip(samples)
        return data

    def event(self, payload: bytes, *, payload_type: int, timestamp: int,
              marker: bool = False) -> bytes:
        """A packet with its own payload type and timestamp (RFC 4733) sharing our numbering."""
        return self._emit(payload, payload_type, timestamp % TS_MOD, marker)

    def skip(self, samples: int) -> None:
        """Let media time pass without sending (muted, on hold, or covered by an event)."""
        self.timestamp = (self.timestamp + samples) % TS_MOD

    def _emit(self, payload: bytes, payload_type: int, timestamp: int, marker: bool) -> bytes:
        # A plain header (version 2, no padding, extension or CSRC): packed directly, as
        # this runs for every packet of every call in the tick's send pass. The fields are
        # in range by construction (checked in __init__, kept modulo by skip()), but for a
        # payload type a re-INVITE may have set.
        if not 0 <= payload_type <= 127:
            raise ValueError(f"RTP payload type must be 0..127, got {payload_type}")
        data = _PLAIN_HEADER.pack(0x80, payload_type | (0x80 if marker else 0), self.seq,
                                  timestamp, self.ssrc) + payload
        self.seq = (self.seq + 1) % SEQ_MOD
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return data


class PacingSchedule:
    """Anchored send slots; a long stall skips ahead instead of bursting stale audio."""

    def __init__(self, start: float, interval: float = 0.020, *, max_burst: int = 5) -> None:
        if interval <= 0:
            raise ValueError(f"pacing interval must be positive, got {interval}")
        if max_burst < 1:
            raise ValueError(f"max_burst must be at least 1, got {max_burst}")
        self.start = start
        self.interval = interval
        self.max_burst = max_burst
        self.slot = 0  # index of the next slot not yet handed out
        self.sent = 0  # slots handed out by due()
        self.skipped = 0  # slots passed over after a stall
        self.last_skipped = 0  # slots passed over by the latest due() call
        self.late = 0  # due() calls that found more than one slot waiting

    def slot_time(self, n: int) -> float:
        """When slot `n` is due; computed from the anchor each time so error never builds up."""
        return self.start + n * self.interval

    def next_deadline(self) -> float:
        """When the next slot is due: the time to re-arm the timer for."""
        return self.slot_time(self.slot)

    def _last_due(self, now: float) -> int:
        """Index of the newest slot whose time has come (-1 before the first)."""
        k = math.floor((now - self.start) / self.interval)
        while self.slot_time(k + 1) <= now:
            k += 1
        while k >= 0 and self.slot_time(k) > now:
            k -= 1
        return max(k, -1)

    def due(self, now: float) -> int:
        """How many slots to fill now; after more than `max_burst` it keeps only the newest."""
        waiting = self._last_due(now) + 1 - self.slot
        self.last_skipped = 0
        if waiting <= 0:
            return 0
        if waiting > 1:
            self.late += 1
        if waiting > self.max_burst:
            self.last_skipped = waiting - 1
            self.skipped += waiting - 1
            waiting = 1
        self.slot += self.last_skipped + waiting
        self.sent += waiting
        return waiting
