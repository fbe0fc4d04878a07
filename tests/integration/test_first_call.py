"""The first working call, end to end against real SIP software.

Kamailio is the trunk (a registrar demanding digest auth, proxying by location); baresip is
the far-end phone; the gateway is the real `branchline run` daemon with simulated phones,
driven over its control socket the way the CLI does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .audio import active_segment, dominant_frequency, level_dbfs, read_wav, write_tone_wav
from .conftest import BaresipFactory, KamailioFactory
from .gateway_proc import GatewayProcess
from .peers.baresip import Baresip
from .peers.kamailio import KamailioTrunk
from .peers.ports import free_port

pytestmark = [pytest.mark.peers, pytest.mark.slow]

LINE_USER = "gateway"
LINE_PASS = "gateway-secret"
HANDSET_TONE_HZ = 440.0
HANDSET_TONE_DBFS = -12.0


def gateway_config(trunk: KamailioTrunk, sip_port: int, tmp: Path, *, codecs: str = "[PCMU, PCMA]") -> str:
    return f"""
gateway:
  name: test-gw
  country: US
  state_dir: {tmp / 'state'}
sip:
  listen: 127.0.0.1:{sip_port}
  rtp_ports: 30000-30999
  codecs: {codecs}
trunks:
  - name: main
    registrar: 127.0.0.1:{trunk.port}
    expires: 60
    keepalive_interval: 1
lines:
  - name: "1"
    backend: sim
    number: "101"
    trunk:
      name: main
      username: {LINE_USER}
      password: {LINE_PASS}
  - name: "2"
    backend: sim
    number: "102"
dialplan:
  digit_map: "(1xx|[2-9]xx)"
  routes:
    - pattern: "1\\\\d\\\\d"
      to: local
    - pattern: "\\\\d+"
      to: trunk:main
