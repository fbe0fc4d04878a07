"""ALSA audio for real boards (the SLIC's codec, a USB sound card, a modem's UAC).

Uses pyalsaaudio, imported when a port is opened so that machines without it can still
import the hal and run simulations.
"""

from __future__ import annotations

from typing import Any

from gateway.dsp import FRAME_BYTES, FRAME_SAMPLES, SAMPLE_RATE
from hal.base import AudioPort, HalError


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
    """8 kHz S16LE mono capture and playback on one ALSA device, one period = 20 ms."""

    def __init__(self, device: str = "default") -> None:
        alsa = _alsaaudio()
        self.device = device
        common: dict[str, Any] = {
            "channels": 1,
            "rate": SAMPLE_RATE,
            "format": alsa.PCM_FORMAT_S16_LE,
            "periodsize": FRAME_SAMPLES,
            "device": device,
        }
        try:
            self._cap = alsa.PCM(alsa.PCM_CAPTURE, alsa.PCM_NONBLOCK, **common)
            self._play = alsa.PCM(alsa.PCM_PLAYBACK, alsa.PCM_NORMAL, **common)
        except alsa.ALSAAudioError as exc:
            raise HalError(f"ALSA device {device!r}: {exc}") from exc
        self._pending = b""
        self._closed = False

    def read_frame(self) -> bytes | None:
        """Next captured frame, or None if a whole frame has not arrived yet."""
        if self._closed:
            return None
        length, data = self._cap.read()
        if length > 0:
            self._pending += data
        if len(self._pending) < FRAME_BYTES:
            return None
        frame, self._pending = self._pending[:FRAME_BYTES], self._pending[FRAME_BYTES:]
        return frame

    def write_frame(self, frame: bytes) -> None:
        """Queue one frame for playback."""
        if not self._closed:
            self._play.write(frame)

    def close(self) -> None:
        """Close both directions; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._cap.close()
        self._play.close()
