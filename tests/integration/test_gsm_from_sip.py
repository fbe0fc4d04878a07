"""SIP -> GSM: a PBX on a trunk (sipp) calls a mobile number through the box's modem.

Off by default (a trunk's calls leaving through a SIM would make the box a free toll relay);
a trunk opts in with `allow_gsm: {groups, prefixes}`. Through the real daemon and the modem
emulator (hal/sim) as the far end:

- an allowed number: 180 while the modem dials, 200 when the far end answers, the far end's
  tone comes back to it through sipp's RTP echo (so it crossed modem PCM -> RTP -> modem
  PCM) at its frequency and level; sipp's BYE hangs the modem up (ATH); a CANCEL too (487);
- sipp's RFC 4733 digit reaches the modem as AT+VTS; the mobile hanging up sends BYE;
- the far end busy -> 486, no answer -> 480, no modem up -> 503;
- a number outside the trunk's prefixes, an international one, and any number from a trunk
  without `allow_gsm` -> 403 and no ATD.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hal.sim.modem import ModemEmulator

from .conftest import require_binary
from .gateway_proc import GatewayProcess
from .peers.ports import free_port, free_sip_port, release
from .peers.sipp import SCENARIO_DIR, Sipp, sipp_binary
from .test_gsm_calls import FAR_DBFS, FAR_HZ, modem_config, modem_up, pcm_tone, tone, wait
from .test_interop_sipp import assert_sipp_passed

pytestmark = [pytest.mark.peers]

ALLOW = '    allow_gsm: {groups: [mobile], prefixes: ["+447", "07"]}\n'


class Rig:
    """The daemon with one trunk (sipp, `pbx`), one modem (the emulator) and group mobile."""

    def __init__(self, tmp: Path, emu: ModemEmulator, allow: str) -> None:
        self.tmp, self.emu = tmp, emu
        self.sip_port, self.sipp_port, self.media_port = free_port(), free_port(), free_sip_port()
        self.gw = GatewayProcess(tmp, f"""
gateway:
  name: gsm-sip-gw
  country: UK
  state_dir: {tmp / 'state'}
sip:
  listen: 127.0.0.1:{self.sip_port}
  rtp_ports: 31000-31999
  codecs: [PCMU]
trunks:
  - name: pbx
    registrar: 127.0.0.1:{self.sipp_port}
    keepalive: none
{allow}lines:
  - name: "1"
    backend: sim
    number: "101"
dialplan:
  digit_map: "(1xx)"
  routes:
    - pattern: "1\\\\d\\\\d"
      to: local
    - pattern: "\\\\+?\\\\d+"
      to: gsm:mobile