"""



@pytest.fixture
def setup(tmp_path: Path, kamailio_factory: KamailioFactory) -> Iterator[tuple[KamailioTrunk, GatewayProcess]]:
    trunk = kamailio_factory(users={LINE_USER: LINE_PASS, "300": "bob-pass-300"})
    gw = GatewayProcess(tmp_path, gateway_config(trunk, free_port(), tmp_path))
    gw.start()
    try:
        yield trunk, gw
    finally:
        code = gw.stop()
        if code not in (0, None):
            print(gw.log_text()[-6000:])


def wav_tone(path: Path) -> tuple[float, float]:
    samples, rate = read_wav(path)
    active = active_segment(samples, rate, threshold=-45.0)
    assert len(active) > rate // 2, f"{path}: less than 0.5 s of audio above -45 dBFS"
    # Skip the edges where the stream starts/stops.
    middle = active[len(active) // 4: -len(active) // 4 or None]
    return dominant_frequency(middle, rate), level_dbfs(middle)


def assert_handset_hears_tone(gw: GatewayProcess, line: str, freq: float, tmp: Path, name: str) -> tuple[float, float]:
    gw.wait_until(
        f"line {line} to hear {freq} Hz",
        lambda: abs((gw.phone(line, "hears").get("dominant_hz") or 0) - freq) <= 0.02 * freq,
        timeout=10,
        interval=0.2,
    )
    rec = tmp / f"{name}.wav"
    gw.phone(line, "record", path=str(rec), seconds=1.5)
    got_hz, got_db = wav_tone(rec)
    assert abs(got_hz - freq) <= 0.02 * freq, f"handset heard {got_hz:.1f} Hz, expected {freq}"
    return got_hz, got_db


def call_auto_answering_bob(trunk: KamailioTrunk, gw: GatewayProcess,
                            baresip_factory: BaresipFactory) -> Baresip:
    """Line 1 dials 300, a baresip that answers at once; returns once both are connected."""
    bob = baresip_factory("300", trunk=trunk, password="bob-pass-300", tone=1000, answer_mode="auto")
    bob.wait_registered()
    gw.wait_until("line 1 registered", lambda: gw.registered("1"), timeout=10)
    gw.phone("1", "offhook")
    gw.phone("1", "dial", digits="300")
    bob.wait_for_event("CALL_ESTABLISHED", timeout=15)
    gw.wait_until("call connected", lambda: gw.line("1")["state"] == "connected", timeout=10)
    return bob


def test_registers_with_digest_and_refreshes(setup: tuple[KamailioTrunk, GatewayProcess]) -> None:
    trunk, gw = setup
    gw.wait_until("line 1 registered", lambda: gw.registered("1"), timeout=10)
    assert trunk.registered(LINE_USER)
    codes = trunk.reply_codes("REGISTER", user=LINE_USER)
    assert codes[:2] == [401, 200], codes
    # Granted expires is 60 s: the refresh must come well before expiry (at ~30 s).
    before = len([c for c in trunk.reply_codes("REGISTER", user=LINE_USER) if c == 200])
    gw.wait_until(
        "a refresh REGISTER",
        lambda: len([c for c in trunk.reply_codes("REGISTER", user=LINE_USER) if c == 200]) > before,
        timeout=45,
        interval=0.5,
    )
    assert gw.registered("1")
    # The daemon runs at debug level here: still, the trunk password never reaches the log.
    assert LINE_PASS not in gw.log_text()
    assert LINE_PASS not in str(gw.status())


def test_outgoing_call_audio_both_ways_dtmf_and_hangup(
    setup: tuple[KamailioTrunk, GatewayProcess], baresip_factory: BaresipFactory, tmp_path: Path
) -> None:
    trunk, gw = setup
    bob = baresip_factory("300", trunk=trunk, password="bob-pass-300", tone=1000)
    bob.wait_registered()
    gw.wait_until("line 1 registered", lambda: gw.registered("1"), timeout=10)

    gw.phone("1", "offhook")
    gw.wait_hears("1", "dial")
    gw.phone("1", "dial", digits="300")
    bob.wait_for_event("CALL_INCOMING", timeout=15)
    gw.wait_hears("1", "ringback", timeout=10)
    bob.accept()
    bob.wait_for_event("CALL_ESTABLISHED")

    # Far end -> handset: 1000 Hz at the level baresip sent.
    _, heard_db = assert_handset_hears_tone(gw, "1", 1000.0, tmp_path, "handset-1000")

    # Handset -> far end: 440 Hz.
    src = write_tone_wav(tmp_path / "tone-440.wav", HANDSET_TONE_HZ, HANDSET_TONE_DBFS)
    gw.phone("1", "play", path=str(src))
    time.sleep(2.0)
    gw.phone("1", "stop")

    # Digits dialled during the call reach baresip as RFC 4733 events.
    gw.phone("1", "dial", digits="42#")
    deadline = time.monotonic() + 10
    while bob.received_dtmf() != "42#" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert bob.received_dtmf() == "42#"

    # Digits baresip sends as RFC 4733 events are regenerated in band for the handset.
    bob.send_dtmf("7*")
    gw.wait_until(
        "handset hears 7*",
        lambda: str(gw.phone("1", "hears").get("digits", "")).endswith("7*"),
        timeout=5,
    )

    gw.phone("1", "onhook")
    bob.wait_for_event("CALL_CLOSED", timeout=10)
    gw.wait_until("call gone", lambda: not gw.status()["calls"], timeout=5)

    recs = bob.wait_recordings_closed()
    assert recs, "baresip wrote no recording"
    got_hz, got_db = wav_tone(recs[-1])
    assert abs(got_hz - HANDSET_TONE_HZ) <= 0.02 * HANDSET_TONE_HZ, got_hz
    assert abs(got_db - HANDSET_TONE_DBFS) <= 3.0, f"far end got {got_db:.1f} dBFS, sent {HANDSET_TONE_DBFS}"
    sent = bob.recordings("enc")[-1]
    _, sent_db = wav_tone(sent)
    assert abs(heard_db - sent_db) <= 3.0, f"handset heard {heard_db:.1f} dBFS, baresip sent {sent_db:.1f}"


def test_far_end_hangup_ends_call_and_plays_busy(
    setup: tuple[KamailioTrunk, GatewayProcess], baresip_factory: BaresipFactory
) -> None:
    trunk, gw = setup
    bob = call_auto_answering_bob(trunk, gw, baresip_factory)
    bob.hangup()
    bob.wait_for_event("CALL_CLOSED")
    report = gw.wait_hears("1", "busy", timeout=10)
    assert report["what"] == "busy"
    assert not gw.status()["calls"]
    gw.phone("1", "onhook")
    gw.wait_until("line idle", lambda: gw.line("1")["state"] == "idle", timeout=5)


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_incoming_call_single_codec_audio_both_ways(
    codec: str, setup: tuple[KamailioTrunk, GatewayProcess], baresip_factory: BaresipFactory,
    tmp_path: Path,
) -> None:
    trunk, gw = setup
    bob = baresip_factory("300", trunk=trunk, password="bob-pass-300", tone=1000, codecs=[codec])
    bob.wait_registered()
    gw.wait_until("line 1 registered", lambda: gw.registered("1"), timeout=10)

    bob.dial(f"sip:{LINE_USER}@127.0.0.1:{trunk.port}")
    gw.wait_until("line 1 ringing", lambda: gw.line("1")["ringing"] or gw.line("1")["state"] == "ringing", timeout=15)
    gw.phone("1", "offhook")
    bob.wait_for_event("CALL_ESTABLISHED", timeout=10)
    calls = gw.status()["calls"]
    assert len(calls) == 1 and calls[0]["codec"] == codec, calls

    _, heard_db = assert_handset_hears_tone(gw, "1", 1000.0, tmp_path, f"in-{codec}")
    src = write_tone_wav(tmp_path / "tone-440.wav", HANDSET_TONE_HZ, HANDSET_TONE_DBFS)
    gw.phone("1", "play", path=str(src))
    time.sleep(2.0)
    bob.hangup()
    bob.wait_for_event("CALL_CLOSED")
    gw.wait_until("call gone", lambda: not gw.status()["calls"], timeout=5)
    gw.phone("1", "onhook")

    recs = bob.wait_recordings_closed()
    got_hz, got_db = wav_tone(recs[-1])
    assert abs(got_hz - HANDSET_TONE_HZ) <= 0.02 * HANDSET_TONE_HZ, got_hz
    assert abs(got_db - HANDSET_TONE_DBFS) <= 3.0, got_db
    _, sent_db = wav_tone(bob.recordings("enc")[-1])
    assert abs(heard_db - sent_db) <= 3.0, (heard_db, sent_db)


def test_incoming_call_cancelled_before_answer(
    setup: tuple[KamailioTrunk, GatewayProcess], baresip_factory: BaresipFactory
) -> None:
    trunk, gw = setup
    bob = baresip_factory("300", trunk=trunk, password="bob-pass-300", tone=1000)
    bob.wait_registered()
    gw.wait_until("line 1 registered", lambda: gw.registered("1"), timeout=10)
    bob.dial(f"sip:{LINE_USER}@127.0.0.1:{trunk.port}")
    gw.wait_until("line 1 ringing", lambda: gw.line("1")["state"] == "ringing", timeout=15)
    bob.hangup()  # CANCEL before answer
    bob.wait_for_event("CALL_CLOSED", timeout=10)
    gw.wait_until("ringing stopped", lambda: gw.line("1")["state"] == "idle" and not gw.line("1")["ringing"], timeout=5)
    gw.wait_until(
        "487 relayed by the trunk",
        lambda: 487 in [e.code for e in trunk.events("relayed", "INVITE")],
        timeout=5,
    )
    assert not gw.status()["calls"]


def test_registrar_outage_is_reported_and_recovered(
    setup: tuple[KamailioTrunk, GatewayProcess],
) -> None:
    trunk, gw = setup
    gw.wait_until("line 1 registered", lambda: gw.registered("1"), timeout=10)
    trunk.stop()
    took_down = gw.wait_until("not-registered reported", lambda: not gw.registered("1"), timeout=15)
    down_since = time.monotonic()
    # While it is down the gateway must keep saying so.
    while time.monotonic() - down_since < 30:
        assert not gw.registered("1")
        time.sleep(1.0)
    trunk.start()
    # Trunk health (issue 8) lets the line register again once the trunk has answered its
    # probes for failback_after (5 s by default): hysteresis, so the timeout allows for it.
    back = gw.wait_until("registered again", lambda: gw.registered("1"), timeout=10,
                         interval=0.05)
    assert trunk.registered(LINE_USER)
    print(f"outage detected after {took_down:.1f} s; re-registered {back:.2f} s after return")


def test_sigterm_sends_bye_and_unregisters(
    setup: tuple[KamailioTrunk, GatewayProcess], baresip_factory: BaresipFactory
) -> None:
    trunk, gw = setup
    bob = call_auto_answering_bob(trunk, gw, baresip_factory)
    assert gw.stop() == 0
    # Without Record-Route the BYE goes straight to baresip's Contact: it closing the call
    # it never hung up is the proof.
    closed = bob.wait_for_event("CALL_CLOSED", timeout=5)
    print("baresip saw:", closed)
    assert not trunk.registered(LINE_USER), "binding still present after SIGTERM"



def test_hook_flash_holds_and_resumes_the_far_end(
    setup: tuple[KamailioTrunk, GatewayProcess], baresip_factory: BaresipFactory, tmp_path: Path
) -> None:
    trunk, gw = setup
    call_auto_answering_bob(trunk, gw, baresip_factory)
    assert_handset_hears_tone(gw, "1", 1000.0, tmp_path, "before-hold")

    def held() -> bool:
        calls = gw.status()["calls"]
        return bool(calls and calls[0]["held"])

    gw.phone("1", "flash")
    gw.wait_until("call held", held, timeout=5)
    # Held (a=inactive) and dial tone for a consultation call (issue 12: three-way calling)
    gw.wait_dial_tone("1")
    assert gw.line("1")["state"] == "dial-tone"
    gw.phone("1", "flash")  # nothing dialled: back to the held call
    gw.wait_until("call resumed", lambda: not held(), timeout=5)
    assert_handset_hears_tone(gw, "1", 1000.0, tmp_path, "after-resume")
    gw.phone("1", "onhook")
    gw.wait_until("call gone", lambda: not gw.status()["calls"], timeout=5)
