"""The AT modem contract: what the gateway relies on from a GSM/LTE module, checked through the
real ModemDriver (gateway.runtime.modem) and nothing else.

Subclass :class:`ModemContract` (no Test prefix, so pytest collects only the subclasses) and
implement :meth:`ModemContract.make_config` and :meth:`ModemContract.make_network`. The
network side is the part a test cannot reach on a real module (the far end of a call, an SMS
arriving); a hardware subclass implements what its rig can do and skips the rest, saying why.

Checked: identification (IMEI, model, profile), the SIM is ready, registration with operator,
technology and signal, a call out (ATD, answered, active in +CLCC, hung up), a call in (RING
and +CLIP with the caller's number, ATA, active, hung up), an SMS sent (AT+CMGS in PDU mode)
and an SMS received and read (+CMTI, AT+CMGR, decoded, AT+CMGD).
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.config.modems import ModemConfig
from gateway.modem.at import Unsolicited
from gateway.modem.profiles import PROFILES
from gateway.modem.responses import CallStatus, ClccEntry, parse_clcc, parse_cmti
from gateway.modem.sms import SmsDeliver, decode_pdu, encode_submit
from gateway.runtime.modem import ModemDriver
from hal.base import CommandError


class NetworkSide(ABC):
    """The far side of the radio: another phone, an SMS sender, the network itself."""

    expected_imei: str | None = None
    """The module's IMEI when the rig knows it (checked), None to check only its shape."""
    call_timeout: float = 10.0
    """Seconds a call may take to be answered or to ring in."""
    sms_timeout: float = 10.0

    @abstractmethod
    def dial_number(self) -> str:
        """A number the module can call that will answer (skip if the rig has none)."""

    @abstractmethod
    def answer_outgoing(self) -> None:
        """The far end picks up the module's outgoing call (a no-op for an auto-answerer)."""

    @abstractmethod
    def hang_up(self) -> None:
        """The far end ends the call, if the rig can; the contract hangs up itself anyway."""

    @abstractmethod
    def call_in(self) -> str:
        """Make someone call the module now; returns the caller ID it should show."""

    @abstractmethod
    async def send_sms_to_modem(self, driver: ModemDriver, text: str) -> None:
        """An SMS with `text` is sent to the module's SIM (a real rig may send it to the
        SIM's own number through `driver`)."""

    def texts_sent(self) -> list[tuple[str, str]] | None:
        """(number, text) of SMS the far end received from the module; None if unknown."""
        return None


async def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.05)


async def current_calls(driver: ModemDriver) -> list[ClccEntry]:
    done = await driver.command("AT+CLCC")
    return [parse_clcc(line) for line in done.lines if line.startswith("+CLCC:")]


