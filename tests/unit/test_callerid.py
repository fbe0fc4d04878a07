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
