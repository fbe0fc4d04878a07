"""GSM calls through the real daemon and the modem emulator (hal/sim) on its ptys.

- A simulated handset dials a number routed to `gsm:<group>`: the modem dials it (ATD), the
  emulator's far end answers, and tones go both ways over the EC25 serial-PCM pty; digits go
  out as AT+VTS and come back in band; busy is a busy tone on the handset.
- The emulator's caller rings the modem (RING/+CLIP): the daemon INVITEs the trunk (Kamailio)
  and baresip answers, with the caller's number in From; tones go both ways.

Tones are checked by frequency and by level (dBFS, tests/integration/audio.py) at the far
end of each direction.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gateway.dsp.dtmf import DtmfDetector
from hal.sim.modem import ModemEmulator

from .audio import active_segment, dominant_frequency, level_dbfs, read_wav
from .conftest import BaresipFactory, KamailioFactory, require_binary
from .gateway_proc import GatewayProcess
from .peers.ports import free_port
from .test_first_call import assert_handset_hears_tone, write_tone_wav

pytestmark = [pytest.mark.peers, pytest.mark.slow]

CALLER = "+447700900123"
FAR_HZ, FAR_DBFS = 1000.0, -12.0
HANDSET_HZ, HANDSET_DBFS = 440.0, -12.0


def modem_config(emu: ModemEmulator, inbound: str, extra: str = "") -> str:
    return f"""
modems:
  - name: gsm1
    profile: sim
    port: {emu.at_path}
    audio:
      type: serial-pcm
      pcm_port: {emu.pcm_path}
    group: mobile
    number: "+15550100"
    inbound: {inbound}
{extra}gsm_groups:
  - name: mobile
"""


def base_config(tmp: Path, sip_port: int, trunks: str = "") -> str:
    return f"""
gateway:
  name: gsm-gw
  country: US
  state_dir: {tmp / 'state'}
sip:
  listen: 127.0.0.1:{sip_port}
  rtp_ports: 31000-31999
  codecs: [PCMU]
{trunks}lines:
  - name: "1"
    backend: sim
    number: "101"
dialplan:
  digit_map: "(1xx|0xxxxxxxxx)"
  routes:
    - pattern: "0\\\\d+"
      to: gsm:mobile
