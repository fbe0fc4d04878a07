"""The modem contract's rig on a real module: wiring and far-end numbers from the environment.

See hardware-tests/README.md ("GSM/LTE modules"). A test whose far-end variable is unset is
skipped, saying which variable would run it.
"""

from __future__ import annotations

import os

import pytest
from contract.modem_contract import ModemContract, NetworkSide

from gateway.config.modems import ModemAudio, ModemConfig
from gateway.modem.sms import encode_submit
from gateway.runtime.modem import ModemDriver

PORT_ENV = "BRANCHLINE_MODEM_PORT"


def env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value else None


def skip_unless_port(profiles: tuple[str, ...]) -> pytest.MarkDecorator:
    """Run only with BRANCHLINE_MODEM_PORT set and BRANCHLINE_MODEM_PROFILE (if set) one of
    `profiles`, so one rig with one module runs only its own file."""
    chosen = env("BRANCHLINE_MODEM_PROFILE")
    reason = f"set {PORT_ENV} (and BRANCHLINE_MODEM_PROFILE={profiles[0]}) to run"
    return pytest.mark.skipif(
        env(PORT_ENV) is None or (chosen is not None and chosen not in profiles), reason=reason)


class RealNetwork(NetworkSide):
    """A live network: an auto-answering number to call, a person or phone to call in, and
    the SIM's own number for an SMS sent to itself."""

    call_timeout = 45.0
    sms_timeout = 90.0

    def __init__(self) -> None:
        self.expected_imei = env("BRANCHLINE_MODEM_IMEI")

    def dial_number(self) -> str:
        number = env("BRANCHLINE_MODEM_DIAL")
        if number is None:
            pytest.skip("set BRANCHLINE_MODEM_DIAL to a number that answers by itself")
        return number

    def answer_outgoing(self) -> None:
        """BRANCHLINE_MODEM_DIAL answers by itself (voicemail, an echo test line)."""

    def hang_up(self) -> None:
        """The contract hangs up from the module's side."""

    def call_in(self) -> str:
        caller = env("BRANCHLINE_MODEM_CALL_IN_FROM")
        if caller is None:
            pytest.skip("set BRANCHLINE_MODEM_CALL_IN_FROM to the number of a phone that "
                        "will call the module when the test says so")
        print(f"\n>>> call the module under test from {caller} now <<<", flush=True)
        return caller

    async def send_sms_to_modem(self, driver: ModemDriver, text: str) -> None:
        own = env("BRANCHLINE_MODEM_OWN_NUMBER")
        if own is None:
            pytest.skip("set BRANCHLINE_MODEM_OWN_NUMBER (the SIM's MSISDN): the test texts it")
        pdu = encode_submit(own, text)
        await driver.command(f"AT+CMGS={pdu.length}", body=pdu.hex.encode(), timeout=60.0)


class HardwareModemContract(ModemContract):
    """The contract on the module named by BRANCHLINE_MODEM_*; subclasses fix the profile."""

    profile = "quectel-ec25"
    default_audio = "uac"

    def make_config(self) -> ModemConfig:
        port = env(PORT_ENV)
        assert port is not None
        pcm = env("BRANCHLINE_MODEM_PCM_PORT")
        audio = env("BRANCHLINE_MODEM_AUDIO") or ("serial-pcm" if pcm else self.default_audio)
        return ModemConfig(
            name="hw", profile=env("BRANCHLINE_MODEM_PROFILE") or self.profile, port=port,
            pin=env("BRANCHLINE_MODEM_PIN"),
            audio=ModemAudio(audio, device=env("BRANCHLINE_MODEM_ALSA"), pcm_port=pcm),
        )

    def make_network(self) -> NetworkSide:
        return RealNetwork()
