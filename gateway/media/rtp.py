"""RTP packets (RFC 3550 §5.1) and serial-number arithmetic for sequence numbers and timestamps.

Packets are parsed strictly: anything from the network that does not add up is refused with
`RtpError` so the caller can drop and count it instead of playing garbage.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "RtpError",
    "RtpExtension",
    "RtpPacket",
    "is_rtcp",
    "seq_distance",
    "seq_newer",
    "ts_distance",
    "ts_newer",
]

RTP_VERSION: Final = 2
HEADER_SIZE: Final = 12
SEQ_MOD: Final = 1 << 16
TS_MOD: Final = 1 << 32

_HEADER = struct.Struct("!BBHII")
_EXT_HEADER = struct.Struct("!HH")


class RtpError(ValueError):
    """A datagram that is not a well-formed RTP packet; drop it and count it."""


@dataclass(frozen=True)
class RtpExtension:
    """The one header extension RFC 3550 allows: a profile word and whole 32-bit words of data."""

    profile: int
    data: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.profile <= 0xFFFF:
            raise ValueError(f"RTP extension profile must fit 16 bits, got {self.profile}")
        if len(self.data) % 4:
            raise ValueError(
                f"RTP extension data must be whole 32-bit words, got {len(self.data)} bytes"
            )


@dataclass
class RtpPacket:
    """One RTP packet; `padding` is the number of padding octets on the wire (0 = none)."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = field(default=())
    extension: RtpExtension | None = None
    padding: int = 0

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Decode a datagram, refusing anything whose lengths do not add up."""
        if len(data) < HEADER_SIZE:
            raise RtpError(f"RTP packet too short: {len(data)} bytes, header needs {HEADER_SIZE}")
        b0, b1, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
        version = b0 >> 6
        if version != RTP_VERSION:
            raise RtpError(f"RTP version must be 2, got {version}")
        has_padding = bool(b0 & 0x20)
        has_extension = bool(b0 & 0x10)
        csrc_count = b0 & 0x0F
        offset = HEADER_SIZE + 4 * csrc_count
        if len(data) < offset:
            raise RtpError(
                f"RTP packet claims {csrc_count} CSRCs but has only {len(data)} bytes"
            )
        csrc = struct.unpack_from(f"!{csrc_count}I", data, HEADER_SIZE)
        extension: RtpExtension | None = None
        if has_extension:
            if len(data) < offset + 4:
                raise RtpError("RTP header extension flag set but no extension header")
            profile, words = _EXT_HEADER.unpack_from(data, offset)
            offset += 4
            if len(data) < offset + 4 * words:
                raise RtpError(
                    f"RTP header extension claims {words} words but the packet ends first"
                )
            extension = RtpExtension(profile, bytes(data[offset : offset + 4 * words]))
            offset += 4 * words
        end = len(data)
        padding = 0
        if has_padding:
            padding = data[-1]
            if padding == 0 or offset + padding > end:
                raise RtpError(f"RTP padding count {padding} does not fit the packet")
            end -= padding
        return cls(
            payload_type=b1 & 0x7F,
            sequence=sequence,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=bytes(data[offset:end]),
            marker=bool(b1 & 0x80),
            csrc=tuple(csrc),
            extension=extension,
            padding=padding,
        )

    def __bytes__(self) -> bytes:
        """Encode for the wire; values out of range raise ValueError naming the field."""
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"RTP payload type must be 0..127, got {self.payload_type}")
        if not 0 <= self.sequence < SEQ_MOD:
            raise ValueError(f"RTP sequence must be 0..65535, got {self.sequence}")
        if not 0 <= self.timestamp < TS_MOD:
            raise ValueError(f"RTP timestamp must be 0..2**32-1, got {self.timestamp}")
        if not 0 <= self.ssrc < TS_MOD:
            raise ValueError(f"RTP SSRC must be 0..2**32-1, got {self.ssrc}")
        if len(self.csrc) > 15:
            raise ValueError(f"RTP carries at most 15 CSRCs, got {len(self.csrc)}")
        if not 0 <= self.padding <= 255:
            raise ValueError(f"RTP padding must be 0..255 octets, got {self.padding}")
        b0 = (RTP_VERSION << 6) | len(self.csrc)
        if self.padding:
            b0 |= 0x20
        if self.extension is not None:
            b0 |= 0x10
        b1 = self.payload_type | (0x80 if self.marker else 0)
        parts = [_HEADER.pack(b0, b1, self.sequence, self.timestamp, self.ssrc)]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension is not None:
            ext = self.extension
            parts.append(_EXT_HEADER.pack(ext.profile, len(ext.data) // 4))
            parts.append(ext.data)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)


def is_rtcp(data: bytes) -> bool:
    """True for RTCP multiplexed on the RTP port (RFC 5761: second octet 192..223)."""
    return len(data) >= 2 and (data[0] >> 6) == RTP_VERSION and 192 <= data[1] <= 223


def seq_distance(a: int, b: int) -> int:
    """How far sequence `a` is ahead of `b` (negative if behind), across the 16-bit wrap."""
    d = (a - b) % SEQ_MOD
    return d - SEQ_MOD if d >= SEQ_MOD // 2 else d


def seq_newer(a: int, b: int) -> bool:
    """True when sequence `a` comes after `b`, so 0 is newer than 65535."""
    return seq_distance(a, b) > 0


def ts_distance(a: int, b: int) -> int:
    """How many clock ticks timestamp `a` is ahead of `b`, across the 32-bit wrap."""
    d = (a - b) % TS_MOD
    return d - TS_MOD if d >= TS_MOD // 2 else d


def ts_newer(a: int, b: int) -> bool:
    """True when timestamp `a` comes after `b` in RTP time."""
    return ts_distance(a, b) > 0