""" + modem_config(emu, "line:1"))
        self.sipps: list[Sipp] = []

    def start(self) -> None:
        self.gw.start()
        self.gw.wait_until("modem up", lambda: modem_up(self.gw), timeout=10)

    def call(self, scenario: str, number: str, **kwargs: object) -> Sipp:
        peer = Sipp(scenario, sip_port=self.sipp_port, media_port=self.media_port,
                    tmpdir=self.tmp, remote=f"127.0.0.1:{self.sip_port}", service=number,
                    timeout_s=12, **kwargs)  # type: ignore[arg-type]
        self.sipps.append(peer)
        return peer.start()

    def expect(self, number: str, status: int) -> Sipp:
        """A call to `number` whose final answer must be `status`; returns the sipp run."""
        path = self.tmp / f"expect_{status}.xml"
        path.write_text((SCENARIO_DIR / "uac_expect_status.xml").read_text()
                        .replace("STATUS", str(status)))
        return self.call(str(path), number)

    def close(self) -> None:
        for peer in self.sipps:
            peer.stop()
        self.gw.stop()
        release(self.sip_port, self.sipp_port, self.media_port, self.media_port + 1)


@pytest.fixture
def emulator() -> Iterator[ModemEmulator]:
    emu = ModemEmulator("ec25").start()
    try:
        yield emu
    finally:
        emu.stop()


def make_rig(tmp: Path, emu: ModemEmulator, allow: str) -> Iterator[Rig]:
    require_binary("sipp", sipp_binary())
    rig = Rig(tmp, emu, allow)
    try:
        rig.start()
        yield rig
    except BaseException:
        print(f"\n===== gateway log =====\n{rig.gw.log_text()[-6000:]}")
        for peer in rig.sipps:
            print(f"\n===== sipp {peer.scenario} =====\n{peer.report()}")
        raise
    finally:
        rig.close()


@pytest.fixture
def rig(tmp_path: Path, emulator: ModemEmulator) -> Iterator[Rig]:
    yield from make_rig(tmp_path, emulator, ALLOW)


@pytest.fixture
def closed_rig(tmp_path: Path, emulator: ModemEmulator) -> Iterator[Rig]:
    yield from make_rig(tmp_path, emulator, "")


def dialled(emu: ModemEmulator) -> list[str]:
    return [c.number for c in emu.calls]


@pytest.mark.slow
def test_pbx_calls_a_mobile_through_the_modem_with_audio(rig: Rig) -> None:
    emu = rig.emu
    peer = rig.call("uac_gsm_answered.xml", "07700900123", pause_ms=3500)
    wait("the modem to dial", lambda: dialled(emu) == ["07700900123"], timeout=5)
    wait("180 at sipp", lambda: bool(peer.received("SIP/2.0 180")), timeout=5)
    assert not peer.received("SIP/2.0 200")  # not answered before the far end
    emu.remote_answer()
    emu.play_pcm(tone(FAR_HZ, FAR_DBFS, 3.0))
    wait("200 at sipp", lambda: bool(peer.received("SIP/2.0 200")), timeout=5)
    # The far end's tone went modem PCM -> RTP to sipp, which echoes it -> RTP -> modem PCM.
    import time

    time.sleep(0.8)
    emu.clear_heard()
    time.sleep(1.8)
    hz, db = pcm_tone(emu.heard())
    assert abs(hz - FAR_HZ) <= 0.02 * FAR_HZ, f"far end heard {hz:.1f} Hz back"
    assert abs(db - FAR_DBFS) <= 3.0, f"far end heard {db:.1f} dBFS, sent {FAR_DBFS}"
    assert_sipp_passed(peer, peer.wait(10))  # sipp hung up with BYE and got 200
    wait("modem hung up after BYE", lambda: emu.calls == [], timeout=5)
    rig.gw.wait_until("calls gone", lambda: not rig.gw.status()["calls"], timeout=5)
    assert "calling 07700900123 via modem gsm1" in rig.gw.log_text()

    # The PBX gives up while the mobile rings: CANCEL -> 487, and the modem hangs up.
    emu.at_log.clear()
    peer = rig.call("uac_cancel.xml", "+447700900124")
    wait("the modem to dial", lambda: dialled(emu) == ["+447700900124"], timeout=5)
    assert_sipp_passed(peer, peer.wait(10))
    wait("modem hung up after CANCEL", lambda: emu.calls == [], timeout=5)
    assert b"ATH" in emu.at_log or b"AT+CHUP" in emu.at_log


def test_far_end_failures_map_to_sip_statuses(rig: Rig) -> None:
    emu = rig.emu
    for result, status in (("BUSY", 486), ("NO ANSWER", 480)):
        peer = rig.expect("07700900125", status)
        wait("the modem to dial", lambda: dialled(emu) == ["07700900125"], timeout=5)
        emu.remote_reject(result)
        assert_sipp_passed(peer, peer.wait(10))
        wait("modem idle", lambda: emu.calls == [], timeout=5)
        rig.gw.wait_until("calls gone", lambda: not rig.gw.status()["calls"], timeout=5)
    # No modem up (unplugged): 503, so the PBX can try its next route; nothing dialled.
    emu.at_log.clear()
    emu.unplug()
    rig.gw.wait_until("modem down", lambda: not modem_up(rig.gw), timeout=5)
    peer = rig.expect("07700900126", 503)
    assert_sipp_passed(peer, peer.wait(10))
    assert emu.calls == [] and b"ATD" not in emu.at_log


def test_numbers_outside_the_trunks_prefixes_are_refused_without_dialling(rig: Rig) -> None:
    emu = rig.emu
    for number in ("08001234567", "+442071234567", "00447700900123"):
        peer = rig.expect(number, 403)
        assert_sipp_passed(peer, peer.wait(10))
    assert emu.calls == [] and b"ATD" not in emu.at_log
    log = rig.gw.log_text()
    assert log.count("call-denied") >= 3, log[-3000:]
    assert "not in an allowed prefix" in log and "prefix + denied" in log


def test_trunk_without_allow_gsm_never_reaches_the_modem(closed_rig: Rig) -> None:
    emu = closed_rig.emu
    peer = closed_rig.expect("07700900123", 403)
    assert_sipp_passed(peer, peer.wait(10))
    assert emu.calls == [] and b"ATD" not in emu.at_log
    assert "call-denied" in closed_rig.gw.log_text()


def test_rfc4733_digit_goes_out_as_vts_and_far_end_hangup_sends_bye(rig: Rig) -> None:
    emu = rig.emu
    peer = rig.call("uac_gsm_dtmf.xml", "07700900127", pause_ms=1500)
    wait("the modem to dial", lambda: dialled(emu) == ["07700900127"], timeout=5)
    emu.remote_answer()
    wait("AT+VTS for sipp's RFC 4733 digit", lambda: emu.dtmf_sent == "1", timeout=5)
    assert_sipp_passed(peer, peer.wait(10))
    assert emu.dtmf_sent == "1"  # once, not once per RFC 4733 packet
    wait("modem hung up after BYE", lambda: emu.calls == [], timeout=5)

    # The mobile hangs up first: the PBX gets a BYE.
    peer = rig.call("uac_gsm_remote_bye.xml", "07700900128")
    wait("the modem to dial", lambda: dialled(emu) == ["07700900128"], timeout=5)
    emu.remote_answer()
    wait("200 at sipp", lambda: bool(peer.received("SIP/2.0 200")), timeout=5)
    emu.remote_hangup()
    assert_sipp_passed(peer, peer.wait(10))
    assert len(peer.received("BYE ")) == 1
    rig.gw.wait_until("calls gone", lambda: not rig.gw.status()["calls"], timeout=5)
