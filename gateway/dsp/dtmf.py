"""DTMF generation and in-band detection on 8 kHz PCM.

Detection follows ITU-T Q.24 practice (as summarised in the field notes): a digit is
reported once, after it has sounded for about 40 ms; each component must lie within
+-1.5 % of nominal to be accepted and is rejected beyond +-3.5 %; twist up to 8 dB
normal (high group louder) and 4 dB reverse is accepted; detection holds at 15 dB SNR
and dial tone, ringback, single tones and noise do not produce digits.

How: 20 ms Hann-windowed blocks every 5 ms. At each of the eight nominal frequencies a
small comb of probe bins (+-3.75 % in 1.25 % steps) measures the component's peak power
and, by parabolic interpolation of the log magnitudes, its actual frequency. A block
"hits" a digit when one row and one column dominate their groups, sit within 2.5 % of
nominal, carry most of the block's energy, meet the twist limits and the block is
stationary (its two halves have similar energy, so tone edges do not count).

The share-of-energy test does the work of the classic second-harmonic and relative-energy
checks at once: a voiced sound that puts a harmonic near a row and a column frequency also
has its fundamental and other harmonics in the block, so the two components fall well
short of 87 % of its energy. Five consecutive hit blocks of one digit (about 40 ms), whose
summed component powers meet the twist limits, report it; seven misses (35 ms) end it, so
a 10 ms dropout does not split a press and a 40 ms gap does. `DtmfDetector.ended` gives
each press's length, for the RFC 4733 event or SIP INFO that carries it on.

Quiet audio (no sample loud enough to be one component at the minimum level) cannot hold a
digit. It is recognised in pure Python, so a line that is off hook but silent, the usual
state of every line between key presses, runs no numpy and does not even load it.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.dsp import FRAME_SAMPLES, SAMPLE_RATE

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

ROW_HZ: tuple[float, ...] = (697.0, 770.0, 852.0, 941.0)
COL_HZ: tuple[float, ...] = (1209.0, 1336.0, 1477.0, 1633.0)
KEYS: tuple[str, ...] = ("123A", "456B", "789C", "*0#D")
DIGITS = "0123456789*#ABCD"

_POS: dict[str, tuple[int, int]] = {
    key: (r, c) for r, row in enumerate(KEYS) for c, key in enumerate(row)
}

# Detector parameters.
BLOCK = 160
"""Analysis window in samples (20 ms): 50 Hz resolution separates adjacent rows."""
HOP = 40
"""Decision interval in samples (5 ms)."""
HITS_TO_REPORT = 5
"""Consecutive hit blocks before a digit is reported (about 40 ms of tone: 20 ms window
plus four 5 ms hops). Tones of 23 ms or less never make five."""
MISSES_TO_RELEASE = 7
"""Consecutive non-hit blocks that end a digit (35 ms). A dropout of 10 ms spoils at most
six blocks and is bridged; a 40 ms gap spoils at least nine and separates two presses."""
FREQ_TOLERANCE = 0.025
"""Accept a component within +-2.5 % (between Q.24's 1.5 % accept and 3.5 % reject)."""
NORMAL_TWIST_DB = 9.0
"""High group may exceed low group by this much: 8 dB plus a 1 dB margin for noise. The
twist is judged on the power summed over the blocks that confirm the digit (40 ms), so
at 15 dB SNR it wanders by a few tenths of a dB, not by the +-1 dB of a single block."""
REVERSE_TWIST_DB = 5.0
"""Low group may exceed high group by this much (4 dB plus the same margin)."""
BLOCK_TWIST_MARGIN_DB = 2.0
"""A single block may exceed the twist limits by this much; the sum must not."""
MIN_LEVEL_DBFS = -40.0
"""Each component must be at least this loud (about -34 dBm0)."""
MIN_ENERGY_FRACTION = 0.87
"""Share of block energy the two components must carry; speech and noise fall short.
A tone at 15 dB SNR carries about 0.97, at 10 dB 0.91. The most tone-like blocks of the
ten minutes of espeak-ng speech in tests/unit/test_dtmf_talkoff.py carry 0.76-0.83 (a
vowel with formants near 941 and 1336 Hz): at 0.75 that speech held a "0" for four blocks
in a row, one short of a digit; at 0.87 no block of it passes."""
RELATIVE_PEAK_DB = 6.0
"""The chosen row (column) must beat the other rows (columns) by this much."""
MAX_HALF_RATIO_DB = 6.0
"""The two halves of a block must be within this energy ratio (rejects tone edges)."""

_PROBE_STEP = 0.0125
_PROBE_K = tuple(range(-3, 4))


def _amplitude(level_dbfs: float) -> float:
    return float(32768.0 * math.sqrt(2.0) * 10.0 ** (level_dbfs / 20.0))


def _check_digit(digit: str) -> tuple[int, int]:
    try:
        return _POS[digit.upper()]
    except KeyError:
        raise ValueError(f"DTMF digit {digit!r}: expected one of {DIGITS}") from None


def tone_frequencies(digit: str) -> tuple[float, float]:
    """(low, high) frequencies of a key, for callers that synthesise or check tones."""
    r, c = _check_digit(digit)
    return ROW_HZ[r], COL_HZ[c]


def generate(
    digit: str,
    duration_ms: float = 100,
    level_dbfs: float = -10.0,
    twist_db: float = 0,
    *,
    freq_error: float = 0.0,
) -> bytes:
    """PCM for one key press.

    ``level_dbfs`` is the low-group component; the high group is ``level_dbfs +
    twist_db`` (positive = normal twist). ``freq_error`` scales both frequencies
    (0.015 = +1.5 %) so receivers can be tested at their tolerance limits.
    """
    import numpy as np

    r, c = _check_digit(digit)
    n = round(duration_ms * SAMPLE_RATE / 1000)
    t = np.arange(n, dtype=np.float64) / SAMPLE_RATE
    k = 1.0 + freq_error
    wave = _amplitude(level_dbfs) * np.sin(2 * math.pi * ROW_HZ[r] * k * t)
    wave += _amplitude(level_dbfs + twist_db) * np.sin(2 * math.pi * COL_HZ[c] * k * t)
    return np.clip(np.rint(wave), -32768, 32767).astype("<i2").tobytes()


def generate_sequence(
    digits: str,
    on_ms: float = 100,
    off_ms: float = 100,
    level_dbfs: float = -10.0,
    twist_db: float = 0,
) -> bytes:
    """PCM for a string of key presses, each followed by ``off_ms`` of silence."""
    gap = bytes(2 * round(off_ms * SAMPLE_RATE / 1000))
    out = bytearray()
    for d in digits:
        out += generate(d, on_ms, level_dbfs, twist_db)
        out += gap
    return bytes(out)


class _Basis:
    """The probe comb's windowed DFT basis, built when the first loud block arrives."""

    def __init__(self) -> None:
        import numpy as np

        window: npt.NDArray[np.float64] = np.hanning(BLOCK + 2)[1:-1]
        nominal = np.array(ROW_HZ + COL_HZ)
        probes = np.array(_PROBE_K)
        freqs = (nominal[:, None] * (1.0 + _PROBE_STEP * probes[None, :])).reshape(-1)
        n = np.arange(BLOCK)
        basis: npt.NDArray[np.complex128] = np.exp(
            -2j * math.pi * np.outer(n, freqs) / SAMPLE_RATE
        )
        windowed = basis * window[:, None]
        # real and imaginary parts side by side: a real product is 3x faster than complex
        self.basis = np.ascontiguousarray(np.concatenate((windowed.real, windowed.imag), axis=1))
        self.bins = freqs.size
        self.window = window
        # |X|^2 * scale = component power (A^2 / 2) for a sinusoid of amplitude A.
        self.scale = 2.0 / float(window.sum()) ** 2
        self.win_power = float(np.mean(window**2))
        # (blocks**2) @ win_sq: the windowed block's mean power over the window's (the
        # `total` the share-of-energy test divides by), as one product
        self.win_sq = window**2 / (BLOCK * self.win_power)


_BASIS: list[_Basis] = []
_FULL_SCALE_POWER = 32768.0**2


def _basis() -> _Basis:
    if not _BASIS:
        _BASIS.append(_Basis())
    return _BASIS[0]


def peak(pcm: bytes) -> int:
    """Largest sample magnitude in S16LE PCM (0 for none), without loading numpy.

    Digital silence is recognised first, at C speed. Once numpy is loaded anyway (a line
    has had audio) it is used, being four times faster than the pure-Python scan.
    """
    if not pcm.strip(b"\0"):
        return 0
    np = sys.modules.get("numpy")
    if np is not None:
        values = np.frombuffer(pcm, dtype="<i2")
        return max(int(values.max()), -int(values.min()))
    samples = array("h")
    samples.frombytes(pcm)
    if not samples:
        return 0
    if sys.byteorder == "big":
        samples.byteswap()
    return max(max(samples), -min(samples))


_Hit = tuple[str, float, float]
"""A block that holds a digit: (digit, row component power, column component power)."""


@dataclass(frozen=True)
class DigitEnded:
    """A reported digit stopped sounding; `duration_ms` is how long it sounded in all."""

    digit: str
    duration_ms: int


class DtmfDetector:
    """Feeds on PCM frames and reports each key press once, and its end with its length.

    Pure: no clock, time is the sample count. Feed any number of bytes at a time.

    State machine: a candidate needs HITS_TO_REPORT consecutive blocks of the same digit
    whose summed row and column powers meet the twist limits; it is then reported (once)
    and held until MISSES_TO_RELEASE consecutive blocks without it. The press lasted from
    the start of its first hit block to the end of its last one, which `ended()` gives.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget buffered audio and any digit in progress."""
        self._buf = b""  # S16LE samples not yet consumed by a whole hop
        self._current: str | None = None  # digit being held
        self._candidate: str | None = None
        self._hits = 0
        self._row_power = 0.0  # summed over the candidate's hit blocks
        self._col_power = 0.0
        self._first_hit = 0  # stream index of the first hit block's first sample
        self._last_hit = 0  # stream index just past the last hit block of the held digit
        self._misses = 0
        self._pos = 0  # stream index of self._buf[0]
        self._ended: deque[DigitEnded] = deque(maxlen=16)  # for callers that never ask
        self.last_digit_at: float | None = None
        """Stream time (s since the first sample fed) at which the last digit was confirmed."""

    @property
    def in_digit(self) -> str | None:
        """The digit currently sounding (already reported), or None."""
        return self._current

    def ended(self) -> list[DigitEnded]:
        """The reported digits that have stopped sounding since the last call, in order."""
        out = list(self._ended)
        self._ended.clear()
        return out

    def feed(self, frame: bytes) -> list[str]:
        """Add PCM (S16LE); return the digits whose press completed detection now."""
        if len(frame) % 2:
            raise ValueError(f"DtmfDetector.feed: odd byte count {len(frame)}, expected S16LE")
        buf = self._buf + frame if self._buf else frame
        count = len(buf) // 2
        if count < BLOCK:
            self._buf = buf
            return []
        nblocks = (count - BLOCK) // HOP + 1
        consumed = nblocks * HOP
        covered = buf[: 2 * ((nblocks - 1) * HOP + BLOCK)]
        self._buf = buf[2 * consumed :]
        hits: list[_Hit | None]
        x: npt.NDArray[np.int16] | None = None
        if "numpy" in sys.modules and covered.strip(b"\0"):
            import numpy as np

            x = np.frombuffer(covered, dtype="<i2")  # one view for the level and the blocks
            quiet = max(int(x.max()), -int(x.min())) < _QUIET_PEAK
        else:
            quiet = peak(covered) < _QUIET_PEAK  # digital silence, or numpy not loaded yet
        if quiet:
            # Quiet audio (most of every call): no sample reaches the peak of one DTMF
            # component at the minimum level, so no block can hold a digit.
            if self._current is None and self._candidate is None:
                self._pos += consumed
                return []
            hits = [None] * nblocks
        else:
            import numpy as np

            if x is None:
                x = np.frombuffer(covered, dtype="<i2")
            hits = self._classify_blocks(x[_block_index(nblocks)].astype(np.float64))
        out: list[str] = []
        for i, hit in enumerate(hits):
            digit = self._step(hit, self._pos + i * HOP)
            if digit is not None:
                out.append(digit)
                self.last_digit_at = (self._pos + i * HOP + BLOCK) / SAMPLE_RATE
        self._pos += consumed
        return out

    def _step(self, hit: _Hit | None, start: int) -> str | None:
        """One block (starting at stream sample `start`) through the state machine."""
        if self._current is not None:
            if hit is not None and hit[0] == self._current:
                self._misses = 0
                self._last_hit = start + BLOCK
                return None
            self._misses += 1
            if self._misses < MISSES_TO_RELEASE:
                return None
            # blocks that overlap the tone's edges by a few ms may still hit: the length
            # comes out 0-5 ms long, never short, as an RFC 4733 event should be
            ms = round((self._last_hit - self._first_hit) * 1000 / SAMPLE_RATE)
            self._ended.append(DigitEnded(self._current, ms))
            self._current = None
            self._misses = 0
            self._candidate = None
            self._hits = 0
        if hit is None:
            self._candidate = None
            self._hits = 0
            return None
        digit, pr, pc = hit
        if digit == self._candidate:
            self._hits += 1
            self._row_power += pr
            self._col_power += pc
        else:
            self._candidate = digit
            self._hits = 1
            self._row_power, self._col_power = pr, pc
            self._first_hit = start
        if self._hits < HITS_TO_REPORT:
            return None
        twist = 10.0 * math.log10(self._col_power / self._row_power)
        if twist > NORMAL_TWIST_DB or -twist > REVERSE_TWIST_DB:
            # out of limits on the whole: slide the window on rather than report
            self._hits -= 1
            self._row_power -= self._row_power / HITS_TO_REPORT
            self._col_power -= self._col_power / HITS_TO_REPORT
            return None
        self._current = digit
        self._last_hit = start + BLOCK
        self._candidate = None
        self._hits = 0
        self._misses = 0
        return digit

    @staticmethod
    def _classify_blocks(blocks: npt.NDArray[np.float64]) -> list[_Hit | None]:
        """Every test but the frequency one runs on all blocks at once; only the blocks
        that pass them all (a digit's, or a rare near miss) reach the per-block check."""
        import numpy as np

        comb = _basis()
        n = len(blocks)
        spec = blocks @ comb.basis
        spec *= spec
        power = (spec[:, :comb.bins] + spec[:, comb.bins:]).reshape(n, 8, len(_PROBE_K))
        peak = power.max(axis=2)  # (blocks, 8), unscaled
        # Gate, in plain Python over the few blocks of a frame: a digit's row and column
        # peaks are each loud enough and carry most of the energy. Speech, tones and noise
        # (nearly every loud block) stop here; the margin keeps the gate from refusing what
        # the full test below accepts. Powers are compared unscaled (scale folded in).
        floor = _GATE_MIN_POWER / comb.scale
        share = MIN_ENERGY_FRACTION * (1 - 1e-9)
        for row, tot in zip(peak.tolist(), ((blocks * blocks) @ comb.win_sq).tolist(),
                            strict=True):
            pr, pc = max(row[:4]), max(row[4:])
            if pr + pc >= share * tot / comb.scale and min(pr, pc) >= floor:
                break
        else:
            return [None] * n
        power *= comb.scale
        peak *= comb.scale
        min_power = _GATE_MIN_POWER
        total = np.mean((blocks * comb.window[None, :]) ** 2, axis=1) / comb.win_power
        half = BLOCK // 2
        sq = blocks * blocks
        e1 = sq[:, :half].sum(axis=1)
        e2 = sq[:, half:].sum(axis=1)
        centre = power[:, :, 3]
        rows = np.arange(n)
        r = peak[:, :4].argmax(axis=1)
        c = 4 + peak[:, 4:].argmax(axis=1)
        pr = peak[rows, r]
        pc = peak[rows, c]
        rel = 10.0 ** (RELATIVE_PEAK_DB / 10.0)
        others = centre.copy()
        others[rows, r] = 0.0
        others[rows, c] = 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            ok = (total > 0.0) & (np.minimum(e1, e2) > 0.0)
            ok &= np.abs(10.0 * np.log10(e1 / e2)) <= MAX_HALF_RATIO_DB
            ok &= (pr >= min_power) & (pc >= min_power)
            twist = 10.0 * np.log10(pc / pr)
        ok &= twist <= NORMAL_TWIST_DB + BLOCK_TWIST_MARGIN_DB
        ok &= -twist <= REVERSE_TWIST_DB + BLOCK_TWIST_MARGIN_DB
        ok &= (pr + pc) >= MIN_ENERGY_FRACTION * total
        ok &= pr >= rel * others[:, :4].max(axis=1)
        ok &= pc >= rel * others[:, 4:].max(axis=1)
        out: list[_Hit | None] = [None] * n
        for b in np.flatnonzero(ok).tolist():
            rb, cb = int(r[b]), int(c[b])
            if _in_tolerance(power[b, rb]) and _in_tolerance(power[b, cb]):
                out[b] = (KEYS[rb][cb - 4], float(pr[b]), float(pc[b]))
        return out


_QUIET_PEAK = 32768.0 * 10.0 ** (MIN_LEVEL_DBFS / 20.0)
_GATE_MIN_POWER = _FULL_SCALE_POWER * 10.0 ** (MIN_LEVEL_DBFS / 10.0)


_BLOCK_INDEX: dict[int, npt.NDArray[np.intp]] = {}


def _block_index(nblocks: int) -> npt.NDArray[np.intp]:
    """Sample indices of `nblocks` overlapping analysis blocks (one per hop), as rows."""
    idx = _BLOCK_INDEX.get(nblocks)
    if idx is None:
        import numpy as np

        idx = np.arange(nblocks)[:, None] * HOP + np.arange(BLOCK)[None, :]
        _BLOCK_INDEX[nblocks] = idx
    return idx


def _in_tolerance(probes: npt.NDArray[np.float64]) -> bool:
    """True if the probe comb peaks within FREQ_TOLERANCE of its centre."""
    import numpy as np

    k = int(np.argmax(probes))
    if k == 0 or k == len(probes) - 1:
        return False
    a, b, c = (math.log(max(float(v), 1e-30)) for v in probes[k - 1 : k + 2])
    denom = a - 2.0 * b + c
    p = 0.5 * (a - c) / denom if denom < 0 else 0.0
    offset = (k - 3 + p) * _PROBE_STEP
    return abs(offset) <= FREQ_TOLERANCE


def detect(pcm: bytes) -> str:
    """All digits in a PCM buffer, in order: a convenience for tests and tools."""
    det = DtmfDetector()
    return "".join(det.feed(pcm))


def _tone(digit: str, first: int, count: int, level_dbfs: float) -> bytes:
    """Samples `first`..`first+count` of a key's tone (phase continuous across calls)."""
    import numpy as np

    r, c = _check_digit(digit)
    t = (first + np.arange(count, dtype=np.float64)) / SAMPLE_RATE
    amp = _amplitude(level_dbfs)
    wave = amp * (np.sin(2 * math.pi * ROW_HZ[r] * t) + np.sin(2 * math.pi * COL_HZ[c] * t))
    return np.clip(np.rint(wave), -32768, 32767).astype("<i2").tobytes()


class DigitPlayer:
    """Digits that arrived out of band (RFC 4733, SIP INFO), as tones for an earpiece.

    `start` (an RFC 4733 event's first packet: the far end's key is down) sounds the digit
    at once and keeps it sounding; `end` (the event's length is known) lets it sound on
    until it has lasted that long, or stops it at once if it already has. `end` without a
    `start` (SIP INFO, or a tone still queued) queues a tone of that length. Each digit is
    40 ms to 8 s and followed by 60 ms of silence; at most 10 s of audio waits.
    """

    GAP_FRAMES = 3
    MIN_MS = 40
    MAX_MS = 8000
    MAX_QUEUED = 2 * SAMPLE_RATE * 10

    def __init__(self, level_dbfs: float = -10.0) -> None:
        self.level_dbfs = level_dbfs
        self._queue = bytearray()
        self._live: str | None = None
        self._played = 0  # samples of the live digit sounded so far
        self._expired: str | None = None  # a live digit stopped at MAX_MS, its end to come

    @property
    def busy(self) -> bool:
        """True while a digit sounds or waits."""
        return bool(self._queue) or self._live is not None

    def start(self, digit: str) -> None:
        """The far end's key went down: sound it from the next frame (if nothing waits)."""
        if digit.upper() not in DIGITS or len(digit) != 1 or self.busy:
            return
        self._live = digit.upper()
        self._played = 0
        self._expired = None

    def end(self, digit: str, duration_ms: int) -> None:
        """The digit lasted `duration_ms` in all."""
        digit = digit.upper()
        if len(digit) != 1 or digit not in DIGITS:
            return
        total = round(max(self.MIN_MS, min(duration_ms, self.MAX_MS)) * SAMPLE_RATE / 1000)
        if self._expired == digit:
            self._expired = None  # already sounded for MAX_MS
            return
        if self._live == digit:
            if total > self._played:
                self._queue += _tone(digit, self._played, total - self._played, self.level_dbfs)
            self._stop_live()
            return
        if self._live is not None:
            self._stop_live()  # another digit ended: the live one is over too
        if len(self._queue) < self.MAX_QUEUED:
            self._queue += _tone(digit, 0, total, self.level_dbfs)
            self._queue += bytes(2 * FRAME_SAMPLES * self.GAP_FRAMES)

    def _stop_live(self) -> None:
        self._live = None
        self._queue += bytes(2 * FRAME_SAMPLES * self.GAP_FRAMES)

    def next_frame(self, samples: int = FRAME_SAMPLES) -> bytes | None:
        """The next frame of digit audio, or None when no digit sounds or waits."""
        if self._queue:
            frame = bytes(self._queue[: 2 * samples]).ljust(2 * samples, b"\0")
            del self._queue[: 2 * samples]
            return frame
        if self._live is None:
            return None
        frame = _tone(self._live, self._played, samples, self.level_dbfs)
        self._played += samples
        if self._played >= self.MAX_MS * SAMPLE_RATE // 1000:
            self._expired = self._live
            self._stop_live()  # the end has not come
        return frame
