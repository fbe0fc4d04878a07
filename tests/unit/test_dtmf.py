"""DTMF: all keys, Q.24 frequency tolerance and twist, noise, timing, and no talk-off."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.dsp import FRAME_BYTES
from gateway.dsp.analysis import component_levels
from gateway.dsp.dtmf import DIGITS, DtmfDetector, detect, generate, generate_sequence
from gateway.dsp.tones import ToneGenerator, ToneSpec, get_profile

GAP = bytes(2 * 800)  # 100 ms of silence


def _framed(pcm: bytes) -> list[str]:
    """Feed in 20 ms frames, as the runtime does."""
    det = DtmfDetector()
    pcm += bytes(-len(pcm) % FRAME_BYTES)
    out: list[str] = []
    for i in range(0, len(pcm), FRAME_BYTES):
        out += det.feed(pcm[i : i + FRAME_BYTES])
    return out


def _with_noise(pcm: bytes, snr_db: float, seed: int) -> bytes:
    x = np.frombuffer(pcm, dtype="<i2").astype(float)
    on = x[np.abs(x) > 0]
    power = float(np.mean(on**2))
    noise = np.random.default_rng(seed).normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), len(x))
    return np.clip(np.rint(x + noise), -32768, 32767).astype("<i2").tobytes()


def test_generated_digit_has_both_components_at_level_and_twist() -> None:
    pcm = generate("5", 200, level_dbfs=-20.0, twist_db=3.0)
    levels = component_levels(pcm, [770.0, 1336.0])
    assert levels[770.0] == pytest.approx(-20.0, abs=0.3)
    assert levels[1336.0] == pytest.approx(-17.0, abs=0.3)
    assert len(pcm) == 2 * 1600


@pytest.mark.parametrize("digit", list(DIGITS))
def test_each_key_detected_once(digit: str) -> None:
    assert _framed(GAP + generate(digit, 100) + GAP) == [digit]


def test_sequence_of_all_keys_in_frames() -> None:
    assert "".join(_framed(generate_sequence(DIGITS))) == DIGITS


def test_lowercase_keys_and_bad_keys() -> None:
    assert detect(generate("a")) == "A"
    with pytest.raises(ValueError, match="expected one of"):
        generate("E")


@pytest.mark.parametrize("error", [-0.015, 0.015])
def test_frequency_error_within_1_5_percent_accepted(error: float) -> None:
    got = "".join(detect(GAP + generate(d, 100, freq_error=error) + GAP) for d in DIGITS)
    assert got == DIGITS


@pytest.mark.parametrize("error", [-0.035, 0.035, 0.05])
def test_frequency_error_beyond_3_5_percent_rejected(error: float) -> None:
    got = "".join(detect(GAP + generate(d, 100, freq_error=error) + GAP) for d in DIGITS)
    assert got == ""


@pytest.mark.parametrize("twist", [8.0, -4.0])
def test_twist_within_limits_accepted(twist: float) -> None:
    got = "".join(detect(generate(d, 100, level_dbfs=-22.0, twist_db=twist)) for d in DIGITS)
    assert got == DIGITS


@pytest.mark.parametrize("twist", [11.0, -7.0])
def test_excessive_twist_rejected(twist: float) -> None:
    got = "".join(detect(generate(d, 100, level_dbfs=-24.0, twist_db=twist)) for d in DIGITS)
    assert got == ""


@pytest.mark.parametrize("seed", range(5))
def test_detects_at_15_db_snr(seed: int) -> None:
    pcm = _with_noise(generate_sequence(DIGITS, 60, 60, level_dbfs=-16.0), 15.0, seed)
    assert "".join(_framed(pcm)) == DIGITS


def test_40_ms_tone_detected_short_blip_not() -> None:
    assert detect(GAP + generate("7", 40) + GAP) == "7"
    assert detect(GAP + generate("7", 20) + GAP) == ""


def test_repeated_digit_needs_a_gap_and_is_reported_per_press() -> None:
    presses = b"".join(generate("5", 50) + bytes(2 * 320) for _ in range(3))  # 40 ms gaps
    assert detect(presses) == "555"
    held = generate("5", 600)
    assert detect(held) == "5"  # a long press is one digit


def test_no_talk_off_on_noise() -> None:
    noise = np.random.default_rng(7).normal(0, 4000, 8000 * 30)
    assert detect(np.clip(noise, -32768, 32767).astype("<i2").tobytes()) == ""


def test_no_digits_from_call_progress_tones_or_1000_hz() -> None:
    for country in ("US", "UK", "DE", "FR"):
        for spec in get_profile(country).tones().values():
            assert detect(ToneGenerator(spec).generate(8.0)) == ""
    assert detect(ToneGenerator(ToneSpec((1000.0,), level_dbfs=-6.0)).generate(5.0)) == ""


def test_no_talk_off_on_voiced_speech_like_signal() -> None:
    rng = np.random.default_rng(3)
    t = np.arange(8000 * 20) / 8000
    f0 = 130 + 40 * np.sin(2 * np.pi * 0.7 * t) + 15 * np.sin(2 * np.pi * 3.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 8000
    x = np.zeros_like(t)
    for h in range(1, 28):  # harmonics shaped by two formants
        gain = np.exp(-((((h * 130) - 700) / 250) ** 2)) + 0.6 * np.exp(
            -((((h * 130) - 1400) / 300) ** 2)
        )
        x += gain * np.sin(h * phase + rng.uniform(0, 2 * np.pi))
    x *= np.sin(2 * np.pi * 1.5 * t) > -0.4  # syllables
    x = x / np.max(np.abs(x)) * 20000
    assert detect(x.astype("<i2").tobytes()) == ""


def test_odd_byte_count_is_refused() -> None:
    with pytest.raises(ValueError, match="odd byte count"):
        DtmfDetector().feed(b"\x00")


def test_reset_forgets_a_digit_in_progress() -> None:
    det = DtmfDetector()
    assert det.feed(generate("9", 100)) == ["9"]
    assert det.in_digit == "9"
    det.reset()
    assert det.in_digit is None
    assert det.feed(generate("9", 100)) == ["9"]  # same key again, reported again
