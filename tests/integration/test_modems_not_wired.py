"""A config with `modems:` is accepted by the daemon, which says GSM is not wired in yet.

The modems and GSM groups are read and checked (see tests/unit/test_config_modems.py), but
no runtime code opens a modem yet; the daemon must still start and serve its lines.
"""

from __future__ import annotations

from pathlib import Path

from .gateway_proc import GatewayProcess
from .peers.ports import free_port, release


def test_daemon_starts_with_modems_and_says_they_are_not_used(tmp_path: Path) -> None:
    sip_port = free_port()
    config = f"""
gateway:
  name: gsm-gw
  state_dir: {tmp_path / 'state'}
sip:
  listen: 127.0.0.1:{sip_port}
  rtp_ports: 31000-31999
lines:
  - name: "1"
    backend: sim
    number: "101"
gsm_groups:
  - name: mobile
    strategy: least-used
modems:
  - name: emu
    profile: sim
    port: socket://127.0.0.1:9
    pin: "1234"
    group: mobile
    minute_cap: 100
"""
    gw = GatewayProcess(tmp_path, config)
    try:
        gw.start()
        status = gw.status()
        assert status is not None
        log = gw.log_text()
        assert "1 modem(s) configured but GSM support is not wired yet" in log
        assert "1234" not in log
    finally:
        gw.stop()
        release(sip_port)
