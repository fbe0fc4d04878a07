"""Measuring audio: level, frequency content, and what a listener would call it.

Level convention: **dBFS is RMS relative to a full-scale square wave** (RMS 32768), so a
full-scale square is 0 dBFS and a full-scale sine is -3.01 dBFS. The same convention is
used for every ``level_dbfs`` in :mod:`gateway.dsp` (one number per sinusoid = that
sinusoid's RMS level).

:class:`ToneClassifier` is what the simulated phone uses to "hear": frames go in (time is
implicit, 20 ms per frame), and it names the sound using both frequency content and the
on/off cadence of the last few seconds, against one country's :class:`ToneProfile`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.dsp import FRAME_MS, SAMPLE_RATE
from gateway.dsp.dtmf import DtmfDetector
from gateway.dsp.tones import ToneProfile, ToneSpec

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]

SILENCE_DBFS = -100.0
"""Level reported for digital silence (and floor for everything else)."""

_FULL_SCALE_POWER = 32768.0**2


def _samples(pcm: bytes) -> FloatArray:
    import numpy as np

    if len(pcm) % 2:
        raise ValueError(f"PCM: odd byte count {len(pcm)}, expected S16LE samples")
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def _power_to_dbfs(power: float) -> float:
    if power <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 10.0 * math.log10(power / _FULL_SCALE_POWER))


def level_dbfs(pcm: bytes) -> float:
    """RMS level in dBFS (full-scale square = 0; sine = -3.01); -100 for silence/empty."""
    if not pcm.strip(b"\0"):
        return SILENCE_DBFS  # digital silence, what an idle line carries: no numpy needed
    import numpy as np

    x = _samples(pcm)
    if not len(x):
        return SILENCE_DBFS
    return _power_to_dbfs(float(np.mean(x * x)))


def _hann(n: int) -> FloatArray:
    import numpy as np

    w: FloatArray = np.hanning(n + 2)[1:-1]
    return w


def dominant_frequency(pcm: bytes, min_hz: float = 50.0) -> float:
    """Frequency (Hz) of the strongest spectral peak above ``min_hz``; 0.0 for silence.

    Hann window, 8x zero padding and parabolic interpolation of the log magnitude:
    better than 0.5 % for a tone of 100 ms or more.
    """
    import numpy as np

    x = _samples(pcm)
    if len(x) < 8 or not np.any(x):
        return 0.0
    x = x - float(np.mean(x))
    nfft = 1 << int(math.ceil(math.log2(len(x) * 8)))
    mag = np.abs(np.fft.rfft(x * _hann(len(x)), nfft))
    lo = max(1, int(math.ceil(min_hz * nfft / SAMPLE_RATE)))
    if lo >= len(mag) - 1:
        return 0.0
    k = lo + int(np.argmax(mag[lo:-1]))
    if mag[k] <= 0.0:
        return 0.0
    a, b, c = (math.log(max(float(v), 1e-12)) for v in mag[k - 1 : k + 2])
    denom = a - 2.0 * b + c
    p = 0.5 * (a - c) / denom if denom < 0 else 0.0
    return (k + p) * SAMPLE_RATE / nfft


_BASIS_CACHE: dict[tuple[tuple[float, ...], float], npt.NDArray[np.complex128]] = {}
_BASIS_CACHE_SAMPLES = 4000  # covers the classifier's 0.5 s analysis windows


def _probe_basis(
    probes: tuple[float, ...], n: int, spread: float, cache: bool
) -> npt.NDArray[np.complex128]:
    """exp(-j w t) for each probe: cached for the classifier, which asks for the same ones."""
    import numpy as np

    if cache and n <= _BASIS_CACHE_SAMPLES:
        key = (probes, spread)
        basis = _BASIS_CACHE.get(key)
        if basis is None:
            if len(_BASIS_CACHE) > 32:
                _BASIS_CACHE.clear()
            t = np.arange(_BASIS_CACHE_SAMPLES)
            basis = np.exp(-2j * math.pi * np.outer(t, np.array(probes)) / SAMPLE_RATE)
            _BASIS_CACHE[key] = basis
        return basis[:n]
    t = np.arange(n)
    out: npt.NDArray[np.complex128] = np.exp(
        -2j * math.pi * np.outer(t, np.array(probes)) / SAMPLE_RATE
    )
    return out


def _component_powers(
    x: FloatArray, freqs: Sequence[float], spread: float = 0.005, cache: bool = False
) -> FloatArray:
    """Power (A^2/2, in sample units) of each sinusoid, max over +-``spread`` probes."""
    import numpy as np

    if not len(x) or not len(freqs):
        return np.zeros(len(freqs))
    w = _hann(len(x))
    probes = tuple(g for f in freqs for g in (f * (1 - spread), f, f * (1 + spread)))
    spec = (x * w) @ _probe_basis(probes, len(x), spread, cache)
    power = (spec.real**2 + spec.imag**2) * (2.0 / float(w.sum()) ** 2)
    out: FloatArray = power.reshape(len(freqs), 3).max(axis=1)
    return out


def component_levels(pcm: bytes, frequencies: Iterable[float]) -> dict[float, float]:
    """Level in dBFS of each listed sinusoid (+-0.5 %), to check a tone's make-up."""
    freqs = list(frequencies)
    powers = _component_powers(_samples(pcm), freqs)
    return {f: _power_to_dbfs(float(p)) for f, p in zip(freqs, powers, strict=True)}


