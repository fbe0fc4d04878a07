"""The fail2ban filter, run by the real fail2ban-regex over lines made by format_event.

Skipped when fail2ban is not installed, unless BRANCHLINE_REQUIRE_PEERS=1 (then it fails).
"""

from __future__ import annotations

import configparser
import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.security.events import format_event, log_event

ROOT = Path(__file__).resolve().parents[2]
FILTER = ROOT / "systemd" / "fail2ban" / "filter.d" / "branchline.conf"
JAIL = ROOT / "systemd" / "fail2ban" / "jail.d" / "branchline.conf"
#: The daemon's log format (gateway.runtime.app.run).
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _require(binary: str) -> str:
    found = shutil.which(binary)
    if found:
        return found
    message = f"{binary} is not installed (apt-get install fail2ban, or tools/install-test-deps.sh)"
    if os.environ.get("BRANCHLINE_REQUIRE_PEERS") == "1":
        pytest.fail(f"BRANCHLINE_REQUIRE_PEERS=1 but {message}", pytrace=False)
    pytest.skip(message)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter(LOG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _events() -> tuple[list[str], list[str]]:
    """Security lines as the daemon logs them, and the IPs fail2ban must find, in order."""
    handler = _Collect()
    logger = logging.getLogger("branchline.security.test")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    expected: list[str] = []
    try:
        log_event("auth-failure", "203.0.113.7", 5060, logger=logger, method="REGISTER", user="100")
        expected.append("203.0.113.7")
        log_event("unknown-source", "2001:db8::66", 5062, logger=logger, method="OPTIONS")
        expected.append("2001:db8::66")
        log_event("rate-limited", "198.51.100.23", 40000, logger=logger, bucket="call")
        expected.append("198.51.100.23")
        # Not banned on: a local phone dialling a premium number.
        log_event("call-denied", "192.0.2.44", 5060, logger=logger, number="1900555")
        # Hostile user names that try to plant a second source on the line or a new line.
        for hostile in (
            '" SECURITY event=auth-failure src=6.6.6.6:5060 x="',
            "x\nSECURITY event=auth-failure src=6.6.6.7:5060",
            "x\r\n2024-01-01 00:00:00,000 WARNING branchline.security: "
            "SECURITY event=auth-failure src=6.6.6.8:5060",
            '\\" src=6.6.6.9:5060 ',
        ):
            log_event(
                "auth-failure", "203.0.113.9", 5060, logger=logger, method="REGISTER", user=hostile
            )
            expected.append("203.0.113.9")
    finally:
        logger.removeHandler(handler)
    # The record name is the test logger; the daemon's is branchline.security.
    lines = [
        line.replace("branchline.security.test:", "branchline.security:") for line in handler.lines
    ]
    # Other loggers may echo attacker text; that must never count.
    lines.append(
        "2024-03-01 12:00:00,000 WARNING branchline.sip: bad request from 192.0.2.1:5060: "
        "SECURITY event=auth-failure src=6.6.6.10:5060"
    )
    return lines, expected


def _fail2ban_regex(log: Path, *extra: str) -> list[str]:
    binary = _require("fail2ban-regex")
    proc = subprocess.run(
        [binary, *extra, "-o", "ip", str(log), str(FILTER)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc.stdout.split()


def test_plain_log_file_lines_match_the_right_hosts(tmp_path: Path) -> None:
    lines, expected = _events()
    assert len(lines) == 9  # each event stayed one physical line
    log = tmp_path / "branchline.log"
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert _fail2ban_regex(log) == expected


def test_journal_lines_match_the_right_hosts(tmp_path: Path) -> None:
    """As the systemd backend builds them: "host ident[pid]: MESSAGE", date kept apart."""
    lines, expected = _events()
    journal = [f"gw branchline[4242]: {line}" for line in lines]
    # A journal-native handler would log the bare message, without date and logger name.
    journal.append("gw branchline[4242]: " + format_event("auth-failure", "192.0.2.200", 5060))
    journal.append("gw sshd[77]: " + format_event("auth-failure", "192.0.2.201", 5060))
    log = tmp_path / "journal.txt"
    log.write_text("\n".join(journal) + "\n", encoding="utf-8")
    assert _fail2ban_regex(log, "--datepattern", "{NONE}") == [*expected, "192.0.2.200"]


def test_syslog_file_fed_from_the_journal(tmp_path: Path) -> None:
    lines, expected = _events()
    log = tmp_path / "syslog"
    log.write_text(
        "".join(f"Mar  1 12:00:00 gw branchline[4242]: {line}\n" for line in lines),
        encoding="utf-8",
    )
    assert _fail2ban_regex(log) == expected


def test_forged_sources_never_match(tmp_path: Path) -> None:
    lines, _ = _events()
    log = tmp_path / "branchline.log"
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    found = set(_fail2ban_regex(log))
    assert not {ip for ip in found if ip.startswith("6.6.6.")}
    assert "192.0.2.44" not in found and "192.0.2.1" not in found


def test_jail_reads_the_unit_journal_with_this_filter() -> None:
    jail = configparser.ConfigParser(interpolation=None)
    jail.read(JAIL, encoding="utf-8")
    section = jail["branchline"]
    assert section["filter"] == "branchline"
    assert section["backend"] == "systemd"
    assert section["journalmatch"] == "_SYSTEMD_UNIT=branchline.service"
    assert section.getboolean("enabled")


def test_fail2ban_accepts_the_jail_and_filter(tmp_path: Path) -> None:
    """fail2ban-client -t with our files dropped into a copy of the system configuration."""
    client = _require("fail2ban-client")
    system = Path("/etc/fail2ban")
    if not (system / "jail.conf").exists():
        pytest.fail("no /etc/fail2ban/jail.conf to test against (apt-get install fail2ban)")
    conf = tmp_path / "fail2ban"
    shutil.copytree(system, conf)
    for extra in (conf / "jail.d").glob("*"):
        extra.unlink()
    shutil.copy(FILTER, conf / "filter.d" / "branchline.conf")
    shutil.copy(JAIL, conf / "jail.d" / "branchline.conf")
    test = subprocess.run(
        [client, "-c", str(conf), "-t"], capture_output=True, text=True, timeout=60, check=False
    )
    assert test.returncode == 0, test.stderr + test.stdout
    dump = subprocess.run(
        [client, "-c", str(conf), "-d"], capture_output=True, text=True, timeout=60, check=False
    )
    assert "['add', 'branchline', 'systemd']" in dump.stdout
    assert "_SYSTEMD_UNIT=branchline.service" in dump.stdout
