"""Line echo canceller for the 2-wire hybrid of an FXS port, in the manner of ITU-T G.168.

What we play to the handset (the far end's voice, `far`) leaks back through the SLIC's
2-wire/4-wire hybrid into what we capture from it (`near`), delayed by a few ms and down by
the echo return loss (ERL, 6 dB at worst). Without removing it the far end hears itself.

- **Adaptive filter:** a block NLMS FIR over the last `tail_ms` (64 ms: 512 taps at 8 kHz)
  of far-end audio, adapted every 5 ms sub-block. The step is normalised by the far-end
  power over the tail, so it converges at the same pace at any level, and it does not adapt
  while the far end is silent. Once converged (ERLE >= 30 dB held for 150 sub-blocks) only
  one sub-block per frame adapts, which is enough to follow a hybrid's slowly drifting
  path; a drop below 30 dB restores full-rate adaptation.
- **Double-talk detector (Geigel):** when the near signal's peak over a sub-block exceeds
  half the far-end peak over the tail (the hybrid never returns more than that: ERL ≥ 6 dB),
  someone is talking at the handset end; adaptation stops for that sub-block and a hangover
  of 40 ms, so near speech cannot drag the filter away from the echo path.
- **Two filters:** a background filter adapts; the foreground filter, which makes the
  output, takes its taps only while they cancel clearly better. Double talk the detector
  misses can pull the background filter away, never the one in use.
- **Non-linear processor:** with the far end talking, no double talk and the residual well
  below the echo estimate, the residual is replaced by a low comfort-noise floor (G.168's
  NLP); it is released the moment the near end talks.

Cost (CPU per 20 ms frame, numpy, x86-64; bench/README.md "media"): about 25 us in double
talk or before the first adaptation (no whitening, no products with a zero filter), 180 us
while converging, 100 us converged. Every product with the tail is an `np.correlate` over
the far-end buffer: a matrix product with a strided window view falls outside BLAS and was
5-7x slower.

Pure: frames in, frames out. numpy is imported when the first frame arrives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from gateway.dsp import FRAME_SAMPLES, SAMPLE_RATE

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["EchoCanceller"]

BLOCK: Final = 40  # samples per adaptation step (5 ms)
GEIGEL: Final = 0.5  # near peak above half the far peak (6 dB) means double talk
HANGOVER: Final = 320  # samples adaptation stays frozen after double talk (40 ms)
FAR_ACTIVE: Final = 30.0  # far-end peak (of 32768) below which nothing adapts (about -60 dBm0)
NLP_RATIO: Final = 0.06  # residual below 6 % (-24 dB) of the echo estimate's level: suppress
COMFORT_RMS: Final = 2.0
ORDER: Final = 16  # linear predictor used to whiten the signals the filter adapts on
PREDICT_EVERY: Final = 4  # frames between updates of that predictor (80 ms)
CONVERGED_DB: Final = 30.0  # ERLE from which the filter only keeps up with the echo path...
CONVERGED_BLOCKS: Final = 150  # ...once held over this many adapted sub-blocks in a row
CONVERGED_EVERY: Final = 4  # then one sub-block in this many adapts (once per frame)


class EchoCanceller:
    """One line's echo canceller: ``process(far, near)`` once per 20 ms frame."""

    def __init__(self, tail_ms: int = 64, *, mu: float = 1.0, nlp: bool = True,
                 seed: int = 5) -> None:
        if not 8 <= tail_ms <= 256:
            raise ValueError(f"echo tail must be 8..256 ms, got {tail_ms}")
        self.taps = tail_ms * SAMPLE_RATE // 1000
        self.mu = mu
        self.nlp = nlp
        self._seed = seed
        self._ready = False
        self._hang = 0
        self.double_talk_blocks = 0
        self.adapted_blocks = 0
        self.nlp_blocks = 0
        self.resets = 0
        self.erle_db = 0.0  # smoothed echo return loss enhancement of the linear filter

    def _setup(self) -> None:
        import numpy as np

        self._w = np.zeros(self.taps)  # oldest-first: w[j] weighs far[t - (taps - 1 - j)]
        self._wb = self._w.copy()  # the background filter, which adapts
        self._hist = np.zeros(self.taps - 1 + ORDER)  # far-end samples before this frame
        self._dprev = np.zeros(ORDER)
        self._acf = np.zeros(ORDER + 1)
        self._quiet = 0
        self._rng = np.random.default_rng(self._seed)
        self._d_pow = 1e-3
        self._e_pow = 1e-3
        self._eb_pow = 1e-3
        self._frames = 0
        self._a: npt.NDArray[np.float64] | None = None
        self._a_stale = False
        self._w_zero = True  # the foreground filter has not taken any taps yet
        self._converged = 0  # adapted sub-blocks in a row with ERLE >= CONVERGED_DB
        # Segments of the far-end buffer (taps - 1 samples of tail, then the frame): three
        # sub-blocks, the middle of the tail, the frame's four sub-blocks. Sub-block i's tail
        # (far samples i*BLOCK .. i*BLOCK + BLOCK + taps - 2) is exactly segments i..i+4.
        head = [i * BLOCK for i in range(FRAME_SAMPLES // BLOCK)]
        frame = [self.taps - 1 + i * BLOCK for i in range(FRAME_SAMPLES // BLOCK)]
        self._peak_index = (np.array(head + frame) if head[-1] < frame[0] else None)
        self._ready = True

    def reset(self) -> None:
        """Forget the echo path (a new call, or the line was re-plugged)."""
        self._ready = False
        self._hang = 0

    def process(self, far: bytes, near: bytes) -> bytes:
        """The near (handset) frame with the echo of `far` (what we played) taken out."""
        import numpy as np

        if not self._ready:
            self._setup()
        xi = np.frombuffer(far, dtype="<i2")
        di = np.frombuffer(near, dtype="<i2")
        if xi.size != FRAME_SAMPLES or di.size != FRAME_SAMPLES:
            raise ValueError("echo canceller frames must be 20 ms of 16-bit PCM")
        x = xi.astype(np.float64)
        d = di.astype(np.float64)
        ext = np.concatenate((self._hist, x))
        buf = ext[ORDER:]
        abs_buf = np.abs(buf)
        # Peak of each sub-block's far-end tail (and of this frame's far end) from one
        # reduction over segments, instead of one max() per sub-block.
        seg = self._peak_index
        if seg is not None:
            m = np.maximum.reduceat(abs_buf, seg).tolist()
            far_peak_frame = max(m[4:])
            tail_peaks = [max(m[i:i + 5]) for i in range(FRAME_SAMPLES // BLOCK)]
        else:  # a tail too short for the segments (under 16 ms)
            far_peak_frame = float(abs_buf[-FRAME_SAMPLES:].max())
            tail_peaks = [float(abs_buf[start:start + BLOCK + self.taps - 1].max())
                          for start in range(0, FRAME_SAMPLES, BLOCK)]
        if far_peak_frame <= FAR_ACTIVE:
            self._quiet += FRAME_SAMPLES
        else:
            self._quiet = 0
        if self._quiet > self.taps + FRAME_SAMPLES:
            # nothing was played for a whole tail: there is no echo to take out
            self._hist = ext[FRAME_SAMPLES:]
            self._dprev = d[-ORDER:].copy()
            return near
        near_peaks = np.abs(d).reshape(-1, BLOCK).max(axis=1).tolist()
        # The double-talk detector first, for the whole frame: which sub-blocks adapt.
        # Only those need the whitened signals and the background filter's products.
        far_peaks: list[float] = []
        talking: list[bool] = []
        adapt: list[bool] = []
        # Converged (ERLE >= 30 dB over the last 150 adapted sub-blocks, 0.75 s of far-end
        # speech), the filter only has to follow a slowly changing echo path: one sub-block
        # per frame adapts, rotating through the four positions. The ERLE falling below
        # 30 dB (a new echo path) restores every sub-block at once.
        slow = self._converged >= CONVERGED_BLOCKS
        for i in range(FRAME_SAMPLES // BLOCK):
            far_peak = tail_peaks[i]
            near_peak = near_peaks[i]
            if near_peak > GEIGEL * far_peak and near_peak > FAR_ACTIVE:
                self._hang = HANGOVER
                self.double_talk_blocks += 1
            elif self._hang > 0:
                self._hang = max(0, self._hang - BLOCK)
            far_peaks.append(far_peak)
            talking.append(self._hang > 0)
            adapt.append(far_peak > FAR_ACTIVE and self._hang == 0
                         and not (slow and (self._frames + i) % CONVERGED_EVERY))
        # adaptation runs on pre-whitened copies of both signals (the same linear predictor
        # applied to far and near keeps the echo path the same), so a speech-coloured far
        # end converges nearly as fast as white noise
        self._observe(buf)
        if any(adapt):
            a = self._predictor()
            wbuf = np.convolve(ext, a)[ORDER:ORDER + buf.size]  # the whole tail, one A(z)
            dw = _fir(a, self._dprev, d)
        self._dprev = d[-ORDER:].copy()
        # Every product with the tail is a correlation over `buf` (output i: the `taps`
        # far samples ending at far sample i), which np.correlate does with one dot per
        # output, 5-7x faster than a product with a strided (160, taps) window view.
        if self._w_zero:
            e_frame = d  # no taps taken yet: the foreground filter's estimate is zero
            y_frame = np.zeros(FRAME_SAMPLES)
        else:
            y_frame = np.correlate(buf, self._w, "valid")  # the foreground's echo estimate
            e_frame = d - y_frame
        passthrough = not self.nlp or all(
            t or p <= FAR_ACTIVE for t, p in zip(talking, far_peaks, strict=True))
        if passthrough and not any(adapt):
            if self._w_zero:
                self._hist = ext[FRAME_SAMPLES:]
                return near  # no estimate to take out: the frame as it came
            out = e_frame  # double talk or nothing played: the linear residual as it is
        else:
            out = np.empty(FRAME_SAMPLES)
            for i, start in enumerate(range(0, FRAME_SAMPLES, BLOCK)):
                end = start + BLOCK
                ds = d[start:end]
                e = e_frame[start:end]
                if adapt[i]:
                    # NLMS direction on the whitened signals; the step is the one that best
                    # cancels this block along it, so a tone or a vowel cannot overshoot
                    span = slice(start, end + self.taps - 1)
                    xw = wbuf[span]
                    eb = ds - np.correlate(buf[span], self._wb, "valid")  # before the update
                    ew = dw[start:end] - np.correlate(xw, self._wb, "valid")
                    g = np.correlate(xw, ew, "valid")  # the whitened tail weighted by ew
                    z = np.correlate(xw, g, "valid")
                    zz = float(z @ z)
                    if zz > 0:
                        self._wb += (self.mu * float(ew @ z) / zz) * g
                    self.adapted_blocks += 1
                    self._compare(ds, e, eb)
                out[start:end] = self._suppress(e, y_frame[start:end], far_peaks[i],
                                                talking[i])
        self._hist = ext[FRAME_SAMPLES:]
        return bytes(out.round().clip(-32768, 32767).astype("<i2").tobytes())

    def _observe(self, buf: npt.NDArray[np.float64]) -> None:
        """Smooth the far end's autocorrelation with this frame (every frame, so the
        predictor is current whenever adaptation needs it)."""
        import numpy as np

        seg = buf[-FRAME_SAMPLES - ORDER:]
        r = np.correlate(seg, seg[ORDER:], mode="valid")[::-1]  # lags 0..ORDER
        self._acf += 0.3 * (r - self._acf)
        self._frames += 1
        if self._frames % PREDICT_EVERY == 0:
            self._a_stale = True

    def _predictor(self) -> npt.NDArray[np.float64]:
        """Whitening filter A(z) (order ORDER) from the far end's smoothed autocorrelation,
        worked out again every PREDICT_EVERY frames, and only when a frame adapts (the
        tail is whitened with one A(z) per frame either way, so the filter always sees
        consistent signals)."""
        import numpy as np

        if self._a is None or self._a_stale:
            acf = self._acf.tolist()
            acf[0] = acf[0] * 1.001 + 1.0  # a little white noise: keeps it well conditioned
            self._a = np.array(_levinson(acf))
            self._a_stale = False
        return self._a

    def _compare(self, d: npt.NDArray[np.float64], e: npt.NDArray[np.float64],
                 eb: npt.NDArray[np.float64]) -> None:
        """Two filters: the background one adapts; the one in use (foreground) takes its
        taps only while it cancels clearly better. Near speech that slips past the
        double-talk detector can pull the background filter off, never the echo path in use;
        a background filter far worse than the foreground starts again from it."""
        import numpy as np

        self._d_pow += 0.3 * (float(d @ d) - self._d_pow)
        self._e_pow += 0.3 * (float(e @ e) - self._e_pow)
        self._eb_pow += 0.3 * (float(eb @ eb) - self._eb_pow)
        if self._eb_pow < 0.7 * self._e_pow:
            self._w = self._wb.copy()
            self._w_zero = False
            self._e_pow = self._eb_pow
        elif self._eb_pow > 4 * self._e_pow + 1.0:
            self._wb = self._w.copy()
            self._eb_pow = self._e_pow
            self.resets += 1
        self.erle_db = 10 * float(np.log10((self._d_pow + 1e-6) / (self._e_pow + 1e-6)))
        self._converged = self._converged + 1 if self.erle_db >= CONVERGED_DB else 0

    def _suppress(self, e: npt.NDArray[np.float64], y: npt.NDArray[np.float64],
                  far_peak: float, talking: bool) -> npt.NDArray[np.float64]:
        import numpy as np

        if not self.nlp or talking or far_peak <= FAR_ACTIVE:
            return e
        e_rms = float(np.sqrt(e @ e / e.size))
        y_rms = float(np.sqrt(y @ y / y.size))
        if e_rms < NLP_RATIO * y_rms or e_rms < 2 * COMFORT_RMS:
            self.nlp_blocks += 1
            noise: npt.NDArray[np.float64] = self._rng.normal(0.0, COMFORT_RMS, e.size)
            return noise
        return e


def _levinson(r: list[float]) -> list[float]:
    """Prediction-error filter [1, a1..ap] from autocorrelation r[0..p] (Levinson-Durbin)."""
    p = len(r) - 1
    a = [1.0] + [0.0] * p
    err = r[0]
    for i in range(1, p + 1):
        if err <= 0:
            break
        k = -sum(r[i - j] * a[j] for j in range(i)) / err
        a = [a[j] + k * a[i - j] for j in range(i + 1)] + a[i + 1:]
        err *= 1 - k * k
    return a


def _fir(a: npt.NDArray[np.float64], state: npt.NDArray[np.float64],
         x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """x filtered by A(z), with `state` the samples just before x."""
    import numpy as np

    full = np.convolve(np.concatenate((state, x)), a)
    out: npt.NDArray[np.float64] = full[state.size:state.size + x.size]
    return out
