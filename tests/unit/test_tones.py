"""Tone profiles and the frame generator: frequencies, levels, cadence by sample count."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.dsp import FRAME_BYTES, SAMPLE_RATE
from gateway.dsp.analysis import component_levels, dominant_frequency, level_dbfs
from gateway.dsp.tones import (
    DEFAULT_LEVEL_DBFS,
    ToneGenerator,
    ToneSpec,
    countries,
    dbm0_to_dbfs,
    get_profile,
)


def _on_off(pcm: bytes) -> list[bool]:
    """Per-10 ms block: is there sound?"""
    x = np.frombuffer(pcm, dtype="<i2").astype(float)
    blocks = x[: len(x) // 80 * 80].reshape(-1, 80)
    return [bool(np.max(np.abs(b)) > 100) for b in blocks]


def _runs(flags: list[bool]) -> list[tuple[bool, int]]:
    out: list[tuple[bool, int]] = []
    for f in flags:
        if out and out[-1][0] == f:
            out[-1] = (f, out[-1][1] + 1)
        else:
            out.append((f, 1))
    return out


def test_profiles_carry_published_values() -> None:
    us, uk, de, fr = (get_profile(c) for c in ("US", "UK", "DE", "FR"))
    assert us.dial.frequencies == (350.0, 440.0) and us.dial.continuous
    assert us.ringback.frequencies == (440.0, 480.0) and us.ringback.cadence == (2.0, 4.0)
    assert us.busy.cadence == (0.5, 0.5) and us.reorder.cadence == (0.25, 0.25)
    assert uk.ringback.cadence == (0.4, 0.2, 0.4, 2.0) and uk.busy.frequencies == (400.0,)
    assert de.dial.frequencies == (425.0,) and de.ringback.cadence == (1.0, 4.0)
    assert de.busy.cadence == (0.48, 0.48)
    assert fr.ringback.cadence == (1.5, 3.5) and fr.dial.frequencies == (440.0,)
    assert us.ring_cadence == (2.0, 4.0) and uk.ring_cadence == (0.4, 0.2, 0.4, 2.0)
    assert de.ring_cadence == (1.0, 4.0) and fr.ring_cadence == (1.5, 3.5)
    assert set(countries()) >= {"US", "UK", "DE", "FR"}


def test_get_profile_aliases_and_errors() -> None:
    assert get_profile("gb") is get_profile("UK")
    assert get_profile(" us ").country == "US"
    assert get_profile("DE").tone("congestion") == get_profile("DE").reorder
    with pytest.raises(ValueError, match="expected one of"):
        get_profile("XX")
    with pytest.raises(KeyError, match="known"):
        get_profile("US").tone("howler-nonexistent")


def test_bad_spec_is_refused_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="cadence"):
        ToneSpec((440.0,), (0.5,))
    with pytest.raises(ValueError, match="frequencies"):
        ToneSpec((5000.0,))


def test_frames_are_320_bytes_with_the_right_frequencies_and_level() -> None:
    gen = ToneGenerator(get_profile("US").dial)
    frames = [gen.next_frame() for _ in range(25)]
    assert all(len(f) == FRAME_BYTES for f in frames)
    pcm = b"".join(frames)
    levels = component_levels(pcm, [350.0, 440.0, 480.0])
    assert levels[350.0] == pytest.approx(DEFAULT_LEVEL_DBFS, abs=0.3)
    assert levels[440.0] == pytest.approx(DEFAULT_LEVEL_DBFS, abs=0.3)
    assert levels[480.0] < DEFAULT_LEVEL_DBFS - 30
    # two equal components: total is 3 dB above each
    assert level_dbfs(pcm) == pytest.approx(DEFAULT_LEVEL_DBFS + 3.01, abs=0.3)
    assert dbm0_to_dbfs(-13.0) == pytest.approx(DEFAULT_LEVEL_DBFS)


def test_phase_continuous_across_frames() -> None:
    gen = ToneGenerator(ToneSpec((1000.0,), level_dbfs=-6.0))
    pcm = b"".join(gen.next_frame() for _ in range(10))
    x = np.frombuffer(pcm, dtype="<i2").astype(float)
    t = np.arange(len(x)) / SAMPLE_RATE
    amp = 32768 * np.sqrt(2) * 10 ** (-6 / 20)
    ideal = amp * np.sin(2 * np.pi * 1000 * t)
    assert np.max(np.abs(x - ideal)) <= 1.0  # only rounding: no phase jump at frame edges


def test_cadence_kept_by_sample_count_over_many_periods() -> None:
    gen = ToneGenerator(get_profile("US").busy)
    pcm = b"".join(gen.next_frame() for _ in range(50 * 10))  # 10 s = 10 periods
    runs = _runs(_on_off(pcm))
    assert [r[1] for r in runs] == [50] * 20  # 0.5 s on / 0.5 s off, exactly, no drift
    assert runs[0][0] is True


def test_uk_ringback_double_ring_pattern() -> None:
    gen = ToneGenerator(get_profile("UK").ringback)
    runs = _runs(_on_off(gen.generate(6.0)))
    assert [n for _, n in runs[:4]] == [40, 20, 40, 200]


def test_stutter_then_steady() -> None:
    gen = ToneGenerator(get_profile("US").stutter)
    runs = _runs(_on_off(gen.generate(4.0)))
    assert [n for _, n in runs[:20]] == [10] * 20
    assert runs[20] == (True, 400 - 200)


def test_generated_tone_frequency_measured() -> None:
    pcm = ToneGenerator(get_profile("DE").dial).generate(0.2)
    assert dominant_frequency(pcm) == pytest.approx(425.0, rel=0.005)
