"""The embedded default: two simulated phones call each other with no trunk at all."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .audio import write_tone_wav
from .gateway_proc import GatewayProcess
from .test_first_call import wav_tone

pytestmark = pytest.mark.slow


def test_default_config_phone_1_calls_phone_2_audio_both_ways(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path, None)
    gw.start()
    try:
        assert [line["number"] for line in gw.status()["lines"]] == ["101", "102"]
        gw.phone("1", "offhook")
        gw.wait_hears("1", "dial")
        gw.phone("1", "dial", digits="102")
        gw.wait_until("phone 2 rings", lambda: gw.line("2")["ringing"] or gw.line("2")["state"] == "ringing")
        gw.wait_hears("1", "ringback")
        gw.phone("2", "offhook")
        gw.wait_until("both connected", lambda: gw.line("1")["state"] == gw.line("2")["state"] == "connected")

        gw.phone("1", "play", path=str(write_tone_wav(tmp_path / "a.wav", 440.0, -12.0)))
        gw.phone("2", "play", path=str(write_tone_wav(tmp_path / "b.wav", 1000.0, -12.0)))
        time.sleep(0.5)
        gw.phone("2", "record", path=str(tmp_path / "at2.wav"), seconds=1.0)
        gw.phone("1", "record", path=str(tmp_path / "at1.wav"), seconds=1.0)
        hz2, db2 = wav_tone(tmp_path / "at2.wav")
        hz1, db1 = wav_tone(tmp_path / "at1.wav")
        assert abs(hz2 - 440.0) <= 0.02 * 440.0 and abs(db2 + 12.0) <= 3.0, (hz2, db2)
        assert abs(hz1 - 1000.0) <= 0.02 * 1000.0 and abs(db1 + 12.0) <= 3.0, (hz1, db1)

        gw.phone("1", "onhook")
        gw.wait_hears("2", "busy")
        gw.phone("2", "onhook")
        gw.wait_until("both idle", lambda: gw.line("1")["state"] == gw.line("2")["state"] == "idle")
        assert not gw.status()["calls"]
    finally:
        assert gw.stop() == 0, gw.log_text()[-3000:]
