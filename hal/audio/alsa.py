"""ALSA audio for real boards (the SLIC's codec, a USB or I2S sound card, a modem's UAC).

Uses pyalsaaudio (>= 0.10, for ``PCM.avail``), imported when a port is opened so that
machines without it can still import the hal and run simulations.

Both directions are opened non-blocking, so a call from the event loop never waits on
the card: ``write_frame`` hands the card what fits now and keeps the rest in a short
bounded queue, ``read_frame`` takes what the card has captured and returns a frame or
None. Around that:

- **gaps are filled with silence**: the stream starts (and restarts after an underrun)
  with ``target_ms`` of silence, a card left with under one frame after a write gets a
  frame of silence so it does not run dry before the next tick, and a capture gap is a
  None (the line port plays silence for it) that restarts the capture cushion;
- **latency is bounded**: a frame that arrives while the card still holds the whole
  ``target_ms`` cushion and a frame more is dropped (counted), and captured audio beyond ``target_ms`` + 2
  frames is dropped a frame at a time;
- **under- and overruns are counted**: a card that ran dry (playback) or overflowed
  (capture) is counted, recovered and re-primed;
- **latency is measured**: the samples queued in the card plus ours, per direction;
- **clock drift is compensated** (:mod:`hal.audio.drift`): the card's crystal against the
  loop clock that calls us every 20 ms. One sample is added to or dropped from the stream
  whenever the fill level drifts away from its target, and the drift is estimated in ppm.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from gateway.dsp import FRAME_BYTES, FRAME_SAMPLES, SAMPLE_RATE
from hal.audio.drift import DriftCompensator
from hal.base import AudioPort, HalError

_SILENCE = bytes(FRAME_BYTES)
_MAX_READS = 16
"""Periods read from the card per read_frame at most (a long stall is an overrun anyway)."""


def _alsaaudio() -> Any:
    try:
        import alsaaudio
    except ImportError as exc:
        raise HalError(
            "ALSA audio needs module 'alsaaudio'; install pyalsaaudio "
            "(apt install python3-alsaaudio, or pip install 'branchline[hw]')"
        ) from exc
    return alsaaudio


class AlsaAudio(AudioPort):
    """8 kHz S16LE mono capture and playback on one ALSA device.

    Periods are 10 ms (two per frame), eight to the buffer: a card whose pointer moves a
    period at a time (I2S DMA) then still shows its fill to within 10 ms, which the drift
    compensator needs.

    ``alsa`` replaces the pyalsaaudio module (tests pass a fake card); ``clock`` is the loop
    clock the card is compared with; ``drift=False`` turns compensation off for a caller
    paced by the card itself.
    """

    def __init__(
        self,
        device: str = "default",
        *,
        period_ms: float = 10.0,
        periods: int = 8,
        target_ms: float = 40.0,
        drift: bool = True,
        clock: Callable[[], float] = time.monotonic,
        alsa: Any = None,
    ) -> None:
        alsa = alsa if alsa is not None else _alsaaudio()
        self._alsa = alsa
        self.device = device
        self._clock = clock
        period = round(period_ms * SAMPLE_RATE / 1000)
        buffer_ms = period_ms * periods
        if (period < 8 or FRAME_SAMPLES % period or periods < 2
                or not FRAME_SAMPLES / SAMPLE_RATE * 1000 <= target_ms <= buffer_ms - 40):
            raise HalError(
                f"ALSA device {device!r}: {periods} periods of {period_ms} ms, target "
                f"{target_ms} ms; expected a period that divides 20 ms, >= 2 periods, and a "
                "target from 20 ms to the buffer's length less 40 ms"
            )
        common: dict[str, Any] = {
            "channels": 1,
            "rate": SAMPLE_RATE,
            "format": alsa.PCM_FORMAT_S16_LE,
            "periodsize": period,
            "periods": periods,
            "device": device,
        }
        try:
            self._cap = alsa.PCM(alsa.PCM_CAPTURE, alsa.PCM_NONBLOCK, **common)
            try:
                self._play = alsa.PCM(alsa.PCM_PLAYBACK, alsa.PCM_NONBLOCK, **common)
            except Exception:
                self._cap.close()
                raise
        except alsa.ALSAAudioError as exc:
            raise HalError(f"ALSA device {device!r}: {exc}") from exc
        self.buffer_samples = int(_info(self._play).get("buffer_size", periods * period))
        target = min(target_ms * SAMPLE_RATE / 1000.0, self.buffer_samples - FRAME_SAMPLES)
        self.target_samples = max(float(FRAME_SAMPLES), target)
        self._queue: deque[bytes] = deque()
        self._queue_samples = 0
        self._pending = bytearray()
        self._play_running = False
        self._cap_primed = False
        self._closed = False
        # the card hands over whole periods: keep half a frame more on the capture side so
        # a whole frame is there whatever the phase of its period against our tick
        self.capture_target = self.target_samples + FRAME_SAMPLES / 2
        self._high_water = self.capture_target + 2 * FRAME_SAMPLES
        self._play_drift = DriftCompensator(self.target_samples) if drift else None
        self._cap_drift = DriftCompensator(self.capture_target) if drift else None
        self.underruns = 0
        """Times the card's playback buffer ran dry."""
        self.overruns = 0
        """Times the card's capture buffer overflowed (captured audio lost)."""
        self.silence_frames = 0
        """Frames of silence written to keep the card from running dry."""
        self.late_dropped = 0
        """Playback frames dropped because the card already held the cushion and a frame."""
        self.capture_dropped = 0
        """Captured frames dropped for the same reason."""
        self.capture_gaps = 0
        """read_frame calls that found less than a frame after capture had started."""

    # -- playback -------------------------------------------------------------------------

    def write_frame(self, frame: bytes) -> None:
        """Queue one frame for playback and hand the card what fits; never blocks."""
        if self._closed:
            return
        if len(frame) != FRAME_BYTES:
            raise HalError(f"audio frame: {len(frame)} bytes, expected {FRAME_BYTES}")
        queued = self._card_queued()
        if self._play_running and queued + self._queue_samples >= self.target_samples + \
                FRAME_SAMPLES:
            # the card still holds the whole cushion and a frame more (this tick came early,
            # or silence went in for a late one): skip this frame rather than add latency.
            # (A card that reports its pointer a period at a time shows up to one frame
            # more than it holds, hence the extra frame.)
            self.late_dropped += 1
            return
        if self._play_drift is not None and self._play_running:
            fill = queued + self._queue_samples + FRAME_SAMPLES  # once this frame is in
            frame = _adjust_tail(frame, self._play_drift.update(fill, self._clock()))
        self._queue.append(frame)
        self._queue_samples += len(frame) // 2
        self._feed(queued)

    def _card_queued(self) -> int:
        """Samples waiting in the card's playback buffer; counts and recovers an underrun."""
        try:
            avail = int(self._play.avail())
            state = self._play.state() if hasattr(self._play, "state") else None
        except self._alsa.ALSAAudioError:
            avail, state = -1, None
        xrun = avail < 0 or state == getattr(self._alsa, "PCM_STATE_XRUN", object())
        if self._play_running and (xrun or avail >= self.buffer_samples):
            self.underruns += 1
            self._play_running = False
            if self._play_drift is not None:
                self._play_drift.reset()
        if avail < 0:
            return 0
        return max(0, self.buffer_samples - avail)

    def _feed(self, queued: int) -> None:
        if not self._play_running:
            # (re)start: prime the card with silence up to the target before real audio
            while queued + self._queue_samples < self.target_samples:
                if not self._write(_SILENCE):
                    break
                self.silence_frames += 1
                queued += FRAME_SAMPLES
            self._play_running = True
        while self._queue:
            data = self._queue[0]
            written = self._write(data)
            if written == 0:
                return  # the card is full: the rest waits for the next tick
            self._queue.popleft()
            self._queue_samples -= len(data) // 2
            if written < len(data) // 2:
                rest = data[written * 2 :]
                self._queue.appendleft(rest)
                self._queue_samples += len(rest) // 2
                return
            queued += written
        if queued < FRAME_SAMPLES:
            # under one frame left (a tick was lost): silence now, or the card runs dry
            # before the next tick
            if self._write(_SILENCE):
                self.silence_frames += 1

    def _write(self, data: bytes) -> int:
        """Samples the card took (0 when full); a negative reply is an underrun."""
        try:
            n = int(self._play.write(data))
        except self._alsa.ALSAAudioError:
            n = -1
        if n < 0:
            self.underruns += 1
            self._play_running = False
            return 0
        return n

    @property
    def playback_latency_ms(self) -> float:
        """Earpiece audio queued between us and the card's output, in ms."""
        return (self._card_queued_quiet() + self._queue_samples) * 1000.0 / SAMPLE_RATE

    def _card_queued_quiet(self) -> int:
        try:
            return max(0, self.buffer_samples - int(self._play.avail()))
        except self._alsa.ALSAAudioError:
            return 0

    # -- capture --------------------------------------------------------------------------

    def read_frame(self) -> bytes | None:
        """The next captured frame, or None if a whole frame is not there yet; never blocks."""
        if self._closed:
            return None
        for _ in range(_MAX_READS):
            try:
                length, data = self._cap.read()
            except self._alsa.ALSAAudioError:
                length, data = -1, b""
            if length < 0:  # overrun: the card dropped audio; its stream restarts
                self.overruns += 1
                self._cap_primed = False
                if self._cap_drift is not None:
                    self._cap_drift.reset()
                continue
            if length == 0:
                break
            self._pending += data[: length * 2]
        fill = len(self._pending) // 2 + self._capture_avail()
        if not self._cap_primed:
            if fill < self.capture_target:
                return None
            self._cap_primed = True  # start at the target: the oldest excess goes
            excess = min(len(self._pending) // 2, int(fill - self.capture_target))
            del self._pending[: excess * 2]
        elif self._cap_drift is not None:
            step = self._cap_drift.update(fill, self._clock())
            if step > 0 and len(self._pending) >= 2:
                self._pending[0:0] = self._pending[0:2]
            elif step < 0 and len(self._pending) >= 2:
                del self._pending[0:2]
        while len(self._pending) // 2 > self._high_water:
            del self._pending[:FRAME_BYTES]
            self.capture_dropped += 1
        if len(self._pending) < FRAME_BYTES:
            self.capture_gaps += 1
            self._cap_primed = False  # build the cushion up again before going on
            return None
        frame = bytes(self._pending[:FRAME_BYTES])
        del self._pending[:FRAME_BYTES]
        return frame

    def _capture_avail(self) -> int:
        try:
            return max(0, int(self._cap.avail()))
        except (self._alsa.ALSAAudioError, AttributeError):
            return 0

    @property
    def capture_latency_ms(self) -> float:
        """Mouthpiece audio waiting between the card's input and us, in ms."""
        return (len(self._pending) // 2 + self._capture_avail()) * 1000.0 / SAMPLE_RATE

    # -- drift and stats ------------------------------------------------------------------

    @property
    def card_ppm(self) -> float | None:
        """The card's clock against the loop clock in ppm (positive: the card runs fast),
        estimated from the fill levels over the last minute; None until known."""
        estimates = []
        if self._play_drift is not None and (p := self._play_drift.fill_drift_ppm) is not None:
            estimates.append(-p)  # a fast card drains the playback buffer
        if self._cap_drift is not None and (c := self._cap_drift.fill_drift_ppm) is not None:
            estimates.append(c)  # and fills the capture buffer
        return sum(estimates) / len(estimates) if estimates else None

    def stats(self) -> dict[str, Any]:
        """Counters and figures for the control socket and tests."""
        play, cap = self._play_drift, self._cap_drift
        return {
            "device": self.device,
            "underruns": self.underruns,
            "overruns": self.overruns,
            "silence_frames": self.silence_frames,
            "late_dropped": self.late_dropped,
            "capture_dropped": self.capture_dropped,
            "capture_gaps": self.capture_gaps,
            "playback_latency_ms": round(self.playback_latency_ms, 1),
            "capture_latency_ms": round(self.capture_latency_ms, 1),
            "card_ppm": None if self.card_ppm is None else round(self.card_ppm, 1),
            "samples_added": (play.added if play else 0) + (cap.added if cap else 0),
            "samples_dropped": (play.dropped if play else 0) + (cap.dropped if cap else 0),
        }

    def close(self) -> None:
        """Close both directions; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._cap.close()
        self._play.close()


def _info(pcm: Any) -> dict[str, Any]:
    try:
        info = pcm.info()
    except Exception:  # older pyalsaaudio, or a fake without it
        return {}
    return info if isinstance(info, dict) else {}


def _adjust_tail(frame: bytes, step: int) -> bytes:
    """Add (step 1: repeat the last sample) or drop (step -1) one sample at the frame's end."""
    if step > 0:
        return frame + frame[-2:]
    if step < 0:
        return frame[:-2]
    return frame
