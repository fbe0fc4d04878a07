"""Call forward between lines of the box, through the real daemon and the simulated phones
(issue 12, FEAT follow-up):

- forward on no answer for a line-to-line call: line 3 calls line 1, which rings 1 s and
  stops; line 2 rings and its display gets line 3's number and name (Bellcore FSK decoded
  from the earpiece); line 3 hears ringback throughout; line 2 answers and the two talk
  (tones checked at each end);
- a forward loop (line 1 always to 102, line 2 always to 101): the call stops being
  forwarded after the hop limit with one log line, a line rings with the original caller,
  and answering it connects the caller;
- a local SIP phone (baresip registered to the box) calls line 1, which forwards on no
  answer to line 2: line 2 rings showing the phone's user, the phone keeps ringing, line 2
  answers and the two talk (tones checked at each end).
"""

from __future__ import annotations

import time
import wave
from pathlib import Path

import pytest

from gateway.dsp.callerid_rx import decode_fsk
from gateway.dsp.tones import ToneGenerator, ToneSpec
from gateway.runtime.forwarding import MAX_FORWARD_HOPS
from hal.audio.wav import write_wav

from .conftest import BaresipFactory
from .gateway_proc import GatewayProcess
from .peers.ports import free_port
from .test_first_call import wav_tone

pytestmark = pytest.mark.slow

PHONE_USER, PHONE_PASS = "201", "phone-201-Secret"


def config(tmp: Path, line1: str, line2: str = "", sip_port: int | None = None) -> str:
    return f"""
gateway:
  name: fwd-gw
  country: US
  state_dir: {tmp / 'state'}
sip:
  listen: 127.0.0.1:{sip_port or free_port()}
  rtp_ports: 32000-32999
security:
  digest_algorithms: [MD5]
sip_phones:
  - user: "{PHONE_USER}"
    password: {PHONE_PASS}
    display_name: ALICE
trunks: []
lines:
  - name: "1"
    backend: sim
    number: "101"
{line1}
  - name: "2"
    backend: sim
    number: "102"
{line2}
  - name: "3"
    backend: sim
    number: "103"
    display_name: "FRONT DESK"
dialplan:
  digit_map: "(1xx|2xx)"
  routes:
    - pattern: "[12]\\\\d\\\\d"
      to: local
"""


def started(tmp: Path, text: str) -> GatewayProcess:
    gw = GatewayProcess(tmp, text, name="gw")
    gw.start()
    return gw


def stop(gw: GatewayProcess) -> None:
    code = gw.stop()
    print(f"===== gateway (exit {code}) =====\n{gw.log_text()[-6000:]}")  # on failure


def say(gw: GatewayProcess, line: str, hz: float, tmp: Path) -> None:
    wav = tmp / f"say-{line}.wav"
    write_wav(wav, ToneGenerator(ToneSpec((hz,), level_dbfs=-12.0)).generate(2.0))
    gw.phone(line, "play", path=str(wav))


def hears(gw: GatewayProcess, line: str, hz: float) -> bool:
    got = float(gw.phone(line, "hears").get("dominant_hz") or 0.0)
    return abs(got - hz) <= 0.02 * hz


def dial(gw: GatewayProcess, line: str, number: str) -> None:
    gw.phone(line, "offhook")
    gw.wait_hears(line, "dial")
    gw.phone(line, "dial", digits=number)


def test_line_to_line_forward_on_no_answer(tmp_path: Path) -> None:
    gw = started(tmp_path, config(
        tmp_path, '    features: {forward_no_answer: "102", forward_no_answer_after: 1}'))
    try:
        dial(gw, "3", "101")
        gw.wait_until("line 1 rings", lambda: gw.line("1")["state"] == "ringing", timeout=5)
        gw.wait_hears("3", "ringback", timeout=5)
        gw.wait_until("line 2 rings", lambda: gw.line("2")["state"] == "ringing", timeout=5)
        assert gw.line("1")["state"] == "idle"  # the first line stopped ringing
        assert gw.phone("1", "state")["rings"], "line 1 rang first"
        # line 2's display: the caller ID goes in the first silent interval after 2 s
        ear = tmp_path / "line2-ear.wav"
        gw.phone("2", "record", path=str(ear), seconds=4.0)
        with wave.open(str(ear)) as w:
            shown = decode_fsk(w.readframes(w.getnframes()), "bell202")
        assert shown is not None, "no caller ID on line 2"
        assert (shown.number, shown.name) == ("103", "FRONT DESK")  # not line 1
        assert gw.phone("3", "hears")["what"] == "ringback"  # the caller waited hearing it
        assert gw.line("3")["state"] == "ringback"
        gw.phone("2", "offhook")
        gw.wait_until("line 3 connected", lambda: gw.line("3")["state"] == "connected",
                      timeout=5)
        say(gw, "2", 700.0, tmp_path)
        say(gw, "3", 1000.0, tmp_path)
        gw.wait_until("line 3 hears line 2", lambda: hears(gw, "3", 700.0), timeout=5)
        gw.wait_until("line 2 hears line 3", lambda: hears(gw, "2", 1000.0), timeout=5)
        gw.phone("3", "onhook")
        gw.wait_until("line 2 hears the hang-up", lambda: gw.line("2")["state"] != "connected",
                      timeout=5)
        gw.phone("2", "onhook")
        gw.wait_until("no calls", lambda: not gw.status()["calls"], timeout=5)
        assert "not answered; forwarded to 102" in gw.log_text()
    finally:
        stop(gw)


