"""Caller ID on the FXS line, through the runtime's own path: an FxsLine offered a call, its
actions carried out by the LinePort the daemon uses, onto a simulated port whose handset
records what its earpiece carried, when it rang, and the loop polarity. The Bellcore
messages are decoded by minimodem (`--rx callerid`, a real peer), and our FXO decoder reads
what `minimodem --tx 1200` sends."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import wave
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from gateway.dsp import FRAME_BYTES, SAMPLE_RATE
from gateway.dsp.analysis import frequencies_present
from gateway.dsp.callerid import DTAS_HZ, CallerId, mdmf_message, sdmf_message
from gateway.dsp.callerid_rx import decode_dtmf, decode_fsk
from gateway.dsp.tones import get_profile
from gateway.lines.fxs import FxsLine
from gateway.routing.dialplan import DigitMap
from gateway.runtime.ports import LinePort
from hal.sim.fxs import SimFxs

FRAME_S = 0.02


def minimodem() -> str:
    binary = shutil.which("minimodem")
    if binary is None:
        if os.environ.get("BRANCHLINE_REQUIRE_PEERS") == "1":
            pytest.fail("minimodem is not installed (tools/install-test-deps.sh)")
        pytest.skip("minimodem is not installed")
    return binary


@dataclass
class Run:
    ear: bytes  # everything the earpiece carried, one 20 ms frame per tick
    rings: list[tuple[float, float | None]]
    polarity: list[tuple[float, str]]  # (time, polarity) at every change
    port: SimFxs

    def audio_spans(self) -> list[tuple[float, float]]:
        """(start, end) of each stretch of sound in the earpiece (10 ms blocks)."""
        x = np.frombuffer(self.ear, dtype="<i2").astype(float).reshape(-1, 80)
        loud = np.abs(x).max(axis=1) > 50
        spans: list[tuple[float, float]] = []
        for i, v in enumerate(loud):
            t = i * 0.01
            if v and spans and abs(spans[-1][1] - t) < 0.15:
                spans[-1] = (spans[-1][0], t + 0.01)
            elif v:
                spans.append((t, t + 0.01))
        return spans

    def sound(self) -> tuple[float, float]:
        spans = self.audio_spans()
        assert spans, "the earpiece carried nothing"
        return spans[0][0], spans[-1][1]

    def pcm(self, start: float, end: float) -> bytes:
        return self.ear[2 * round(start * SAMPLE_RATE) : 2 * round(end * SAMPLE_RATE)]


def ring_in(country: str, caller: str = "sip:5551234@192.0.2.1", name: str | None = "BOB",
            options: dict[str, Any] | None = None, seconds: float = 7.0,
            answer_at: float | None = None) -> Run:
    """Offer a call to a line and run the daemon's line port for `seconds`, frame by frame."""
    profile = get_profile(country)
    port = SimFxs("1", {"country": country, "clock": "frames"})
    line = FxsLine("1", digit_map=DigitMap("x"), ring_cadence=profile.ring_cadence)
    lp = LinePort("1", "201", SimpleNamespace(options=options or {}), port, line, profile)
    port.start(lambda off, t: line.hook(off, t))
    phone = port.phone
    line.incoming_call("call-1", caller, name, 0.0)
    polarity = [(0.0, phone.polarity)]
    frames = round(seconds / FRAME_S)
    for k in range(frames):
        now = k * FRAME_S
        if answer_at is not None and abs(now - answer_at) < FRAME_S / 2:
            phone.off_hook()
        timer = line.get_timer()
        if timer is not None and timer <= now:
            line.handle_timer(now)
        for action in line.actions():
            lp.carry_out(action)
        lp.play(None)
        if not phone.is_ringing() and phone.polarity != polarity[-1][1]:
            polarity.append((now, phone.polarity))
    return Run(phone.heard(seconds), list(phone.rings), polarity, port)


def wav(path: Path, pcm: bytes, rate: int = SAMPLE_RATE) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return path


# --- Bellcore: between the first and second ring, decoded by minimodem ------------------

