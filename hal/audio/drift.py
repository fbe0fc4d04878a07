"""Clock-drift compensation between a sound card and the loop that feeds it (pure).

A sound card runs on its own crystal. Against the 20 ms loop clock (which paces RTP) it
is typically tens to a few hundred ppm off: at 8 kHz, 100 ppm is 0.8 samples a second,
48 a minute. Left alone, a playback buffer slowly drains to an underrun (or fills up
with latency) and a capture buffer does the opposite.

:class:`DriftCompensator` watches the fill level of such a buffer (samples queued between
the two clocks), measured once per frame. It smooths the fill (exponential average,
``tau_s``), and when the smoothed level has strayed more than ``deadband`` samples from
``target`` it asks for one sample to be added or dropped, at most one per ``min_gap_s``.
Its own corrections are credited to the smoothed level at once, so it never chases them.
Because the fill stays bounded, the corrections add up to exactly the drift: over a long
run ``net_corrections`` is ppm x rate x time.

It also estimates the drift in ppm from the fill over time: a least-squares slope of the
smoothed fill with the corrections taken back out, over the last ``window_s`` seconds.
"""

from __future__ import annotations

from collections import deque

__all__ = ["DriftCompensator"]


class DriftCompensator:
    """Fill level in, "+1 / -1 / 0 sample" out; see the module docstring."""

    def __init__(
        self,
        target: float,
        *,
        rate: int = 8000,
        deadband: float = 8.0,
        tau_s: float = 4.0,
        min_gap_s: float = 0.25,
        window_s: float = 60.0,
    ) -> None:
        if target <= 0 or deadband <= 0 or tau_s <= 0 or min_gap_s < 0 or window_s <= 0:
            raise ValueError(
                f"drift compensator: target {target}, deadband {deadband}, tau {tau_s} s, "
                f"gap {min_gap_s} s, window {window_s} s; expected positive values"
            )
        self.target = float(target)
        self.rate = rate
        self.deadband = deadband
        self.tau_s = tau_s
        self.min_gap_s = min_gap_s
        self.window_s = window_s
        self.added = 0
        """Samples the compensator has asked to add (fill raised by one each)."""
        self.dropped = 0
        """Samples it has asked to drop."""
        self._smooth: float | None = None
        self._last_t: float | None = None
        self._last_fix = float("-inf")
        self._points: deque[tuple[float, float]] = deque()
        self._next_point = float("-inf")

    @property
    def net_corrections(self) -> int:
        """Samples added minus samples dropped."""
        return self.added - self.dropped

    @property
    def smoothed_fill(self) -> float | None:
        """The averaged fill level (None before the first update)."""
        return self._smooth

    def reset(self) -> None:
        """Forget the fill history (after an underrun or a restart of the stream); the
        counters and the drift estimate's points stay."""
        self._smooth = None
        self._last_t = None

    def update(self, fill: float, now: float) -> int:
        """Record the fill measured at ``now``; return +1 to add a sample, -1 to drop one,
        0 to leave the stream alone. The caller applies the answer before the next
        measurement."""
        if self._smooth is None or self._last_t is None:
            self._smooth = float(fill)
        else:
            dt = max(0.0, now - self._last_t)
            alpha = min(1.0, dt / self.tau_s)
            self._smooth += alpha * (fill - self._smooth)
        self._last_t = now
        self._record(self._smooth, now)
        if now - self._last_fix < self.min_gap_s:
            return 0
        error = self._smooth - self.target
        if error < -self.deadband:
            step = 1
        elif error > self.deadband:
            step = -1
        else:
            return 0
        self._last_fix = now
        self._smooth += step
        if step > 0:
            self.added += 1
        else:
            self.dropped += 1
        return step

    def _record(self, smooth: float, now: float) -> None:
        if now < self._next_point:
            return
        self._next_point = now + 1.0  # one point a second is plenty for a slope
        self._points.append((now, smooth - self.net_corrections))
        while self._points and now - self._points[0][0] > self.window_s:
            self._points.popleft()

    @property
    def fill_drift_ppm(self) -> float | None:
        """How fast the uncorrected fill moves, in ppm of the sample rate (positive: the
        producer side runs fast), or None until 10 s of history exist."""
        pts = self._points
        if len(pts) < 3 or pts[-1][0] - pts[0][0] < 10.0:
            return None
        n = len(pts)
        mt = sum(t for t, _ in pts) / n
        mf = sum(f for _, f in pts) / n
        sxx = sum((t - mt) ** 2 for t, _ in pts)
        sxy = sum((t - mt) * (f - mf) for t, f in pts)
        slope = sxy / sxx  # samples per second
        return slope / self.rate * 1e6
