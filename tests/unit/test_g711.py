"""G.711 companding against ITU-T reference values, error bounds and audioop where it exists."""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest

from gateway.dsp import FRAME_SAMPLES, SILENCE_FRAME, g711

ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int32)
ALL_PCM = ALL_SAMPLES.astype("<i2").tobytes()


def pcm(*samples: int) -> bytes:
    return np.array(samples, dtype="<i2").tobytes()


def samples(data: bytes) -> list[int]:
    return [int(v) for v in np.frombuffer(data, dtype="<i2")]


def test_digital_zero_codes() -> None:
    assert g711.encode(pcm(0), "PCMU") == b"\xff"
    assert g711.encode(pcm(0), "PCMA") == b"\xd5"
    assert g711.silence_byte("PCMU") == 0xFF
    assert g711.silence_byte("pcma") == 0xD5


def test_mulaw_reference_decode_values() -> None:
    # G.711 Table 2: 0x80/0x00 are the extreme codes (+-8031 in 14-bit units = +-32124 here),
    # 0xFF and 0x7F are positive and negative zero.
    # 0xEF/0x6F open segment 1 (+-33 in 14-bit units), 0xFE/0x7E are +-2.
    out = samples(g711.decode(bytes([0x80, 0x00, 0xFF, 0x7F, 0xEF, 0x6F, 0xFE, 0x7E]), "PCMU"))
    assert out == [32124, -32124, 0, 0, 132, -132, 8, -8]


def test_alaw_reference_decode_values() -> None:
    # G.711 Table 1: 0xD5/0x55 are the smallest magnitudes (+-1 in 12-bit units),
    # 0xAA/0x2A the largest (+-4032 in 13-bit units = +-32256 here).
    out = samples(g711.decode(bytes([0xD5, 0x55, 0xAA, 0x2A]), "PCMA"))
    assert out == [8, -8, 32256, -32256]


def test_encode_extremes_saturate() -> None:
    assert g711.encode(pcm(32767, -32768), "PCMU") == b"\x80\x00"
    assert g711.encode(pcm(32767, -32768), "PCMA") == b"\xaa\x2a"


def test_sign_symmetry_of_codes() -> None:
    # mu-law flips bit 7 for sign; A-law too (after the even-bit inversion).
    for value in (100, 1000, 10000, 30000):
        pos = g711.encode(pcm(value), "PCMU")[0]
        neg = g711.encode(pcm(-value), "PCMU")[0]
        assert pos ^ neg == 0x80
        pos_a = g711.encode(pcm(value), "PCMA")[0]
        neg_a = g711.encode(pcm(-value - 1), "PCMA")[0]
        assert pos_a ^ neg_a == 0x80


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_round_trip_error_is_within_one_half_step(codec: str) -> None:
    # 4 mantissa bits: half a step is 1/32 of the level, plus the floor of the smallest steps.
    back = np.frombuffer(g711.decode(g711.encode(ALL_PCM, codec), codec), "<i2").astype(np.int32)
    err = np.abs(back - ALL_SAMPLES)
    limit = 32124 if codec == "PCMU" else 32256
    inside = np.abs(ALL_SAMPLES) <= limit
    bound = 8 + np.abs(ALL_SAMPLES) / 32
    assert np.all(err[inside] <= bound[inside])
    # beyond the top of the range the codec clips to its largest level
    assert np.all(np.abs(back[~inside]) == limit)


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_decode_then_encode_is_identity_on_codes(codec: str) -> None:
    codes = bytes(range(256))
    again = g711.encode(g711.decode(codes, codec), codec)
    if codec == "PCMU":
        # 0x7F (negative zero) decodes to 0, which encodes as positive zero 0xFF
        expected = bytearray(codes)
        expected[0x7F] = 0xFF
        assert again == bytes(expected)
    else:
        assert again == codes


def test_frame_sizes() -> None:
    assert len(g711.encode(SILENCE_FRAME, "PCMU")) == FRAME_SAMPLES
    assert g711.decode(g711.encode(SILENCE_FRAME, "PCMU"), "PCMU") == SILENCE_FRAME
    # A-law has no zero level: silence comes back as the smallest positive step
    assert set(samples(g711.decode(g711.encode(SILENCE_FRAME, "PCMA"), "PCMA"))) == {8}


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="G722"):
        g711.encode(b"\x00\x00", "G722")
    with pytest.raises(ValueError, match="3 bytes"):
        g711.encode(b"\x00\x00\x00", "PCMU")


def _audioop() -> object | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return importlib.import_module("audioop")
        except ImportError:
            return None


@pytest.mark.skipif(_audioop() is None, reason="not on this platform: audioop is gone from Python 3.13")
def test_matches_audioop_on_every_sample_and_code() -> None:
    audioop = _audioop()
    codes = bytes(range(256))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert g711.encode(ALL_PCM, "PCMU") == audioop.lin2ulaw(ALL_PCM, 2)  # type: ignore[attr-defined]
        assert g711.encode(ALL_PCM, "PCMA") == audioop.lin2alaw(ALL_PCM, 2)  # type: ignore[attr-defined]
        assert g711.decode(codes, "PCMU") == audioop.ulaw2lin(codes, 2)  # type: ignore[attr-defined]
        assert g711.decode(codes, "PCMA") == audioop.alaw2lin(codes, 2)  # type: ignore[attr-defined]
