"""The FXO port in the real daemon, against the simulated exchange line (backend sim).

- a call rings on the exchange line with Bellcore caller ID: the FXS sim phone rings and
  its display data carries the number; answering seizes the line and audio flows both ways
  (frequencies checked at each end);
- the far end hangs up by busy tone, by dropping the loop current, or by reversing the
  polarity: each ends the call (the line is released, the handset hears the clear);
- an FXS call routed `to: [trunk:main, fxo:pstn]` with the trunk down goes out on the
  exchange line: the digits the exchange hears are the number, audio flows;
- an exchange line that is busy (ringing) passes the call to the route's next target.
"""

from __future__ import annotations

import threading
import time
import wave
from pathlib import Path

import pytest

from gateway.dsp.callerid_rx import decode_fsk
from gateway.dsp.tones import ToneGenerator, ToneSpec
from hal.audio.wav import write_wav

from .gateway_proc import GatewayProcess
from .peers.ports import free_port

pytestmark = pytest.mark.slow

PHONE_HZ = 700.0  # what the handset says
FAR_HZ = 1000.0  # what the far party on the exchange says


def config(tmp: Path, *, to: str = '["fxo:pstn"]', fxo_options: str = "",
           trunk_port: int | None = None) -> str:
    trunk = "trunks: []" if trunk_port is None else f"""trunks:
  - name: main
    registrar: 127.0.0.1:{trunk_port}
    expires: 60
    failover_timeout: 1.0"""
    return f"""
gateway: {{name: fxo-gw, country: US, state_dir: {tmp / 'state'}}}
sip: {{listen: "127.0.0.1:{free_port()}"}}
{trunk}
lines:
  - {{name: kitchen, backend: sim, number: "101"}}
  - {{name: hall, backend: sim, number: "102"}}
  - name: pstn
    type: fxo
    backend: sim
    number: "5550100"
    options: {{inbound: "line:kitchen", far_tone_hz: {FAR_HZ:g}{fxo_options}}}
dialplan:
  digit_map: "(1xx|[2-9]xxxxxx)"
  routes:
    - {{pattern: '1\\d\\d', to: local}}
    - {{pattern: '[2-9]\\d{{6}}', to: {to}}}
"""


def fxo(gw: GatewayProcess, action: str = "state", **args: object) -> dict[str, object]:
    result: dict[str, object] = gw.request("fxo", line="pstn", action=action, **args)
    return result


def exchange(gw: GatewayProcess) -> dict[str, object]:
    ex = fxo(gw)["exchange"]
    assert isinstance(ex, dict)
    return ex


def phone_says(gw: GatewayProcess, line: str, tmp: Path) -> None:
    wav = tmp / f"{line}-says.wav"
    write_wav(wav, ToneGenerator(ToneSpec((PHONE_HZ,), level_dbfs=-12.0)).generate(2.0))
    gw.phone(line, "play", path=str(wav))


def hears_hz(gw: GatewayProcess, line: str) -> float:
    return float(gw.phone(line, "hears").get("dominant_hz") or 0.0)


def assert_audio_both_ways(gw: GatewayProcess, line: str, tmp: Path) -> None:
    gw.wait_until(f"{line} hears the far party ({FAR_HZ:g} Hz)",
                  lambda: abs(hears_hz(gw, line) - FAR_HZ) <= 0.02 * FAR_HZ, timeout=6)
    phone_says(gw, line, tmp)
    gw.wait_until(f"the exchange hears {line} ({PHONE_HZ:g} Hz)",
                  lambda: abs(float(fxo(gw, "heard", seconds=0.4)["dominant_hz"])
                              - PHONE_HZ) <= 0.02 * PHONE_HZ, timeout=6)


def ring_in(gw: GatewayProcess, method: str, caller: str = "5551234",
            name: str = "ALICE") -> None:
    fxo(gw, "ring", caller=caller, name=name, method=method)
    gw.wait_until("kitchen rings", lambda: gw.line("kitchen")["state"] == "ringing", timeout=10)


def test_inbound_bellcore_caller_id_rings_the_fxs_phone_with_the_number(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path, config(tmp_path))
    gw.start()
    try:
        ear = tmp_path / "kitchen-ear.wav"
        started = time.monotonic()
        ring_in(gw, "bellcore")
        offered = time.monotonic() - started
        # The kitchen phone's caller ID goes in its own first silent interval: record it.
        rec = threading.Thread(target=gw.phone, args=("kitchen", "record"),
                               kwargs={"path": str(ear), "seconds": 4.0})
        rec.start()
        line = fxo(gw)
        assert line["last_caller_id"] == {"number": "5551234", "name": "ALICE"}
        [call] = [c for c in gw.status()["calls"] if c["line"] == "kitchen"]
        assert call["remote"] == "5551234"
        rec.join(timeout=15)
        with wave.open(str(ear)) as w:
            pcm = w.readframes(w.getnframes())
        shown = decode_fsk(pcm, "bell202")  # what the kitchen phone's display receives
        assert shown is not None and (shown.number, shown.name) == ("5551234", "ALICE")
        print(f"\nexchange ring -> FXS ringing: {offered:.1f} s (first ring 2 s + caller ID)")
        gw.phone("kitchen", "offhook")
        gw.wait_until("the exchange line is answered",
                      lambda: exchange(gw)["state"] == "talking", timeout=5)
        assert fxo(gw)["state"] == "connected"
        assert_audio_both_ways(gw, "kitchen", tmp_path)
        gw.phone("kitchen", "onhook")
        gw.wait_until("line released", lambda: exchange(gw)["state"] == "idle", timeout=5)
        assert exchange(gw)["calls"][-1]["ended"] == "gateway hung up"  # type: ignore[index]
    finally:
        assert gw.stop() == 0, gw.log_text()[-3000:]