class ModemContract(ABC):
    """The behaviour suite (see the module docstring)."""

    start_timeout: float = 60.0

    @abstractmethod
    def make_config(self) -> ModemConfig:
        """The modems: entry for the module under test."""

    @abstractmethod
    def make_network(self) -> NetworkSide:
        """The far side for this rig."""

    def run(self, body: Callable[[ModemDriver, NetworkSide], Awaitable[None]]) -> None:
        """Start a driver on a fresh loop, run `body`, close the driver."""
        network = self.make_network()

        async def main() -> None:
            driver = ModemDriver(self.make_config(), asyncio.get_running_loop(), scan_globs=[])
            await asyncio.wait_for(driver.start(), self.start_timeout)
            try:
                assert driver.up, f"modem not up: {driver.status()}"
                await body(driver, network)
            finally:
                await driver.close()

        asyncio.run(main())

    # -- identity and SIM ---------------------------------------------------------------

    def test_identifies_itself(self) -> None:
        async def body(driver: ModemDriver, network: NetworkSide) -> None:
            st = driver.status()
            assert st["imei"] and len(st["imei"]) == 15 and st["imei"].isdigit()
            if network.expected_imei is not None:
                assert st["imei"] == network.expected_imei
            assert driver.imei == st["imei"]
            assert st["model"]
            assert st["profile"] in PROFILES
            assert driver.profile is not None and driver.profile.name == st["profile"]

        self.run(body)

    def test_sim_is_ready(self) -> None:
        async def body(driver: ModemDriver, network: NetworkSide) -> None:
            st = driver.status()
            assert st["state"] == "up"
            assert st["sim"]["state"] == "ready"
            assert st["sim"]["iccid"] is None or st["sim"]["iccid"].isdigit()

        self.run(body)

    # -- network ------------------------------------------------------------------------

    def test_registration_operator_technology_and_signal(self) -> None:
        async def body(driver: ModemDriver, network: NetworkSide) -> None:
            await driver.poll_network()
            st = driver.status()
            assert st["network"]["registration"] in ("home", "roaming"), st["network"]
            assert st["network"]["operator"]
            assert st["network"]["technology"] in ("GSM", "UMTS", "LTE")
            rssi = st["signal"]["rssi_dbm"]
            assert rssi is not None and -120 <= rssi <= -25, st["signal"]

        self.run(body)

    # -- calls --------------------------------------------------------------------------

    def test_call_out_answered_and_hung_up(self) -> None:
        async def body(driver: ModemDriver, network: NetworkSide) -> None:
            number = network.dial_number()
            assert driver.profile is not None
            path = driver.config.audio.type
            setup = driver.profile.call_setup_commands(
                path if path in driver.profile.audio else None)
            for cmd in setup:
                await driver.command(cmd)
            await driver.command(f"ATD{number};", timeout=network.call_timeout)
            network.answer_outgoing()
            active: list[ClccEntry] = []

            async def poll() -> None:
                while True:
                    active[:] = [c for c in await current_calls(driver)
                                 if c.status is CallStatus.ACTIVE]
                    if active:
                        return
                    await asyncio.sleep(0.2)

            await asyncio.wait_for(poll(), network.call_timeout)
            assert active[0].voice
            await driver.command("ATH")
            assert not [c for c in await current_calls(driver)
                        if c.status is not CallStatus.DISCONNECTED]

        self.run(body)

    def test_call_in_with_caller_id_answered_and_hung_up(self) -> None:
        async def body(driver: ModemDriver, network: NetworkSide) -> None:
            urcs: list[Unsolicited] = []
            driver.subscribe(urcs.append)
            caller = network.call_in()
            await wait_for("RING", lambda: any(u.name == "RING" for u in urcs),
                           network.call_timeout)
            await wait_for("+CLIP", lambda: any(u.name == "+CLIP" for u in urcs),
                           network.call_timeout)
            clip = next(u for u in urcs if u.name == "+CLIP")
            assert caller.lstrip("+") in clip.value
            await driver.command("ATA", timeout=network.call_timeout)
            calls = await current_calls(driver)
            assert [c for c in calls if c.status is CallStatus.ACTIVE]
            await driver.command("ATH")
            network.hang_up()

        self.run(body)

    # -- SMS ----------------------------------------------------------------------------

    def test_sms_send(self) -> None:
        async def body(driver: ModemDriver, network: NetworkSide) -> None:
            number = network.dial_number()
            text = f"branchline contract {int(time.time()) % 100000}"
            pdu = encode_submit(number, text)
            done = await driver.command(f"AT+CMGS={pdu.length}", body=pdu.hex.encode(),
                                        timeout=max(30.0, network.sms_timeout))
            assert any(line.startswith("+CMGS:") for line in done.lines)
            sent = network.texts_sent()
            if sent is not None:
                assert (number, text) in sent or any(t == text for _, t in sent)

        self.run(body)

    def test_sms_received_is_read_and_deleted(self) -> None:
        async def body(driver: ModemDriver, network: NetworkSide) -> None:
            urcs: list[Unsolicited] = []
            driver.subscribe(urcs.append)
            text = f"contract inbound {int(time.time()) % 100000}"
            await network.send_sms_to_modem(driver, text)
            await wait_for("+CMTI", lambda: any(u.name == "+CMTI" for u in urcs),
                           network.sms_timeout)
            note = parse_cmti(next(f"+CMTI: {u.value}" for u in urcs if u.name == "+CMTI"))
            done = await driver.command(f"AT+CMGR={note.index}")
            pdus = [line for line in done.lines if not line.startswith("+CMGR:")]
            sms: Any = decode_pdu(pdus[0])
            assert isinstance(sms, SmsDeliver)
            assert sms.text == text
            await driver.command(f"AT+CMGD={note.index}")
            try:
                again = await driver.command(f"AT+CMGR={note.index}")
                assert not [line for line in again.lines if not line.startswith("+CMGR:")]
            except CommandError:
                pass  # an empty slot: some firmware answers ERROR, some an empty OK

        self.run(body)
