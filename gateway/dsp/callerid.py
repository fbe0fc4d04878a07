"""On-hook caller ID for analog handsets: the messages, their modulation and their timing.

Three signalling families, chosen per country profile (``callerid`` in
``tone_profiles.toml``) or per line (``lines[].options.callerid``); :data:`METHODS` names
them all:

- **Bellcore** (Telcordia GR-30-CORE): Bell 202 FSK (mark 1200 Hz, space 2200 Hz, 1200
  baud) in the first long silent interval of the ringing, starting at least 500 ms after
  the first ring ends. SDMF (type 0x04: date/time and the number, or "P"/"O" in its place)
  or MDMF (type 0x80: parameters for date/time, number, name and the reasons either is
  absent).
- **ETSI FSK** (ETSI EN 300 659-1/-3): ITU-T V.23 FSK (mark 1300 Hz, space 2100 Hz, 1200
  baud) carrying the MDMF-shaped "call set-up" message (0x80, the same parameter codes).
  Sent either after the first ring, like Bellcore, or before it: a line polarity reversal,
  then the dual-tone alerting signal DT-AS (2130 + 2750 Hz, 80-100 ms), then the FSK, and
  the first ring follows the end of the data by 200-500 ms. A variant sends DT-AS without
  the reversal.
- **DTMF** (the DTMF CLIP form used in NL, DK, SE, FI, BE, IN, SA and elsewhere): the number between a
  start digit (A, or D in some networks) and C, or B plus "00" (unavailable) / "10"
  (private) when there is none; before the first ring after a polarity reversal, or after
  the first ring.

Each frame of FSK data is one start bit (0), eight data bits LSB first and one stop bit
(1), after a channel seizure (alternating bits) and a run of marks. A message ends with a
checksum that makes its byte sum zero modulo 256.

Pure: the caller passes the local date and time and gets PCM back; when to start it and
whether to reverse the line is the :class:`CallerIdPlan`'s business, carried out by the
runtime (gateway/runtime/ports.py). The decoder for FXO is :mod:`gateway.dsp.callerid_rx`.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

__all__ = [
    "CallerId", "CallerIdMethod", "CallerIdPlan", "METHODS", "Modem", "BELL202", "V23",
    "vmwi_plan",
    "mdmf_message", "sdmf_message", "vmwi_message", "fsk", "bell202_fsk", "dtas", "dtmf_callerid", "plan",
]

RATE = 8000
LEVEL_DBFS = -13.0
"""Transmit level; the usual on-hook FSK level is around -13.5 dBm0."""

SDMF, MDMF = 0x04, 0x80
P_DATETIME, P_NUMBER, P_NUMBER_ABSENT, P_NAME, P_NAME_ABSENT = 0x01, 0x02, 0x04, 0x07, 0x08
PRIVATE, UNAVAILABLE = "P", "O"
"""Reasons for an absent number or name: withheld by the caller, or not known ("out of area")."""


@dataclass(frozen=True)
class Modem:
    """One FSK flavour: tone pair, speed and preamble lengths (bits)."""

    name: str
    mark_hz: float
    space_hz: float
    baud: int = 1200
    seizure_bits: int = 300
    mark_bits: int = 180


BELL202 = Modem("bell202", 1200.0, 2200.0)
"""GR-30-CORE: 300 seizure bits, then 180 marks."""
V23 = Modem("v23", 1300.0, 2100.0, seizure_bits=300, mark_bits=180)
"""EN 300 659-1: 300 seizure bits, then 180 +- 25 marks."""


@dataclass(frozen=True)
class CallerId:
    """What the handset's display shows: `number` None when withheld or unknown."""

    number: str | None
    name: str | None = None
    withheld: bool = False

    @property
    def reason(self) -> str:
        """Why the number is absent: "P" (private) when withheld, else "O" (unavailable)."""
        return PRIVATE if self.withheld else UNAVAILABLE

    def digits(self) -> str:
        """The number as the display can show it (digits, + * #; at most 20)."""
        return "".join(c for c in (self.number or "") if c.isdigit() or c in "+*#")[:20]


def _param(kind: int, text: str) -> bytes:
    data = text.encode("ascii", "replace")[:255]
    return bytes((kind, len(data))) + data


def _close(kind: int, body: bytes) -> bytes:
    message = bytes((kind, len(body))) + body
    return message + bytes(((-sum(message)) & 0xFF,))


def mdmf_message(cid: CallerId, when: datetime) -> bytes:
    """The MDMF (Bellcore) / ETSI call set-up message bytes with their checksum."""
    body = _param(P_DATETIME, when.strftime("%m%d%H%M"))
    number = cid.digits()
    if number:
        body += _param(P_NUMBER, number)
    else:
        body += _param(P_NUMBER_ABSENT, cid.reason)
    if cid.name:
        body += _param(P_NAME, cid.name[:15])
    elif cid.withheld:
        body += _param(P_NAME_ABSENT, PRIVATE)
    return _close(MDMF, body)


