"""WAV analysis for integration tests: what did a real peer actually hear?

Level convention: dBFS here is RMS relative to a full-scale sine, so a full-scale sine
reads 0 dBFS and a full-scale square wave +3 dBFS (the G.711/ITU "dBm0-like" habit).
If gateway/dsp/analysis.py later defines level differently, align this function with it.
"""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = [
    "FloatArray",
    "active_segment",
    "dominant_frequency",
    "level_dbfs",
    "read_wav",
    "tone_present",
    "write_tone_wav",
]

FloatArray = npt.NDArray[np.float64]

_PCM = 1
_FLOAT = 3
_EXTENSIBLE = 0xFFFE


def read_wav(path: Path | str) -> tuple[FloatArray, int]:
    """Read a WAV file as mono float samples in [-1, 1) and its sample rate.

    Written by hand rather than with `wave` because recordings of a peer that was
    killed can carry a RIFF/data size of 0 or too large; the data then runs to the end
    of the file. Handles 8/16/24/32-bit PCM, 32/64-bit float and WAVE_FORMAT_EXTENSIBLE;
    channels are averaged to mono.
    """
    data = Path(path).read_bytes()
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RF64") or data[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a RIFF/WAVE file")
    pos = 12
    fmt: tuple[int, int, int, int] | None = None
    payload: bytes | None = None
    while pos + 8 <= len(data):
        chunk_id = data[pos:pos + 4]
        size = struct.unpack_from("<I", data, pos + 4)[0]
        body_start = pos + 8
        if chunk_id == b"data":
            end = body_start + size
            if size == 0 or size == 0xFFFFFFFF or end > len(data):
                end = len(data)
            payload = data[body_start:end]
            break
        body = data[body_start:body_start + size]
        if chunk_id == b"fmt ":
            tag, channels, rate = struct.unpack_from("<HHI", body, 0)
            bits = struct.unpack_from("<H", body, 14)[0]
            if tag == _EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack_from("<H", body, 24)[0]
            fmt = (tag, channels, rate, bits)
        pos = body_start + size + (size & 1)
    if fmt is None:
        raise ValueError(f"{path}: no fmt chunk")
    if payload is None:
        raise ValueError(f"{path}: no data chunk")
    tag, channels, rate, bits = fmt
    if channels < 1:
        raise ValueError(f"{path}: {channels} channels")
    samples = _decode(payload, tag, bits, path)
    frames = len(samples) // channels
    samples = samples[: frames * channels].reshape(frames, channels).mean(axis=1)
    return samples.astype(np.float64), rate


def _decode(payload: bytes, tag: int, bits: int, path: Path | str) -> FloatArray:
    width = bits // 8
    payload = payload[: len(payload) - len(payload) % max(width, 1)]
    if tag == _PCM and bits == 16:
        return np.frombuffer(payload, "<i2").astype(np.float64) / 32768.0
    if tag == _PCM and bits == 8:
        return (np.frombuffer(payload, "u1").astype(np.float64) - 128.0) / 128.0
    if tag == _PCM and bits == 24:
        raw = np.frombuffer(payload, "u1").reshape(-1, 3).astype(np.int32)
        value = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
        value = np.where(value >= 1 << 23, value - (1 << 24), value)
        return value.astype(np.float64) / float(1 << 23)
    if tag == _PCM and bits == 32:
        return np.frombuffer(payload, "<i4").astype(np.float64) / float(1 << 31)
    if tag == _FLOAT and bits == 32:
        return np.frombuffer(payload, "<f4").astype(np.float64)
    if tag == _FLOAT and bits == 64:
        return np.frombuffer(payload, "<f8").astype(np.float64)
    raise ValueError(f"{path}: unsupported WAV encoding (format tag {tag}, {bits} bits)")


def level_dbfs(samples: FloatArray) -> float:
    """RMS level in dB relative to a full-scale sine; -inf for digital silence."""
    if len(samples) == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(np.square(samples))))
    if rms == 0.0:
        return -math.inf
    return 20.0 * math.log10(rms * math.sqrt(2.0))


def dominant_frequency(samples: FloatArray, rate: int) -> float:
    """Frequency (Hz) of the strongest spectral peak, refined between FFT bins.

    A Hann window keeps leakage from neighbouring tones down; parabolic interpolation
    on the log magnitude gets well under one bin of error, so a 2 % check on a
    one-second recording is meaningful. DC is ignored.
    """
    if len(samples) < 16:
        raise ValueError(f"need at least 16 samples to find a frequency, got {len(samples)}")
    x = samples - float(np.mean(samples))
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    spectrum[0] = 0.0
    k = int(np.argmax(spectrum))
    offset = 0.0
    if 0 < k < len(spectrum) - 1:
        a, b, c = (math.log(float(v) + 1e-30) for v in spectrum[k - 1:k + 2])
        denom = a - 2.0 * b + c
        if denom != 0.0:
            offset = 0.5 * (a - c) / denom
    return (k + offset) * rate / len(x)


def active_segment(
    samples: FloatArray, rate: int, threshold: float = -40.0, frame_ms: float = 20.0
) -> FloatArray:
    """Samples from the first to the last frame louder than `threshold` dBFS.

    Recordings start before media flows and end after it stops; trimming that silence
    keeps level and frequency checks about the signal. Returns an empty array when
    nothing is above the threshold.
    """
    n = max(1, int(rate * frame_ms / 1000.0))
    frames = len(samples) // n
    if frames == 0:
        return samples[:0]
    blocks = samples[: frames * n].reshape(frames, n)
    rms = np.sqrt(np.mean(np.square(blocks), axis=1))
    limit = 10.0 ** (threshold / 20.0) / math.sqrt(2.0)
    loud = np.nonzero(rms > limit)[0]
    if len(loud) == 0:
        return samples[:0]
    return samples[int(loud[0]) * n:(int(loud[-1]) + 1) * n]


def tone_present(
    samples: FloatArray, rate: int, freq: float, tolerance: float = 0.02,
    threshold: float = -40.0,
) -> bool:
    """True when the active part of the signal is dominated by `freq` (± tolerance)."""
    active = active_segment(samples, rate, threshold)
    if len(active) < rate // 10:
        return False
    return abs(dominant_frequency(active, rate) - freq) <= tolerance * freq


def write_tone_wav(path: Path, freq: float, dbfs: float = -12.0, seconds: float = 10.0) -> Path:
    """An 8 kHz mono 16-bit sine at `dbfs` (this module's convention) for a handset to play."""
    rate = 8000
    t = np.arange(int(rate * seconds)) / rate
    pcm = (10 ** (dbfs / 20.0) * 32767 * np.sin(2 * np.pi * freq * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path
