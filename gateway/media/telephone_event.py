"""RFC 4733 telephone-events: DTMF digits carried as RTP events instead of in-band tones.

The sender rides on the audio send slots: while an event is under way the audio for those
slots is suppressed and the RTP clock moves on as if audio had been sent, so the event covers
exactly the samples it replaces. The start is sent in each of the first three slots (the
first with the marker bit), updates follow every 50 ms or so with a growing duration, and
the end packet (E bit) goes out three times, all with the timestamp of the event's start.
The receiver reports one digit per event however many of those packets arrive.

A digit relayed from a handset's tones does not know its length when it starts: `start`
with ``duration_ms=None`` opens the event, its duration field grows every update, and
`finish` gives it the length the key was held (rounded up to whole send slots) once the
tone detector saw it end. An event nobody finishes ends at MAX_DURATION_MS.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from dataclasses import dataclass
from typing import Final

from gateway.media.rtp import RtpPacket
from gateway.media.session import RtpSender

__all__ = [
    "DigitReceived",
    "DigitStarted",
    "DtmfReceiver",
    "DtmfSender",
    "TelephoneEvent",
    "TelephoneEventError",
    "decode_event",
    "digit_to_event",
    "encode_event",
    "event_to_digit",
]

EVENT_DIGITS: Final = "0123456789*#ABCD"
FLASH_EVENT: Final = 16
FLASH_DIGIT: Final = "!"  # hook flash, as SIP INFO and most gateways spell it
START_REPEATS: Final = 3
END_REPEATS: Final = 3
MAX_DURATION_MS: Final = 8000  # longer events need RFC 4733 segmenting, which we never need

_EVENT = struct.Struct("!BBH")


class TelephoneEventError(ValueError):
    """A telephone-event payload that cannot be decoded; drop it and count it."""


@dataclass(frozen=True)
class TelephoneEvent:
    """The 4-byte RFC 4733 payload: event code, end flag, volume (-dBm0) and duration (ticks)."""

    event: int
    end: bool = False
    volume: int = 10
    duration: int = 0

    def __bytes__(self) -> bytes:
        """Encode for an RTP payload; out-of-range fields raise ValueError naming the field."""
        return encode_event(self.event, end=self.end, volume=self.volume, duration=self.duration)


@dataclass(frozen=True)
class DigitStarted:
    """An RFC 4733 event's first packet arrived: the far end's key is down now.

    Reported before its `DigitReceived`, so a gateway can start the tone at once and
    stop it when the event ends, instead of playing the whole event late.
    """

    digit: str


@dataclass(frozen=True)
class DigitReceived:
    """A DTMF digit (or "!" for flash) received as an RFC 4733 event, reported once."""

    digit: str
    duration_ms: int


def encode_event(event: int, *, end: bool = False, volume: int = 10, duration: int = 0) -> bytes:
    """Build the 4-byte event payload."""
    if not 0 <= event <= 255:
        raise ValueError(f"telephone-event code must be 0..255, got {event}")
    if not 0 <= volume <= 63:
        raise ValueError(f"telephone-event volume must be 0..63 (-dBm0), got {volume}")
    if not 0 <= duration <= 0xFFFF:
        raise ValueError(f"telephone-event duration must be 0..65535 ticks, got {duration}")
    return _EVENT.pack(event, (0x80 if end else 0) | volume, duration)


def decode_event(payload: bytes) -> TelephoneEvent:
    """Read the first event of a payload; short payloads raise TelephoneEventError."""
    if len(payload) < 4:
        raise TelephoneEventError(f"telephone-event payload needs 4 bytes, got {len(payload)}")
    event, flags, duration = _EVENT.unpack_from(payload)
    return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration)


def digit_to_event(digit: str) -> int:
    """Event code for a keypad digit (0-9, *, #, A-D) or "!" for flash."""
    if digit == FLASH_DIGIT:
        return FLASH_EVENT
    code = EVENT_DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if code < 0:
        raise ValueError(f"DTMF digit must be one of {EVENT_DIGITS!r} or '!', got {digit!r}")
    return code


def event_to_digit(event: int) -> str | None:
    """Keypad digit for an event code, or None for events that are not DTMF or flash."""
    if 0 <= event < len(EVENT_DIGITS):
        return EVENT_DIGITS[event]
    if event == FLASH_EVENT:
        return FLASH_DIGIT
    return None


@dataclass
class _Pending:
    event: int
    samples: int | None  # None: open, until finish()
    volume: int
    not_before: float


@dataclass
class _Active:
    event: int
    volume: int
    timestamp: int
    total: int | None  # samples the event lasts, a whole number of slots; None: open
    elapsed: int = 0
    last_sent: int = 0
    sent: int = 0
    ends_left: int = 0  # end packets still to send once the event is over


class DtmfSender:
    """Turns queued digits into event packets, one send slot at a time."""

    def __init__(
        self,
        rtp: RtpSender,
        payload_type: int,
        *,
        slot_samples: int = 160,
        clock_rate: int = 8000,
        update_interval: float = 0.050,
        gap_ms: int = 50,
    ) -> None:
        self.rtp = rtp
        self.payload_type = payload_type
        self.slot_samples = slot_samples
        self.clock_rate = clock_rate
        self._update_samples = round(update_interval * clock_rate)
        self._gap_slots = math.ceil(gap_ms * clock_rate / 1000 / slot_samples)
        self._queue: deque[_Pending] = deque()
        self._active: _Active | None = None
        self._gap_left = 0
        self.events_sent = 0

    @property
    def busy(self) -> bool:
        """True while a digit is queued, under way, or its end is still being repeated."""
        return bool(self._queue) or self._active is not None

    def start(
        self, digit: str, now: float, duration_ms: int | None = 100, volume: int = 10
    ) -> None:
        """Queue a digit; it begins at the first send slot at or after `now`.

        ``duration_ms=None`` opens an event of yet unknown length: `finish` ends it.
        """
        event = digit_to_event(digit)
        if not 0 <= volume <= 63:
            raise ValueError(f"DTMF volume must be 0..63 (-dBm0), got {volume}")
        samples = None if duration_ms is None else self._samples(duration_ms)
        self._queue.append(_Pending(event, samples, volume, now))

    def finish(self, duration_ms: int) -> bool:
        """Give the open event its length (from its start); False when none is open.

        An event that has already run that long ends at its next slot, with that length
        (or the last duration already sent, if longer: the field never shrinks). The relay
        starts the event when the detector confirms a press, about 40 ms into it, and
        learns its end about 35 ms after the tone stops, so the two delays cancel.
        """
        samples = self._samples(max(20, min(duration_ms, MAX_DURATION_MS)))
        active = self._active
        if active is not None and active.total is None:
            active.total = max(samples, active.last_sent)
            return True
        for pending in self._queue:
            if pending.samples is None:
                pending.samples = samples
                return True
        return False

    def _samples(self, duration_ms: int) -> int:
        if not 20 <= duration_ms <= MAX_DURATION_MS:
            raise ValueError(f"DTMF duration must be 20..{MAX_DURATION_MS} ms, got {duration_ms}")
        slots = math.ceil(duration_ms * self.clock_rate / 1000 / self.slot_samples)
        return slots * self.slot_samples

    def cancel(self) -> None:
        """Drop queued and running digits, e.g. when the stream stops sending."""
        self._queue.clear()
        self._active = None
        self._gap_left = 0

    def on_slot(self, now: float) -> tuple[list[bytes], bool]:
        """Fill one send slot: the event packets for it, and whether audio may go out too."""
        active = self._active
        if active is None:
            if self._gap_left > 0:
                self._gap_left -= 1
                return [], True
            if not self._queue or self._queue[0].not_before > now:
                return [], True
            pending = self._queue.popleft()
            active = self._active = _Active(
                pending.event, pending.volume, self.rtp.timestamp, pending.samples
            )
            self.events_sent += 1

        if active.ends_left:
            # the event is over; repeat its end packet while audio resumes
            active.ends_left -= 1
            self._gap_left = max(0, self._gap_left - 1)
            if not active.ends_left:
                self._active = None
            return [self._packet(active, end=True)], True

        active.elapsed += self.slot_samples
        total = active.total
        if total is None:
            total = self._samples(MAX_DURATION_MS)  # nobody finished it: end it anyway
        if active.elapsed >= total:
            active.elapsed = total  # the end packets carry the event's length
            active.ends_left = END_REPEATS - 1
            self._gap_left = self._gap_slots
            return [self._packet(active, end=True)], False
        if active.sent < START_REPEATS or active.elapsed - active.last_sent >= self._update_samples:
            return [self._packet(active, end=False)], False
        return [], False

    def _packet(self, active: _Active, *, end: bool) -> bytes:
        payload = encode_event(
            active.event, end=end, volume=active.volume, duration=min(active.elapsed, 0xFFFF)
        )
        marker = active.sent == 0
        active.sent += 1
        active.last_sent = active.elapsed
        return self.rtp.event(
            payload, payload_type=self.payload_type, timestamp=active.timestamp, marker=marker
        )


@dataclass
class _Receiving:
    timestamp: int
    digit: str
    duration: int
    last_seen: float


class DtmfReceiver:
    """Collapses the packets of each event into one DigitReceived, even when the end is lost."""

    def __init__(self, *, clock_rate: int = 8000, timeout: float = 0.3) -> None:
        self.clock_rate = clock_rate
        self.timeout = timeout
        self._current: _Receiving | None = None
        self._done: deque[int] = deque(maxlen=16)  # timestamps of events already reported
        self._started: list[DigitStarted] = []
        self.malformed = 0
        self.ignored = 0
        self.ends_lost = 0

    def feed(self, packet: RtpPacket, now: float) -> list[DigitReceived]:
        """Take one telephone-event packet; returns the digits that are now complete."""
        try:
            ev = decode_event(packet.payload)
        except TelephoneEventError:
            self.malformed += 1
            return []
        out = self.poll(now)
        digit = event_to_digit(ev.event)
        if digit is None:
            self.ignored += 1
            return out
        if packet.timestamp in self._done:
            return out  # a repeat of an event already reported
        current = self._current
        if current is not None and current.timestamp != packet.timestamp:
            # a new event began before the old one's end arrived
            self.ends_lost += 1
            out.append(self._finish(current))
            current = None
        if current is None:
            current = self._current = _Receiving(packet.timestamp, digit, 0, now)
            self._started.append(DigitStarted(digit))
        current.duration = max(current.duration, ev.duration)
        current.last_seen = now
        if ev.end:
            out.append(self._finish(current))
        return out

    def started(self) -> list[DigitStarted]:
        """The events that began since the last call (each before its DigitReceived)."""
        out, self._started = self._started, []
        return out

    def poll(self, now: float) -> list[DigitReceived]:
        """Report an event whose packets stopped without an end packet."""
        current = self._current
        if current is not None and now - current.last_seen >= self.timeout:
            self.ends_lost += 1
            return [self._finish(current)]
        return []

    def next_deadline(self) -> float | None:
        """When poll() should next be called, or None when no event is open."""
        if self._current is None:
            return None
        return self._current.last_seen + self.timeout

    def _finish(self, current: _Receiving) -> DigitReceived:
        self._current = None
        self._done.append(current.timestamp)
        return DigitReceived(current.digit, round(current.duration * 1000 / self.clock_rate))