def frequencies_present(
    pcm: bytes,
    candidates: Iterable[float],
    min_level_dbfs: float = -50.0,
    relative_db: float = 15.0,
) -> tuple[float, ...]:
    """The candidates that are really in the signal, in the order given.

    A candidate counts when its component is at least ``min_level_dbfs`` and no more
    than ``relative_db`` below the signal's total level (so a leak of a loud
    neighbour, or a trace in noise, does not).
    """
    import numpy as np

    freqs = list(candidates)
    x = _samples(pcm)
    if not len(x):
        return ()
    total = _power_to_dbfs(float(np.mean(x * x)))
    powers = _component_powers(x, freqs)
    out = []
    for f, p in zip(freqs, powers, strict=True):
        lvl = _power_to_dbfs(float(p))
        if lvl >= min_level_dbfs and lvl >= total - relative_db:
            out.append(f)
    return tuple(out)


@dataclass(frozen=True)
class ListenReport:
    """What a listener hears right now; the virtual phone's answer to "what do you hear?"."""

    what: str
    dominant_hz: float | None
    level_dbfs: float
    digits: str
    since: float


CLASSES = (
    "silence",
    "dial",
    "ringback",
    "busy",
    "reorder",
    "stutter",
    "call_waiting",
    "dtmf",
    "tone",
    "audio",
)
"""Everything :meth:`ToneClassifier.classify` can return."""

_FRAME_S = FRAME_MS / 1000.0
ON_LEVEL_DBFS = -50.0
"""A frame at or above this level counts as sound for cadence tracking."""
HISTORY_S = 12.0
"""How far back cadence evidence is kept (long enough for a 10 s call-waiting period)."""
_LABEL_FRAMES = 25  # analyse at most 0.5 s of each burst
_YOUNG_FRAMES = 5  # bursts shorter than this borrow the previous burst's label
_HANGOVER_S = 0.3  # non-cadenced sounds (dtmf, speech) persist over short pauses
_SWITCH_FRAMES = 10  # a long burst's last 200 ms, checked for a change of sound
_TONE_ORDER = ("dial", "ringback", "busy", "reorder", "stutter", "call_waiting")


def _tolerance(expected: float) -> float:
    return max(0.06, 0.1 * expected)


@dataclass
class _Segment:
    on: bool
    frames: int = 0
    audio: list[bytes] = field(default_factory=list)
    label: str | None = None
    labelled_at: int = -1
    dtmf: bool = False

    @property
    def seconds(self) -> float:
        return self.frames * _FRAME_S


def _element(spec: ToneSpec, i: int) -> tuple[bool, float] | None:
    """The i-th on/off element of a tone's cadence, or None past its end."""
    if spec.continuous:
        return (True, math.inf) if i == 0 else None
    m = len(spec.cadence)
    if spec.cycles and i >= spec.cycles * m:
        if i == spec.cycles * m:
            return (spec.after_cycles == "on", math.inf)
        return None
    return (i % 2 == 0, spec.cadence[i % m])


