"""The AT modem contract on the emulator (hal/sim/modem) in each dialect, over its ptys."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.config.modems import ModemAudio, ModemConfig
from gateway.runtime.modem import ModemDriver
from hal.sim.modem import ModemEmulator

from .modem_contract import ModemContract, NetworkSide

CALLER = "+4915112345678"


class EmulatedNetwork(NetworkSide):
    """The emulator's own network side: it answers, calls in and delivers SMS on request."""

    def __init__(self, emu: ModemEmulator) -> None:
        self.emu = emu
        self.expected_imei = emu.imei

    def dial_number(self) -> str:
        return "+4930123456"

    def answer_outgoing(self) -> None:
        self.emu.remote_answer()

    def hang_up(self) -> None:
        if self.emu.calls:
            self.emu.remote_hangup()

    def call_in(self) -> str:
        self.emu.incoming_call(CALLER)
        return CALLER

    async def send_sms_to_modem(self, driver: ModemDriver, text: str) -> None:
        self.emu.deliver_sms(CALLER, text)

    def texts_sent(self) -> list[tuple[str, str]] | None:
        return self.emu.far_end_texts()


class EmulatorContract(ModemContract):
    dialect = "ec25"
    profile = "quectel-ec25"
    audio = "serial-pcm"

    @pytest.fixture(autouse=True)
    def emulator(self) -> Iterator[ModemEmulator]:
        self.emu = ModemEmulator(self.dialect, imei="867698049876543").start()
        try:
            yield self.emu
        finally:
            self.emu.stop()

    def make_config(self) -> ModemConfig:
        pcm = self.emu.pcm_path if self.audio == "serial-pcm" else None
        return ModemConfig(name="contract", profile=self.profile, port=self.emu.at_path,
                           audio=ModemAudio(self.audio, pcm_port=pcm))

    def make_network(self) -> NetworkSide:
        return EmulatedNetwork(self.emu)


class TestEc25Emulator(EmulatorContract):
    pass


class TestSim7600Emulator(EmulatorContract):
    dialect = "sim7600"
    profile = "simcom-sim7600"


class TestSim800Emulator(EmulatorContract):
    dialect = "sim800"
    profile = "simcom-sim800"
    audio = "usb-soundcard"


class TestEmulatorAsProfileSim(EmulatorContract):
    """`profile: sim` picks the real profile the emulator's ATI names."""

    profile = "sim"
    audio = "sim"
