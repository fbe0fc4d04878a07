"""Packet-loss concealment for 8 kHz PCM: pitch-period repetition with a fade.

In the manner of ITU-T G.711 Appendix I (this is Branchline's own implementation): the
decoder keeps the last ~49 ms it played. When a frame is missing it finds the pitch period
of the recent past by normalised autocorrelation (40–120 samples, i.e. 66–200 Hz), and
repeats the last period, widening to two and then three periods as the loss goes on so a
long gap does not buzz. Each period joins the last with a short overlap-add. The copy is
faded: full level for the first 10 ms, then down 20 % per 10 ms, so after 60 ms of loss it
is silent ("comfort silence": a low noise floor, never a hard dropout to digital zero).
When audio returns, its first few ms are cross-faded with the continued synthetic signal,
so there is no click at the join.

Pure: frames in, frames out; numpy is imported on the first concealment or good frame.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from gateway.dsp import FRAME_SAMPLES

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["Concealer"]

HISTORY: Final = 390  # samples kept: 3 longest periods + a quarter for overlap (48.75 ms)
PITCH_MIN: Final = 40
PITCH_MAX: Final = 120
CORR_LEN: Final = 160  # samples compared when looking for the period
FADE_START: Final = 80  # samples at full level (10 ms)
FADE_PER_SAMPLE: Final = 0.2 / 80  # 20 % per 10 ms after that
MERGE: Final = 32  # samples cross-faded when real audio comes back (4 ms)
COMFORT_RMS: Final = 3.0  # the noise floor of comfort silence (about -80 dBm0)


class Concealer:
    """Keeps one direction's recent audio and invents the frames that never arrived."""

    def __init__(self, seed: int = 1) -> None:
        self._history: npt.NDArray[np.float64] | None = None
        self._lost = 0  # samples concealed in the current gap
        self._pitch = 0
        self._pitch_buf: npt.NDArray[np.float64] | None = None
        self._periods = 1
        self._pos = 0  # position inside the repeated pitch buffer
        self._seed = seed
        self._rng: np.random.Generator | None = None
        self.frames_concealed = 0
        self.frames_silent = 0  # concealed frames that were already comfort silence

    @property
    def in_gap(self) -> bool:
        """True while frames are being invented (the last call was conceal())."""
        return self._lost > 0

    def good(self, pcm: bytes) -> bytes:
        """A frame that arrived: remembered, and smoothed into the gap it ends, if any."""
        import numpy as np

        x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
        merged = False
        if self._lost and self._pitch_buf is not None and self._gain(self._lost) > 0:
            tail = self._synth(MERGE) * self._gain(self._lost)
            ramp = np.linspace(0.0, 1.0, MERGE, endpoint=False)
            x[:MERGE] = ramp * x[:MERGE] + (1 - ramp) * tail
            merged = True
        self._lost = 0
        self._pitch_buf = None
        self._remember(x)
        return _pcm(x) if merged else pcm

    def conceal(self) -> bytes:
        """A frame to play in place of one that is missing."""
        import numpy as np

        self.frames_concealed += 1
        if self._history is None:
            self.frames_silent += 1
            return self._comfort(FRAME_SAMPLES)
        if self._lost == 0:
            self._start_gap()
        elif self._periods < min(3, 1 + self._lost // FRAME_SAMPLES):
            self._widen()
        start = self._lost
        if self._gain(start) <= 0:
            self._lost += FRAME_SAMPLES
            self.frames_silent += 1
            return self._comfort(FRAME_SAMPLES)
        out = self._synth(FRAME_SAMPLES)
        idx = np.arange(start, start + FRAME_SAMPLES)
        gains = np.clip(1.0 - np.maximum(0, idx - FADE_START) * FADE_PER_SAMPLE, 0.0, 1.0)
        out = out * gains
        self._lost += FRAME_SAMPLES
        floor = self._comfort_array(FRAME_SAMPLES)
        return _pcm(out + floor)

    # ------------------------------------------------------------------ internals

    def _gain(self, lost: int) -> float:
        return max(0.0, 1.0 - max(0, lost - FADE_START) * FADE_PER_SAMPLE)

    def _remember(self, x: npt.NDArray[np.float64]) -> None:
        import numpy as np

        if self._history is None:
            self._history = np.zeros(HISTORY)
        self._history = np.concatenate((self._history, x))[-HISTORY:]

    def _start_gap(self) -> None:
        assert self._history is not None
        self._pitch = _find_pitch(self._history)
        self._periods = 1
        self._build_pitch_buffer()
        self._pos = 0

    def _widen(self) -> None:
        if self._periods < 3:
            self._periods += 1
            pos = self._pos
            self._build_pitch_buffer()
            self._pos = pos % len(self._pitch_buf) if self._pitch_buf is not None else 0

    def _build_pitch_buffer(self) -> None:
        """The last `periods` pitch periods, its start overlap-added with what precedes it."""
        import numpy as np

        assert self._history is not None
        p = self._pitch
        n = p * self._periods
        h = self._history
        buf = h[-n:].copy()
        q = max(1, p // 4)
        # join end -> start smoothly: blend the buffer's start with the samples before it
        before = h[-n - q:-n]
        ramp = np.linspace(0.0, 1.0, q, endpoint=False)
        buf[:q] = ramp * buf[:q] + (1 - ramp) * before
        self._pitch_buf = buf

    def _synth(self, count: int) -> npt.NDArray[np.float64]:
        import numpy as np

        assert self._pitch_buf is not None
        buf = self._pitch_buf
        idx = (self._pos + np.arange(count)) % len(buf)
        self._pos = (self._pos + count) % len(buf)
        return buf[idx]

    def _comfort_array(self, count: int) -> npt.NDArray[np.float64]:
        import numpy as np

        if self._rng is None:
            self._rng = np.random.default_rng(self._seed)
        return self._rng.normal(0.0, COMFORT_RMS, count)

    def _comfort(self, count: int) -> bytes:
        return _pcm(self._comfort_array(count))


def _find_pitch(history: npt.NDArray[np.float64]) -> int:
    """The lag (PITCH_MIN..PITCH_MAX) at which the recent signal best repeats itself."""
    import numpy as np

    ref = history[-CORR_LEN:]
    best, best_lag = -np.inf, PITCH_MIN
    energy_ref = float(ref @ ref) + 1e-9
    for lag in range(PITCH_MIN, PITCH_MAX + 1):
        seg = history[-CORR_LEN - lag:-lag]
        e = float(seg @ seg)
        score = float(seg @ ref) / np.sqrt(e * energy_ref + 1e-9)
        if score > best:
            best, best_lag = score, lag
    return best_lag


def _pcm(x: npt.NDArray[np.float64]) -> bytes:
    import numpy as np

    return bytes(np.clip(np.round(x), -32768, 32767).astype("<i2").tobytes())