@pytest.mark.parametrize("how", ["busy", "loop", "polarity"])
def test_far_end_hang_up_ends_the_call(tmp_path: Path, how: str) -> None:
    gw = GatewayProcess(tmp_path, config(tmp_path))
    gw.start()
    try:
        ring_in(gw, "etsi_fsk_prering", caller="01632960123", name="")  # offered at ring 1
        assert fxo(gw)["last_caller_id"]["number"] == "01632960123"  # type: ignore[index]
        gw.phone("kitchen", "offhook")
        gw.wait_until("connected", lambda: fxo(gw)["state"] == "connected", timeout=5)
        assert_audio_both_ways(gw, "kitchen", tmp_path)
        cleared = time.monotonic()
        fxo(gw, "hangup", how=how)
        gw.wait_until(f"the line is released after the far end cleared by {how}",
                      lambda: not exchange(gw)["off_hook"], timeout=6)
        took = time.monotonic() - cleared
        assert fxo(gw)["end_reason"] == {"busy": "busy tone", "loop": "loop current lost",
                                         "polarity": "polarity reversal"}[how]
        gw.wait_until("the kitchen call is over",
                      lambda: gw.line("kitchen")["call_id"] is None, timeout=5)
        assert gw.line("kitchen")["state"] in ("wait-onhook", "idle")
        print(f"\nfar end cleared by {how}: line released after {took:.2f} s")
        gw.phone("kitchen", "onhook")
    finally:
        assert gw.stop() == 0, gw.log_text()[-3000:]


def test_fxs_call_goes_out_on_the_exchange_line_when_the_trunk_is_down(tmp_path: Path) -> None:
    dead = free_port()  # nothing listens: the trunk is down
    gw = GatewayProcess(tmp_path, config(tmp_path, to='["trunk:main", "fxo:pstn"]',
                                         trunk_port=dead))
    gw.start()
    try:
        gw.phone("hall", "offhook")
        gw.wait_hears("hall", "dial")
        gw.phone("hall", "dial", digits="5551234")
        gw.wait_until("the exchange line is dialled",
                      lambda: exchange(gw)["digits"] == "5551234", timeout=12)
        gw.wait_until("hall connected", lambda: gw.line("hall")["state"] == "connected",
                      timeout=6)
        [call] = [c for c in gw.status()["calls"] if c["line"] == "hall"]
        assert call["route"] == "fxo:pstn"
        assert_audio_both_ways(gw, "hall", tmp_path)
        fxo(gw, "hangup", how="busy")
        gw.wait_until("released", lambda: not exchange(gw)["off_hook"], timeout=6)
        gw.phone("hall", "onhook")
    finally:
        assert gw.stop() == 0, gw.log_text()[-3000:]


def test_a_busy_exchange_line_passes_the_call_to_the_next_target(tmp_path: Path) -> None:
    text = config(tmp_path, to='["fxo:pstn", "line:kitchen"]').replace(
        'inbound: "line:kitchen", ', "")  # a call ringing in goes nowhere: the line is busy
    gw = GatewayProcess(tmp_path, text)
    gw.start()
    try:
        fxo(gw, "ring", caller="5551234", method="etsi_fsk_prering")
        gw.wait_until("the exchange line rings", lambda: fxo(gw)["state"] == "ringing",
                      timeout=6)
        gw.phone("hall", "offhook")
        gw.wait_hears("hall", "dial")
        gw.phone("hall", "dial", digits="5551234")
        gw.wait_until("kitchen rings instead",
                      lambda: gw.line("kitchen")["state"] == "ringing", timeout=8)
        assert exchange(gw)["digits"] == "" and not exchange(gw)["off_hook"]
        gw.phone("hall", "onhook")
    finally:
        assert gw.stop() == 0, gw.log_text()[-3000:]


def test_a_reload_reopens_the_exchange_line_with_its_new_inbound_target(
        tmp_path: Path) -> None:
    text = config(tmp_path)
    gw = GatewayProcess(tmp_path, text)
    gw.start()
    try:
        gw.config_path.write_text(text.replace('"line:kitchen"', '"line:hall"'))
        result = gw.request("reload")
        assert "pstn" in str(result), result
        gw.wait_until("the line is reopened", lambda: fxo(gw)["state"] == "idle", timeout=5)
        fxo(gw, "ring", caller="5551234", method="etsi_fsk_prering")
        gw.wait_until("hall rings", lambda: gw.line("hall")["state"] == "ringing", timeout=8)
        assert gw.line("kitchen")["state"] == "idle"
    finally:
        assert gw.stop() == 0, gw.log_text()[-3000:]


def test_no_dial_tone_on_the_exchange_line_passes_the_call_on(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path, config(tmp_path, to='["fxo:pstn", "line:kitchen"]',
                                         fxo_options=", dial_tone: false"))
    gw.start()
    try:
        gw.phone("hall", "offhook")
        gw.wait_hears("hall", "dial")
        gw.phone("hall", "dial", digits="5551234")
        gw.wait_until("the exchange line is seized", lambda: exchange(gw)["off_hook"],
                      timeout=5)
        gw.wait_until("kitchen rings once the dial tone wait is over",
                      lambda: gw.line("kitchen")["state"] == "ringing", timeout=8)
        assert fxo(gw)["end_reason"] == "no dial tone" and not exchange(gw)["off_hook"]
        assert exchange(gw)["digits"] == ""
        [call] = [c for c in gw.status()["calls"] if c["line"] == "hall"]
        assert [a["target"] for a in call["attempts"]] == ["fxo:pstn", "line:kitchen"]
        gw.phone("hall", "onhook")
    finally:
        assert gw.stop() == 0, gw.log_text()[-3000:]
