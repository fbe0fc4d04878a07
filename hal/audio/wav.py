"""WAV files in and out at the gateway's 8 kHz mono, for prompts, test speech and recordings."""

from __future__ import annotations

import wave
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.dsp import SAMPLE_RATE

if TYPE_CHECKING:
    import numpy as np  # loaded by read_wav_8k only: the simulated phone imports this module

_RESAMPLE_RATES = (8000, 16000, 11025, 22050, 44100, 48000, 32000, 24000)


def read_wav_8k(path: str | Path) -> bytes:
    """A 16-bit PCM WAV as 8 kHz mono S16LE: stereo is averaged, common rates resampled.

    Raises ValueError naming the file and what was expected for anything else.
    """
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except wave.Error as exc:
        raise ValueError(f"{path}: not a PCM WAV file ({exc})") from exc
    if width != 2:
        raise ValueError(f"{path}: {8 * width}-bit samples, expected 16-bit PCM")
    if channels not in (1, 2):
        raise ValueError(f"{path}: {channels} channels, expected mono or stereo")
    if rate not in _RESAMPLE_RATES:
        raise ValueError(
            f"{path}: {rate} Hz, expected one of {', '.join(map(str, _RESAMPLE_RATES))}"
        )
    import numpy as np

    x = np.frombuffer(raw, dtype="<i2").astype(np.float64)
    if channels == 2:
        x = x[: len(x) // 2 * 2].reshape(-1, 2).mean(axis=1)
    if rate != SAMPLE_RATE:
        x = _resample(x, rate)
    return np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()


def _resample(x: np.ndarray, rate: int) -> np.ndarray:
    """Band-limit to 3.6 kHz in the frequency domain, then interpolate to 8 kHz."""
    import numpy as np

    if not len(x):
        return x
    n = len(x)
    spec = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    cutoff = 0.45 * SAMPLE_RATE
    spec[freqs > cutoff] = 0.0
    filtered = np.fft.irfft(spec, n)
    out_n = int(n * SAMPLE_RATE / rate)
    t_out = np.arange(out_n) * (rate / SAMPLE_RATE)
    result: np.ndarray = np.interp(t_out, np.arange(n), filtered)
    return result


def write_wav(path: str | Path, pcm: bytes, rate: int = SAMPLE_RATE) -> None:
    """Write S16LE mono PCM as a WAV file."""
    if len(pcm) % 2:
        raise ValueError(f"{path}: odd PCM byte count {len(pcm)}, expected S16LE")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
