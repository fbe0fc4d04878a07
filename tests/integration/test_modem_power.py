"""The supervisor's GPIO power cycle, through the real ModemDriver and the emulator's ptys,
with gpiozero's MockFactory (hal.gpio's "mock" pin factory) standing in for the board:

- a modem that vanished and stays dead is power-cycled `power_cycle_after` seconds later:
  the pin goes low for `off_seconds`, then high again;
- while it stays dead the wait before the next cycle doubles, capped at `max_backoff`;
- re-plugged (here: on the pin's rising edge, as a module boots once its power is back),
  it is re-attached by IMEI under its new name, and the cycles stop with the pin left high.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.config.modems import ModemAudio, ModemConfig, ModemMatch, PowerGpio
from gateway.runtime.modem import ModemDriver
from hal.gpio import pin_factory
from hal.gpio.mock import ObservableMockPin
from hal.sim.modem import ModemEmulator

IMEI = "867698041230026"
PIN = 26
OFF = 0.25  # power_gpio.off_seconds
AFTER = 0.4  # power_cycle_after: first cycle this long after the modem vanished
CAP = 1.2  # max_backoff: waits go 0.8 (2 x 0.4), then 1.6 -> capped to 1.2, 1.2
TOL = 0.12  # timer jitter allowed on a busy 2-core CI machine


class DevDir:
    """A stand-in for /dev: a link named like a USB serial port, pointing at the emulator."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()

    def plug(self, name: str, target: str) -> str:
        for old in self.root.iterdir():
            old.unlink()
        link = self.root / name
        link.symlink_to(target)
        return str(link)

    @property
    def glob(self) -> str:
        return str(self.root / "ttyUSB*")


async def _wait(what: str, check: Any, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.mark.slow
def test_a_dead_modem_is_power_cycled_with_capped_backoff_and_reattached(
        tmp_path: Path) -> None:
    emu = ModemEmulator("ec25", imei=IMEI).start()
    dev = DevDir(tmp_path / "dev")
    port = dev.plug("ttyUSB2", emu.at_path)
    factory = pin_factory("mock")
    config = ModemConfig(name="lte", profile="quectel-ec25", port=port, pin=None,
                         audio=ModemAudio("uac", device=None), probe_interval=1.0,
                         match=ModemMatch(imei=IMEI), power_gpio=PowerGpio(PIN, OFF))
    rising = 0
    replug_on = 4  # the module comes back after the 4th power cycle

    def on_pin(pin: ObservableMockPin) -> None:
        nonlocal rising
        if pin.state and emu.unplugged:
            rising += 1
            if rising == replug_on:
                dev.plug("ttyUSB7", emu.replug())

    async def run() -> None:
        driver = ModemDriver(config, asyncio.get_running_loop(), scan_globs=[dev.glob],
                             pin_factory=factory,
                             supervision={"power_cycle_after": AFTER, "boot_wait": 0.2,
                                          "max_backoff": CAP})
        try:
            await driver.start()
            assert driver.up
            pin = factory.pin(PIN)
            assert pin.state == 1  # driven high (powered) from the start
            pin.clear_states()
            pin.listeners.append(on_pin)
            emu.unplug()  # and it stays dead until the 4th cycle
            await _wait("vanished", lambda: driver.status()["state"] != "up", 5.0)
            await _wait("re-attached", lambda: driver.up and driver.device != port, 15.0)
            assert driver.status()["reattached"] == 1
            await asyncio.sleep(2 * CAP)  # no further cycle once it is up
            states = [(round(s.timestamp, 3), int(s.state)) for s in pin.states]
            print("pin states (delta s, level):", states)
            levels = [lvl for _, lvl in states]
            assert levels == [1, 0, 1, 0, 1, 0, 1, 0, 1], states
            # first low: power_cycle_after after the vanish (seen within ms of the unplug)
            assert AFTER - TOL <= states[1][0] <= AFTER + 0.5, states
            # each low lasts off_seconds; the highs between cycles are the backoff
            lows = [states[i][0] for i in (2, 4, 6, 8)]
            highs = [states[i][0] for i in (3, 5, 7)]
            assert all(abs(t - OFF) <= TOL for t in lows), lows
            waits = [2 * AFTER, CAP, CAP]  # doubled, then capped
            assert all(abs(t - w) <= TOL for t, w in zip(highs, waits, strict=True)), highs
            assert pin.state == 1 and driver.up  # left powered
        finally:
            await driver.close()
            emu.stop()

    asyncio.run(run())