def test_a_forward_loop_ends_at_the_hop_limit(tmp_path: Path) -> None:
    gw = started(tmp_path, config(tmp_path, '    features: {forward_always: "102"}',
                                  '    features: {forward_always: "101"}'))
    try:
        dial(gw, "3", "101")
        gw.wait_until("a line rings", lambda: "ringing" in (
            gw.line("1")["state"], gw.line("2")["state"]), timeout=5)
        time.sleep(0.5)  # nothing more happens: no forward ping-pong
        states = {n: gw.line(n)["state"] for n in ("1", "2")}
        [ringing] = [n for n, s in states.items() if s == "ringing"]
        log = gw.log_text()
        assert log.count("a forward loop?") == 1, log[-3000:]
        assert f"forwarded {MAX_FORWARD_HOPS} times already" in log
        [call] = [c for c in gw.status()["calls"] if c["line"] == ringing]
        assert call["remote"] == "103"  # the original caller, after every hop
        gw.wait_hears("3", "ringback", timeout=5)
        gw.phone(ringing, "offhook")
        gw.wait_until("line 3 connected", lambda: gw.line("3")["state"] == "connected",
                      timeout=5)
        say(gw, ringing, 700.0, tmp_path)
        gw.wait_until("line 3 hears the answering line",
                      lambda: hears(gw, "3", 700.0), timeout=5)
        gw.phone("3", "onhook")
        gw.phone(ringing, "onhook")
        gw.wait_until("no calls", lambda: not gw.status()["calls"], timeout=5)
    finally:
        stop(gw)


@pytest.mark.peers
def test_local_phone_call_forwarded_on_no_answer_to_another_line(
        tmp_path: Path, baresip_factory: BaresipFactory) -> None:
    sip_port = free_port()
    gw = started(tmp_path, config(
        tmp_path, '    features: {forward_no_answer: "102", forward_no_answer_after: 1}',
        sip_port=sip_port))
    try:
        phone = baresip_factory(PHONE_USER, registrar=f"127.0.0.1:{sip_port}",
                                password=PHONE_PASS, tone=600)
        phone.wait_registered(timeout=10)
        phone.dial(f"sip:101@127.0.0.1:{sip_port}")
        gw.wait_until("line 1 rings", lambda: gw.line("1")["state"] == "ringing", timeout=5)
        gw.wait_until("line 2 rings", lambda: gw.line("2")["state"] == "ringing", timeout=5)
        assert gw.line("1")["state"] == "idle"
        [call] = [c for c in gw.status()["calls"] if c["line"] == "2"]
        assert call["remote"] == PHONE_USER  # the phone's user, not line 1
        phone.wait_for_event("CALL_RINGING", timeout=2)  # the phone hears it ring
        gw.phone("2", "offhook")
        phone.wait_for_event("CALL_ESTABLISHED", timeout=5)
        say(gw, "2", 1000.0, tmp_path)
        gw.wait_until("line 2 hears the phone", lambda: hears(gw, "2", 600.0), timeout=5)
        time.sleep(1.0)
        phone.hangup()
        gw.wait_until("line 2 hears the hang-up",
                      lambda: gw.line("2")["state"] != "connected", timeout=5)
        gw.phone("2", "onhook")
        gw.wait_until("no calls", lambda: not gw.status()["calls"], timeout=5)
        got_hz, _ = wav_tone(phone.wait_recordings_closed()[-1])
        assert abs(got_hz - 1000.0) <= 20.0, got_hz  # the phone heard line 2
    finally:
        stop(gw)
