"""Caller ID decoding for an FXO port: FSK (Bell 202 or V.23) and DTMF, to what the display shows.

FSK: the signal is mixed down at the mark and at the space frequency and each product
averaged over one bit; the bigger of the two envelopes is the bit. An asynchronous
receiver finds each start bit (a mark-to-space edge), samples the eight data bits and the
stop bit at their centres, and the byte stream is searched for a message (SDMF 0x04, MDMF
0x80 or another ETSI type) whose checksum holds. Nothing is reported without one.

DTMF: the daemon's own detector (:class:`gateway.dsp.dtmf.DtmfDetector`) hears the digits;
``A``/``D`` starts a number, ``B`` a two-digit reason ("00" unavailable, "10" private),
``C`` ends it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.dsp.callerid import (
    BELL202,
    MDMF,
    P_DATETIME,
    P_NAME,
    P_NAME_ABSENT,
    P_NUMBER,
    P_NUMBER_ABSENT,
    PRIVATE,
    RATE,
    SDMF,
    UNAVAILABLE,
    V23,
    Modem,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["Decoded", "fsk_bytes", "find_message", "parse_message", "decode_fsk",
           "decode_dtmf", "parse_dtmf"]

MESSAGE_TYPES = (SDMF, MDMF, 0x82, 0x86, 0x89)
"""SDMF, MDMF / ETSI call set-up, and the other ETSI EN 300 659-3 message types."""


@dataclass(frozen=True)
class Decoded:
    """A caller ID as received. ``when`` is "MMDDHHMM" when the message carried it;
    ``number_absent``/``name_absent`` hold the reason letter ("P" or "O")."""

    kind: str
    number: str | None = None
    name: str | None = None
    when: str | None = None
    number_absent: str | None = None
    name_absent: str | None = None
    raw: bytes = b""


def _bit_decisions(pcm: bytes, modem: Modem, rate: int) -> npt.NDArray[np.bool_]:
    import numpy as np

    x = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64)
    t = np.arange(len(x)) / rate
    n = max(2, round(rate / modem.baud))
    window = np.ones(n) / n
    env = []
    for f in (modem.mark_hz, modem.space_hz):
        z = x * np.exp(-2j * math.pi * f * t)
        env.append(np.abs(np.convolve(z, window, mode="same")))
    mark: npt.NDArray[np.bool_] = env[0] > env[1]
    return mark


def _edge_near(mark: npt.NDArray[np.bool_], at: float, reach: float) -> int | None:
    """The bit transition closest to sample ``at`` within +-``reach``, if any."""
    lo, hi = max(1, math.ceil(at - reach)), min(len(mark) - 1, math.floor(at + reach))
    best: int | None = None
    for j in range(lo, hi + 1):
        if mark[j] != mark[j - 1] and (best is None or abs(j - at) < abs(best - at)):
            best = j
    return best


def fsk_bytes(pcm: bytes, modem: Modem = BELL202, rate: int = RATE) -> bytes:
    """Every asynchronously framed byte (8N1) in the audio, in order; bad stop bits dropped.

    The bit clock is re-anchored on every transition inside a byte, so a sender a few
    per cent off speed (a modem rounding its bit to whole samples) is still read."""
    mark = _bit_decisions(pcm, modem, rate)
    spb = rate / modem.baud
    out = bytearray()
    i, n = 1, len(mark)
    while i < n:
        if not (mark[i - 1] and not mark[i]):  # a start bit's leading edge
            i += 1
            continue
        boundary = float(i)
        bits = []
        for _ in range(10):  # start, eight data, stop
            centre = int(boundary + spb / 2 + 1e-6)
            if centre + 1 >= n:
                return bytes(out)
            bits.append(int(mark[centre - 1]) + int(mark[centre]) + int(mark[centre + 1]) >= 2)
            edge = _edge_near(mark, boundary + spb, spb / 2)
            boundary = float(edge) if edge is not None else boundary + spb
        if not bits[0] and bits[9]:
            out.append(sum(1 << k for k, b in enumerate(bits[1:9]) if b))
            i = int(boundary - spb / 2)  # from the stop bit's centre: the next start edge
        else:
            i += 1
    return bytes(out)


def find_message(data: bytes) -> bytes | None:
    """The first complete message in a byte stream: known type, length, zero byte sum."""
    for i in range(len(data) - 2):
        if data[i] not in MESSAGE_TYPES:
            continue
        end = i + 3 + data[i + 1]
        if data[i + 1] and end <= len(data) and sum(data[i:end]) % 256 == 0:
            return bytes(data[i:end])
    return None


def parse_message(message: bytes) -> Decoded:
    """What an SDMF or MDMF/ETSI message says (the checksum is the caller's to verify)."""
    kind, length = message[0], message[1]
    body = message[2 : 2 + length]
    if kind == SDMF:
        text = body.decode("ascii", "replace")
        rest = text[8:]
        if rest in (PRIVATE, UNAVAILABLE):
            return Decoded("sdmf", when=text[:8], number_absent=rest, raw=message)
        return Decoded("sdmf", number=rest or None, when=text[:8], raw=message)
    fields: dict[int, str] = {}
    i = 0
    while i + 2 <= len(body):
        p, n = body[i], body[i + 1]
        fields[p] = body[i + 2 : i + 2 + n].decode("ascii", "replace")
        i += 2 + n
    return Decoded(
        "mdmf" if kind == MDMF else f"0x{kind:02x}",
        number=fields.get(P_NUMBER), name=fields.get(P_NAME), when=fields.get(P_DATETIME),
        number_absent=fields.get(P_NUMBER_ABSENT), name_absent=fields.get(P_NAME_ABSENT),
        raw=message,
    )


def decode_fsk(pcm: bytes, modem: Modem | str = BELL202, rate: int = RATE) -> Decoded | None:
    """Demodulate and parse: None unless a message with a good checksum was heard."""
    m = {"bell202": BELL202, "v23": V23}[modem] if isinstance(modem, str) else modem
    message = find_message(fsk_bytes(pcm, m, rate))
    return None if message is None else parse_message(message)


def parse_dtmf(digits: str) -> Decoded | None:
    """``A<number>C`` / ``D<number>C`` / ``B<reason>C`` (reason "00" unavailable, "10" private)."""
    for start in "ADB":
        i = digits.find(start)
        if i < 0:
            continue
        j = digits.find("C", i + 1)
        if j < 0:
            continue
        inner = digits[i + 1 : j]
        if start == "B":
            reason = {"00": UNAVAILABLE, "10": PRIVATE}.get(inner[:2])
            return Decoded("dtmf", number_absent=reason or UNAVAILABLE, raw=digits.encode())
        if inner.isdigit():
            return Decoded("dtmf", number=inner, raw=digits.encode())
    return None


def decode_dtmf(pcm: bytes) -> Decoded | None:
    """Hear DTMF caller ID with the daemon's DTMF detector and parse it."""
    from gateway.dsp.dtmf import DtmfDetector

    detector = DtmfDetector()
    digits = "".join(detector.feed(pcm) + detector.feed(bytes(800)))
    return parse_dtmf(digits)
