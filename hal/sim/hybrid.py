"""A simulated 2-wire hybrid: what the port plays comes back in what it captures.

A SLIC's hybrid never balances the line perfectly, so the earpiece signal returns on the
mouthpiece path a few ms later and some dB down. :class:`HybridEcho` models that with a
dispersive impulse response (a delay, then a short decaying, band-limited ring) scaled to the
given echo return loss (ERL, the power ratio for a white signal). The sim FXS backend puts it
between the driver and the virtual phone when ``echo_delay_ms`` is set, so the line's echo
canceller meets the echo it would meet on hardware.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.dsp import FRAME_SAMPLES, SAMPLE_RATE, SILENCE_FRAME
from hal.base import AudioPort

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["HybridAudio", "HybridEcho", "impulse_response"]


def impulse_response(delay_ms: float, erl_db: float, spread_ms: float = 2.0) -> npt.NDArray[
        np.float64]:
    """The echo path: `delay_ms` of flat delay, then a ring of `spread_ms`, at `erl_db` loss."""
    import numpy as np

    delay = int(round(delay_ms * SAMPLE_RATE / 1000))
    n = max(4, int(round(spread_ms * SAMPLE_RATE / 1000)))
    k = np.arange(n)
    # a short, nearly flat ring (within about 3 dB over 300-3400 Hz) with no DC response
    ring = np.exp(-k / (n / 6)) * np.cos(np.pi * k * 0.9)
    ring[0] += 1.0
    ring -= ring.mean()
    ring *= 10 ** (-erl_db / 20) / np.sqrt(ring @ ring)
    return np.concatenate((np.zeros(delay), ring))


class HybridEcho:
    """Adds the echo of each played frame to later captured frames (20 ms, 16-bit PCM)."""

    def __init__(self, delay_ms: float, erl_db: float) -> None:
        import numpy as np

        if not 0 <= delay_ms <= 200:
            raise ValueError(f"echo delay must be 0..200 ms, got {delay_ms}")
        self.delay_ms = delay_ms
        self.erl_db = erl_db
        self.h = impulse_response(delay_ms, erl_db)
        self._tail = np.zeros(len(self.h) - 1 + FRAME_SAMPLES)  # echo still to come

    def played(self, frame: bytes) -> None:
        """A frame went to the earpiece: its echo starts arriving from now on."""
        import numpy as np

        x = np.frombuffer(frame, dtype="<i2").astype(np.float64)
        echo = np.convolve(x, self.h)
        self._tail[:echo.size] += echo

    def echo_frame(self) -> npt.NDArray[np.float64]:
        """The echo in the next captured frame (and forget it)."""
        import numpy as np

        out = self._tail[:FRAME_SAMPLES].copy()
        self._tail = np.concatenate((self._tail[FRAME_SAMPLES:], np.zeros(FRAME_SAMPLES)))
        return out

    def add_to(self, near: bytes) -> bytes:
        """The captured frame with the line's echo added."""
        import numpy as np

        d = np.frombuffer(near, dtype="<i2").astype(np.float64) + self.echo_frame()
        return bytes(np.clip(np.round(d), -32768, 32767).astype("<i2").tobytes())


class HybridAudio(AudioPort):
    """An AudioPort with the hybrid between the driver and the phone: what is written to
    the earpiece comes back, delayed and attenuated, in what is read from the mouthpiece."""

    def __init__(self, inner: AudioPort, echo: HybridEcho) -> None:
        self.inner = inner
        self.echo = echo

    def read_frame(self) -> bytes | None:
        frame = self.inner.read_frame()
        return self.echo.add_to(frame if frame is not None else SILENCE_FRAME)

    def write_frame(self, frame: bytes) -> None:
        self.echo.played(frame)
        self.inner.write_frame(frame)

    def close(self) -> None:
        self.inner.close()
