"""On-hook caller ID (gateway/dsp/callerid.py): the MDMF bytes by hand, and the FSK decoded
by minimodem, a Bell 202 modem that knows nothing of our code."""

from __future__ import annotations

import os
import shutil
import subprocess
import wave
from datetime import datetime
from pathlib import Path

import pytest

from gateway.dsp.callerid import CallerId, bell202_fsk, mdmf_message

WHEN = datetime(2026, 12, 6, 20, 3)


def test_mdmf_number_and_name_by_hand() -> None:
    msg = mdmf_message(CallerId("+447700900123", "ALICE"), WHEN)
    body = b"\x01\x0812062003" + b"\x02\x0d+447700900123" + b"\x07\x05ALICE"
    assert msg[:-1] == bytes((0x80, len(body))) + body
    assert sum(msg) % 256 == 0  # the checksum makes the byte sum zero


def test_withheld_caller_says_private() -> None:
    msg = mdmf_message(CallerId(None, withheld=True), WHEN)
    assert b"\x04\x01P" in msg and b"\x08\x01P" in msg and b"\x02" not in msg[12:]
    assert b"\x04\x01O" in mdmf_message(CallerId(None), WHEN)  # unknown: out of area


def test_fsk_decodes_with_minimodem(tmp_path: Path) -> None:
    binary = shutil.which("minimodem")
    if binary is None:
        if os.environ.get("BRANCHLINE_REQUIRE_PEERS") == "1":
            pytest.fail("minimodem is not installed (tools/install-test-deps.sh)")
        pytest.skip("minimodem is not installed")
    msg = mdmf_message(CallerId("5551234", "BOB"), WHEN)
    pcm = bytes(1600) + bell202_fsk(msg) + bytes(1600)
    path = tmp_path / "cid.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(pcm)
    out = subprocess.run([binary, "--rx", "-q", "-f", str(path), "1200"],
                         capture_output=True, timeout=20).stdout
    assert msg in out, out


# --- SDMF, ETSI signals, and the FXO decoder ---------------------------------------------


def test_sdmf_by_hand() -> None:
    from gateway.dsp.callerid import sdmf_message

    msg = sdmf_message(CallerId("+15551234567", "IGNORED"), WHEN)
    assert msg[:-1] == bytes((0x04, 18)) + b"12062003" + b"5551234567"  # the last 10 digits
    assert sum(msg) % 256 == 0
    assert sdmf_message(CallerId(None, withheld=True), WHEN)[2:-1] == b"12062003P"
    assert sdmf_message(CallerId(None), WHEN)[2:-1] == b"12062003O"


def test_v23_and_bell202_use_their_own_tones() -> None:
    from gateway.dsp.analysis import dominant_frequency
    from gateway.dsp.callerid import V23, fsk

    msg = mdmf_message(CallerId("5551234"), WHEN)
    marks = slice(2 * 2100, 2 * 3100)  # inside the 180 mark bits after the 300 seizure bits
    assert abs(dominant_frequency(fsk(msg, V23)[marks]) - 1300.0) < 10
    assert abs(dominant_frequency(bell202_fsk(msg)[marks]) - 1200.0) < 10
    space = fsk(b"\x00", V23)[2 * 2000 + 2 * 1200 + 8 :][: 2 * 50]  # start + 8 zero bits
    assert abs(dominant_frequency(space) - 2100.0) < 60


def test_decoder_rejects_a_bad_checksum_and_reads_v23() -> None:
    from gateway.dsp.callerid import V23, fsk
    from gateway.dsp.callerid_rx import decode_fsk, find_message

    msg = mdmf_message(CallerId("5551234", "BOB"), WHEN)
    bad = msg[:-1] + bytes(((msg[-1] + 1) & 0xFF,))
    assert decode_fsk(bell202_fsk(bad)) is None
    assert find_message(b"\x55\x55" + bad + b"\xff") is None
    got = decode_fsk(bytes(800) + fsk(msg, V23) + bytes(800), "v23")
    assert got is not None and (got.kind, got.number, got.name, got.when) == (
        "mdmf", "5551234", "BOB", "12062003")


def test_decoder_holds_at_20_db_snr() -> None:
    import numpy as np

    from gateway.dsp.callerid_rx import decode_fsk

    ok = 0
    for seed in range(20):
        msg = mdmf_message(CallerId(f"55512{seed:02d}", "NOISY"), WHEN)
        x = np.frombuffer(bell202_fsk(msg), dtype="<i2").astype(float)
        sigma = np.sqrt(np.mean(x**2) / 10 ** (20 / 10))
        noisy = x + np.random.default_rng(seed).normal(0, sigma, len(x))
        got = decode_fsk(np.clip(np.rint(noisy), -32768, 32767).astype("<i2").tobytes())
        ok += got is not None and got.raw == msg
    assert ok == 20


def test_dtmf_caller_id_strings_and_decoding() -> None:
    from gateway.dsp.callerid import dtmf_callerid, plan
    from gateway.dsp.callerid_rx import decode_dtmf, parse_dtmf

    assert dtmf_callerid(CallerId("+31 20 123 4567")) == "A31201234567C"
    assert dtmf_callerid(CallerId("0201234567"), "D") == "D0201234567C"
    assert dtmf_callerid(CallerId(None, withheld=True)) == "B10C"
    assert dtmf_callerid(CallerId(None)) == "B00C"
    assert parse_dtmf("B00C") is not None and parse_dtmf("B00C").number_absent == "O"  # type: ignore[union-attr]
    assert parse_dtmf("A123") is None  # no end digit: nothing
    p = plan("etsi_dtmf_prering", CallerId("0201234567"), WHEN)
    assert p is not None and p.reversal and p.before_ring
    got = decode_dtmf(p.pcm)
    assert got is not None and got.number == "0201234567"


def test_plans_keep_the_standards_timing() -> None:
    from gateway.dsp.callerid import METHODS, plan

    for name, method in METHODS.items():
        p = plan(name, CallerId("5551234", "BOB"), WHEN)
        if method.signal == "off":
            assert p is None
            continue
        assert p is not None
        lead = next(i for i in range(0, len(p.pcm), 2) if p.pcm[i : i + 2] != b"\0\0") / 16000
        if method.before_ring:
            assert 0.2 <= p.ring_after - p.seconds <= 0.5, name  # EN 300 659-1
            assert lead >= (0.1 if method.reversal else 0.0), name
        else:
            assert lead >= 0.5, name  # GR-30-CORE: >= 500 ms after the first ring
            assert p.needs_silence < 4.0, name  # fits the US 4 s silent interval
