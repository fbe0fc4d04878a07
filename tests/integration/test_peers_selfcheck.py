"""Prove the integration harness itself: real Kamailio and baresip talking on loopback.

If these fail, the gateway's own integration tests cannot be trusted either, so they
check the things those tests lean on: digest registration (401 then 200), routing by
location, tone in the far end's recording, RFC 4733 DTMF, hangup on both sides, and a
trunk that can be stopped and started again on the same port.
"""

from __future__ import annotations

import math
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from .audio import active_segment, dominant_frequency, level_dbfs, read_wav, tone_present
from .conftest import BaresipFactory, KamailioFactory
from .peers import sip_probe
from .peers.baresip import Baresip, BaresipError
from .peers.kamailio import KamailioTrunk

TALK_SECONDS = 1.5


def _heard(phone: Baresip) -> tuple[float, float]:
    """Dominant frequency and level of the newest call this phone recorded."""
    samples, rate = read_wav(phone.last_heard())
    active = active_segment(samples, rate, threshold=-40.0)
    assert len(active) >= rate // 2, f"{phone.name} heard under 0.5 s of signal"
    return dominant_frequency(active, rate), level_dbfs(active)


def _connect(caller: Baresip, callee: Baresip, uri: str) -> None:
    caller.dial(uri)
    callee.wait_for_event("CALL_INCOMING", timeout=10)
    if callee.answer_mode == "manual":
        callee.accept()
    caller.wait_for_event("CALL_ESTABLISHED", timeout=10)
    callee.wait_for_event("CALL_ESTABLISHED", timeout=10)


@pytest.mark.peers
@pytest.mark.timeout(60)
def test_register_with_digest_then_call_carries_tone_and_dtmf(
    kamailio_trunk: KamailioTrunk, baresip_factory: BaresipFactory
) -> None:
    alice = baresip_factory("alice", trunk=kamailio_trunk, tone=1000)
    bob = baresip_factory("bob", trunk=kamailio_trunk, tone=440)
    alice.wait_registered(timeout=10)
    bob.wait_registered(timeout=10)

    # The trunk challenged each first REGISTER and accepted the authenticated retry.
    assert kamailio_trunk.reply_codes("REGISTER", "alice")[:2] == [401, 200]
    assert kamailio_trunk.reply_codes("REGISTER", "bob")[:2] == [401, 200]
    assert kamailio_trunk.registered("alice")
    assert kamailio_trunk.registered("bob")
    assert not kamailio_trunk.registered("carol")
    contact = kamailio_trunk.contact("bob")
    assert contact is not None and f"127.0.0.1:{bob.sip_port}" in contact

    _connect(alice, bob, f"sip:bob@127.0.0.1:{kamailio_trunk.port}")
    invites = kamailio_trunk.events("request", "INVITE")
    assert invites and invites[0].fields["ruri"].startswith("sip:bob@")
    assert 200 in [e.code for e in kamailio_trunk.events("relayed", "INVITE")]

    time.sleep(TALK_SECONDS)  # real peers exchange real-time RTP
    alice.send_dtmf("1*9#")
    time.sleep(0.5)
    alice.hangup()
    alice.wait_for_event("CALL_CLOSED", timeout=10)
    closed = bob.wait_for_event("CALL_CLOSED", timeout=10)
    assert "peer" in str(closed.get("param", "")).lower()

    assert bob.received_dtmf() == "1*9#"
    freq_at_bob, level_at_bob = _heard(bob)
    freq_at_alice, _ = _heard(alice)
    assert freq_at_bob == pytest.approx(1000.0, rel=0.02)
    assert freq_at_alice == pytest.approx(440.0, rel=0.02)
    assert -30.0 < level_at_bob < 3.0


