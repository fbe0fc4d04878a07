"""Blind transfer on the box with a local SIP phone as the transferee (issue 12): baresip
(registered to the box as phone 201, sending 1000 Hz) calls FXS line 1; line 1 flashes,
dials line 2 and hangs up while it rings. Line 2 rings with the phone's call, answers,
and the two hear each other (the handset by frequency, baresip's recording by frequency)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .audio import write_tone_wav
from .conftest import BaresipFactory
from .gateway_proc import GatewayProcess
from .peers.ports import free_port
from .test_fxs_multicall import wait_heard
from .test_local_phones import assert_tone, box_uri, config, local_phone

pytestmark = [pytest.mark.peers, pytest.mark.slow]

PHONE_HZ, LINE2_HZ = 1000.0, 600.0


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    sip_port = free_port()
    text = config(tmp_path, sip_port).replace(
        '    number: "101"\n', '    number: "101"\n  - name: "2"\n    backend: sim\n'
        '    number: "102"\n', 1)
    gw = GatewayProcess(tmp_path, text)
    gw.sip_port = sip_port  # type: ignore[attr-defined]
    gw.start()
    try:
        yield gw
    finally:
        code = gw.stop()
        if code not in (0, None) or os.environ.get("LANEP_DEBUG"):
            print(gw.log_text()[-8000:])


def test_phone_call_transferred_blind_to_another_line(
        gateway: GatewayProcess, baresip_factory: BaresipFactory, tmp_path: Path) -> None:
    gw = gateway
    alice = local_phone(baresip_factory, gw, "201", tone=int(PHONE_HZ))
    alice.dial(box_uri(gw, "101"))
    gw.wait_until("line 1 rings", lambda: gw.line("1")["ringing"], timeout=10)
    gw.phone("1", "offhook")
    alice.wait_for_event("CALL_ESTABLISHED", timeout=10)
    gw.phone("1", "flash")
    gw.wait_dial_tone("1")
    gw.phone("1", "dial", digits="102")
    gw.wait_until("line 2 rings", lambda: gw.line("2")["ringing"], timeout=5)
    gw.phone("1", "onhook")  # blind transfer of the phone's call to line 2
    gw.wait_until("line 1 idle", lambda: gw.line("1")["state"] == "idle", timeout=5)
    gw.wait_until("line 2 rings for the phone",
                  lambda: gw.line("2")["state"] == "ringing", timeout=5)
    assert not gw.line("1")["ringing"]
    gw.phone("2", "offhook")
    gw.phone("2", "play", path=str(write_tone_wav(tmp_path / "l2.wav", LINE2_HZ, -12.0)))
    wait_heard(gw, tmp_path, "2-hears-phone", (PHONE_HZ,), line="2")
    time.sleep(2.0)
    assert gw.line("1")["state"] == "idle" and not gw.line("1")["ringing"]
    gw.phone("2", "onhook")
    alice.wait_for_event("CALL_CLOSED", timeout=10)
    gw.wait_until("no calls left", lambda: not gw.status()["calls"], timeout=5)
    assert_tone(alice.wait_recordings_closed()[-1], LINE2_HZ)  # the phone heard line 2