"""


def tone(freq: float, dbfs: float, seconds: float) -> bytes:
    t = np.arange(int(8000 * seconds)) / 8000
    return (10 ** (dbfs / 20.0) * 32767 * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def pcm_tone(pcm: bytes) -> tuple[float, float]:
    """Dominant frequency and level of the loud part of raw 8 kHz S16LE audio."""
    samples = np.frombuffer(pcm, "<i2").astype(np.float64) / 32768.0
    active = active_segment(samples, 8000, threshold=-45.0)
    assert len(active) > 4000, f"less than 0.5 s above -45 dBFS in {len(samples)} samples"
    middle = active[len(active) // 4: -len(active) // 4 or None]
    return dominant_frequency(middle, 8000), level_dbfs(middle)


def wait(what: str, predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def modem_up(gw: GatewayProcess) -> bool:
    return any(m.get("state") == "up" for m in gw.status().get("modems", []))


@pytest.fixture
def emulator() -> Iterator[ModemEmulator]:
    emu = ModemEmulator("ec25").start()
    try:
        yield emu
    finally:
        emu.stop()


def test_handset_calls_out_through_the_modem(emulator: ModemEmulator, tmp_path: Path) -> None:
    emu = emulator
    gw = GatewayProcess(tmp_path, base_config(tmp_path, free_port())
                        + modem_config(emu, "line:1"))
    gw.start()
    try:
        gw.wait_until("modem up", lambda: modem_up(gw), timeout=10)
        gw.phone("1", "offhook")
        gw.wait_hears("1", "dial")
        gw.phone("1", "dial", digits="0123456789")
        wait("the modem to dial", lambda: [c.number for c in emu.calls] == ["0123456789"])
        assert b"AT+QPCMV=1,0" in emu.at_log  # voice setup sent before the ATD
        gw.wait_hears("1", "ringback", timeout=5)
        emu.remote_answer()
        gw.wait_until("handset connected", lambda: gw.line("1")["state"] == "connected",
                      timeout=5)

        # Far end -> handset, at the level it was sent.
        emu.play_pcm(tone(FAR_HZ, FAR_DBFS, 6.0))
        hz, db = assert_handset_hears_tone(gw, "1", FAR_HZ, tmp_path, "gsm-far")
        assert abs(db - FAR_DBFS) <= 3.0, f"handset heard {db:.1f} dBFS, far end sent {FAR_DBFS}"

        # Handset -> far end, on the modem's PCM pty.
        src = write_tone_wav(tmp_path / "h440.wav", HANDSET_HZ, HANDSET_DBFS)
        gw.phone("1", "play", path=str(src))
        time.sleep(0.5)
        emu.clear_heard()
        time.sleep(2.0)
        gw.phone("1", "stop")
        hz, db = pcm_tone(emu.heard())
        assert abs(hz - HANDSET_HZ) <= 0.02 * HANDSET_HZ, f"far end heard {hz:.1f} Hz"
        assert abs(db - HANDSET_DBFS) <= 3.0, f"far end heard {db:.1f} dBFS"

        # Digits: the handset's go out as AT+VTS; the far end's arrive in band.
        gw.phone("1", "dial", digits="42#")
        wait("AT+VTS digits", lambda: emu.dtmf_sent == "42#", timeout=5)
        emu.far_end_dtmf("7")
        gw.wait_until("handset hears 7",
                      lambda: str(gw.phone("1", "hears").get("digits", "")).endswith("7"),
                      timeout=5)

        # The far end hangs up: the handset gets busy tone and the call is gone.
        emu.remote_hangup()
        gw.wait_hears("1", "busy", timeout=5)
        assert not gw.status()["calls"]
        gw.phone("1", "onhook")

        # A busy far end: 486 -> busy tone on the handset; the modem is free again.
        gw.wait_until("line idle", lambda: gw.line("1")["state"] == "idle", timeout=5)
        gw.phone("1", "offhook")
        gw.wait_hears("1", "dial")
        gw.phone("1", "dial", digits="0987654321")
        wait("second dial", lambda: [c.number for c in emu.calls] == ["0987654321"])
        emu.remote_reject("BUSY")
        gw.wait_hears("1", "busy", timeout=5)
        assert not gw.status()["calls"]
        gw.phone("1", "onhook")
        assert "calling 0987654321 via modem gsm1" in gw.log_text()

        # International numbers are closed on GSM routes by default (toll fraud): reorder,
        # and the modem never dials.
        gw.wait_until("line idle", lambda: gw.line("1")["state"] == "idle", timeout=5)
        gw.phone("1", "offhook")
        gw.wait_hears("1", "dial")
        gw.phone("1", "dial", digits="0044123456")
        gw.wait_hears("1", "reorder", timeout=5)
        assert emu.calls == []
        assert b"ATD0044" not in emu.at_log
        gw.phone("1", "onhook")
    finally:
        gw.stop()


def test_modem_unplugged_during_a_call_ends_it_and_minutes_count_across_restart(
    emulator: ModemEmulator, tmp_path: Path,
) -> None:
    emu = emulator
    gw = GatewayProcess(tmp_path, base_config(tmp_path, free_port())
                        + modem_config(emu, "line:1", "    minute_cap: 1\n"))
    gw.start()
    try:
        gw.wait_until("modem up", lambda: modem_up(gw), timeout=10)
        gw.phone("1", "offhook")
        gw.wait_hears("1", "dial")
        gw.phone("1", "dial", digits="0123456789")
        wait("the modem to dial", lambda: [c.number for c in emu.calls] == ["0123456789"])
        emu.remote_answer()
        gw.wait_until("handset connected", lambda: gw.line("1")["state"] == "connected",
                      timeout=5)
        emu.unplug()
        # The handset is told at once (busy tone after an answered call), and both legs end.
        gw.wait_hears("1", "busy", timeout=5)
        gw.wait_until("calls gone", lambda: not gw.status()["calls"], timeout=5)
        assert "modem lost" in gw.log_text()
        gw.phone("1", "onhook")

        # The answered call used the SIM's one minute this month; a restart keeps the count
        # (state_dir), so the next call through the group is refused: reorder, no ATD.
        modem = gw.status()["modems"][0]
        assert (modem["minutes_this_month"], modem["minutes_left"]) == (1, 0), modem
        gw.stop()
        emu.replug()  # under a new pty name: the restarted daemon is configured with it
        emu.at_log.clear()
        gw = GatewayProcess(tmp_path, base_config(tmp_path, free_port())
                            + modem_config(emu, "line:1", "    minute_cap: 1\n"), name="gw2")
        gw.start()
        gw.wait_until("modem up", lambda: modem_up(gw), timeout=10)
        assert gw.status()["modems"][0]["minutes_this_month"] == 1
        gw.phone("1", "offhook")
        gw.wait_hears("1", "dial")
        gw.phone("1", "dial", digits="0123456789")
        gw.wait_hears("1", "reorder", timeout=5)
        assert b"ATD" not in emu.at_log and emu.calls == []
        assert "over its monthly minute cap" in gw.log_text()
        gw.phone("1", "onhook")
    finally:
        gw.stop()


def test_modem_caller_rings_the_inbound_line(emulator: ModemEmulator, tmp_path: Path) -> None:
    emu = emulator
    gw = GatewayProcess(tmp_path, base_config(tmp_path, free_port())
                        + modem_config(emu, "line:1"))
    gw.start()
    try:
        gw.wait_until("modem up", lambda: modem_up(gw), timeout=10)
        emu.incoming_call(CALLER)
        gw.wait_until("line 1 ringing", lambda: gw.line("1")["state"] == "ringing", timeout=5)
        # The handset's leg carries the GSM caller's number, and the handset's display gets
        # it as Bell 202 caller ID between the first two rings (decoded by minimodem).
        assert [c["remote"] for c in gw.status()["calls"] if c["line"] == "1"] == [CALLER]
        cid_wav = tmp_path / "callerid.wav"
        gw.phone("1", "record", path=str(cid_wav), seconds=3.6)
        wait("caller ID recorded", cid_wav.exists, timeout=8)
        time.sleep(0.2)
        decoded = subprocess.run(
            [require_binary("minimodem", shutil.which("minimodem")), "--rx", "-q", "-f",
             str(cid_wav), "1200"], capture_output=True, timeout=20).stdout
        assert b"\x02\x0d" + CALLER.encode() in decoded, decoded  # MDMF number parameter
        assert [c.state for c in emu.calls] == ["incoming"]  # not answered before the handset
        gw.phone("1", "offhook")
        wait("modem answered", lambda: [c.state for c in emu.calls] == ["active"], timeout=5)
        gw.wait_until("handset connected", lambda: gw.line("1")["state"] == "connected",
                      timeout=5)
        emu.play_pcm(tone(FAR_HZ, FAR_DBFS, 6.0))
        _, db = assert_handset_hears_tone(gw, "1", FAR_HZ, tmp_path, "gsm-in")
        assert abs(db - FAR_DBFS) <= 3.0, f"handset heard {db:.1f} dBFS"
        gw.phone("1", "onhook")  # the handset hangs up: ATH, the modem's call is gone
        wait("modem hung up", lambda: emu.calls == [], timeout=5)
        gw.wait_until("calls gone", lambda: not gw.status()["calls"], timeout=5)

        # A caller who gives up before the answer stops the ringing.
        emu.incoming_call("")
        gw.wait_until("ringing again", lambda: gw.line("1")["state"] == "ringing", timeout=5)
        emu.cancel_incoming_call()
        gw.wait_until("ringing stopped", lambda: gw.line("1")["state"] == "idle", timeout=10)
        assert not gw.status()["calls"]
    finally:
        gw.stop()


def test_modem_caller_reaches_trunk_with_caller_id(
    emulator: ModemEmulator, tmp_path: Path, kamailio_factory: KamailioFactory,
    baresip_factory: BaresipFactory,
) -> None:
    emu = emulator
    # The trunk challenges INVITEs: the call goes with the box's account on it (line 1's).
    trunk = kamailio_factory(users={"300": "bob-pass-300", "gateway": "gw-secret"},
                             auth_invite=True)
    trunks = f"""trunks:
  - name: main
    registrar: 127.0.0.1:{trunk.port}
    expires: 60
