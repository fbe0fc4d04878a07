"""The shipped systemd files, checked by systemd's own tools, and the notifier and journal
helpers they rely on (gateway/runtime/systemd.py, gateway/runtime/logs.py).

systemd-analyze must be installed (Debian: systemd); without it the unit checks skip, or
fail under BRANCHLINE_REQUIRE_PEERS=1.
"""

from __future__ import annotations

import ast
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from gateway.runtime import logs
from gateway.runtime import systemd as sd
from gateway.security.events import log_event

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "branchline.service"
SYSUSERS = ROOT / "systemd" / "sysusers.d" / "branchline.conf"
UDEV = ROOT / "systemd" / "udev" / "rules.d" / "60-branchline.rules"
TMPFILES = ROOT / "systemd" / "tmpfiles.d" / "branchline.conf"
MAX_EXPOSURE = 2.0


def _require(binary: str) -> str:
    found = shutil.which(binary)
    if found:
        return found
    message = f"{binary} is not installed (apt-get install systemd)"
    if os.environ.get("BRANCHLINE_REQUIRE_PEERS") == "1":
        pytest.fail(f"BRANCHLINE_REQUIRE_PEERS=1 but {message}", pytrace=False)
    pytest.skip(message)


def _settings(path: Path = UNIT) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, repeated keys kept in order."""
    out: list[tuple[str, str, str]] = []
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def _values(key: str) -> list[str]:
    return [v for s, k, v in _settings() if s == "Service" and k == key]


def _installable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this venv's branchline (verify needs the binary)."""
    branchline = Path(sys.executable).with_name("branchline")
    assert branchline.exists(), f"{branchline} missing: pip install -e ."
    text = UNIT.read_text().replace("/usr/bin/branchline", str(branchline))
    copy = tmp_path / "branchline.service"
    copy.write_text(text)
    return copy


# -- the unit, by systemd's tools --------------------------------------------------------------


def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    analyze = _require("systemd-analyze")
    unit = _installable_copy(tmp_path)
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    # Unknown keys, bad values and misplaced settings are only warnings: none allowed.
    assert str(unit) not in output, output
    assert "branchline.service" not in output, output


def test_security_exposure_is_two_or_better(tmp_path: Path) -> None:
    analyze = _require("systemd-analyze")
    unit = _installable_copy(tmp_path)
    proc = subprocess.run([analyze, "security", "--offline=yes", "--no-pager", str(unit)],
                          capture_output=True, text=True, timeout=60, check=False)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    exposure = float(match.group(1))
    print(f"systemd-analyze security --offline=yes: {exposure}")
    assert exposure <= MAX_EXPOSURE, proc.stdout


def test_unit_is_a_watched_notify_service() -> None:
    assert _values("Type") == ["notify"]
    assert _values("NotifyAccess") == ["main"]
    assert _values("WatchdogSec") == ["10"]
    assert _values("Restart") == ["on-failure"]
    [reload] = _values("ExecReload")
    assert "-HUP $MAINPID" in reload
    [start] = _values("ExecStart")
    assert "--config /etc/branchline/branchline.yaml" in start
    assert _values("StateDirectory") == ["branchline"]
    assert _values("RuntimeDirectory") == ["branchline"]
    assert "/run/branchline/control.sock" in start


def test_devices_are_only_serial_sound_and_gpio_classes() -> None:
    assert _values("DevicePolicy") == ["closed"]
    allowed = sorted(v.split()[0] for v in _values("DeviceAllow"))
    assert allowed == ["char-alsa", "char-gpiochip", "char-ttyACM", "char-ttyUSB"]
    assert _values("CapabilityBoundingSet") == [""]
    assert _values("User") == ["branchline"]
    assert "DynamicUser" not in {k for _, k, _ in _settings()}


def _families_used() -> set[str]:
    """Every socket.AF_* the daemon's code opens a socket with."""
    used: set[str] = set()
    for path in (ROOT / "gateway").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in {"socket", "create_datagram_endpoint"}):
                for arg in [*node.args, *(k.value for k in node.keywords)]:
                    if isinstance(arg, ast.Attribute) and arg.attr.startswith("AF_"):
                        used.add(arg.attr)
    return used


def test_address_families_cover_what_the_daemon_opens() -> None:
    [families] = _values("RestrictAddressFamilies")
    allowed = set(families.split())
    used = _families_used()
    assert "AF_NETLINK" in used  # the route watcher (gateway/runtime/netlink.py)
    assert used <= allowed, f"the code opens {sorted(used - allowed)} but the unit forbids them"
    assert allowed == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}