BELLCORE_CASES = [
    ("bellcore", "sip:5551234@192.0.2.1", "BOB", "Phone: 5551234", "Name:  BOB"),
    ("bellcore", "sip:+15551230000@192.0.2.1", None, "Phone: +15551230000", None),
    ("bellcore", "", "Withheld", "Phone: [blocked]", "Name:  [blocked]"),
    ("bellcore", "", None, "Phone: [N/A]", None),
    ("bellcore", "sip:anonymous@anonymous.invalid", None, "Phone: [blocked]", "Name:  [blocked]"),
    ("bellcore_sdmf", "sip:5551234@192.0.2.1", "BOB", "Phone: 5551234", None),
    # minimodem shows SDMF's reason letter as it comes: P (private), O (unavailable).
    ("bellcore_sdmf", "", "Withheld", "Phone: P\n", None),
    ("bellcore_sdmf", "", None, "Phone: O\n", None),
]


@pytest.mark.parametrize(("method", "caller", "name", "phone_line", "name_line"), BELLCORE_CASES)
def test_bellcore_from_the_line_decodes_with_minimodem(
    tmp_path: Path, method: str, caller: str, name: str | None, phone_line: str,
    name_line: str | None,
) -> None:
    binary = minimodem()
    run = ring_in("US", caller, name, options={"callerid": method})
    first, second = run.rings[0], run.rings[1]
    assert first == (0.0, 2.0) and second[0] == pytest.approx(6.0)
    start, end = run.sound()
    # GR-30-CORE: >= 500 ms after the first ring ends, and done before the second.
    assert start >= first[1] + 0.5 - 0.01, (start, first)
    assert end <= second[0] - 0.2, (end, second)
    assert run.polarity == [(0.0, "normal")]  # Bellcore does not reverse the line

    out = subprocess.run([binary, "--rx", "-q", "-f", str(wav(tmp_path / "ear.wav", run.ear)),
                          "callerid"], capture_output=True, text=True, timeout=30).stdout
    assert "CALLER-ID" in out and phone_line in out, out
    assert out.count("CALLER-ID") == 1, out
    if name_line is not None:
        assert name_line in out, out
    ours = decode_fsk(run.ear)
    assert ours is not None and ours.kind == ("sdmf" if method.endswith("sdmf") else "mdmf")


def test_country_default_is_used_and_a_line_option_overrides_it() -> None:
    run = ring_in("US")  # the US profile: Bellcore MDMF
    got = decode_fsk(run.ear)
    assert got is not None and got.kind == "mdmf" and got.number == "5551234"
    run = ring_in("US", options={"callerid": "etsi_dtmf"})
    dtmf = decode_dtmf(run.ear)
    assert dtmf is not None and dtmf.number == "5551234" and decode_fsk(run.ear) is None
    assert run.sound()[0] >= 2.5 - 0.01
    assert ring_in("US", options={"callerid": "off"}).audio_spans() == []


def test_double_ring_cadence_waits_for_the_long_silence() -> None:
    # AU rings 0.4/0.2/0.4/2.0: the data cannot fit in 0.2 s, so it goes in the 2.0 s gap.
    run = ring_in("AU", seconds=4.0)
    assert [r[0] for r in run.rings[:3]] == pytest.approx([0.0, 0.6, 3.0], abs=0.021)
    start, end = run.sound()
    second_end = run.rings[1][1]
    assert second_end is not None and start >= second_end + 0.5 - 0.01, (start, run.rings)
    assert end <= run.rings[2][0] - 0.2, (end, run.rings)
    got = decode_fsk(run.ear, "v23")
    assert got is not None and got.number == "5551234" and got.name == "BOB"


def test_etsi_fsk_after_the_first_ring() -> None:
    run = ring_in("DE", caller="sip:0301234567@192.0.2.1", name="ANNA")
    assert run.rings[0] == (0.0, 1.0)
    start, end = run.sound()
    assert start >= 1.5 - 0.01 and end <= 5.0 - 0.2
    got = decode_fsk(run.ear, "v23")
    assert got is not None and (got.number, got.name) == ("0301234567", "ANNA")
    assert run.polarity == [(0.0, "normal")]