@pytest.mark.peers
@pytest.mark.timeout(60)
@pytest.mark.kamailio(auth_invite=True, record_route=True)
def test_invite_challenge_and_record_route_keep_trunk_in_path(
    kamailio_trunk: KamailioTrunk, baresip_factory: BaresipFactory
) -> None:
    alice = baresip_factory("alice", trunk=kamailio_trunk, tone=1000)
    bob = baresip_factory("bob", trunk=kamailio_trunk, tone=440, answer_mode="auto")
    alice.wait_registered()
    bob.wait_registered()

    alice.dial(f"sip:bob@127.0.0.1:{kamailio_trunk.port}")
    alice.wait_for_event("CALL_ESTABLISHED", timeout=10)
    bob.wait_for_event("CALL_ESTABLISHED", timeout=10)
    assert kamailio_trunk.reply_codes("INVITE") == [407]
    alice.hangup()
    bob.wait_for_event("CALL_CLOSED", timeout=10)
    # With Record-Route the BYE is proxied by the trunk, not sent phone to phone.
    byes = kamailio_trunk.events("relayed", "BYE")
    assert [e.code for e in byes][:1] == [200]


@pytest.mark.peers
@pytest.mark.timeout(60)
def test_unknown_user_gets_404_and_wrong_password_never_registers(
    kamailio_trunk: KamailioTrunk, baresip_factory: BaresipFactory
) -> None:
    alice = baresip_factory("alice", trunk=kamailio_trunk)
    mallory = baresip_factory("bob", trunk=kamailio_trunk, password="not-bobs")
    alice.wait_registered()
    with pytest.raises(BaresipError):
        mallory.wait_registered(timeout=5)
    assert not kamailio_trunk.registered("bob")
    assert 200 not in kamailio_trunk.reply_codes("REGISTER", "bob")

    alice.dial(f"sip:nobody@127.0.0.1:{kamailio_trunk.port}")
    closed = alice.wait_for_event("CALL_CLOSED", timeout=10)
    assert "404" in str(closed.get("param"))
    assert 404 in kamailio_trunk.reply_codes("INVITE")


@pytest.mark.peers
@pytest.mark.timeout(60)
def test_direct_call_without_registrar_negotiates_pcma(
    baresip_factory: BaresipFactory,
) -> None:
    caller = baresip_factory("caller", codecs=["PCMU", "PCMA"], tone=700)
    callee = baresip_factory("callee", codecs=["PCMA"], tone=1300, answer_mode="auto")
    caller.dial(callee.direct_uri)
    caller.wait_for_event("CALL_ESTABLISHED", timeout=10)
    callee.wait_for_event("CALL_ESTABLISHED", timeout=10)
    time.sleep(TALK_SECONDS)
    callee.hangup()
    caller.wait_for_event("CALL_CLOSED", timeout=10)
    assert "Set audio decoder: PCMA" in callee.log_text()
    assert "Set audio decoder: PCMA" in caller.log_text()
    freq_at_callee, _ = _heard(callee)
    freq_at_caller, _ = _heard(caller)
    assert freq_at_callee == pytest.approx(700.0, rel=0.02)
    assert freq_at_caller == pytest.approx(1300.0, rel=0.02)


