"""Local phones across a daemon restart (issue 8, lane P): the bindings come back from the
state directory, so a phone that registered before the restart is relayed upstream again
and can be called at once, without waiting for its next REGISTER (baresip's interval here
is 600 s, far beyond the test)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import BaresipFactory, KamailioFactory
from .gateway_proc import GatewayProcess
from .peers.ports import free_port
from .test_first_call import assert_handset_hears_tone
from .test_local_phones import config, local_phone

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def test_restarted_daemon_relays_and_rings_a_phone_registered_before(
        tmp_path: Path, kamailio_factory: KamailioFactory,
        baresip_factory: BaresipFactory) -> None:
    trunk = kamailio_factory()
    sip_port = free_port()
    gw = GatewayProcess(tmp_path, config(tmp_path, sip_port, trunk=trunk))
    gw.sip_port = sip_port  # type: ignore[attr-defined]
    gw.start()
    try:
        alice = local_phone(baresip_factory, gw, "201", tone=1000)
        gw.wait_until("alice registered upstream", lambda: trunk.registered("alice"),
                      timeout=10, interval=0.2)
        assert gw.stop() == 0  # a clean stop un-registers upstream
        gw.wait_until("alice gone upstream", lambda: not trunk.registered("alice"),
                      timeout=5, interval=0.2)
        gw.start()
        gw.wait_until("alice relayed again from the saved binding",
                      lambda: trunk.registered("alice"), timeout=10, interval=0.2)
        # The handset calls her on the restored binding: she rings and talks.
        gw.phone("1", "offhook")
        gw.wait_hears("1", "dial")
        gw.phone("1", "dial", digits="201")
        alice.wait_for_event("CALL_INCOMING", timeout=10)
        alice.accept()
        alice.wait_for_event("CALL_ESTABLISHED", timeout=10)
        assert_handset_hears_tone(gw, "1", 1000.0, tmp_path, "after-restart")
        gw.phone("1", "onhook")
        alice.wait_for_event("CALL_CLOSED", timeout=10)
        assert "phone 201: relayed upstream" in gw.log_text()
    finally:
        code = gw.stop()
        if code not in (0, None) or os.environ.get("LANEP_DEBUG"):
            print(gw.log_text()[-8000:])
