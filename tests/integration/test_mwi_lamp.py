"""Message waiting lamp through the running daemon, sipp sending the trunk's unsolicited
NOTIFY (issue 12):

- on an ETSI FSK line (country DE: V.23) the on-hook VMWI is preceded by a line reversal
  and DT-AS (EN 300 659-1, data without ringing): the simulated phone sees the polarity
  reversed and restored, and its earpiece carries DT-AS and then the V.23 message;
- a reload that makes the line again, and a restart, keep the lamp: stutter dial tone and
  `waiting` in status without another NOTIFY (the trunk sends one only on a change).
"""

from __future__ import annotations

import threading
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.dsp.analysis import frequencies_present
from gateway.dsp.callerid import DTAS_HZ, V23, vmwi_message
from gateway.dsp.callerid_rx import fsk_bytes

from .test_interop_matrix import LINE
from .test_interop_sipp import SippRig
from .test_mwi_sipp import _mwi, _notify, rig  # noqa: F401  (rig is a fixture)

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def _record(rig: SippRig, name: str, seconds: float) -> tuple[threading.Thread, Path]:  # noqa: F811
    path = rig.tmp / f"{name}.wav"
    thread = threading.Thread(
        target=lambda: rig.gw.phone(LINE, "record", path=str(path), seconds=seconds),
        daemon=True)
    thread.start()
    return thread, path


def _pcm(thread: threading.Thread, path: Path) -> bytes:
    thread.join(15)
    with wave.open(str(path), "rb") as w:
        return w.readframes(w.getnframes())


@pytest.fixture
def etsi_rig(rig: SippRig) -> Iterator[SippRig]:  # noqa: F811
    text = rig.gw.config_path.read_text()
    rig.gw.config_path.write_text(text.replace("country: US", "country: DE", 1))
    yield rig


def test_etsi_vmwi_comes_after_a_reversal_and_dtas(etsi_rig: SippRig) -> None:
    gw = etsi_rig.gw
    gw.start()
    before = len(gw.phone(LINE, "state")["polarity"])
    thread, path = _record(etsi_rig, "vmwi-de", 3.0)
    _notify(etsi_rig, "yes", 2, 0)
    pcm = _pcm(thread, path)
    assert vmwi_message(True) in fsk_bytes(pcm, V23), "no V.23 VMWI in the on-hook audio"
    loud = [i for i in range(0, len(pcm) // 160) if max(
        abs(int.from_bytes(pcm[k:k + 2], "little", signed=True))
        for k in range(i * 160, i * 160 + 160, 2)) > 50]
    assert loud, "the earpiece carried nothing"
    first = pcm[loud[0] * 160: loud[0] * 160 + 1280]  # the first 80 ms of sound: DT-AS
    assert frequencies_present(first, (*DTAS_HZ, 1300.0, 2100.0)) == DTAS_HZ
    changes = [p for _, p in gw.phone(LINE, "state")["polarity"][before:]]
    assert changes == ["reversed", "normal"], gw.phone(LINE, "state")["polarity"]
    assert _mwi(etsi_rig)["waiting"] is True


def test_lamp_survives_a_reload_that_remakes_the_line_and_a_restart(rig: SippRig) -> None:  # noqa: F811
    gw = rig.gw
    gw.start()
    _notify(rig, "yes", 4, 1)
    gw.wait_until("lamp on", lambda: _mwi(rig).get("waiting") is True, timeout=5)
    text = gw.config_path.read_text()
    anchor = '  - name: "2"\n'
    gw.config_path.write_text(text.replace(anchor, "    timers: {first_digit: 9}\n" + anchor, 1))
    reply = gw.request("reload")
    assert reply["reloaded"] is True, reply
    gw.wait_until("line 1 made again", lambda: "reload: line 1 now uses its new settings"
                  in gw.log_text(), timeout=5)
    gw.phone(LINE, "offhook")
    gw.wait_hears(LINE, "stutter", timeout=5)
    gw.phone(LINE, "onhook")
    assert _mwi(rig)["waiting"] is True
    assert gw.stop() == 0
    gw.start()
    assert _mwi(rig)["waiting"] is True and _mwi(rig)["new"] == 4, _mwi(rig)
    gw.phone(LINE, "offhook")
    gw.wait_hears(LINE, "stutter", timeout=5)
    gw.phone(LINE, "onhook")
