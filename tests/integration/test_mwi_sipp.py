"""Message waiting through the running daemon, with sipp as the trunk and as a voicemail
server, and the simulated phone listening:

- unsolicited NOTIFY from the trunk (as Asterisk sends): "yes" -> the idle phone receives
  VMWI (MDMF 0x82, parameter 0x0B = 0xFF, decoded from its earpiece's on-hook audio by
  gateway.dsp.callerid_rx) and hears stutter dial tone when lifted; "no" -> VMWI off
  (0x00) and normal dial tone; `branchline status` shows it;
- a subscription (lines[].mwi.server = the voicemail server): SUBSCRIBE Event:
  message-summary, the 401 challenge answered with the line account's digest (checked
  here), 200, and the server's NOTIFY in that dialog lights the lamp;
- `branchline reload` with another mwi.server moves the subscription there.
"""

from __future__ import annotations

import subprocess
import threading
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.dsp.callerid import BELL202, vmwi_message
from gateway.dsp.callerid_rx import fsk_bytes

from .conftest import require_binary
from .peers.ports import free_sip_port, release
from .peers.sipp import Sipp, sipp_binary
from .test_interop_matrix import LINE, LINE_NUMBER, poll
from .test_interop_sipp import (
    AUTH_PASS,
    AUTH_USER,
    SippRig,
    assert_sipp_passed,
    digest_params,
    expected_digest,
)

pytestmark = [pytest.mark.peers, pytest.mark.slow]


