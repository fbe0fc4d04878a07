"""RTCP (RFC 3550 §6): report packets, and the per-stream report session that feeds them.

Packets have `parse()` and `__bytes__` like RTP packets. :class:`RtcpSession` is pure: it
is given `now` (the caller's monotonic clock) and, once, the offset from that clock to wall
time for the NTP timestamps of sender reports. It decides when the next report is due,
builds compound SR/RR + SDES CNAME packets from the reception figures the stream measured,
and reads the peer's reports: what they lost of ours, their jitter, and the round-trip time
(§6.4.1: RTT = arrival - LSR - DLSR, all in 1/65536 s on our own NTP clock, so the peer's
clock never enters it).

The report interval is §6.2's, simplified for one sender and one receiver: 5 s scaled by a
random factor of 0.5 to 1.5, so two phones that started together do not stay in step.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Final

from gateway.media.quality import ReceiveStats

__all__ = [
    "Bye",
    "ReceiverReport",
    "ReportBlock",
    "RtcpError",
    "RtcpPacket",
    "RtcpSession",
    "SdesChunk",
    "SenderInfo",
    "SenderReport",
    "SourceDescription",
    "UnknownRtcp",
    "compound",
    "ntp_middle",
    "ntp_timestamp",
    "parse_compound",
]

RTCP_VERSION: Final = 2
PT_SR: Final = 200
PT_RR: Final = 201
PT_SDES: Final = 202
PT_BYE: Final = 203
SDES_CNAME: Final = 1
REPORT_INTERVAL: Final = 5.0  # seconds, §6.2's minimum
NTP_UNIX_OFFSET: Final = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01
_U32: Final = 1 << 32
_HEADER = struct.Struct("!BBH")
_BLOCK = struct.Struct("!IIIIII")
_SENDER = struct.Struct("!IQIII")


class RtcpError(ValueError):
    """A datagram that is not well-formed RTCP; drop it and count it."""


def ntp_timestamp(wallclock: float) -> int:
    """A 64-bit NTP timestamp (32.32 fixed point since 1900) for Unix time `wallclock`."""
    return int(round((wallclock + NTP_UNIX_OFFSET) * _U32)) % (1 << 64)


def ntp_middle(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp (16.16 seconds), as LSR and DLSR use them."""
    return (ntp >> 16) & 0xFFFFFFFF


def _check_u32(name: str, value: int) -> None:
    if not 0 <= value < _U32:
        raise ValueError(f"RTCP {name} must be 0..2**32-1, got {value}")