def _cadence_score(spec: ToneSpec, run: Sequence[_Segment]) -> float | None:
    """How well the run (oldest first, last one still going) fits the tone; None = not."""
    if spec.continuous:
        phases = 1
    elif spec.cycles:
        phases = spec.cycles * len(spec.cadence) + 1
    else:
        phases = len(spec.cadence)
    best: float | None = None
    last = len(run) - 1
    for j in range(phases):
        score = 0.0
        for i, seg in enumerate(run):
            el = _element(spec, j + i)
            if el is None or el[0] != seg.on:
                break
            expected = el[1]
            dur = seg.seconds
            tol = _tolerance(expected) if math.isfinite(expected) else math.inf
            if i == last:
                if dur > expected + tol:
                    break
            elif not math.isfinite(expected):
                break  # a steady element that ended is not this tone
            elif i == 0:
                if dur > expected + tol:
                    break
                if abs(dur - expected) <= tol:
                    score += 0.5
            else:
                if abs(dur - expected) > tol:
                    break
                score += 1.0
        else:
            if best is None or score > best:
                best = score
    return best


class ToneClassifier:
    """Names what is on the line from frequency content and on/off cadence.

    Feed 20 ms frames continuously; :meth:`classify` returns one of :data:`CLASSES`.
    A cadenced tone is named as soon as the timing seen so far fits only it (a 2 s
    burst of 440+480 Hz is US ringback before the off period ends); while evidence
    fits several, a steady tone is preferred, then the order dial, ringback, busy,
    reorder, stutter, call_waiting.
    """

    def __init__(self, profile: ToneProfile) -> None:
        self.profile = profile
        tones = profile.tones()
        self._tones = [(name, tones[name]) for name in _TONE_ORDER if name in tones]
        self._tones += [(n, s) for n, s in tones.items() if n not in _TONE_ORDER]
        sets = {tuple(sorted(s.frequencies)) for _, s in self._tones}
        self._sets = sorted(sets, key=lambda s: (-len(s), s))
        self._set_labels = {"+".join(f"{f:g}" for f in fs) for fs in sets}
        self._all_freqs = sorted({f for s in sets for f in s})
        self.reset()

    def reset(self) -> None:
        """Forget everything heard (e.g. at the start of a new call)."""
        self._segs: list[_Segment] = [_Segment(on=False)]
        self._frames = 0
        self._dtmf = DtmfDetector()
        self._digits: list[str] = []
        self._what = "silence"
        self._since_frame = 0
        self._recent: list[bytes] = []
        self._last_on_audio: list[bytes] = []
        self._tail: list[bytes] = []  # the current burst's last frames (_SWITCH_FRAMES)

    @property
    def digits(self) -> str:
        """DTMF digits heard since the last reset."""
        return "".join(self._digits)

    def feed(self, frame: bytes) -> None:
        """Add one frame (20 ms)."""
        self._frames += 1
        on = level_dbfs(frame) >= ON_LEVEL_DBFS
        cur = self._segs[-1]
        if cur.on != on:
            if cur.on:
                self._finish(cur)
            cur = _Segment(on=on)
            self._segs.append(cur)
            self._tail = []
        cur.frames += 1
        if on and len(cur.audio) < _LABEL_FRAMES + 1:
            cur.audio.append(frame)
        if on:
            self._tail = [*self._tail[-(_SWITCH_FRAMES - 1):], frame]
            if cur.frames >= _SWITCH_FRAMES + _YOUNG_FRAMES and self._frames % 5 == 0:
                cur = self._split_on_change(cur)
        self._recent = (self._recent + [frame])[-5:]
        if on:
            self._last_on_audio = (self._last_on_audio + [frame])[-25:]
        digits = self._dtmf.feed(frame)
        if digits:
            self._digits.extend(digits)
            target = cur if cur.on else self._previous_on()
            if target is not None:
                target.dtmf = True
        self._prune()
        what = self._evaluate()
        if what != self._what:
            self._what = what
            self._since_frame = self._frames - 1

    def classify(self) -> str:
        """The current sound, one of :data:`CLASSES`."""
        return self._what

    def report(self) -> ListenReport:
        """Classification plus level, pitch and digits, as one snapshot."""
        level = level_dbfs(b"".join(self._recent))
        dominant: float | None = None
        if self._what != "silence" and self._last_on_audio:
            dominant = dominant_frequency(b"".join(self._last_on_audio)) or None
        return ListenReport(
            what=self._what,
            dominant_hz=dominant,
            level_dbfs=level,
            digits=self.digits,
            since=(self._frames - self._since_frame) * _FRAME_S,
        )

    # -- internals -------------------------------------------------------------------

    def _previous_on(self) -> _Segment | None:
        for seg in reversed(self._segs):
            if seg.on:
                return seg
        return None

    def _split_on_change(self, cur: _Segment) -> _Segment:
        """A burst whose last 200 ms are a tone of the profile other than what the burst
        was labelled (from its first 0.5 s) becomes two bursts there: one sound turned
        into another with no silence between, as the far party's audio does into dial
        tone when flash holds a call. Anything else (speech, a tone of no profile, a
        window straddling the change) leaves the burst whole."""
        label = self._label_of(cur)
        if label is None or label == "dtmf":
            return cur
        recent = self._label(self._tail)
        if recent == label or recent not in self._set_labels:
            return cur
        n = len(self._tail)
        cur.frames -= n
        del cur.audio[cur.frames:]
        self._finish(cur)
        new = _Segment(on=True, frames=n, audio=list(self._tail))
        self._segs.append(new)
        return new

    def _finish(self, seg: _Segment) -> None:
        if seg.frames < _YOUNG_FRAMES and seg.label is None:
            return  # too short to analyse alone; it borrows a neighbour's label
        audio = seg.audio[1:-1] if len(seg.audio) >= 4 else seg.audio
        seg.label = self._label(audio)
        seg.labelled_at = 1 << 30

    def _prune(self) -> None:
        age = 0
        for i in range(len(self._segs) - 1, -1, -1):
            age += self._segs[i].frames
            if age * _FRAME_S > HISTORY_S and i > 0:
                del self._segs[:i]
                return

    def _label(self, audio: list[bytes]) -> str:
        import numpy as np

        x = _samples(b"".join(audio))
        if not len(x):
            return "audio"
        total = float(np.mean(x * x))
        if total <= 0.0:
            return "audio"
        powers = dict(
            zip(self._all_freqs, _component_powers(x, self._all_freqs, cache=True), strict=True)
        )
        for s in self._sets:
            ps = [float(powers[f]) for f in s]
            if min(ps) < 0.1 * total or sum(ps) < 0.7 * total:
                continue
            # Only frequencies the window can tell apart from the set's own count.
            resolvable = 2.5 * SAMPLE_RATE / len(x)
            others = [
                float(powers[f])
                for f in self._all_freqs
                if f not in s and min(abs(f - g) for g in s) >= resolvable
            ]
            if others and max(others) > 0.05 * min(ps):
                continue
            return "+".join(f"{f:g}" for f in s)
        f0 = dominant_frequency(b"".join(audio))
        if f0 > 0.0 and float(_component_powers(x, [f0], 0.01)[0]) >= 0.6 * total:
            return "tone"
        return "audio"

    def _label_of(self, seg: _Segment) -> str | None:
        if seg.dtmf:
            return "dtmf"
        if seg.label is not None and seg.labelled_at >= 1 << 30:
            return seg.label
        if seg.frames < _YOUNG_FRAMES:
            return None
        n = len(seg.audio)
        if seg.label is None or n - seg.labelled_at >= 5:
            seg.label = self._label(seg.audio[1:])
            seg.labelled_at = n
        return seg.label

    def _evaluate(self) -> str:
        segs = self._segs
        cur = segs[-1]
        # Find the newest burst with a usable label.
        label: str | None = None
        for seg in reversed(segs):
            if seg.on:
                label = self._label_of(seg)
                if label is not None:
                    break
        if label is None:
            return "silence" if not cur.on else self._what
        if label in ("dtmf", "tone", "audio"):
            if cur.on or cur.seconds <= _HANGOVER_S:
                return label
            return "silence"
        # Collect the run of bursts with this label and the gaps between them.
        # A finished blip too short to analyse (a click, the tail of call audio) ends the
        # run too: it belongs to no cadence.
        run: list[_Segment] = []
        for seg in reversed(segs):
            if seg.on:
                seg_label = self._label_of(seg)
                if seg_label != label and (seg_label is not None or seg is not cur):
                    break
            run.append(seg)
        run.reverse()
        while run and not run[0].on:
            run.pop(0)
        if not run:
            return "silence"
        best_name: str | None = None
        best_score = -1.0
        for name, spec in self._tones:
            if "+".join(f"{f:g}" for f in sorted(spec.frequencies)) != label:
                continue
            score = _cadence_score(spec, run)
            if score is None:
                continue
            if score > best_score or (score == best_score and spec.continuous):
                best_name, best_score = name, score
        if best_name is not None:
            return best_name
        if cur.on:
            return "tone"
        return "tone" if cur.seconds <= _HANGOVER_S else "silence"
