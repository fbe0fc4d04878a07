"""Debian's gammu, pointed at the modem emulator's pty, treats it as a real module:
identify, signal, send an SMS (PDU mode) and read the SMS the emulator received.

This is the check that the emulator is faithful to AT software other than our driver.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hal.sim.modem import ModemEmulator

from .conftest import require_binary


@pytest.fixture
def gammu() -> str:
    return require_binary("gammu", shutil.which("gammu"))


@pytest.fixture(params=["ec25", "sim7600", "sim800"])
def emulator(request: pytest.FixtureRequest) -> Iterator[ModemEmulator]:
    """Each dialect (identity differs; gammu takes about 3 s per run, mostly its own
    start-up pacing)."""
    with ModemEmulator(request.param, imei="861234567890123") as emu:
        yield emu


@pytest.fixture(params=["ec25", "sim800"])
def sms_emulator(request: pytest.FixtureRequest) -> Iterator[ModemEmulator]:
    """SMS and signal code is shared by all dialects; an LTE and a GSM-only module."""
    with ModemEmulator(request.param, imei="861234567890123") as emu:
        yield emu


@pytest.fixture
def ec25() -> Iterator[ModemEmulator]:
    with ModemEmulator("ec25", imei="861234567890123") as emu:
        yield emu


def run_gammu(gammu: str, emu: ModemEmulator, tmp_path: Path, *args: str) -> str:
    rc = tmp_path / "gammurc"
    log = tmp_path / "gammu.log"
    rc.write_text(
        f"[gammu]\ndevice = {emu.at_path}\nconnection = at\n"
        f"logfile = {log}\nlogformat = textall\n"
    )
    proc = subprocess.run(
        [gammu, "-c", str(rc), *args], capture_output=True, text=True, timeout=30
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, (
        f"gammu {' '.join(args)} exited {proc.returncode}:\n{out}\n"
        f"--- gammu log tail ---\n{log.read_text(errors='replace')[-3000:] if log.exists() else ''}"
    )
    return out


def field(out: str, name: str) -> str:
    for line in out.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            return value.strip()
    raise AssertionError(f"no {name!r} line in gammu output:\n{out}")


def test_gammu_identifies_the_emulator(gammu: str, emulator: ModemEmulator, tmp_path: Path) -> None:
    out = run_gammu(gammu, emulator, tmp_path, "identify")
    expected = {"ec25": "Quectel", "sim7600": "SIMCOM INCORPORATED", "sim800": "SIMCOM_Ltd"}
    assert field(out, "Manufacturer") == expected[emulator.dialect.name]
    assert emulator.dialect.cgmm in field(out, "Model")
    assert field(out, "IMEI") == "861234567890123"
    assert field(out, "SIM IMSI") == emulator.core.imsi


def test_gammu_reads_signal(gammu: str, sms_emulator: ModemEmulator, tmp_path: Path) -> None:
    sms_emulator.set_signal(20)  # +CSQ 20 is -73 dBm
    out = run_gammu(gammu, sms_emulator, tmp_path, "monitor", "1")
    assert field(out, "Signal strength") == "-73 dBm", out
    assert field(out, "Network level") == "60 percent", out  # gammu's own scale of CSQ 20
    assert field(out, "Network state") == "home network", out
    assert field(out, "Network").startswith("262 01"), out
    assert field(out, "Name in phone") == '"Telekom.de"', out


def test_gammu_sends_an_sms_through_the_emulator(
    gammu: str, ec25: ModemEmulator, tmp_path: Path
) -> None:
    run_gammu(gammu, ec25, tmp_path, "sendsms", "TEXT", "+4912345", "-text", "hello")
    assert ec25.far_end_texts() == [("+4912345", "hello")]
    assert b"AT+CMGF=0" in ec25.at_log  # gammu chose PDU mode


def test_gammu_sends_a_long_sms_in_parts(gammu: str, ec25: ModemEmulator, tmp_path: Path) -> None:
    text = "Filiale Nord: Leitung 3 gestört, bitte Techniker schicken. " * 4
    run_gammu(gammu, ec25, tmp_path, "sendsms", "TEXT", "+4912345", "-len", "400",
              "-text", text)
    assert len(ec25.core.sent_sms) >= 2
    assert ec25.far_end_texts() == [("+4912345", text)]


def test_gammu_reads_the_sms_the_emulator_received(
    gammu: str, sms_emulator: ModemEmulator, tmp_path: Path
) -> None:
    emulator = sms_emulator
    emulator.deliver_sms("+4917612345678", "Server down, call back")
    emulator.deliver_sms("+4930111", "Grüße aus Köln €")
    out = run_gammu(gammu, emulator, tmp_path, "getallsms")
    assert "Server down, call back" in out
    assert '"+4917612345678"' in out
    assert "Grüße aus Köln €" in out
    assert '"+4930111"' in out
    assert "2 SMS parts in 2 SMS sequences" in out


def test_gammu_dials_a_voice_call(gammu: str, ec25: ModemEmulator, tmp_path: Path) -> None:
    run_gammu(gammu, ec25, tmp_path, "dialvoice", "+4930123456")
    assert [(c.direction, c.number, c.state) for c in ec25.calls] == [
        (0, "+4930123456", "dialing")
    ]  # gammu dials ATDT...; the emulator keeps the number without the T modifier


@pytest.mark.slow  # gammu getussd waits 10 s for further replies after the first
def test_gammu_ussd_in_ucs2(gammu: str, ec25: ModemEmulator, tmp_path: Path) -> None:
    ec25.set_ussd_reply("*100#", "Guthaben: 5,00 €")
    out = run_gammu(gammu, ec25, tmp_path, "getussd", "*100#")
    assert field(out, "Service reply") == '"Guthaben: 5,00 €"', out
    assert b'AT+CUSD=1,"002A0031003000300023"' in ec25.at_log  # gammu had set +CSCS="UCS2"


@pytest.fixture
def locked() -> Iterator[ModemEmulator]:
    with ModemEmulator("ec25", imei="861234567890123", pin="2468") as emu:
        yield emu


def test_gammu_enters_the_sim_pin(gammu: str, locked: ModemEmulator, tmp_path: Path) -> None:
    run_gammu(gammu, locked, tmp_path, "entersecuritycode", "PIN", "2468")
    assert locked.core.sim_state == "READY"
    assert locked.core.pin_attempts == 3


@pytest.mark.slow  # about 5 s: gammu's start-up plus its error path
def test_gammu_wrong_pin_costs_one_attempt(
    gammu: str, locked: ModemEmulator, tmp_path: Path
) -> None:
    rc = tmp_path / "gammurc"
    rc.write_text(f"[gammu]\ndevice = {locked.at_path}\nconnection = at\n")
    proc = subprocess.run(
        [gammu, "-c", str(rc), "entersecuritycode", "PIN", "1111"],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode != 0, proc.stdout
    assert "Security error" in proc.stdout, proc.stdout + proc.stderr
    assert (locked.core.sim_state, locked.core.pin_attempts) == ("SIM PIN", 2)
