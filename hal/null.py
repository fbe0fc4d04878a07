"""The "null" FXS backend: a port that sends a fixed signal and discards what it hears.

For capacity work (bench/media.py): the gateway's own cost per call, without the simulated
handset's tone analysis or any hardware. The "handset" says a steady tone (1 kHz at
-20 dBm0 by default) into every call and ignores the earpiece. It answers when rung: after
``auto_answer_ms`` of ringing (default 0: the first frame of ringing), and it hangs up
``auto_hangup_ms`` after answering when that is set (else it stays off hook until rung off).

Options: ``tone_hz`` (default 1000), ``level_dbm0`` (default -20), ``auto_answer_ms``,
``auto_hangup_ms``, and the line options ``echo_canceller`` / ``echo_tail_ms`` (read by the
runtime's line port; off by default here, as there is no hybrid).
"""

from __future__ import annotations

import math
import time
from array import array
from collections.abc import Mapping
from typing import Any

from gateway.dsp import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE
from hal.base import FxsPort, HalError, HookCallback

__all__ = ["NullFxs", "tone_frames"]

DBM0_PEAK = 32768 * 10 ** (-3.14 / 20)  # 0 dBm0: a sine 3.14 dB under G.711's full scale


def tone_frames(hz: float, level_dbm0: float) -> list[bytes]:
    """A whole number of 20 ms frames holding a seamless loop of the tone."""
    amplitude = DBM0_PEAK * 10 ** (level_dbm0 / 20)
    cycles = math.gcd(int(round(hz)), SAMPLE_RATE)  # loop length: SAMPLE_RATE / gcd samples
    period = SAMPLE_RATE // cycles
    n_frames = max(1, math.lcm(period, FRAME_SAMPLES) // FRAME_SAMPLES)
    samples = array("h", (int(round(amplitude * math.sin(2 * math.pi * hz * i / SAMPLE_RATE)))
                          for i in range(n_frames * FRAME_SAMPLES)))
    pcm = samples.tobytes()
    step = FRAME_SAMPLES * 2
    return [pcm[i:i + step] for i in range(0, len(pcm), step)]


_KNOWN = {"tone_hz", "level_dbm0", "auto_answer_ms", "auto_hangup_ms", "echo_canceller",
          "echo_tail_ms"}


class NullFxs(FxsPort):
    """An always-answering port whose handset says a steady tone and hears nothing."""

    def __init__(self, name: str, options: Mapping[str, Any] | None = None,
                 clock: Any = time.monotonic) -> None:
        opts = dict(options or {})
        unknown = set(opts) - _KNOWN
        if unknown:
            raise HalError(f"null FXS {name}: unknown option(s) {', '.join(sorted(unknown))}")
        self.name = name
        self._frames = tone_frames(float(opts.get("tone_hz", 1000)),
                                   float(opts.get("level_dbm0", -20)))
        self._answer_frames = _frames(opts.get("auto_answer_ms"), 0) or 0
        self._hangup_frames = _frames(opts.get("auto_hangup_ms"), None)
        self._clock = clock
        self._callback: HookCallback | None = None
        self._off_hook = False
        self._ringing_for: int | None = None  # frames since ringing started
        self._talk_frames = 0
        self._i = 0
        self.frames_heard = 0
        self.frames_said = 0
        self.ringing = False
        self.closed = False

    def start(self, on_hook_change: HookCallback) -> None:
        self._callback = on_hook_change

    def is_off_hook(self) -> bool:
        return self._off_hook

    def set_ringing(self, on: bool) -> None:
        self.ringing = on
        if on and self._ringing_for is None and not self._off_hook:
            self._ringing_for = 0

    def set_polarity(self, reversed: bool) -> None:
        pass

    def _hook(self, off: bool) -> None:
        self._off_hook = off
        self._talk_frames = 0
        if self._callback is not None:
            self._callback(off, self._clock())

    def read_frame(self) -> bytes | None:
        """The steady tone while off hook (nothing on hook); also the port's 20 ms clock."""
        if self.closed:
            return None
        if self._ringing_for is not None:
            self._ringing_for += 1
            if self._ringing_for > self._answer_frames:
                self._ringing_for = None
                self._hook(True)
        elif self._off_hook and self._hangup_frames is not None:
            self._talk_frames += 1
            if self._talk_frames > self._hangup_frames:
                self._hook(False)
        if not self._off_hook:
            return None
        frame = self._frames[self._i]
        self._i = (self._i + 1) % len(self._frames)
        self.frames_said += 1
        return frame

    def write_frame(self, frame: bytes) -> None:
        self.frames_heard += 1  # and nothing else: the null handset discards what it hears

    def close(self) -> None:
        self.closed = True
        self.ringing = False


def _frames(ms: Any, default: int | None) -> int | None:
    if ms is None:
        return default
    if isinstance(ms, bool) or not isinstance(ms, int | float) or ms < 0:
        raise HalError(f"null FXS: {ms!r} is not milliseconds >= 0")
    return int(ms // FRAME_MS)
