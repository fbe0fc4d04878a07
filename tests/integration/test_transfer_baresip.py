"""Transfer against real SIP software: Kamailio is the trunk, baresip the far-end phones
(bob 300, carol 301), the gateway the real daemon with simulated phones.

- bob transfers us: bob calls line 1, the handset answers, bob's `transfer` sends REFER to
  sip:301@trunk; the gateway calls carol from line 1 over the trunk, reports to bob with
  NOTIFY sipfrag, ends bob's call, and the handset hears carol's 1200 Hz tone;
- we transfer bob (blind): line 1 calls bob, flash, dials 301 and hangs up while carol
  rings; bob gets our REFER, calls carol himself, and once carol answers bob's NOTIFY
  ends our part (line idle, no calls).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import BaresipFactory, KamailioFactory
from .gateway_proc import GatewayProcess
from .peers.kamailio import KamailioTrunk
from .peers.ports import free_port
from .test_first_call import (
    LINE_PASS,
    LINE_USER,
    assert_handset_hears_tone,
    call_auto_answering_bob,
    gateway_config,
)

pytestmark = [pytest.mark.peers, pytest.mark.slow]

CAROL_HZ = 1200


@pytest.fixture
def setup(tmp_path: Path, kamailio_factory: KamailioFactory
          ) -> Iterator[tuple[KamailioTrunk, GatewayProcess]]:
    trunk = kamailio_factory(users={LINE_USER: LINE_PASS, "300": "bob-pass-300",
                                    "301": "carol-pass-301"})
    gw = GatewayProcess(tmp_path, gateway_config(trunk, free_port(), tmp_path))
    gw.start()
    try:
        yield trunk, gw
    finally:
        code = gw.stop()
        if code not in (0, None):
            print(gw.log_text()[-6000:])


def test_baresip_transfers_the_line_to_carol(
    setup: tuple[KamailioTrunk, GatewayProcess], baresip_factory: BaresipFactory,
    tmp_path: Path,
) -> None:
    trunk, gw = setup
    bob = baresip_factory("300", trunk=trunk, password="bob-pass-300", tone=1000)
    carol = baresip_factory("301", trunk=trunk, password="carol-pass-301", tone=CAROL_HZ,
                            answer_mode="auto")
    bob.wait_registered()
    carol.wait_registered()
    gw.wait_until("line 1 registered", lambda: gw.registered("1"), timeout=10)
    bob.dial(f"sip:{LINE_USER}@127.0.0.1:{trunk.port}")
    gw.wait_until("line 1 rings", lambda: gw.line("1")["state"] == "ringing", timeout=10)
    gw.phone("1", "offhook")
    bob.wait_for_event("CALL_ESTABLISHED", timeout=10)
    bob.command("transfer", "sip:301@127.0.0.1")
    carol.wait_for_event("CALL_ESTABLISHED", timeout=15)
    bob.wait_for_event("CALL_CLOSED", timeout=10)
    gw.wait_until("one call, to carol", lambda: [
        (c["remote"], c["state"]) for c in gw.status()["calls"]]
        == [("sip:301@127.0.0.1", "connected")], timeout=10)
    assert gw.line("1")["state"] == "connected"
    assert_handset_hears_tone(gw, "1", CAROL_HZ, tmp_path, "carol")
    gw.phone("1", "onhook")
    carol.wait_for_event("CALL_CLOSED", timeout=10)


def test_line_transfers_bob_to_carol_blind(
    setup: tuple[KamailioTrunk, GatewayProcess], baresip_factory: BaresipFactory,
) -> None:
    trunk, gw = setup
    carol = baresip_factory("301", trunk=trunk, password="carol-pass-301", tone=CAROL_HZ)
    carol.wait_registered()
    bob = call_auto_answering_bob(trunk, gw, baresip_factory)
    gw.phone("1", "flash")
    gw.wait_until("consultation dial tone", lambda: gw.line("1")["state"] == "dial-tone",
                  timeout=5)
    gw.phone("1", "dial", digits="301")
    carol.wait_for_event("CALL_INCOMING", timeout=10)
    gw.phone("1", "onhook")  # while carol rings: blind transfer of bob to 301
    gw.wait_until("line idle", lambda: gw.line("1")["state"] == "idle", timeout=5)
    carol.wait_for_event("CALL_CLOSED", timeout=10)  # our consultation call was dropped
    carol.wait_for_event("CALL_INCOMING", timeout=10)  # bob calls her now
    carol.accept()
    carol.wait_for_event("CALL_ESTABLISHED", timeout=10)
    gw.wait_until("our calls gone", lambda: not gw.status()["calls"], timeout=10)
    assert gw.line("1")["state"] == "idle"
    assert bob.list_calls()  # bob now talks to carol
