"""Receive statistics (RFC 3550 A.1, A.3, A.8) and an E-model (ITU-T G.107) call-quality sketch.

The counters are those an RTCP receiver report carries, so the same numbers go to RTCP, to
the call record and to Prometheus. All times come in as `now`; nothing here reads a clock.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final

from gateway.media.rtp import RtpPacket, ts_distance

__all__ = [
    "BPL_G711",
    "BPL_G711_PLC",
    "ReceiveStats",
    "delay_impairment",
    "effective_equipment_impairment",
    "mos",
    "r_factor",
]

MAX_DROPOUT: Final = 3000  # RFC 3550 A.1: a bigger jump forward is a restart, not loss
MAX_MISORDER: Final = 100  # and a bigger step back is a restart, not reordering
_SEQ_MOD: Final = 1 << 16
_RECENT: Final = 256


class ReceiveStats:
    """Per-source reception counters: expected, lost, duplicates, late, interarrival jitter."""

    def __init__(self, clock_rate: int = 8000) -> None:
        self.clock_rate = clock_rate
        self.received = 0  # distinct packets, duplicates excluded
        self.octets = 0
        self.duplicates = 0
        self.late = 0  # arrived after a packet with a higher sequence number
        self.restarts = 0
        self.ssrc: int | None = None
        self._base: int | None = None  # extended sequence of the first packet of this run
        self._max = 0  # extended highest sequence
        self._bad_seq: int | None = None
        self._prev_expected = 0  # carried over from earlier runs (sequence restarts, new SSRC)
        self._prev_received = 0
        self._run_received = 0
        self._recent: deque[int] = deque(maxlen=_RECENT)
        self._recent_set: set[int] = set()
        self._timed = False  # a previous packet's arrival and timestamp are known
        self._arrival_prev = 0.0
        self._ts_prev = 0
        self._jitter = 0.0  # clock ticks
        self._interval_expected = 0
        self._interval_received = 0

    # ------------------------------------------------------------------ input

    def update(self, packet: RtpPacket, now: float, *, timing: bool = True) -> None:
        """Count one arriving packet; `timing=False` keeps events out of the jitter figure."""
        if self.ssrc is not None and packet.ssrc != self.ssrc:
            self._fold_run()
            self._timed = False
        self.ssrc = packet.ssrc
        if not self._count_sequence(packet.sequence):
            return
        self.octets += len(packet.payload)
        if timing:
            self._update_jitter(packet.timestamp, now)

    def _count_sequence(self, seq: int) -> bool:
        if self._base is None:
            self._start_run(seq)
            return True
        udelta = (seq - self._max) % _SEQ_MOD
        if udelta == 0:
            self.duplicates += 1
            return False
        if udelta < MAX_DROPOUT:
            ext = self._max + udelta
            self._max = ext
        elif udelta <= _SEQ_MOD - MAX_MISORDER:
            # a big jump: believe it only when the next packet follows on from it
            if self._bad_seq is not None and seq == self._bad_seq:
                self._fold_run()
                self.restarts += 1
                self._start_run(seq)
                return True
            self._bad_seq = (seq + 1) % _SEQ_MOD
            return False
        else:
            ext = self._max - (_SEQ_MOD - udelta)
            if ext in self._recent_set:
                self.duplicates += 1
                return False
            self._base = min(self._base, ext)  # a predecessor of the first packet we saw
            self.late += 1
        self._bad_seq = None
        self._remember(ext)
        self.received += 1
        self._run_received += 1
        return True

    def _start_run(self, seq: int) -> None:
        ext = seq + _SEQ_MOD  # room below the first packet for reordered predecessors
        self._base = ext
        self._max = ext
        self._bad_seq = None
        self._run_received = 1
        self.received += 1
        self._recent.clear()
        self._recent_set.clear()
        self._remember(ext)

    def _fold_run(self) -> None:
        self._prev_expected += self._run_expected()
        self._prev_received += self._run_received
        self._base = None
        self._run_received = 0

    def _remember(self, ext: int) -> None:
        if len(self._recent) == self._recent.maxlen:
            self._recent_set.discard(self._recent[0])
        self._recent.append(ext)
        self._recent_set.add(ext)

    def _update_jitter(self, timestamp: int, now: float) -> None:
        arrival = now * self.clock_rate
        if self._timed:
            # change in transit time, in ticks, with the RTP timestamp's wrap taken out
            d = arrival - self._arrival_prev - ts_distance(timestamp, self._ts_prev)
            self._jitter += (abs(d) - self._jitter) / 16
        self._timed = True
        self._arrival_prev = arrival
        self._ts_prev = timestamp

    # ------------------------------------------------------------------ figures

    def _run_expected(self) -> int:
        return 0 if self._base is None else self._max - self._base + 1

    @property
    def extended_max_seq(self) -> int:
        """Highest sequence number with wrap cycles in the upper bits, as RTCP reports it."""
        return 0 if self._base is None else self._max - _SEQ_MOD

    @property
    def expected(self) -> int:
        """Packets the sender must have sent, from the sequence numbers seen."""
        return self._prev_expected + self._run_expected()

    @property
    def lost(self) -> int:
        """Packets expected but never received (never negative)."""
        return max(0, self.expected - self._prev_received - self._run_received)

    @property
    def loss_fraction(self) -> float:
        """Share of expected packets lost over the whole call, 0.0 to 1.0."""
        expected = self.expected
        return self.lost / expected if expected else 0.0

    @property
    def jitter(self) -> float:
        """RFC 3550 interarrival jitter in RTP clock ticks."""
        return self._jitter

    @property
    def jitter_ms(self) -> float:
        """Interarrival jitter in milliseconds, for people and the E-model."""
        return self._jitter * 1000 / self.clock_rate

    def interval_fraction_lost(self) -> float:
        """Loss since the previous call (RFC 3550 A.3), for the next RTCP receiver report."""
        expected = self.expected
        received = self._prev_received + self._run_received
        exp_interval = expected - self._interval_expected
        rcv_interval = received - self._interval_received
        self._interval_expected = expected
        self._interval_received = received
        lost = exp_interval - rcv_interval
        return lost / exp_interval if exp_interval > 0 and lost > 0 else 0.0


# ITU-T G.107 default values (Table 3), the planning case for a G.711 call through this box
_SLR, _RLR, _STMR, _LSTR, _DS = 8.0, 2.0, 15.0, 18.0, 3.0
_TELR, _WEPL, _QDU = 65.0, 110.0, 1.0
_NC, _NFOR, _PS, _PR = -70.0, -64.0, 35.0, 35.0
#: G.113 Appendix I packet-loss robustness of G.711 (Ie = 0): without and with concealment
BPL_G711: Final = 4.3
BPL_G711_PLC: Final = 25.1


def _db_sum(*levels: float) -> float:
    return 10 * math.log10(sum(10 ** (lv / 10) for lv in levels))


def _g107_fixed() -> tuple[float, float, float]:
    """Ro, Is and No: the parts of R that the defaults fix (signal-to-noise, simultaneous)."""
    olr = _SLR + _RLR
    nfo = _NFOR + _RLR
    pre = _PR + 10 * math.log10(1 + 10 ** ((10 - _LSTR) / 10))
    nor = _RLR - 121 + pre + 0.008 * (pre - 35) ** 2
    nos = _PS - _SLR - _DS - 100 + 0.004 * (_PS - olr - _DS - 14) ** 2
    no = _db_sum(_NC, nos, nor, nfo)
    ro = 15 - 1.5 * (_SLR + no)
    xolr = olr + 0.2 * (64 + no - _RLR)
    iolr = 20 * ((1 + (xolr / 8) ** 8) ** (1 / 8) - xolr / 8)
    q = 37 - 15 * math.log10(_QDU)
    g = 1.07 + 0.258 * q + 0.0602 * q**2
    y = (ro - 100) / 15 + 46 / 8.4 - g / 9
    z = 46 / 30 - g / 40
    iq = 15 * math.log10(1 + 10**y + 10**z)
    return ro, iolr + iq, no


_RO, _IS_NO_SIDETONE, _NO = _g107_fixed()


def _sidetone_impairment(t: float) -> float:
    stmro = -10 * math.log10(10 ** (-_STMR / 10) + math.exp(-t / 4) * 10 ** (-_TELR / 10))
    return float(12 * (1 + ((stmro - 13) / 6) ** 8) ** (1 / 8)
            - 28 * (1 + ((stmro + 1) / 19.4) ** 35) ** (1 / 35)
            - 13 * (1 + ((stmro - 3) / 33) ** 13) ** (1 / 13) + 29)


def delay_impairment(ta: float, t: float | None = None, tr: float | None = None) -> float:
    """G.107 Id (talker echo + listener echo + absolute delay) for one-way delays in ms.

    ``t`` (talker echo path) defaults to ``ta`` and ``tr`` (listener echo loop) to 2·t; the
    echo loss is the default TELR 65 dB, which is what a working echo canceller leaves.
    """
    t = ta if t is None else t
    tr = 2 * t if tr is None else tr
    terv = _TELR - 40 * math.log10((1 + t / 10) / (1 + t / 150)) + 6 * math.exp(-0.3 * t**2)
    roe = -1.5 * (_NO - _RLR)
    re = 80 + 2.5 * (terv - 14)
    idte = ((roe - re) / 2 + math.sqrt((roe - re) ** 2 / 4 + 100) - 1) * (1 - math.exp(-t))
    rle = 10.5 * (_WEPL + 7) * (tr + 1) ** -0.25
    idle = (_RO - rle) / 2 + math.sqrt((_RO - rle) ** 2 / 4 + 169)
    idd = 0.0
    if ta > 100:
        x = math.log10(ta / 100) / math.log10(2)
        idd = 25 * ((1 + x**6) ** (1 / 6) - 3 * (1 + (x / 3) ** 6) ** (1 / 6) + 2)
    return float(idte + idle + idd)


def effective_equipment_impairment(
    loss_pct: float, *, ie: float = 0.0, bpl: float = BPL_G711_PLC, burst_r: float = 1.0
) -> float:
    """G.107 Ie,eff = Ie + (95 − Ie)·Ppl/(Ppl/BurstR + Bpl); random loss has BurstR 1."""
    ppl = max(0.0, loss_pct)
    return ie + (95 - ie) * ppl / (ppl / burst_r + bpl)


def r_factor(
    delay_ms: float, loss_pct: float, *, plc: bool = True, burst_r: float = 1.0
) -> float:
    """G.107 transmission rating R for a G.711 call (G.113 Appendix I: Ie 0, Bpl 4.3/25.1).

    ``delay_ms`` is the one-way mouth-to-ear delay (network, packetisation, jitter buffer):
    a jitter buffer turns jitter into delay and late loss, so jitter enters only through
    them. ``loss_pct`` is every packet not played: lost on the way or discarded late.
    Every other G.107 parameter has its default value, which gives 93.2 for no delay.
    """
    ta = max(0.0, delay_ms)
    is_ = _IS_NO_SIDETONE + _sidetone_impairment(ta)
    bpl = BPL_G711_PLC if plc else BPL_G711
    ie_eff = effective_equipment_impairment(loss_pct, bpl=bpl, burst_r=burst_r)
    return _RO - is_ - delay_impairment(ta) - ie_eff


def mos(r: float) -> float:
    """Estimated mean opinion score (1.0 to 4.5) for an R factor, per G.107 Annex B."""
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return max(1.0, 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r))