def test_etsi_fsk_before_the_first_ring_with_reversal_and_dtas() -> None:
    run = ring_in("UK", caller="sip:02079460000@192.0.2.1", name=None)
    reversed_at = run.polarity[1]
    assert reversed_at == (0.0, "reversed")
    start, end = run.sound()
    first_ring = run.rings[0][0]
    # EN 300 659-1: DT-AS >= 100 ms after the reversal; the ring 200-500 ms after the data.
    assert start >= 0.1
    assert 0.2 <= first_ring - end <= 0.5 + FRAME_S, (end, first_ring)
    # Normal polarity again for the ring (seen once the first ring ends: F/R carries it).
    assert run.polarity[2] == (pytest.approx(run.rings[0][1]), "normal")
    alert = run.pcm(start, start + 0.08)
    assert frequencies_present(alert, (*DTAS_HZ, 1300.0, 2100.0)) == DTAS_HZ
    got = decode_fsk(run.ear, "v23")
    assert got is not None and got.number == "02079460000" and got.number_absent is None
    # The cadence after the held first ring is the profile's, whole.
    assert [b - a for a, b in run.rings[:2] if b is not None] == pytest.approx([0.4, 0.4],
                                                                               abs=0.021)


def test_etsi_dtmf_before_the_first_ring() -> None:
    run = ring_in("NL", caller="sip:0201234567@192.0.2.1")
    assert run.polarity[1] == (0.0, "reversed")
    start, end = run.sound()
    assert end < run.rings[0][0]
    got = decode_dtmf(run.ear)
    assert got is not None and got.number == "0201234567"
    withheld = decode_dtmf(ring_in("NL", caller="", name="Withheld").ear)
    assert withheld is not None and withheld.number_absent == "P"


def test_answering_during_pre_ring_caller_id_leaves_no_bell_behind() -> None:
    run = ring_in("UK", answer_at=0.3, seconds=3.0)
    assert run.rings == []  # the bell never rang after the handset was lifted
    assert run.polarity[-1][1] == "normal"


# --- our decoder reads a real modem's output -------------------------------------------

WHEN = datetime(2026, 12, 6, 20, 3)


@pytest.mark.parametrize("message", [
    mdmf_message(CallerId("5551234", "BOB"), WHEN),
    mdmf_message(CallerId(None, withheld=True), WHEN),
    sdmf_message(CallerId("0123456789"), WHEN),
    sdmf_message(CallerId(None), WHEN),
])
@pytest.mark.parametrize("rate", [8000, 48000])
def test_decoder_reads_minimodem_tx(tmp_path: Path, message: bytes, rate: int) -> None:
    binary = minimodem()
    out = tmp_path / "tx.wav"
    subprocess.run([binary, "--tx", "-q", "-R", str(rate), "-f", str(out), "1200"],
                   input=message, check=True, timeout=30)
    with wave.open(str(out)) as w:
        assert w.getframerate() == rate and w.getsampwidth() == 2
        pcm = w.readframes(w.getnframes())
    pcm = bytes(FRAME_BYTES * 10) + pcm + bytes(FRAME_BYTES * 10)
    got = decode_fsk(pcm, rate=rate)
    assert got is not None and got.raw == message


def test_config_takes_the_method_per_line_and_the_schema_lists_it() -> None:
    from gateway.config import ConfigError, load_config_text
    from gateway.config.jsonschema import export_json_schema
    from gateway.dsp.callerid import METHODS

    text = ('gateway: {name: x, country: NL}\nlines:\n'
            '  - {name: "1", backend: sim, number: "101", options: {callerid: %s}}\n')
    config = load_config_text(text % "etsi_dtmf", "x.yaml", route_probe=lambda toward: None)
    assert config.lines[0].options["callerid"] == "etsi_dtmf"
    with pytest.raises(ConfigError, match="did you mean 'etsi_dtmf'"):
        load_config_text(text % "etsi_dtmff", "x.yaml", route_probe=lambda toward: None)
    assert json.dumps({"enum": list(METHODS)})[1:-1] in json.dumps(export_json_schema())
