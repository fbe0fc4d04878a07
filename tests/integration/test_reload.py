"""Live reload against real peers: the `branchline run` daemon, Kamailio as the trunk,
baresip as the far end, simulated FXS handsets.

(a) a broken file is refused with every error listed, and the call in progress keeps its
    audio; (b) a file changing only line 2 keeps line 1's call up while line 2 takes its
    new number at once; (c) SIGHUP does the same as `branchline reload`; (d) with
    `reload.confirm_within`, a reload after which no trunk account registers is rolled back.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import BaresipFactory, KamailioFactory
from .gateway_proc import GatewayProcess
from .peers.kamailio import KamailioTrunk
from .peers.ports import free_port
from .test_first_call import assert_handset_hears_tone, call_auto_answering_bob

pytestmark = [pytest.mark.peers, pytest.mark.slow]

LINE_USER = "gateway"
LINE_PASS = "gateway-secret"
BOB_TONE_HZ = 1000.0


def config_text(trunk: KamailioTrunk, sip_port: int, tmp: Path, *, line2_number: str = "102",
                line1_password: str = LINE_PASS, extra: str = "") -> str:
    return f"""
gateway:
  name: test-gw
  country: US
  state_dir: {tmp / 'state'}
sip:
  listen: 127.0.0.1:{sip_port}
  rtp_ports: 30000-30999
trunks:
  - name: main
    registrar: 127.0.0.1:{trunk.port}
    expires: 60
    keepalive_interval: 1
lines:
  - name: "1"
    backend: sim
    number: "101"
    trunk:
      name: main
      username: {LINE_USER}
      password: {line1_password}
  - name: "2"
    backend: sim
    number: "{line2_number}"