def sdmf_message(cid: CallerId, when: datetime) -> bytes:
    """The SDMF message: date and time (MMDDHHMM), then the number (its last ten digits,
    the national number in North America) or its reason letter."""
    number = "".join(c for c in cid.digits() if c.isdigit())[-10:] or cid.reason
    return _close(SDMF, (when.strftime("%m%d%H%M") + number).encode("ascii"))


MDMF_MWI, SDMF_MWI, P_VMWI = 0x82, 0x06, 0x0B


def vmwi_message(on: bool, *, sdmf: bool = False) -> bytes:
    """The visual message waiting indicator message (GR-30 / ETSI message waiting):
    MDMF type 0x82 with parameter 0x0B (0xFF lamp on, 0x00 off), or SDMF type 0x06
    (0x42 x3 on, 0x6F x3 off) for displays that only read single-format messages."""
    if sdmf:
        return _close(SDMF_MWI, bytes((0x42 if on else 0x6F,) * 3))
    return _close(MDMF_MWI, bytes((P_VMWI, 1, 0xFF if on else 0x00)))


def _bits(message: bytes, modem: Modem) -> list[int]:
    bits = [i & 1 for i in range(modem.seizure_bits)]  # 0101...: the channel seizure
    bits += [1] * modem.mark_bits
    for byte in message:
        bits.append(0)
        bits.extend((byte >> i) & 1 for i in range(8))
        bits.append(1)
    bits += [1] * 10  # a short mark tail so the last stop bit is whole
    return bits


def _le(out: array[int]) -> bytes:
    if array("h", [1]).tobytes() != b"\x01\x00":
        out.byteswap()
    return out.tobytes()


def fsk(message: bytes, modem: Modem = BELL202, level_dbfs: float = LEVEL_DBFS) -> bytes:
    """The message as 8 kHz 16-bit little-endian PCM, phase continuous, with its preamble."""
    amplitude = 32767 * 10 ** (level_dbfs / 20.0)
    out = array("h")
    phase = 0.0
    t_bit = 0.0
    for bit in _bits(message, modem):
        step = 2 * math.pi * (modem.mark_hz if bit else modem.space_hz) / RATE
        t_bit += RATE / modem.baud
        while len(out) < round(t_bit):
            out.append(int(amplitude * math.sin(phase)))
            phase = (phase + step) % (2 * math.pi)
    return _le(out)


def bell202_fsk(message: bytes, level_dbfs: float = LEVEL_DBFS) -> bytes:
    """The message in Bell 202 FSK (see :func:`fsk`)."""
    return fsk(message, BELL202, level_dbfs)


DTAS_HZ = (2130.0, 2750.0)
DTAS_SECONDS = 0.09
"""EN 300 659-1 DT-AS: 2130 + 2750 Hz for 80-100 ms."""


def dtas(seconds: float = DTAS_SECONDS, level_dbfs: float = LEVEL_DBFS - 3.0) -> bytes:
    """The dual-tone alerting signal that wakes an ETSI display before the data."""
    amplitude = 32767 * 10 ** (level_dbfs / 20.0)
    n = round(seconds * RATE)
    out = array("h", (
        int(amplitude * sum(math.sin(2 * math.pi * f * k / RATE) for f in DTAS_HZ))
        for k in range(n)
    ))
    return _le(out)


DTMF_ON_MS = DTMF_OFF_MS = 70.0
"""DTMF caller ID digits: 70 ms tone, 70 ms pause (the usual 50-80 ms each)."""


def dtmf_callerid(cid: CallerId, start: str = "A") -> str:
    """The DTMF caller ID digit string: ``A<number>C``, or ``B10C``/``B00C`` without one."""
    if start not in "AD" or len(start) != 1:
        raise ValueError(f"dtmf_callerid: start digit must be 'A' or 'D', got {start!r}")
    number = "".join(c for c in cid.digits() if c.isdigit())
    if number:
        return f"{start}{number}C"
    return "B10C" if cid.withheld else "B00C"


def _dtmf_pcm(digits: str) -> bytes:
    from gateway.dsp.dtmf import generate_sequence

    return generate_sequence(digits, DTMF_ON_MS, DTMF_OFF_MS, level_dbfs=-16.0)


@dataclass(frozen=True)
class CallerIdMethod:
    """How one family sends: modulation, message format, and where it sits around the ring."""

    name: str
    signal: Literal["fsk", "dtmf", "off"]
    modem: Modem = BELL202
    format: Literal["mdmf", "sdmf"] = "mdmf"
    before_ring: bool = False
    reversal: bool = False
    alert: bool = False
    dtmf_start: str = "A"