@pytest.mark.peers
@pytest.mark.timeout(60)
def test_short_wav_source_is_looped_and_keeps_the_call_up(
    baresip_factory: BaresipFactory, sox_binary: str, tmp_path: Path
) -> None:
    # A 0.5 s, 22.05 kHz mono file: aufile alone would hit its end and drop the call.
    wav = tmp_path / "short-600.wav"
    rate = 22050
    t = np.arange(rate // 2) / rate
    _write_wav(wav, 0.4 * np.sin(2 * math.pi * 600.0 * t), rate, channels=1)
    caller = baresip_factory("caller", tone=None, source_wav=wav, loop_source=True)
    callee = baresip_factory("callee", tone=None, answer_mode="auto")
    caller.dial(callee.direct_uri)
    callee.wait_for_event("CALL_ESTABLISHED", timeout=10)
    time.sleep(TALK_SECONDS)
    assert "CALL_CLOSED" not in caller.event_types()
    assert "AUDIO_ERROR" not in caller.event_types()
    caller.hangup()
    callee.wait_for_event("CALL_CLOSED", timeout=10)
    samples, rate_heard = read_wav(callee.last_heard())
    active = active_segment(samples, rate_heard, threshold=-40.0)
    assert len(active) >= rate_heard  # well past the 0.5 s the file holds
    assert dominant_frequency(active, rate_heard) == pytest.approx(600.0, rel=0.02)
    # The silent caller really sent silence.
    caller_heard, caller_rate = read_wav(caller.last_heard())
    assert len(active_segment(caller_heard, caller_rate, threshold=-40.0)) == 0


@pytest.mark.peers
@pytest.mark.timeout(60)
def test_kamailio_stop_start_cycle_on_same_port(
    kamailio_factory: KamailioFactory, baresip_factory: BaresipFactory
) -> None:
    trunk = kamailio_factory()
    port = trunk.port
    alice = baresip_factory("alice", trunk=trunk, regint=600)
    alice.wait_registered()
    assert trunk.registered("alice")

    trunk.stop()
    assert not trunk.is_running
    assert sip_probe(port, timeout=0.5) is None

    trunk.start()
    assert trunk.is_running and trunk.port == port
    reply = sip_probe(port)
    assert reply is not None and reply.status == 200
    # usrloc is memory only: the restart forgot alice until she registers again.
    assert not trunk.registered("alice")

    trunk.stop()
    trunk.start()
    assert sip_probe(port) is not None


# ------------------------------------------------- analysis helpers (no peers needed)


def _write_wav(path: Path, samples: np.ndarray, rate: int, channels: int) -> None:
    data = np.round(np.clip(samples, -1.0, 32767 / 32768) * 32768).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.repeat(data, channels).tobytes())


def test_read_wav_downmixes_stereo_48k_and_finds_the_tone(tmp_path: Path) -> None:
    rate = 48000
    t = np.arange(rate) / rate
    tone = 0.5 * np.sin(2 * math.pi * 1234.0 * t)
    padded = np.concatenate([np.zeros(rate // 2), tone, np.zeros(rate // 4)])
    path = tmp_path / "tone.wav"
    _write_wav(path, padded, rate, channels=2)

    samples, got_rate = read_wav(path)
    assert got_rate == rate
    assert len(samples) == len(padded)
    active = active_segment(samples, rate, threshold=-40.0)
    assert abs(len(active) - rate) <= rate // 50
    assert dominant_frequency(active, rate) == pytest.approx(1234.0, rel=0.002)
    assert level_dbfs(active) == pytest.approx(20 * math.log10(0.5), abs=0.1)
    assert tone_present(samples, rate, 1234.0)
    assert not tone_present(samples, rate, 1000.0)


def test_read_wav_tolerates_a_header_left_unfinished(tmp_path: Path) -> None:
    rate = 8000
    t = np.arange(rate) / rate
    path = tmp_path / "cut.wav"
    _write_wav(path, 0.25 * np.sin(2 * math.pi * 440.0 * t), rate, channels=1)
    raw = bytearray(path.read_bytes())
    data_at = raw.index(b"data")
    raw[data_at + 4:data_at + 8] = (0).to_bytes(4, "little")  # as if never closed
    path.write_bytes(bytes(raw))

    samples, _ = read_wav(path)
    assert len(samples) == rate
    assert dominant_frequency(samples, rate) == pytest.approx(440.0, rel=0.01)


def test_level_of_full_scale_sine_is_zero_and_silence_is_minus_infinity() -> None:
    t = np.arange(8000) / 8000
    assert level_dbfs(np.sin(2 * math.pi * 1000.0 * t)) == pytest.approx(0.0, abs=0.01)
    assert level_dbfs(np.zeros(160)) == -math.inf
    assert len(active_segment(np.zeros(8000), 8000)) == 0
