"""DTMF reception at the ITU-T Q.24 edges and beyond, through the daemon's own detector path.

Every case is generated here and fed, 20 ms at a time, to `LinePort.digits_heard` (the call
the runtime's tick makes for an off-hook FXS line), so what is measured is what the daemon
does. Valid signals must all be detected (100 %), invalid ones never (0 %):

- tone and gap durations: 40 ms tones with 40 ms gaps detected, tones of 23 ms or less not;
- frequency: +-1.5 % on both groups detected, +-3.5 % rejected;
- twist: 8 dB normal and 4 dB reverse detected, 10 dB normal and 6 dB reverse rejected;
- noise: 15 dB SNR (white, over the band) detected;
- talk-off: ten minutes of espeak-ng speech in several voices and languages, mixed with
  noise, gives no digit at all (see test_dtmf_talkoff.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pytest

from gateway.dsp import FRAME_BYTES, SAMPLE_RATE
from gateway.dsp.dtmf import DIGITS, generate
from gateway.runtime.ports import LinePort

LEVEL = -16.0  # dBFS per component, a typical handset level (about -13 dBm0)


@dataclass
class _OffHookPort:
    """The hal side of an FXS port with its handset off hook: only what digits_heard uses."""

    def is_off_hook(self) -> bool:
        return True


def _line_port() -> LinePort:
    return LinePort("fxs1", "201", None, cast(Any, _OffHookPort()), cast(Any, None), cast(Any, None))


def heard(pcm: bytes) -> str:
    """Digits the daemon's FXS path reports for this handset audio (20 ms per tick)."""
    lp = _line_port()
    pcm += bytes(-len(pcm) % FRAME_BYTES) + bytes(FRAME_BYTES * 5)
    out: list[str] = []
    for i in range(0, len(pcm), FRAME_BYTES):
        lp.mic = pcm[i : i + FRAME_BYTES]
        out += lp.digits_heard()
    return "".join(out)


def silence(ms: float) -> bytes:
    return bytes(2 * round(ms * SAMPLE_RATE / 1000))


def train(
    digits: str, on_ms: float, off_ms: float, *, lead_ms: float = 0.0, **kw: float
) -> bytes:
    """Key presses with `off_ms` gaps; `lead_ms` shifts them against the 20 ms frames."""
    out = bytearray(silence(60 + lead_ms))
    for d in digits:
        out += generate(d, on_ms, kw.get("level", LEVEL), kw.get("twist", 0.0),
                        freq_error=kw.get("freq", 0.0))
        out += silence(off_ms)
    out += silence(60)
    return bytes(out)


def add_noise(pcm: bytes, snr_db: float, seed: int) -> bytes:
    """White noise at `snr_db` below the power of the tone-bearing samples."""
    x = np.frombuffer(pcm, dtype="<i2").astype(float)
    on = x[np.abs(x) > 0]
    sigma = np.sqrt(float(np.mean(on**2)) / 10 ** (snr_db / 10))
    noise = np.random.default_rng(seed).normal(0.0, sigma, len(x))
    return np.clip(np.rint(x + noise), -32768, 32767).astype("<i2").tobytes()


# Phase offsets (ms) of the presses against the 20 ms capture frames and 5 ms hops.
LEADS = (0.0, 1.25, 2.5, 3.75, 7.0, 11.0, 13.5, 17.0)


# ------------------------------------------------------------------ durations and gaps


@pytest.mark.parametrize("lead", LEADS)
def test_40_ms_tones_with_40_ms_gaps_all_detected(lead: float) -> None:
    # every digit, then every digit twice in a row (a repeat needs its gap to be seen)
    seq = DIGITS + "".join(d + d for d in DIGITS)
    assert heard(train(seq, 40, 40, lead_ms=lead)) == seq


@pytest.mark.parametrize("on_ms", [40, 45, 50, 60, 80, 100, 200, 500, 2000])
def test_every_digit_at_every_valid_duration(on_ms: int) -> None:
    assert heard(train(DIGITS, on_ms, 60, lead_ms=3.0)) == DIGITS


@pytest.mark.parametrize("on_ms", [5, 10, 15, 20, 23])
@pytest.mark.parametrize("lead", LEADS)
def test_tones_of_23_ms_or_less_rejected(on_ms: int, lead: float) -> None:
    assert heard(train(DIGITS, on_ms, 60, lead_ms=lead)) == ""


@pytest.mark.parametrize("gap_ms", [40, 50, 60, 100])
@pytest.mark.parametrize("lead", LEADS[:4])
def test_same_digit_with_gaps_of_40_ms_or_more_counted_per_press(gap_ms: int, lead: float) -> None:
    for d in DIGITS:
        assert heard(train(d * 3, 50, gap_ms, lead_ms=lead)) == d * 3, d


@pytest.mark.parametrize("dropout_ms", [5, 10])
@pytest.mark.parametrize("lead", LEADS[:4])
def test_a_dropout_of_10_ms_or_less_does_not_split_a_digit(dropout_ms: int, lead: float) -> None:
    for d in DIGITS:
        press = generate(d, 60, LEVEL) + silence(dropout_ms) + generate(d, 60, LEVEL)
        assert heard(silence(60 + lead) + press + silence(80)) == d, d


def test_ten_digits_per_second() -> None:
    seq = DIGITS * 3
    assert heard(train(seq, 50, 50)) == seq


