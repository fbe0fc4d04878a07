"""The tone classifier when one sound turns into another with no silence between them:
the far party's 440 Hz (a held call's echo) straight into consultation dial tone, as the
handset hears it when flash holds a call. A burst's label used to be taken from its first
0.5 s only, so the dial tone stayed "tone" for as long as it lasted."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.dsp import FRAME_BYTES
from gateway.dsp.analysis import ToneClassifier
from gateway.dsp.tones import ToneGenerator, get_profile


def _sine(freq: float, seconds: float, dbfs: float = -15.0) -> bytes:
    t = np.arange(round(seconds * 8000)) / 8000
    peak = 32767 * 10 ** (dbfs / 20) * np.sqrt(2)
    return np.rint(peak * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def _feed(cl: ToneClassifier, pcm: bytes) -> list[str]:
    out = []
    for i in range(0, len(pcm) - len(pcm) % FRAME_BYTES, FRAME_BYTES):
        cl.feed(pcm[i:i + FRAME_BYTES])
        out.append(cl.classify())
    return out


@pytest.mark.parametrize("before", [0.6, 1.0, 3.0])
def test_a_far_tone_then_dial_tone_without_a_gap_is_dial(before: float) -> None:
    profile = get_profile("US")
    cl = ToneClassifier(profile)
    assert _feed(cl, _sine(440.0, before))[-1] == "tone"
    heard = _feed(cl, ToneGenerator(profile.dial).generate(2.0))
    assert heard[-1] == "dial", heard[::10]
    assert "dial" in heard[:25], heard[:25]  # within half a second
    assert cl.report().since < 2.0


def test_speech_like_audio_then_ringback_without_a_gap() -> None:
    profile = get_profile("US")
    cl = ToneClassifier(profile)
    rng = np.random.default_rng(1)
    noise = (rng.standard_normal(8000 * 2) * 3000).astype("<i2").tobytes()
    assert _feed(cl, noise)[-1] == "audio"
    heard = _feed(cl, ToneGenerator(profile.ringback).generate(1.5))
    assert heard[-1] == "ringback", heard[::10]


def test_a_steady_tone_is_not_split_into_pieces() -> None:
    """Dial tone for 8 s stays one "dial" with `since` counting from its start."""
    profile = get_profile("US")
    cl = ToneClassifier(profile)
    heard = _feed(cl, ToneGenerator(profile.dial).generate(8.0))
    assert set(heard[10:]) == {"dial"}
    assert cl.report().since == pytest.approx(8.0, abs=0.3)