def _header(packet_type: int, count: int, body_len: int) -> bytes:
    if not 0 <= count <= 31:
        raise ValueError(f"RTCP count must be 0..31, got {count}")
    return _HEADER.pack((RTCP_VERSION << 6) | count, packet_type, body_len // 4)


@dataclass(frozen=True)
class ReportBlock:
    """One source's reception figures (§6.4.1); `fraction_lost` is in 1/256 since the last."""

    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    highest_seq: int
    jitter: int
    lsr: int = 0
    dlsr: int = 0
    SIZE: ClassVar[int] = 24

    def __post_init__(self) -> None:
        if not 0 <= self.fraction_lost <= 255:
            raise ValueError(f"RTCP fraction lost must be 0..255, got {self.fraction_lost}")
        if not -(1 << 23) <= self.cumulative_lost < (1 << 23):
            raise ValueError(f"RTCP cumulative lost must fit 24 signed bits, got "
                             f"{self.cumulative_lost}")
        for name in ("ssrc", "highest_seq", "jitter", "lsr", "dlsr"):
            _check_u32(name, getattr(self, name))

    @classmethod
    def parse(cls, data: bytes) -> ReportBlock:
        """Decode one 24-byte report block."""
        if len(data) != cls.SIZE:
            raise RtcpError(f"RTCP report block must be 24 bytes, got {len(data)}")
        ssrc, lost_word, highest, jitter, lsr, dlsr = _BLOCK.unpack(data)
        cumulative = lost_word & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 1 << 24
        return cls(ssrc, lost_word >> 24, cumulative, highest, jitter, lsr, dlsr)

    def __bytes__(self) -> bytes:
        lost_word = (self.fraction_lost << 24) | (self.cumulative_lost & 0xFFFFFF)
        return _BLOCK.pack(self.ssrc, lost_word, self.highest_seq, self.jitter, self.lsr,
                           self.dlsr)


def _parse_blocks(body: bytes, count: int, what: str) -> tuple[ReportBlock, ...]:
    if len(body) < count * ReportBlock.SIZE:
        raise RtcpError(f"RTCP {what} claims {count} report blocks but has {len(body)} bytes")
    # anything after the blocks is a profile-specific extension (§6.4.1); it is skipped
    return tuple(ReportBlock.parse(body[i * 24:(i + 1) * 24]) for i in range(count))


@dataclass(frozen=True)
class SenderReport:
    """SR (PT 200): what a sender sent, stamped with NTP and RTP time of the same instant."""

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()
    PACKET_TYPE: ClassVar[int] = PT_SR

    @classmethod
    def parse(cls, data: bytes) -> SenderReport:
        """Decode one SR packet (header included)."""
        count, body = _split_one(data, PT_SR)
        if len(body) < _SENDER.size:
            raise RtcpError(f"RTCP SR too short: {len(body)} bytes after the header")
        ssrc, ntp, rtp_ts, packets, octets = _SENDER.unpack_from(body)
        return cls(ssrc, ntp, rtp_ts, packets, octets,
                   _parse_blocks(body[_SENDER.size:], count, "SR"))

    def __bytes__(self) -> bytes:
        for name in ("ssrc", "rtp_timestamp", "packet_count", "octet_count"):
            _check_u32(name, getattr(self, name))
        if not 0 <= self.ntp_timestamp < 1 << 64:
            raise ValueError(f"RTCP NTP timestamp must be 0..2**64-1, got {self.ntp_timestamp}")
        body = _SENDER.pack(self.ssrc, self.ntp_timestamp, self.rtp_timestamp,
                            self.packet_count, self.octet_count)
        body += b"".join(bytes(b) for b in self.reports)
        return _header(PT_SR, len(self.reports), len(body)) + body


@dataclass(frozen=True)
class ReceiverReport:
    """RR (PT 201): reception figures from a participant that sent nothing lately."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()
    PACKET_TYPE: ClassVar[int] = PT_RR

    @classmethod
    def parse(cls, data: bytes) -> ReceiverReport:
        """Decode one RR packet (header included)."""
        count, body = _split_one(data, PT_RR)
        if len(body) < 4:
            raise RtcpError("RTCP RR too short for its SSRC")
        (ssrc,) = struct.unpack_from("!I", body)
        return cls(ssrc, _parse_blocks(body[4:], count, "RR"))

    def __bytes__(self) -> bytes:
        _check_u32("ssrc", self.ssrc)
        body = struct.pack("!I", self.ssrc) + b"".join(bytes(b) for b in self.reports)
        return _header(PT_RR, len(self.reports), len(body)) + body


@dataclass(frozen=True)
class SdesChunk:
    """One source's SDES items as (type, value) pairs; type 1 is the CNAME."""

    ssrc: int
    items: tuple[tuple[int, bytes], ...] = ()

    def __bytes__(self) -> bytes:
        out = bytearray(struct.pack("!I", self.ssrc))
        for kind, value in self.items:
            if not 1 <= kind <= 255 or len(value) > 255:
                raise ValueError(f"SDES item type {kind} with {len(value)} bytes does not fit")
            out += bytes([kind, len(value)]) + value
        out += bytes(4 - (len(out) % 4))  # the end-of-list zero, padded to a word
        return bytes(out)


@dataclass(frozen=True)
class SourceDescription:
    """SDES (PT 202): names for sources; every compound report carries our CNAME."""

    chunks: tuple[SdesChunk, ...] = ()
    PACKET_TYPE: ClassVar[int] = PT_SDES

    @classmethod
    def cname(cls, ssrc: int, name: str) -> SourceDescription:
        """The one-chunk SDES that every compound report must carry (§6.1)."""
        return cls((SdesChunk(ssrc, ((SDES_CNAME, name.encode()),)),))

    @classmethod
    def parse(cls, data: bytes) -> SourceDescription:
        """Decode one SDES packet (header included)."""
        count, body = _split_one(data, PT_SDES)
        chunks: list[SdesChunk] = []
        pos = 0
        for _ in range(count):
            if pos + 4 > len(body):
                raise RtcpError("RTCP SDES chunk cut short before its SSRC")
            (ssrc,) = struct.unpack_from("!I", body, pos)
            pos += 4
            items: list[tuple[int, bytes]] = []
            while True:
                if pos >= len(body):
                    raise RtcpError("RTCP SDES chunk has no end-of-list item")
                kind = body[pos]
                if kind == 0:
                    pos = (pos + 4) & ~3  # skip the terminator and the padding to a word
                    break
                if pos + 2 > len(body) or pos + 2 + body[pos + 1] > len(body):
                    raise RtcpError(f"RTCP SDES item {kind} runs past the packet")
                size = body[pos + 1]
                items.append((kind, bytes(body[pos + 2:pos + 2 + size])))
                pos += 2 + size
            chunks.append(SdesChunk(ssrc, tuple(items)))
        return cls(tuple(chunks))

    def __bytes__(self) -> bytes:
        body = b"".join(bytes(c) for c in self.chunks)
        return _header(PT_SDES, len(self.chunks), len(body)) + body


@dataclass(frozen=True)
class Bye:
    """BYE (PT 203): these sources are leaving, with an optional reason."""

    sources: tuple[int, ...]
    reason: str = ""
    PACKET_TYPE: ClassVar[int] = PT_BYE

    @classmethod
    def parse(cls, data: bytes) -> Bye:
        """Decode one BYE packet (header included)."""
        count, body = _split_one(data, PT_BYE)
        if len(body) < 4 * count:
            raise RtcpError(f"RTCP BYE claims {count} sources but has {len(body)} bytes")
        sources = struct.unpack_from(f"!{count}I", body)
        reason = ""
        rest = body[4 * count:]
        if rest:
            if 1 + rest[0] > len(rest):
                raise RtcpError("RTCP BYE reason runs past the packet")
            reason = rest[1:1 + rest[0]].decode("utf-8", "replace")
        return cls(tuple(sources), reason)

    def __bytes__(self) -> bytes:
        body = struct.pack(f"!{len(self.sources)}I", *self.sources)
        if self.reason:
            text = self.reason.encode()[:255]
            tail = bytes([len(text)]) + text
            body += tail + bytes(-len(tail) % 4)
        return _header(PT_BYE, len(self.sources), len(body)) + body


@dataclass(frozen=True)
class UnknownRtcp:
    """A packet type we do not read (APP, XR, feedback): kept whole and otherwise ignored."""

    packet_type: int
    count: int
    body: bytes = b""

    def __bytes__(self) -> bytes:
        return _header(self.packet_type, self.count, len(self.body)) + self.body


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Bye | UnknownRtcp
_PARSERS: dict[int, Callable[[bytes], RtcpPacket]] = {PT_SR: SenderReport.parse, PT_RR: ReceiverReport.parse,
            PT_SDES: SourceDescription.parse, PT_BYE: Bye.parse}


def _split_one(data: bytes, packet_type: int) -> tuple[int, bytes]:
    """The count field and body of one whole packet, padding removed."""
    if len(data) < 4:
        raise RtcpError(f"RTCP packet too short: {len(data)} bytes")
    b0, pt, words = _HEADER.unpack_from(data)
    if b0 >> 6 != RTCP_VERSION:
        raise RtcpError(f"RTCP version must be 2, got {b0 >> 6}")
    if pt != packet_type:
        raise RtcpError(f"expected RTCP packet type {packet_type}, got {pt}")
    if len(data) != 4 * (words + 1):
        raise RtcpError(f"RTCP length field says {4 * (words + 1)} bytes, packet has {len(data)}")
    end = len(data)
    if b0 & 0x20:
        pad = data[-1]
        if pad == 0 or 4 + pad > end:
            raise RtcpError(f"RTCP padding count {pad} does not fit the packet")
        end -= pad
    return b0 & 0x1F, bytes(data[4:end])


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Split and decode a compound RTCP datagram; any packet that does not add up refuses all."""
    packets: list[RtcpPacket] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 4:
            raise RtcpError(f"RTCP datagram has {len(data) - pos} stray bytes at the end")
        b0, pt, words = _HEADER.unpack_from(data, pos)
        size = 4 * (words + 1)
        if pos + size > len(data):
            raise RtcpError(f"RTCP packet type {pt} claims {size} bytes, only "
                            f"{len(data) - pos} left")
        one = bytes(data[pos:pos + size])
        parser = _PARSERS.get(pt)
        if parser is not None:
            packets.append(parser(one))
        else:
            count, body = _split_one(one, pt)
            packets.append(UnknownRtcp(pt, count, body))
        pos += size
    if not packets:
        raise RtcpError("empty RTCP datagram")
    return packets


def compound(packets: list[RtcpPacket]) -> bytes:
    """One datagram of several packets (§6.1: SR or RR first, then SDES with the CNAME)."""
    return b"".join(bytes(p) for p in packets)


@dataclass(frozen=True)
class SenderInfo:
    """What the stream sent so far, and its RTP timestamp for the report's `now`."""

    rtp_timestamp: int
    packet_count: int
    octet_count: int


@dataclass
class RemoteView:
    """What the peer's latest report says about our stream (§6.4.1 as they measured it)."""

    fraction_lost: float = 0.0
    cumulative_lost: int = 0
    jitter_ms: float = 0.0
    rtt_ms: float | None = None
    reports: int = 0  # report blocks about our SSRC


@dataclass
class RtcpSession:
    """One RTP stream's RTCP: our reports out, the peer's in, figures for `status`.

    `wallclock_offset` is Unix time minus the `now` clock, taken once by the runtime; the
    session itself never reads a clock.
    """

    ssrc: int
    cname: str
    start: float
    wallclock_offset: float = 0.0
    clock_rate: int = 8000
    interval: float = REPORT_INTERVAL
    rng: random.Random = field(default_factory=random.Random, repr=False)
    sent: int = 0
    received: int = 0
    malformed: int = 0
    byes: int = 0
    remote: RemoteView = field(default_factory=RemoteView)
    remote_ssrc: int | None = None
    last_fraction_lost: float = 0.0  # what our latest report told the peer
    next_report: float = field(init=False)
    _lsr: int = field(default=0, init=False)  # middle of the peer's last SR's NTP time
    _lsr_arrival: float = field(default=0.0, init=False)
    _packets_at_reports: tuple[int, int] = field(default=(0, 0), init=False)

    def __post_init__(self) -> None:
        self.next_report = self.start + self._randomized()

    def _randomized(self) -> float:
        return self.interval * self.rng.uniform(0.5, 1.5)

    def _ntp(self, now: float) -> int:
        return ntp_timestamp(now + self.wallclock_offset)

    def due(self, now: float) -> bool:
        """True once the next report's time has come."""
        return now >= self.next_report

    def report(self, now: float, sender: SenderInfo | None,
               rx: ReceiveStats | None) -> list[RtcpPacket]:
        """Our compound report for `now`, and the next one scheduled.

        An SR when we sent RTP since the report before last (§6.4), else an RR; one report
        block for the peer's source once its RTP has arrived.
        """
        self.next_report = now + self._randomized()
        blocks: tuple[ReportBlock, ...] = ()
        if rx is not None and rx.ssrc is not None:
            fraction = rx.interval_fraction_lost()
            self.last_fraction_lost = fraction
            lsr, dlsr = 0, 0
            if self._lsr:
                lsr = self._lsr
                dlsr = min(_U32 - 1, max(0, int((now - self._lsr_arrival) * 65536)))
            blocks = (ReportBlock(
                ssrc=rx.ssrc,
                fraction_lost=min(255, int(fraction * 256)),
                cumulative_lost=min(rx.lost, (1 << 23) - 1),
                highest_seq=rx.extended_max_seq % _U32,
                jitter=min(_U32 - 1, int(rx.jitter)),
                lsr=lsr,
                dlsr=dlsr,
            ),)
        first: RtcpPacket
        count = sender.packet_count if sender is not None else 0
        if sender is not None and count != self._packets_at_reports[0]:
            first = SenderReport(self.ssrc, self._ntp(now), sender.rtp_timestamp % _U32,
                                 sender.packet_count % _U32, sender.octet_count % _U32, blocks)
        else:
            first = ReceiverReport(self.ssrc, blocks)
        self._packets_at_reports = (self._packets_at_reports[1], count)
        self.sent += 1
        return [first, SourceDescription.cname(self.ssrc, self.cname)]

    def goodbye(self, now: float, sender: SenderInfo | None, rx: ReceiveStats | None,
                reason: str = "") -> list[RtcpPacket]:
        """A last compound report ending in BYE, for when the stream stops."""
        return [*self.report(now, sender, rx), Bye((self.ssrc,), reason)]

    def receive(self, data: bytes, now: float) -> list[RtcpPacket]:
        """Read the peer's compound RTCP; a malformed one is counted and raises RtcpError."""
        try:
            packets = parse_compound(data)
        except RtcpError:
            self.malformed += 1
            raise
        self.received += 1
        for packet in packets:
            if isinstance(packet, SenderReport):
                self.remote_ssrc = packet.ssrc
                self._lsr = ntp_middle(packet.ntp_timestamp)
                self._lsr_arrival = now
                self._read_blocks(packet.reports, now)
            elif isinstance(packet, ReceiverReport):
                self.remote_ssrc = packet.ssrc
                self._read_blocks(packet.reports, now)
            elif isinstance(packet, Bye) and self.remote_ssrc in packet.sources:
                self.byes += 1
        return packets

    def _read_blocks(self, blocks: tuple[ReportBlock, ...], now: float) -> None:
        for block in blocks:
            if block.ssrc != self.ssrc:
                continue  # about someone else (a conference); not ours to show
            view = self.remote
            view.reports += 1
            view.fraction_lost = block.fraction_lost / 256
            view.cumulative_lost = block.cumulative_lost
            view.jitter_ms = 1000 * block.jitter / self.clock_rate
            if block.lsr:
                arrival = ntp_middle(self._ntp(now))
                rtt = (arrival - block.lsr - block.dlsr) % _U32
                # a "negative" RTT (peer's DLSR rounding, or a bogus block) is no figure
                view.rtt_ms = 1000 * rtt / 65536 if rtt < _U32 // 2 else None

    def stats(self, rx: ReceiveStats | None) -> dict[str, float | int | None]:
        """RTCP counts and both sides' loss and jitter, for `branchline status`."""
        view = self.remote
        return {
            "sent": self.sent,
            "received": self.received,
            "malformed": self.malformed,
            "local_fraction_lost": round(self.last_fraction_lost, 4),
            "local_lost": rx.lost if rx is not None else 0,
            "local_jitter_ms": round(rx.jitter_ms, 2) if rx is not None else 0.0,
            "remote_reports": view.reports,
            "remote_fraction_lost": round(view.fraction_lost, 4),
            "remote_lost": view.cumulative_lost,
            "remote_jitter_ms": round(view.jitter_ms, 2),
            "rtt_ms": round(view.rtt_ms, 2) if view.rtt_ms is not None else None,
        }