"""
    config = base_config(tmp_path, free_port(), trunks).replace(
        '    number: "101"\n',
        '    number: "101"\n    trunk: {name: main, username: gateway, password: gw-secret}\n')
    gw = GatewayProcess(tmp_path, config
                        + modem_config(emu, "trunk:main", '    inbound_number: "300"\n'))
    bob = baresip_factory("300", trunk=trunk, password="bob-pass-300", tone=int(FAR_HZ))
    bob.wait_registered()
    gw.start()
    try:
        gw.wait_until("modem up", lambda: modem_up(gw), timeout=10)
        emu.incoming_call(CALLER)
        incoming = bob.wait_for_event("CALL_INCOMING", timeout=10)
        assert CALLER in str(incoming), incoming  # caller ID carried in From
        invites = [e for e in trunk.events("request", "INVITE")]
        assert invites, trunk.log_text()[-2000:]
        assert 407 in trunk.reply_codes("INVITE"), trunk.reply_codes("INVITE")
        assert invites[-1].fields["au"] == "gateway", invites[-1].fields  # answered the 407
        assert invites[0].fields["from"].startswith(f"sip:{CALLER}@"), invites[0].fields
        assert invites[0].fields["pai"].startswith(f"sip:{CALLER}@"), invites[0].fields
        assert invites[0].fields["ruri"].startswith("sip:300@"), invites[0].fields
        assert [c.state for c in emu.calls] == ["incoming"]  # not answered before bob
        bob.accept()
        bob.wait_for_event("CALL_ESTABLISHED", timeout=10)
        wait("modem answered", lambda: [c.state for c in emu.calls] == ["active"], timeout=5)

        # Modem caller -> baresip.
        emu.play_pcm(tone(HANDSET_HZ, HANDSET_DBFS, 3.0))
        # baresip -> modem caller (its 1000 Hz source).
        time.sleep(0.5)
        emu.clear_heard()
        time.sleep(2.0)
        hz, db = pcm_tone(emu.heard())
        assert abs(hz - FAR_HZ) <= 0.02 * FAR_HZ, f"modem caller heard {hz:.1f} Hz"
        time.sleep(1.0)
        # Digits: baresip's (RFC 4733) reach the GSM far end as AT+VTS; the far end's come
        # in band, and baresip's recording carries them.
        bob.send_dtmf("9")
        wait("AT+VTS for baresip's digit", lambda: emu.dtmf_sent == "9", timeout=5)
        emu.far_end_dtmf("3")
        time.sleep(0.8)
        emu.remote_hangup()
        bob.wait_for_event("CALL_CLOSED", timeout=10)
        gw.wait_until("call gone", lambda: not gw.status()["calls"], timeout=5)

        recs = bob.wait_recordings_closed()
        from .test_first_call import wav_tone

        got_hz, got_db = wav_tone(recs[-1])
        assert abs(got_hz - HANDSET_HZ) <= 0.02 * HANDSET_HZ, got_hz
        assert abs(got_db - HANDSET_DBFS) <= 3.0, f"baresip got {got_db:.1f} dBFS"
        samples, rate = read_wav(recs[-1])
        assert rate == 8000
        pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        assert DtmfDetector().feed(pcm) == ["3"]
        _, sent_db = wav_tone(bob.recordings("enc")[-1])
        assert abs(db - sent_db) <= 3.0, f"modem caller heard {db:.1f}, baresip sent {sent_db:.1f}"

        # The SIP side refusing or hanging up ends the GSM call too (ATH).
        emu.incoming_call(CALLER)
        bob.wait_for_event("CALL_INCOMING", timeout=10)
        bob.hangup()  # refused while ringing
        wait("modem hung up after the refusal", lambda: emu.calls == [], timeout=5)
        emu.incoming_call("")  # withheld: anonymous From, Privacy: id
        bob.wait_for_event("CALL_INCOMING", timeout=10)
        last = trunk.events("request", "INVITE")[-1].fields
        assert last["from"].startswith("sip:anonymous@"), last
        bob.accept()
        wait("modem answered", lambda: [c.state for c in emu.calls] == ["active"], timeout=5)
        bob.hangup()
        wait("modem hung up after BYE", lambda: emu.calls == [], timeout=5)
        gw.wait_until("calls gone", lambda: not gw.status()["calls"], timeout=5)
    finally:
        gw.stop()
