"""Level, frequency measurement and the tone classifier (frequency content + cadence)."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.dsp import FRAME_BYTES, SILENCE_FRAME
from gateway.dsp.analysis import (
    SILENCE_DBFS,
    ToneClassifier,
    dominant_frequency,
    frequencies_present,
    level_dbfs,
)
from gateway.dsp.dtmf import generate_sequence
from gateway.dsp.tones import ToneGenerator, ToneSpec, get_profile


def _sine(freq: float, seconds: float, peak: float = 32767.0) -> bytes:
    t = np.arange(round(seconds * 8000)) / 8000
    return np.rint(peak * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def _feed(cl: ToneClassifier, pcm: bytes) -> list[str]:
    """Feed PCM frame by frame; return the classification after each frame."""
    pcm += bytes(-len(pcm) % FRAME_BYTES)
    out = []
    for i in range(0, len(pcm), FRAME_BYTES):
        cl.feed(pcm[i : i + FRAME_BYTES])
        out.append(cl.classify())
    return out


def test_level_convention_square_zero_sine_minus_3() -> None:
    square = np.tile(np.array([32767, -32767] * 2, dtype="<i2"), 400).tobytes()
    assert level_dbfs(square) == pytest.approx(0.0, abs=0.01)
    assert level_dbfs(_sine(1000.0, 0.5)) == pytest.approx(-3.01, abs=0.02)
    assert level_dbfs(SILENCE_FRAME) == SILENCE_DBFS
    assert level_dbfs(b"") == SILENCE_DBFS


@pytest.mark.parametrize("freq", [150.0, 425.0, 697.0, 1000.0, 1633.0, 3300.0])
def test_dominant_frequency_within_half_percent_at_100_ms(freq: float) -> None:
    assert dominant_frequency(_sine(freq, 0.1, 8000.0)) == pytest.approx(freq, rel=0.005)


def test_dominant_frequency_picks_louder_component_and_silence_is_zero() -> None:
    pcm = np.frombuffer(_sine(480.0, 0.2, 4000.0), "<i2") + np.frombuffer(
        _sine(620.0, 0.2, 12000.0), "<i2"
    )
    assert dominant_frequency(pcm.astype("<i2").tobytes()) == pytest.approx(620.0, rel=0.005)
    assert dominant_frequency(bytes(1600)) == 0.0


def test_frequencies_present() -> None:
    pcm = ToneGenerator(get_profile("US").ringback).generate(0.5)
    assert frequencies_present(pcm, [350.0, 440.0, 480.0, 620.0]) == (440.0, 480.0)
    assert frequencies_present(bytes(8000), [440.0]) == ()


def _classify_tone(country: str, name: str, seconds: float) -> list[str]:
    profile = get_profile(country)
    cl = ToneClassifier(profile)
    return _feed(cl, ToneGenerator(profile.tone(name)).generate(seconds))


@pytest.mark.parametrize("country", ["US", "DE"])
@pytest.mark.parametrize("name", ["dial", "ringback", "busy", "reorder"])
def test_classifier_names_each_tone_of_the_profile(country: str, name: str) -> None:
    seq = _classify_tone(country, name, 7.0)
    assert seq[-1] == name
    # once settled, it stays settled through the off periods
    assert set(seq[-100:]) == {name}


def test_us_ringback_recognised_within_the_first_burst() -> None:
    seq = _classify_tone("US", "ringback", 1.0)
    assert seq[-1] == "ringback"


def test_de_ringback_recognised_when_the_first_burst_ends() -> None:
    # 1 s of 425 Hz could still be dial tone; the start of the 4 s gap settles it.
    seq = _classify_tone("DE", "ringback", 1.5)
    assert seq[int(0.9 / 0.02)] == "dial"
    assert seq[-1] == "ringback"


def test_us_busy_and_reorder_told_apart_by_cadence() -> None:
    assert _classify_tone("US", "busy", 3.0)[-1] == "busy"
    assert _classify_tone("US", "reorder", 3.0)[-1] == "reorder"


def test_uk_double_ring_and_stutter() -> None:
    assert _classify_tone("UK", "ringback", 6.0)[-1] == "ringback"
    assert _classify_tone("US", "stutter", 1.5)[-1] == "stutter"


def test_tone_falls_silent_after_its_cadence_stops() -> None:
    profile = get_profile("US")
    cl = ToneClassifier(profile)
    _feed(cl, ToneGenerator(profile.busy).generate(2.0))
    seq = _feed(cl, bytes(2 * 8000 * 2))
    assert seq[-1] == "silence"


def test_other_tone_speech_and_dtmf() -> None:
    cl = ToneClassifier(get_profile("US"))
    assert _feed(cl, _sine(1000.0, 1.0, 5000.0))[-1] == "tone"
    report = cl.report()
    assert report.dominant_hz == pytest.approx(1000.0, rel=0.005)
    assert report.level_dbfs == pytest.approx(-3.01 + 20 * np.log10(5000 / 32768), abs=0.1)

    cl = ToneClassifier(get_profile("US"))
    noise = np.random.default_rng(1).normal(0, 3000, 8000).astype("<i2").tobytes()
    assert _feed(cl, noise)[-1] == "audio"

    cl = ToneClassifier(get_profile("US"))
    seq = _feed(cl, generate_sequence("159#", 100, 100))
    assert "dtmf" in seq
    assert cl.report().digits == "159#"


def test_report_since_counts_time_in_current_state() -> None:
    profile = get_profile("US")
    cl = ToneClassifier(profile)
    _feed(cl, bytes(2 * 8000))
    _feed(cl, ToneGenerator(profile.dial).generate(2.0))
    report = cl.report()
    assert report.what == "dial"
    assert 1.8 <= report.since <= 2.0
    assert report.digits == ""
    cl.reset()
    assert cl.classify() == "silence"


def test_nonprofile_frequency_with_dial_cadence_is_just_a_tone() -> None:
    cl = ToneClassifier(get_profile("DE"))
    seq = _feed(cl, ToneGenerator(ToneSpec((600.0,))).generate(2.0))
    assert seq[-1] == "tone"


def test_click_before_a_cadenced_tone_does_not_hide_it() -> None:
    profile = get_profile("US")
    cl = ToneClassifier(profile)
    click = _sine(1000.0, 0.04, 8000.0)  # two frames: too short to analyse
    _feed(cl, bytes(1600) + click + bytes(2 * 8000 * 3 // 10))
    seq = _feed(cl, ToneGenerator(profile.busy).generate(3.0))
    assert seq[-1] == "busy"