@pytest.fixture
def rig(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[SippRig]:
    require_binary("sipp", sipp_binary())
    rig = SippRig(tmp_path, account=bool(getattr(request, "param", False)))
    try:
        yield rig
    finally:
        failed = any(getattr(request.node, f"_peers_rep_{p}", None) is not None
                     and getattr(request.node, f"_peers_rep_{p}").failed
                     for p in ("setup", "call"))
        rig.close(failed)


class Earpiece:
    """Records the line's earpiece (on hook too) in the background."""

    def __init__(self, rig: SippRig, name: str, seconds: float) -> None:
        self.path = rig.tmp / f"{name}.wav"
        self._thread = threading.Thread(
            target=lambda: rig.gw.phone(LINE, "record", path=str(self.path), seconds=seconds),
            daemon=True)
        self._thread.start()

    def fsk(self) -> bytes:
        self._thread.join(15)
        with wave.open(str(self.path), "rb") as w:
            pcm = w.readframes(w.getnframes())
        return fsk_bytes(pcm, BELL202)


def _notify(rig: SippRig, waiting: str, new: int, old: int) -> None:
    """sipp (at the trunk's address) sends one NOTIFY and must get 200; it is over in
    well under the 0.3 s `Sipp.start` waits, so it is run to the end here."""
    peer = rig.sipp("uac_mwi_notify.xml", remote=f"127.0.0.1:{rig.sip_port}",
                    service=LINE_NUMBER, rtp_echo=False,
                    extra_args=["-key", "waiting", waiting, "-key", "new", str(new),
                                "-key", "old", str(old)])
    done = subprocess.run(peer.argv(), cwd=peer.dir, capture_output=True, timeout=15,
                          check=False)
    assert_sipp_passed(peer, done.returncode)


def _mwi(rig: SippRig) -> dict[str, object]:
    return dict(rig.gw.line(LINE).get("mwi") or {})


def test_unsolicited_notify_gives_vmwi_then_stutter_then_normal_dial_tone(
        rig: SippRig) -> None:
    gw = rig.gw
    gw.start()
    ear = Earpiece(rig, "vmwi-on", 4.0)
    _notify(rig, "yes", 3, 1)
    got = ear.fsk()
    assert vmwi_message(True) in got, f"no VMWI-on message in the on-hook audio: {got.hex()}"
    assert _mwi(rig)["waiting"] is True and _mwi(rig)["new"] == 3
    gw.phone(LINE, "offhook")
    gw.wait_hears(LINE, "stutter")
    gw.phone(LINE, "onhook")
    gw.wait_until("line idle", lambda: gw.line(LINE)["state"] == "idle")
    ear = Earpiece(rig, "vmwi-off", 4.0)
    _notify(rig, "no", 0, 4)
    got = ear.fsk()
    assert vmwi_message(False) in got, f"no VMWI-off message in the on-hook audio: {got.hex()}"
    assert _mwi(rig)["waiting"] is False
    gw.phone(LINE, "offhook")
    gw.wait_hears(LINE, "dial")
    gw.phone(LINE, "onhook")


@pytest.mark.parametrize("rig", [True], indirect=True, ids=["line-account"])
def test_subscription_with_digest_and_notify_in_its_dialog(rig: SippRig) -> None:
    gw = rig.gw
    vm_port, vm_media = free_sip_port(), free_sip_port()
    try:
        text = gw.config_path.read_text()
        anchor = '  - name: "2"\n'
        assert anchor in text
        gw.config_path.write_text(text.replace(
            anchor, f'    mwi: {{server: "sip:*97@127.0.0.1:{vm_port}", expires: 120}}\n'
            + anchor, 1))
        vm = Sipp("uas_mwi_subscribe.xml", sip_port=vm_port, media_port=vm_media,
                  tmpdir=rig.tmp, rtp_echo=False)
        rig.sipps.append(vm)
        vm.start()
        gw.start()
        ear = Earpiece(rig, "vmwi-sub", 5.0)  # the server NOTIFYs 1.5 s after its 200
        assert_sipp_passed(vm, vm.wait(10))
        poll("the lamp", lambda: _mwi(rig).get("waiting") is True, timeout=5,
             detail=lambda: repr(_mwi(rig)))
        state = _mwi(rig)
        assert state["subscribed"] is True and state["new"] == 2 and state["old"] == 5
        subscribes = vm.received("SUBSCRIBE ")
        assert len(subscribes) == 2, vm.report()
        for msg in subscribes:
            assert "Event: message-summary" in msg
            assert "Accept: application/simple-message-summary" in msg
        creds = [line.split(":", 1)[1] for line in subscribes[1].splitlines()
                 if line.lower().startswith("authorization:")]
        assert creds, subscribes[1]
        params = digest_params(creds[0])
        assert params["username"] == AUTH_USER
        assert params["response"] == expected_digest(params, "SUBSCRIBE", AUTH_PASS)
        got = ear.fsk()
        assert vmwi_message(True) in got, f"no VMWI in the on-hook audio: {got.hex()}"
    finally:
        release(vm_port, vm_media)


@pytest.mark.parametrize("rig", [True], indirect=True, ids=["line-account"])
def test_reload_moves_the_subscription_to_the_new_server(rig: SippRig) -> None:
    """`branchline reload` with lines[].mwi.server changed: the new server gets the
    SUBSCRIBE (with digest) and its NOTIFY lights the lamp, without a restart."""
    gw = rig.gw
    ports = [free_sip_port() for _ in range(3)]
    old_port, vm_port, vm_media = ports
    try:
        text = gw.config_path.read_text()
        anchor = '  - name: "2"\n'
        line = '    mwi: {{server: "sip:*97@127.0.0.1:{}", expires: 120}}\n'
        gw.config_path.write_text(text.replace(anchor, line.format(old_port) + anchor, 1))
        gw.start()  # nobody listens at old_port: that subscription never becomes active
        assert _mwi(rig).get("subscribed") is False
        vm = Sipp("uas_mwi_subscribe.xml", sip_port=vm_port, media_port=vm_media,
                  tmpdir=rig.tmp, rtp_echo=False)
        rig.sipps.append(vm)
        vm.start()
        gw.config_path.write_text(text.replace(anchor, line.format(vm_port) + anchor, 1))
        reply = gw.request("reload")
        assert reply["reloaded"] is True, reply
        assert_sipp_passed(vm, vm.wait(10))
        poll("the lamp", lambda: _mwi(rig).get("waiting") is True, timeout=5,
             detail=lambda: repr(_mwi(rig)))
        assert _mwi(rig)["server"] == f"sip:*97@127.0.0.1:{vm_port}"
    finally:
        release(*ports)