METHODS: dict[str, CallerIdMethod] = {m.name: m for m in (
    CallerIdMethod("bellcore", "fsk"),
    CallerIdMethod("bellcore_sdmf", "fsk", format="sdmf"),
    CallerIdMethod("etsi_fsk", "fsk", V23),
    CallerIdMethod("etsi_fsk_prering", "fsk", V23, before_ring=True, reversal=True, alert=True),
    CallerIdMethod("etsi_fsk_dtas", "fsk", V23, before_ring=True, alert=True),
    CallerIdMethod("etsi_dtmf", "dtmf"),
    CallerIdMethod("etsi_dtmf_prering", "dtmf", before_ring=True, reversal=True,
                   dtmf_start="D"),
    CallerIdMethod("etsi_dtmf_a_prering", "dtmf", before_ring=True, reversal=True),
    CallerIdMethod("off", "off"),
)}
"""Every method a profile or a line can name (``off`` sends nothing)."""

AFTER_RING_DELAY = 0.5
"""GR-30-CORE (and EN 300 659-1 for data after the first ring): data starts >= 500 ms
after the first ring ends."""
AFTER_RING_GUARD = 0.2
"""The data must be over at least 200 ms before the next ring."""
REVERSAL_TO_ALERT = 0.15
"""EN 300 659-1: DT-AS starts >= 100 ms after the polarity reversal."""
ALERT_TO_DATA = 0.06
"""EN 300 659-1: the FSK starts 45-75 ms after DT-AS ends (a DTMF sequence likewise)."""
DATA_TO_RING = 0.3
"""EN 300 659-1: the first ring follows the end of the data by 200-500 ms."""
REVERSAL_TO_DTMF = 0.25
"""DTMF data starts no sooner than 200 ms after the polarity reversal."""


@dataclass(frozen=True)
class CallerIdPlan:
    """What the port does: ``pcm`` from the start of the sequence (silence included),
    reversing the line first when ``reversal``; before the first ring (hold the bell for
    ``ring_after`` s from the sequence start) or at the start of a long enough silent
    interval after it."""

    method: CallerIdMethod
    pcm: bytes
    before_ring: bool
    reversal: bool
    ring_after: float

    @property
    def seconds(self) -> float:
        """How long the sequence lasts from its start to the end of its data."""
        return len(self.pcm) / (2 * RATE)

    @property
    def needs_silence(self) -> float:
        """For data after the ring: the silent interval it fits in, guard included."""
        return self.seconds + AFTER_RING_GUARD


def _silence(seconds: float) -> bytes:
    return bytes(2 * round(seconds * RATE))


def plan(method: CallerIdMethod | str, cid: CallerId, when: datetime) -> CallerIdPlan | None:
    """The caller ID sequence for ``method`` (a name in :data:`METHODS`); None for "off"."""
    m = METHODS[method] if isinstance(method, str) else method
    if m.signal == "off":
        return None
    if m.signal == "fsk":
        message = (sdmf_message if m.format == "sdmf" else mdmf_message)(cid, when)
        data = fsk(message, m.modem)
    else:
        data = _dtmf_pcm(dtmf_callerid(cid, m.dtmf_start))
    if not m.before_ring:
        pcm = _silence(AFTER_RING_DELAY) + data
        return CallerIdPlan(m, pcm, False, False, 0.0)
    lead = b""
    if m.alert:
        lead = _silence(REVERSAL_TO_ALERT if m.reversal else 0.0) + dtas()
        lead += _silence(ALERT_TO_DATA)
    elif m.reversal:
        lead = _silence(REVERSAL_TO_DTMF)
    pcm = lead + data
    return CallerIdPlan(m, pcm, True, m.reversal, len(pcm) / (2 * RATE) + DATA_TO_RING)


def vmwi_plan(method: CallerIdMethod | str, on: bool) -> CallerIdPlan:
    """On-hook VMWI (the lamp), sent without ringing, for a line whose caller ID is `method`.

    ETSI FSK lines (V.23) follow EN 300 659-1 for data not associated with ringing: the
    display is woken first by a line reversal, DT-AS at least 100 ms later, and the data
    45-75 ms after DT-AS; the port reverses the line when ``reversal`` and restores it
    once the data is over. A network that alerts with DT-AS alone (``etsi_fsk_dtas``)
    gets DT-AS without the reversal. Bellcore lines get the Bell 202 FSK alone (GR-30);
    a line without FSK caller ID (DTMF, off) likewise. SDMF (0x06) when the method is.
    """
    m = METHODS[method] if isinstance(method, str) else method
    fsk_method = m.signal == "fsk"
    modem = m.modem if fsk_method else BELL202
    data = fsk(vmwi_message(on, sdmf=fsk_method and m.format == "sdmf"), modem)
    if modem is not V23:
        return CallerIdPlan(m, data, False, False, 0.0)
    reversal = m.reversal or not m.alert  # etsi_fsk_dtas: a network that never reverses
    lead = _silence(REVERSAL_TO_ALERT if reversal else 0.0) + dtas() + _silence(ALERT_TO_DATA)
    return CallerIdPlan(m, lead + data, False, reversal, 0.0)
