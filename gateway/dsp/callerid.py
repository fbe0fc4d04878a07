"""On-hook caller ID for analog handsets: Bell 202 FSK carrying an MDMF message (GR-30-CORE).

Sent once, in the first silent interval of the ring cadence: a channel seizure (300
alternating bits), 180 mark bits, then the message bytes, each framed as one start bit (0),
eight data bits LSB first and one stop bit (1). Mark is 1200 Hz, space 2200 Hz, 1200 baud,
phase continuous. The message holds the date and time, the number (or why it is absent:
"P" private, "O" out of area) and the name when known, and ends with a checksum that makes
the byte sum zero modulo 256.

Pure: the caller passes the local date and time.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from datetime import datetime

__all__ = ["CallerId", "mdmf_message", "bell202_fsk"]

RATE = 8000
BAUD = 1200
MARK_HZ, SPACE_HZ = 1200.0, 2200.0
SEIZURE_BITS = 300
MARK_BITS = 180
LEVEL_DBFS = -13.0
"""Transmit level; the usual on-hook FSK level is around -13.5 dBm0."""

MDMF = 0x80
P_DATETIME, P_NUMBER, P_NUMBER_ABSENT, P_NAME, P_NAME_ABSENT = 0x01, 0x02, 0x04, 0x07, 0x08


@dataclass(frozen=True)
class CallerId:
    """What the handset's display shows: `number` None when withheld or unknown."""

    number: str | None
    name: str | None = None
    withheld: bool = False


def _param(kind: int, text: str) -> bytes:
    data = text.encode("ascii", "replace")[:255]
    return bytes((kind, len(data))) + data


def mdmf_message(cid: CallerId, when: datetime) -> bytes:
    """The MDMF message bytes with their checksum."""
    body = _param(P_DATETIME, when.strftime("%m%d%H%M"))
    number = "".join(c for c in (cid.number or "") if c.isdigit() or c in "+*#")[:20]
    if number:
        body += _param(P_NUMBER, number)
    else:
        body += _param(P_NUMBER_ABSENT, "P" if cid.withheld else "O")
    if cid.name:
        body += _param(P_NAME, cid.name[:15])
    elif cid.withheld:
        body += _param(P_NAME_ABSENT, "P")
    message = bytes((MDMF, len(body))) + body
    return message + bytes(((-sum(message)) & 0xFF,))


def _bits(message: bytes) -> list[int]:
    bits = [i & 1 for i in range(SEIZURE_BITS)]  # 0101...: the channel seizure
    bits += [1] * MARK_BITS
    for byte in message:
        bits.append(0)
        bits.extend((byte >> i) & 1 for i in range(8))
        bits.append(1)
    bits += [1] * 10  # a short mark tail so the last stop bit is whole
    return bits


def bell202_fsk(message: bytes, level_dbfs: float = LEVEL_DBFS) -> bytes:
    """The message as 8 kHz 16-bit little-endian PCM, phase continuous."""
    amplitude = 32767 * 10 ** (level_dbfs / 20.0)
    out = array("h")
    phase = 0.0
    t_bit = 0.0
    for bit in _bits(message):
        step = 2 * math.pi * (MARK_HZ if bit else SPACE_HZ) / RATE
        t_bit += RATE / BAUD
        while len(out) < round(t_bit):
            out.append(int(amplitude * math.sin(phase)))
            phase = (phase + step) % (2 * math.pi)
    if out.itemsize == 2 and array("h", [1]).tobytes() != b"\x01\x00":
        out.byteswap()
    return out.tobytes()