dialplan:
  digit_map: "(1xx|[2-9]xx)"
  routes:
    - pattern: "1\\\\d\\\\d"
      to: local
    - pattern: "\\\\d+"
      to: trunk:main
{extra}"""


class Setup:
    def __init__(self, trunk: KamailioTrunk, gw: GatewayProcess, sip_port: int,
                 tmp: Path) -> None:
        self.trunk, self.gw, self.sip_port, self.tmp = trunk, gw, sip_port, tmp

    def write(self, **kwargs: str) -> None:
        self.gw.config_path.write_text(config_text(self.trunk, self.sip_port, self.tmp,
                                                   **kwargs))


@pytest.fixture
def setup(tmp_path: Path, kamailio_factory: KamailioFactory) -> Iterator[Setup]:
    trunk = kamailio_factory(users={LINE_USER: LINE_PASS, "300": "bob-pass-300"})
    port = free_port()
    gw = GatewayProcess(tmp_path, config_text(trunk, port, tmp_path))
    gw.start()
    try:
        yield Setup(trunk, gw, port, tmp_path)
    finally:
        code = gw.stop()
        if code not in (0, None):
            print(gw.log_text()[-6000:])


def call_id_of_line(gw: GatewayProcess, line: str) -> str:
    call_id = gw.line(line)["call_id"]
    assert call_id, f"line {line} has no call"
    return str(call_id)


def assert_line_2_rings_at(gw: GatewayProcess, number: str) -> None:
    """Line 1 (idle again) dials `number`: line 2 rings, so the new number routes to it."""
    gw.phone("1", "offhook")
    gw.phone("1", "dial", digits=number)
    gw.wait_until(f"line 2 ringing for {number}", lambda: gw.line("2")["ringing"], timeout=10)
    gw.phone("1", "onhook")
    gw.wait_until("line 2 idle", lambda: gw.line("2")["state"] == "idle", timeout=10)


def test_a_broken_file_is_refused_and_the_call_keeps_its_audio(
        setup: Setup, baresip_factory: BaresipFactory) -> None:
    gw = setup.gw
    call_auto_answering_bob(setup.trunk, gw, baresip_factory)
    call_id = call_id_of_line(gw, "1")
    good = gw.config_path.read_text()
    # two mistakes in one file: both must be reported
    gw.config_path.write_text(good.replace("expires: 60", "expires: 5")
                              .replace('number: "102"', 'number: "1o2"'))
    reply = gw.request("reload")
    assert reply["reloaded"] is False
    assert len(reply["errors"]) == 2, reply
    assert any("trunks[0].expires" in e for e in reply["errors"])
    assert any("lines[1].number" in e for e in reply["errors"])
    log = gw.log_text()
    assert "reload refused: 2 error(s)" in log and "lines[1].number" in log
    # the call and the registration are untouched; audio still flows from the far end
    assert gw.line("1")["state"] == "connected" and call_id_of_line(gw, "1") == call_id
    assert gw.registered("1")
    assert gw.line("2")["number"] == "102"
    assert_handset_hears_tone(gw, "1", BOB_TONE_HZ, setup.tmp, "after-refused")


def test_changing_only_line_2_keeps_line_1s_call_up(
        setup: Setup, baresip_factory: BaresipFactory) -> None:
    gw = setup.gw
    call_auto_answering_bob(setup.trunk, gw, baresip_factory)
    call_id = call_id_of_line(gw, "1")
    setup.write(line2_number="105")
    reply = gw.request("reload")
    assert reply["reloaded"] is True, reply
    assert reply["changes"] == ["lines changed: 2"] and reply["needs_restart"] == []
    assert reply["pending_lines"] == []  # line 2 was idle: changed at once
    assert gw.line("2")["number"] == "105"
    time.sleep(1.0)
    assert gw.line("1")["state"] == "connected" and call_id_of_line(gw, "1") == call_id
    assert gw.registered("1")
    assert_handset_hears_tone(gw, "1", BOB_TONE_HZ, setup.tmp, "after-reload")
    gw.phone("1", "onhook")
    gw.wait_until("line 1 idle", lambda: gw.line("1")["state"] == "idle", timeout=10)
    assert_line_2_rings_at(gw, "105")


def test_a_line_in_a_call_takes_its_new_settings_when_idle(
        setup: Setup, baresip_factory: BaresipFactory) -> None:
    gw = setup.gw
    call_auto_answering_bob(setup.trunk, gw, baresip_factory)
    # line 1's own settings change (its number) while it is in the call
    setup.write(line2_number="102")
    text = gw.config_path.read_text().replace('number: "101"', 'number: "109"')
    gw.config_path.write_text(text)
    reply = gw.request("reload")
    assert reply["reloaded"] is True and reply["pending_lines"] == ["1"], reply
    time.sleep(1.0)
    assert gw.line("1")["state"] == "connected" and gw.line("1")["number"] == "101"
    assert gw.status()["reload"]["pending_lines"] == ["1"]
    assert_handset_hears_tone(gw, "1", BOB_TONE_HZ, setup.tmp, "pending")
    gw.phone("1", "onhook")
    gw.wait_until("line 1 takes number 109 once idle",
                  lambda: gw.line("1")["number"] == "109", timeout=10)
    assert gw.status()["reload"]["pending_lines"] == []


def test_sighup_reloads_like_the_command(setup: Setup, baresip_factory: BaresipFactory) -> None:
    gw = setup.gw
    call_auto_answering_bob(setup.trunk, gw, baresip_factory)
    call_id = call_id_of_line(gw, "1")
    setup.write(line2_number="107")
    assert gw.pid is not None
    os.kill(gw.pid, signal.SIGHUP)
    gw.wait_until("line 2 renumbered by SIGHUP", lambda: gw.line("2")["number"] == "107",
                  timeout=10)
    assert "reload: applied" in gw.log_text()
    assert gw.line("1")["state"] == "connected" and call_id_of_line(gw, "1") == call_id
    # a broken file on SIGHUP: refused and logged, the daemon runs on unchanged
    gw.config_path.write_text("lines: [\n")
    os.kill(gw.pid, signal.SIGHUP)
    gw.wait_until("refusal logged", lambda: "reload refused" in gw.log_text(), timeout=10)
    assert gw.running and gw.line("2")["number"] == "107"
    assert_handset_hears_tone(gw, "1", BOB_TONE_HZ, setup.tmp, "after-sighup")


def test_no_trunk_registered_after_a_reload_rolls_it_back(setup: Setup) -> None:
    gw = setup.gw
    gw.wait_until("line 1 registered", lambda: gw.registered("1"), timeout=10)
    # a wrong password: Kamailio refuses the account, nothing registers
    setup.write(line1_password="wrong-password-1", line2_number="104",
                extra="reload:\n  confirm_within: 3\n")
    reply = gw.request("reload")
    assert reply["reloaded"] is True, reply
    assert "accounts re-registered: 1" in reply["changes"]
    assert gw.line("2")["number"] == "104"
    gw.wait_until("rollback logged",
                  lambda: "reload rolled back: no trunk registered within 3 s" in gw.log_text(),
                  timeout=15)
    assert "WARNING" in next(line for line in gw.log_text().splitlines()
                             if "reload rolled back" in line)
    # the previous config is back: the old password registers again, line 2 is 102 again
    gw.wait_until("line 1 registered again", lambda: gw.registered("1"), timeout=15)
    assert setup.trunk.registered(LINE_USER)
    assert gw.line("2")["number"] == "102"


def test_a_reload_that_registers_is_kept(setup: Setup) -> None:
    gw = setup.gw
    gw.wait_until("line 1 registered", lambda: gw.registered("1"), timeout=10)
    setup.write(line2_number="108", extra="reload:\n  confirm_within: 2\n")
    assert gw.request("reload")["reloaded"] is True
    time.sleep(3.0)
    assert "reload rolled back" not in gw.log_text()
    assert gw.line("2")["number"] == "108"


def test_a_trunk_change_re_registers_and_keeps_the_call(
        setup: Setup, baresip_factory: BaresipFactory) -> None:
    gw = setup.gw
    call_auto_answering_bob(setup.trunk, gw, baresip_factory)
    call_id = call_id_of_line(gw, "1")
    gw.config_path.write_text(gw.config_path.read_text().replace("expires: 60", "expires: 120"))
    reply = gw.request("reload")
    assert reply["reloaded"] is True, reply
    assert "trunks changed: main" in reply["changes"]
    assert "accounts re-registered: 1" in reply["changes"]
    gw.wait_until("line 1 registered with the new expiry",
                  lambda: gw.registered("1") and
                  (gw.status()["registrations"][0]["expires"] or 0) > 60, timeout=10)
    assert gw.line("1")["state"] == "connected" and call_id_of_line(gw, "1") == call_id
    assert [t["name"] for t in gw.status()["trunks"]] == ["main"]
    assert_handset_hears_tone(gw, "1", BOB_TONE_HZ, setup.tmp, "after-trunk")


def test_a_line_added_by_reload_rings_and_a_removed_one_is_gone(setup: Setup) -> None:
    gw = setup.gw
    text = gw.config_path.read_text()
    line2 = '  - name: "2"\n    backend: sim\n    number: "102"\n'
    assert line2 in text
    gw.config_path.write_text(text.replace(line2, line2.replace('"2"', '"3"')
                                           .replace('"102"', '"103"')))
    reply = gw.request("reload")
    assert reply["reloaded"] is True, reply
    assert "lines added: 3" in reply["changes"] and "lines removed: 2" in reply["changes"]
    assert [entry["name"] for entry in gw.status()["lines"]] == ["1", "3"]
    gw.phone("1", "offhook")
    gw.phone("1", "dial", digits="103")
    gw.wait_until("line 3 ringing", lambda: gw.line("3")["ringing"], timeout=10)
    gw.phone("3", "offhook")
    gw.wait_until("line 1 connected to line 3",
                  lambda: gw.line("1")["state"] == "connected", timeout=10)
    gw.phone("1", "onhook")
    gw.phone("3", "onhook")
