"""Modem profiles: per-call audio commands, init and signal commands, probe matching."""

from __future__ import annotations

import pytest

from gateway.modem.profiles import (
    PROFILES,
    UnknownProfile,
    match_profile,
    mismatch_message,
    profile,
    profile_for,
)
from gateway.modem.responses import parse_ati
from hal.sim.modem_dialects import DIALECTS


def test_known_profiles() -> None:
    assert sorted(PROFILES) == ["quectel-ec25", "quectel-eg25-g", "simcom-sim7600", "simcom-sim800"]
    assert all(p.voice for p in PROFILES.values())


@pytest.mark.parametrize("name", ["quectel-ec25", "quectel-eg25-g"])
def test_quectel_voice_setup_before_every_call(name: str) -> None:
    p = profile(name)
    assert p.default_audio == "uac"
    assert p.call_setup_commands() == ("AT+QPCMV=1,2",)
    assert p.call_setup_commands("uac") == ("AT+QPCMV=1,2",)
    assert p.call_setup_commands("serial-pcm") == ("AT+QPCMV=1,0",)
    pcm = p.audio_setup("serial-pcm").pcm
    assert pcm is not None and (pcm.sample_rate, pcm.sample_width, pcm.byteorder) == (
        8000,
        2,
        "little",
    )
    assert p.call_connected_commands() == () and p.call_ended_commands() == ()
    assert p.signal_command == "AT+QCSQ" and p.iccid_command == "AT+QCCID"
    assert p.pin_retries_command == 'AT+QPINC="SC"'


def test_sim7600_pcm_registered_after_connect() -> None:
    p = profile("simcom-sim7600")
    assert p.call_setup_commands() == ()
    assert p.call_connected_commands() == ("AT+CPCMREG=1",)
    assert p.call_ended_commands() == ("AT+CPCMREG=0",)
    assert p.signal_command == "AT+CPSI?"


def test_sim800_analog_no_pcm_command() -> None:
    p = profile("simcom-sim800")
    a = p.audio_setup()
    assert a.path == "usb-soundcard" and a.pcm is None
    assert a.before_call == a.after_connect == a.after_end == ()
    assert p.signal_command == "AT+CSQ"
    assert "AT+CEREG=2" not in p.init_commands  # 2G only


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_init_commands(name: str) -> None:
    init = profile(name).init_commands
    assert init[0] == "ATE0"
    for cmd in ("AT+CMEE=2", "AT+CLIP=1", "AT+CNMI=2,1,0,0,0", "AT+CMGF=0", "AT+CREG=2"):
        assert cmd in init
    if name != "simcom-sim800":
        assert "AT+CEREG=2" in init


def test_unknown_names() -> None:
    with pytest.raises(UnknownProfile, match="quectel-ec25"):
        profile("huawei-e173")
    with pytest.raises(UnknownProfile, match="serial-pcm"):
        profile("simcom-sim7600").audio_setup("uac")


def test_probe_matching() -> None:
    assert match_profile(["Quectel", "EC25", "Revision: EC25EFAR06A06M4G"]) is profile(
        "quectel-ec25"
    )
    assert match_profile("EG25") is profile("quectel-eg25-g")
    sim = ["Manufacturer: SIMCOM INCORPORATED", "Model: SIMCOM_SIM7600E-H", "Revision: X"]
    assert match_profile(sim) is profile("simcom-sim7600")
    assert match_profile("SIM800 R14.18") is profile("simcom-sim800")
    assert match_profile("HUAWEI E173") is None


def test_mismatch_message() -> None:
    assert mismatch_message("quectel-ec25", ["Quectel", "EC25"], "/dev/ttyUSB2") is None
    msg = mismatch_message("simcom-sim7600", ["Quectel", "EC25"], "/dev/ttyUSB2")
    assert msg is not None
    assert "'simcom-sim7600'" in msg and "'quectel-ec25'" in msg and "/dev/ttyUSB2" in msg
    unknown = mismatch_message("quectel-ec25", "HUAWEI E173", "/dev/ttyUSB0")
    assert unknown is not None and "matches no known profile" in unknown


@pytest.mark.parametrize(
    ("dialect", "expected"),
    [("ec25", "quectel-ec25"), ("sim7600", "simcom-sim7600"), ("sim800", "simcom-sim800")],
)
def test_emulator_dialects_are_recognised(dialect: str, expected: str) -> None:
    """The hal/sim emulator's ATI answers pick the profile of the module it imitates."""
    d = DIALECTS[dialect]
    assert match_profile(d.ati) is profile(expected)
    assert match_profile(d.cgmm) is profile(expected)
    assert profile_for("sim", d.ati) is profile(expected)
    assert mismatch_message("sim", d.ati, "/dev/pts/3") is None
    assert parse_ati(d.ati).model


def test_profile_for() -> None:
    assert profile_for("quectel-ec25", "SIM800 R14.18") is profile("quectel-ec25")
    with pytest.raises(UnknownProfile, match="matches no known profile"):
        profile_for("sim", ["HUAWEI", "E173"])