# ------------------------------------------------------------------ frequency deviation


@pytest.mark.parametrize("error", [-0.015, -0.01, 0.0, 0.01, 0.015])
@pytest.mark.parametrize("lead", LEADS[:3])
def test_frequency_within_1_5_percent_detected(error: float, lead: float) -> None:
    assert heard(train(DIGITS, 40, 40, lead_ms=lead, freq=error)) == DIGITS


@pytest.mark.parametrize("error", [-0.06, -0.045, -0.035, 0.035, 0.045, 0.06])
@pytest.mark.parametrize("on_ms", [50, 200])
def test_frequency_beyond_3_5_percent_rejected(error: float, on_ms: int) -> None:
    assert heard(train(DIGITS, on_ms, 60, freq=error)) == ""


@pytest.mark.parametrize(("row_err", "col_err"), [(0.015, -0.015), (-0.015, 0.015)])
def test_groups_deviating_in_opposite_directions_within_1_5_percent(
    row_err: float, col_err: float
) -> None:
    got = ""
    for d in DIGITS:
        pcm = _two_tone(d, 60, row_err, col_err)
        got += heard(silence(60) + pcm + silence(60))
    assert got == DIGITS


@pytest.mark.parametrize(("row_err", "col_err"), [(0.035, 0.0), (0.0, 0.035), (-0.035, 0.0),
                                                  (0.0, -0.035)])
def test_one_group_beyond_3_5_percent_rejected(row_err: float, col_err: float) -> None:
    got = ""
    for d in DIGITS:
        got += heard(silence(60) + _two_tone(d, 100, row_err, col_err) + silence(60))
    assert got == ""


def _two_tone(digit: str, ms: float, row_err: float, col_err: float) -> bytes:
    from gateway.dsp.dtmf import tone_frequencies

    low, high = tone_frequencies(digit)
    n = round(ms * SAMPLE_RATE / 1000)
    t = np.arange(n) / SAMPLE_RATE
    amp = 32768 * np.sqrt(2) * 10 ** (LEVEL / 20)
    x = amp * (np.sin(2 * np.pi * low * (1 + row_err) * t) + np.sin(2 * np.pi * high * (1 + col_err) * t))
    return np.rint(x).astype("<i2").tobytes()


# ------------------------------------------------------------------ twist and level


@pytest.mark.parametrize("twist", [8.0, 6.0, 3.0, -2.0, -4.0])
@pytest.mark.parametrize("lead", LEADS[:3])
def test_twist_8_db_normal_and_4_db_reverse_detected(twist: float, lead: float) -> None:
    assert heard(train(DIGITS, 40, 40, lead_ms=lead, twist=twist)) == DIGITS


@pytest.mark.parametrize("twist", [10.0, 12.0, 20.0, -6.0, -8.0, -20.0])
def test_twist_beyond_limits_rejected(twist: float) -> None:
    assert heard(train(DIGITS, 100, 60, twist=twist)) == ""


@pytest.mark.parametrize("level", [-3.0, -10.0, -25.0, -35.0])
def test_levels_across_the_operating_range_detected(level: float) -> None:
    assert heard(train(DIGITS, 40, 40, level=level)) == DIGITS


def test_too_quiet_for_a_digit_rejected() -> None:
    assert heard(train(DIGITS, 100, 60, level=-50.0)) == ""


# ------------------------------------------------------------------ noise


@pytest.mark.parametrize("seed", range(4))
def test_every_digit_detected_at_15_db_snr(seed: int) -> None:
    pcm = add_noise(train(DIGITS, 40, 40, lead_ms=seed * 1.25), 15.0, seed)
    assert heard(pcm) == DIGITS


@pytest.mark.parametrize("seed", range(2))
def test_15_db_snr_with_twist_at_the_limits(seed: int) -> None:
    for twist in (8.0, -4.0):
        pcm = add_noise(train(DIGITS, 50, 50, twist=twist), 15.0, seed)
        assert heard(pcm) == DIGITS, twist


def test_noise_alone_gives_no_digit() -> None:
    rng = np.random.default_rng(7)
    for level in (-40.0, -25.0, -12.0, -6.0):
        sigma = 32768 * 10 ** (level / 20)
        pcm = np.clip(rng.normal(0, sigma, SAMPLE_RATE * 20), -32768, 32767)
        assert heard(pcm.astype("<i2").tobytes()) == "", level


# ------------------------------------------------------------------ press lengths


@pytest.mark.parametrize("on_ms", [40, 55, 100, 250, 1000])
@pytest.mark.parametrize("lead", LEADS[:5])
def test_the_end_of_each_press_is_reported_with_its_length(on_ms: int, lead: float) -> None:
    """What RFC 4733 and SIP INFO carry on: each press's length, within 5 ms."""
    lp = _line_port()
    pcm = add_noise(train("4#", on_ms, 100, lead_ms=lead), 20.0, on_ms)
    onsets: list[str] = []
    ends = []
    for i in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES):
        lp.mic = pcm[i : i + FRAME_BYTES]
        onsets += lp.digits_heard()
        ends += lp.detector.ended()
    assert onsets == ["4", "#"]
    assert [e.digit for e in ends] == ["4", "#"]
    for e in ends:
        assert on_ms - 5 <= e.duration_ms <= on_ms + 5, e
