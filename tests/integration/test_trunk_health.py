"""Trunk health on loopback (issue 8, lane N): the daemon probes Kamailio once per trunk.

Three lines register on one Kamailio trunk. The gateway's trunk health monitor sends one
OPTIONS stream for the trunk (the accounts send none of their own); `status` shows the trunk
UP. Kamailio is stopped: the trunk is DOWN within 5 s with its cause (the measured detection
time is printed), and the three accounts are "trunk down". Kamailio is started again on the
same port: the trunk comes back UP only after `failback_after` seconds of answered probes,
and the accounts register again at once. Figures are printed (run with -s).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import format_status

from .conftest import KamailioFactory
from .gateway_proc import GatewayProcess
from .peers.ports import free_port, release

pytestmark = [pytest.mark.peers, pytest.mark.slow]

USERS = {"gw1": "gw1-secret", "gw2": "gw2-secret", "gw3": "gw3-secret"}
INTERVAL = 0.25
FAILBACK = 2.0
DETECTION_LIMIT = 5.0  # loose on purpose: a loaded CI machine must not flake


def gateway_config(tmp: Path, sip_port: int, trunk_port: int) -> str:
    lines = "".join(f"""
  - name: "{i}"
    backend: sim
    number: "10{i}"
    trunk: {{name: main, username: {user}, password: {password}}}"""
                    for i, (user, password) in enumerate(USERS.items(), start=1))
    return f"""
gateway:
  name: health-gw
  state_dir: {tmp / 'state'}
sip:
  listen: 127.0.0.1:{sip_port}
  rtp_ports: 31000-31999
trunks:
  - name: main
    registrar: 127.0.0.1:{trunk_port}
    expires: 60
    health:
      probe_interval: {INTERVAL}
      probe_timeout: 0.5
      misses: 5
      failback_after: {FAILBACK}
lines:{lines}
dialplan:
  digit_map: "(1xx|[2-9]xx)"
  routes:
    - pattern: "\\\\d+"
      to: trunk:main
"""


def health(gw: GatewayProcess) -> dict[str, Any]:
    (trunk,) = gw.status()["trunks"]
    assert trunk["name"] == "main"
    result: dict[str, Any] = trunk["health"]
    return result


def test_trunk_health_probes_once_per_trunk_detects_down_and_fails_back(
        tmp_path: Path, kamailio_factory: KamailioFactory) -> None:
    trunk = kamailio_factory(users=USERS)
    sip_port = free_port()
    gw = GatewayProcess(tmp_path, gateway_config(tmp_path, sip_port, trunk.port))
    gw.start()
    try:
        gw.wait_until("all three lines registered", lambda: all(
            r["registered"] for r in gw.status()["registrations"]), timeout=10.0)
        gw.wait_until("answered probes", lambda: health(gw)["probes_answered"] >= 4)
        h = health(gw)
        assert h["state"] == "up" and h["link_up"] is True
        assert h["targets"] == [f"udp:127.0.0.1:{trunk.port}"]

        # One OPTIONS stream for the trunk, none per account.
        before = len(trunk.events("request", "OPTIONS"))
        time.sleep(2.0)
        options = trunk.events("request", "OPTIONS")
        ours = [e for e in options if "branchline@" in e.fields.get("from", "")]
        per_account = [e for e in options if any(
            f"sip:{user}@" in e.fields.get("from", "") for user in USERS)]
        window = options[before:]
        print(f"\nOPTIONS seen by Kamailio in 2.0 s: {len(window)} "
              f"(interval {INTERVAL} s, 3 accounts on the trunk)")
        assert per_account == []
        assert len(ours) >= 4
        # one stream every 0.25 s is about 8 in 2 s; three streams would be about 24
        assert 4 <= len(window) <= 14

        text = format_status(gw.status())
        assert "Trunks" in text and "main" in text

        # The trunk goes away: DOWN within the limit, with a cause.
        trunk.stop()
        stopped = time.monotonic()
        waited = gw.wait_until("trunk down", lambda: health(gw)["state"] == "down",
                               timeout=DETECTION_LIMIT + 5.0, interval=0.05)
        h = health(gw)
        last = h["last_transition"]
        assert last["to"] == "down"
        assert "probes unanswered" in last["cause"]
        detection = last["detection_time"]
        print(f"trunk down: detected in {detection:.2f} s by health "
              f"(status showed it {waited:.2f} s after Kamailio stopped), cause: "
              f"{last['cause']!r}")
        assert detection < DETECTION_LIMIT
        assert time.monotonic() - stopped < DETECTION_LIMIT + 1.0
        gw.wait_until("accounts marked trunk down", lambda: all(
            not r["registered"] and r["reason"] == "trunk down"
            for r in gw.status()["registrations"]), timeout=2.0)
        assert "trunk main: up -> " in gw.log_text()
        assert "-> down (" in gw.log_text() and "detected in" in gw.log_text()

        # Back: UP only after failback_after of answered probes, then the lines register.
        trunk.start()
        restarted = time.monotonic()
        gw.wait_until("trunk up again", lambda: health(gw)["state"] == "up",
                      timeout=FAILBACK + 8.0, interval=0.05)
        back = time.monotonic() - restarted
        last = health(gw)["last_transition"]
        assert (last["from"], last["to"]) == ("down", "up")
        assert last["cause"].startswith("probes answered for")
        assert last["detection_time"] >= FAILBACK - 0.01
        registered = gw.wait_until("lines registered at Kamailio again", lambda: all(
            trunk.registered(user) for user in USERS), timeout=5.0)
        print(f"fail-back: up {back:.2f} s after Kamailio restarted (failback_after "
              f"{FAILBACK} s), lines registered {registered:.2f} s later")
        assert all(r["registered"] for r in gw.status()["registrations"])
        assert health(gw)["transitions"] >= 2
    finally:
        gw.stop()
        release(sip_port)
