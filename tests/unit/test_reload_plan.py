"""The reload plan: a pure function from (running config, new config) to what changes."""

from __future__ import annotations

import textwrap

from gateway.cli_reload import format_reload
from gateway.config import load_config_text
from gateway.config.schema import Config
from gateway.runtime.reload_plan import effective_config, plan_reload

BASE = """\
gateway:
  name: office
  state_dir: /var/lib/branchline
sip:
  listen: 127.0.0.1:5070
trunks:
  - name: main
    registrar: 192.0.2.10
  - name: backup
    registrar: 192.0.2.20
lines:
  - name: "1"
    backend: sim
    number: "101"
    trunk: {name: main, username: alice, password: Alice-Pass-1}
  - name: "2"
    backend: sim
    number: "102"
    trunk: {name: backup, username: bob, password: Bob-Pass-22}
dialplan:
  routes:
    - {pattern: "1\\\\d\\\\d", to: local}
    - {pattern: "\\\\d+", to: trunk:main}
"""


def load(text: str) -> Config:
    return load_config_text(textwrap.dedent(text), "gw.yaml", route_probe=lambda toward: None)


def test_the_same_file_changes_nothing() -> None:
    plan = plan_reload(load(BASE), load(BASE))
    assert plan.empty and plan.summary() == []


def test_only_line_2s_display_name_and_number() -> None:
    new = BASE.replace('number: "102"', 'number: "105"\n    display_name: Reception')
    plan = plan_reload(load(BASE), load(new))
    assert plan.lines_changed == ("2",)
    assert plan.ports_rebuilt == () and plan.accounts == () and plan.restart == ()
    assert not plan.routing and not plan.security
    assert plan.summary() == ["lines changed: 2"]


def test_a_line_backend_option_rebuilds_its_port() -> None:
    new = BASE.replace('number: "102"', 'number: "102"\n    options: {ring_hz: 25}')
    plan = plan_reload(load(BASE), load(new))
    assert plan.lines_changed == ("2",) and plan.ports_rebuilt == ("2",)


def test_an_account_password_re_registers_that_line_only() -> None:
    plan = plan_reload(load(BASE), load(BASE.replace("Bob-Pass-22", "Bob-Pass-33")))
    assert plan.accounts == ("2",) and plan.lines_changed == ("2",)
    assert plan.accounts_removed == () and plan.trunks_changed == ()


def test_a_trunk_change_re_registers_its_accounts_and_rebuilds_security() -> None:
    new = BASE.replace("registrar: 192.0.2.20", "registrar: 192.0.2.21")
    plan = plan_reload(load(BASE), load(new))
    assert plan.trunks_changed == ("backup",) and plan.accounts == ("2",)
    assert plan.security and not plan.routing


def test_added_and_removed_lines_and_trunks() -> None:
    new = (BASE.replace("name: backup\n    registrar: 192.0.2.20",
                        "name: other\n    registrar: 192.0.2.30")
           .replace("name: backup, username: bob", "name: other, username: bob")
           .replace("dialplan:", '''  - name: "3"
    backend: sim
    number: "103"
dialplan:'''))
    plan = plan_reload(load(BASE), load(new))
    assert plan.trunks_added == ("other",) and plan.trunks_removed == ("backup",)
    assert plan.lines_added == ("3",) and plan.accounts == ("2",)
    assert plan.routing and plan.security


def test_listen_state_dir_and_control_socket_need_a_restart_and_keep_running_values() -> None:
    new_text = (BASE.replace("127.0.0.1:5070", "127.0.0.1:5080")
                .replace("/var/lib/branchline", "/srv/branchline")
                .replace('number: "102"', 'number: "106"'))
    old, new = load(BASE), load(new_text)
    plan = plan_reload(old, new)
    assert plan.restart == ("gateway.state_dir", "sip.listen")
    assert plan.lines_changed == ("2",)  # the rest is still applied
    running = effective_config(old, new, plan)
    assert running.sip.listen == old.sip.listen
    assert running.gateway.state_dir == old.gateway.state_dir
    assert running.line("2").number == "106"


def test_dialplan_and_service_settings() -> None:
    new = BASE.replace("to: trunk:main", "to: trunk:backup") + """\
push: {url: 'https://crm.example.net/hook'}
reload: {confirm_within: 30}
"""
    plan = plan_reload(load(BASE), load(new))
    assert plan.routing and plan.settings == ("push", "reload")
    assert plan.lines_changed == () and plan.accounts == ()


def test_the_cli_text_lists_every_error_of_a_refused_reload() -> None:
    out, err = format_reload({"reloaded": False, "errors": ["gw.yaml:3:5: a", "gw.yaml:9:1: b"]})
    assert out == ""
    assert err.splitlines() == ["reload refused (2 error(s)); the running config stays:",
                                "gw.yaml:3:5: a", "gw.yaml:9:1: b"]
    out, err = format_reload({"reloaded": True, "file": "/etc/b.yaml", "changes": ["lines "
                              "changed: 2"], "pending_lines": ["2"], "needs_restart":
                              ["sip.listen"]})
    assert "line 2: in a call" in out and err == "needs a restart to take effect: sip.listen"