def test_sysusers_gives_the_user_its_device_groups(tmp_path: Path) -> None:
    rows = [line.split() for line in SYSUSERS.read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    members = {row[2] for row in rows if row[0] == "m" and row[1] == "branchline"}
    assert members == {"dialout", "audio", "gpio"}
    assert any(row[:2] == ["u", "branchline"] for row in rows)
    sysusers = shutil.which("systemd-sysusers")
    if sysusers is None:
        return
    # systemd's parser on a scratch root that already has Debian's dialout and audio groups.
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\ndialout:x:20:\naudio:x:29:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\ndialout:*::\naudio:*::\n")
    proc = subprocess.run([sysusers, f"--root={tmp_path}", str(SYSUSERS)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    groups = {line.split(":")[0]: line.split(":")[3].split(",")
              for line in (etc / "group").read_text().splitlines()}
    for group in ("dialout", "audio", "gpio"):
        assert "branchline" in groups[group], (etc / "group").read_text()
    assert any(line.startswith("branchline:") for line in (etc / "passwd").read_text().splitlines())


def test_udev_rules_give_devices_to_the_groups() -> None:
    rules = [line for line in UDEV.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    by_kernel = {m.group(1): line for line in rules
                 if (m := re.search(r'KERNEL=="([^"]+)"', line))}
    assert 'GROUP="gpio"' in by_kernel["gpiochip*"] and 'MODE="0660"' in by_kernel["gpiochip*"]
    for tty in ("ttyUSB[0-9]*", "ttyACM[0-9]*"):
        assert 'GROUP="dialout"' in by_kernel[tty] and 'MODE="0660"' in by_kernel[tty]
    assert any('SUBSYSTEM=="sound"' in line and 'GROUP="audio"' in line for line in rules)


def test_tmpfiles_lets_the_user_read_its_config() -> None:
    rows = [line.split() for line in TMPFILES.read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert ["d", "/etc/branchline", "0750", "root", "branchline", "-"] in rows
    assert ["z", "/etc/branchline/secrets.yaml", "0600", "branchline", "branchline", "-"] in rows


# -- the notifier ------------------------------------------------------------------------------


@pytest.fixture
def listener(tmp_path: Path) -> Any:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(2)
    yield path, sock
    sock.close()


def test_notifier_without_socket_is_a_no_op() -> None:
    n = sd.Notifier(env={})
    assert not n.enabled
    assert n.ready("x") is False and n.watchdog() is False and n.stopping() is False


def test_notifier_sends_to_a_path_and_an_abstract_socket(listener: Any) -> None:
    path, sock = listener
    n = sd.Notifier(env={"NOTIFY_SOCKET": path}, use_library=False)
    assert n.ready("lines 1") is True
    assert sock.recv(4096) == b"READY=1\nSTATUS=lines 1"
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"branchline-test-{os.getpid()}"
    abstract.bind("\0" + name)
    abstract.settimeout(2)
    try:
        a = sd.Notifier(env={"NOTIFY_SOCKET": "@" + name}, use_library=False)
        assert a.stopping()
        assert abstract.recv(4096) == b"STOPPING=1"
    finally:
        abstract.close()


def test_systemd_python_path_sends_too(listener: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    path, sock = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    n = sd.Notifier()
    if n._library is None:
        pytest.skip("systemd-python is not installed")
    assert n.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"


def test_reloading_carries_the_monotonic_clock(listener: Any) -> None:
    path, sock = listener
    n = sd.Notifier(env={"NOTIFY_SOCKET": path}, use_library=False)
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.reloading()
    fields = dict(line.split("=", 1) for line in sock.recv(4096).decode().split("\n"))
    assert fields["RELOADING"] == "1"
    assert before <= int(fields["MONOTONIC_USEC"]) <= before + 5_000_000


def test_status_is_sent_on_change_at_most_once_a_second(listener: Any) -> None:
    path, sock = listener
    n = sd.Notifier(env={"NOTIFY_SOCKET": path}, use_library=False)
    assert n.status("calls 0")
    assert not n.status("calls 0")  # unchanged
    assert not n.status("calls 1")  # changed, but inside the second
    n._last_status_at -= sd.STATUS_INTERVAL
    assert n.status("calls 1\nsecond line")
    assert sock.recv(4096) == b"STATUS=calls 0"
    assert sock.recv(4096) == b"STATUS=calls 1 second line"


def test_watchdog_belongs_to_the_named_pid_only() -> None:
    env = {"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "4000000"}
    assert sd.Notifier(env=env).watchdog_usec == 4_000_000
    assert sd.Notifier(env={**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_usec == 4_000_000
    assert sd.Notifier(env={**env, "WATCHDOG_PID": "1"}).watchdog_usec is None


def test_gateway_summary_names_down_trunks() -> None:
    class Health:
        def states(self) -> dict[str, Any]:
            return {"main": sd_state("down"), "backup": sd_state("up")}

    class Line:
        call_id = "abc"

    def sd_state(value: str) -> Any:
        return type("S", (), {"value": value})()

    gw = type("G", (), {"lines": {"1": Line(), "2": type("L", (), {"call_id": None})()},
                        "trunks": {"main": 1, "backup": 2}, "trunk_health": Health(),
                        "registrations": {}, "calls": {"abc": 1}})()
    assert sd.gateway_summary(gw) == "lines 2 (1 in call); trunks 1 up, 1 down (main); calls 1"


# -- journald fields ---------------------------------------------------------------------------


def test_fields_map_to_journal_names() -> None:
    assert logs.fields(line="1", trunk="main", call_id="c@h", event="call-ended",
                       sip_code=486) == {"LINE": "1", "TRUNK": "main", "CALL_ID": "c@h",
                                         "EVENT": "call-ended", "SIP_CODE": "486"}
    assert logs.fields(trunk="main") == {"TRUNK": "main"}


def test_mode_choice(tmp_path: Path) -> None:
    st = os.fstat(2)
    stream = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
    assert logs.choose_mode("auto", stream, have_journal=True) == "journal"
    # JOURNAL_STREAM inherited, stderr redirected elsewhere: stay on stderr.
    assert logs.choose_mode("auto", {"JOURNAL_STREAM": "8:123"}, have_journal=True) == "stderr"
    with open(tmp_path / "log", "w") as other:
        ost = os.fstat(other.fileno())
        assert logs.stderr_is_journal({"JOURNAL_STREAM": f"{ost.st_dev}:{ost.st_ino}"},
                                      other.fileno())
    assert logs.choose_mode("auto", {}, have_journal=True) == "stderr"
    assert logs.choose_mode("auto", stream, have_journal=False) == "stderr"
    assert logs.choose_mode("stderr", stream, have_journal=True) == "stderr"
    assert logs.choose_mode("journal", {}, have_journal=True) == "journal"
    with pytest.raises(ValueError, match="systemd-python"):
        logs.choose_mode("journal", {}, have_journal=False)
    with pytest.raises(ValueError, match="gateway.log"):
        logs.choose_mode("syslog", {})


class _FakeJournal:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def __call__(self, text: str, /, **fields: Any) -> None:  # as journal.send(MESSAGE, ...)
        self.sent.append({**fields, "MESSAGE": text})


def _journal_logger(name: str) -> tuple[logging.Logger, _FakeJournal]:
    if not logs.journal_available():
        pytest.skip("systemd-python is not installed")
    fake = _FakeJournal()
    logger = logging.getLogger(name)
    logger.handlers[:] = [logs.journal_handler(sender=fake)]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, fake


def test_journal_handler_sends_the_structured_fields() -> None:
    logger, fake = _journal_logger("branchline.test.journal")
    logger.info("call %s ended", "c1", extra=logs.fields(line="2", trunk="main", call_id="c1",
                                                         event="call-ended", sip_code=486))
    [sent] = fake.sent
    assert sent["MESSAGE"] == "INFO branchline.test.journal: call c1 ended"
    assert sent["SYSLOG_IDENTIFIER"] == "branchline"
    for key, value in {"LINE": "2", "TRUNK": "main", "CALL_ID": "c1", "EVENT": "call-ended",
                       "SIP_CODE": "486"}.items():
        assert sent[key] == value


def test_security_event_reaches_the_journal_with_its_kind() -> None:
    logger, fake = _journal_logger("branchline.test.security")
    line = log_event("auth-failure", "203.0.113.7", 5060, logger=logger, method="REGISTER")
    [sent] = fake.sent
    assert sent["EVENT"] == "auth-failure"
    assert sent["MESSAGE"].endswith(line)


def test_call_end_and_trunk_health_lines_carry_the_fields(
        caplog: pytest.LogCaptureFixture) -> None:
    """The production log calls pass the journal fields (SipCalls.end_call, trunk health)."""
    from types import SimpleNamespace

    from gateway.routing.health import HealthChanged, HealthState
    from gateway.runtime import call_end
    from gateway.runtime.sip_calls import SipCalls
    from gateway.runtime.trunk_health import TrunkHealthMonitor

    port = SimpleNamespace(name="2", call_id="c1")
    call = SimpleNamespace(call_id="c1", port=port, route="trunk:main", answered_at=None)
    gw = SimpleNamespace(calls={"c1": call}, _release_media=lambda c: None)
    with caplog.at_level(logging.INFO):
        assert SipCalls.end_call(gw, call, call_end.rejected(486), 10.0)  # type: ignore[arg-type]
    [ended] = [r for r in caplog.records if "ended" in r.getMessage()]
    assert (ended.LINE, ended.TRUNK, ended.CALL_ID, ended.EVENT, ended.SIP_CODE) == (
        "2", "main", "c1", "call-ended", "486")

    caplog.clear()
    monitor = SimpleNamespace(counters=Counter(), accounts={},
                              _subscribers=[], ua=None)
    event = HealthChanged(trunk="main", old=HealthState.UP, new=HealthState.DOWN,
                          cause="5 probes unanswered", at=1.0, detection_time=1.5)
    with caplog.at_level(logging.INFO):
        TrunkHealthMonitor._transition(monitor, event, 1.0)  # type: ignore[arg-type]
    [moved] = caplog.records
    assert (moved.TRUNK, moved.EVENT) == ("main", "trunk-health")
