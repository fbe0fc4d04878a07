"""Issue 7 scenarios for the modem driver, through the emulator's ptys, nothing patched:

- a wrong SIM PIN is tried once, never again (not even after the module re-enumerates), and
  status says so; a SIM asking for its PUK is reported and left alone;
- a modem unplugged while idle is reported within 5 s (status polled, over the daemon's
  control socket); re-plugged under a new device name with the same IMEI it is re-attached
  without a restart, and its users (command(), URC subscribers) carry on.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config.modems import ModemAudio, ModemConfig, ModemMatch
from gateway.modem.at import Unsolicited
from gateway.runtime.modem import SCAN_ENV, ModemDriver
from hal.base import ModemLost
from hal.sim.modem import ModemEmulator

from .gateway_proc import GatewayProcess
from .peers.ports import free_port, release

IMEI = "867698041234567"
VANISH_BUDGET_S = 5.0  # the requirement


@pytest.fixture
def emulator() -> Iterator[ModemEmulator]:
    emu = ModemEmulator("ec25", imei=IMEI, pin="1111")
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


class DevDir:
    """A stand-in for /dev: links named like USB serial ports, pointing at emulator ptys."""

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


def _config(port: str, pin: str | None, **kw: Any) -> ModemConfig:
    return ModemConfig(name="lte", profile="quectel-ec25", port=port, pin=pin,
                       audio=ModemAudio("uac", device=None), probe_interval=1.0, **kw)


async def _wait(what: str, check: Any, timeout: float) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def test_wrong_pin_is_tried_once_and_never_again(emulator: ModemEmulator,
                                                 tmp_path: Path) -> None:
    dev = DevDir(tmp_path / "dev")
    port = dev.plug("ttyUSB2", emulator.at_path)

    async def run() -> None:
        driver = ModemDriver(_config(port, "2222", match=ModemMatch(imei=IMEI)),
                             asyncio.get_running_loop(), scan_globs=[dev.glob])
        await driver.start()
        try:
            st = driver.status()
            assert st["state"] == "sim-error"
            assert not driver.up
            assert st["sim"]["state"] == "pin-rejected"
            assert "2 tries left" in st["sim"]["detail"]
            assert emulator.core.pin_attempts == 2
            # The module re-enumerates (a USB reset): the SIM asks for its PIN again, and
            # the driver must not spend a second try on the PIN it knows is wrong.
            emulator.unplug()
            await _wait("vanished", lambda: driver.status()["state"] == "vanished", 5.0)
            dev.plug("ttyUSB7", emulator.replug())
            await _wait("re-attached", lambda: driver.status()["reattached"] == 1
                        and driver.status()["sim"]["state"] == "pin-rejected", 10.0)
            assert emulator.core.pin_attempts == 2
            assert emulator.at_log.count(b'AT+CPIN="') == 1  # the first try, only
        finally:
            await driver.close()

    asyncio.run(run())


def test_puk_is_reported_and_never_tried(emulator: ModemEmulator) -> None:
    emulator.unplug()
    with emulator._lock:  # the SIM was blocked by someone else's three wrong PINs
        emulator.core.pin_attempts = 0
    path = emulator.replug()

    async def run() -> None:
        driver = ModemDriver(_config(path, "1111"), asyncio.get_running_loop(), scan_globs=[])
        await driver.start()
        try:
            st = driver.status()
            assert st["sim"]["state"] == "puk-required"
            assert "10 tries left" in st["sim"]["detail"]
            assert st["state"] == "sim-error"
            assert b"AT+CPIN=" not in emulator.at_log
            assert emulator.core.sim_state == "SIM PUK"
            assert emulator.core.puk_attempts == 10
        finally:
            await driver.close()

    asyncio.run(run())


def test_right_pin_and_shared_port_users(emulator: ModemEmulator) -> None:
    """The PIN goes in once; then command() callers and URC subscribers share the port."""

    async def run() -> None:
        driver = ModemDriver(_config(emulator.at_path, "1111"), asyncio.get_running_loop(),
                             scan_globs=[])
        seen: list[Unsolicited] = []
        unsubscribe = driver.subscribe(seen.append)
        await driver.start()
        try:
            assert driver.up and driver.status()["sim"]["state"] == "ready"
            assert emulator.at_log.count(b'AT+CPIN="1111"') == 1
            # Many users at once: each gets its own answer.
            answers = await asyncio.gather(
                driver.command("AT+CGSN"), driver.command("AT+COPS?"),
                driver.command("AT+CSQ"), driver.poll_network(), driver.command("AT+CGSN"))
            assert IMEI in answers[0].lines[0] and IMEI in answers[4].lines[0]
            assert answers[1].lines[0].startswith("+COPS:")
            assert answers[2].lines[0].startswith("+CSQ:")
            emulator.deliver_sms("+4917000000", "hi")
            await _wait("+CMTI", lambda: any(u.name == "+CMTI" for u in seen), 5.0)
            unsubscribe()
        finally:
            await driver.close()

    asyncio.run(run())


def test_unplugged_modem_is_reported_within_5_s_and_reattached_by_imei(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = ModemEmulator("ec25", imei=IMEI).start()
    dev = DevDir(tmp_path / "dev")
    port = dev.plug("ttyUSB2", emu.at_path)
    monkeypatch.setenv(SCAN_ENV, dev.glob)  # the daemon's extra place to look
    sip_port = free_port()
    config = f"""
gateway:
  name: gsm-gw
  state_dir: {tmp_path / 'state'}
sip:
  listen: 127.0.0.1:{sip_port}
  rtp_ports: 31000-31999
lines: []
modems:
  - name: lte
    profile: quectel-ec25
    port: {port}
    match: {{imei: "{IMEI}"}}
    audio: {{type: serial-pcm, pcm_port: {emu.pcm_path}}}
    probe_interval: 30
    unresponsive_after: 90
"""
    gw = GatewayProcess(tmp_path, config)

    def modem() -> dict[str, Any]:
        entry: dict[str, Any] = gw.status()["modems"][0]
        return entry

    def wait(what: str, check: Any, timeout: float) -> float:
        start = time.monotonic()
        while not check():
            if time.monotonic() - start > timeout:
                raise AssertionError(f"{what}: not within {timeout:g} s; status {modem()}"
                                     f"\n{gw.log_text()[-3000:]}")
            time.sleep(0.05)
        return time.monotonic() - start

    try:
        gw.start()
        wait("modem up", lambda: modem()["state"] == "up", 10.0)
        assert modem()["device"] == port
        emu.unplug()  # idle: liveness probes are 30 s apart, so only the read side can see it
        took = wait("vanished", lambda: modem()["state"] == "vanished", VANISH_BUDGET_S)
        print(f"vanish reported after {took * 1000:.0f} ms")
        assert modem()["network"]["operator"] is None
        new_port = dev.plug("ttyUSB5", emu.replug())
        assert os.path.realpath(new_port) != os.path.realpath(port)
        took = wait("re-attached", lambda: modem()["state"] == "up"
                    and modem()["device"] == new_port, 10.0)
        print(f"re-attached after {took * 1000:.0f} ms")
        entry = modem()
        assert entry["reattached"] == 1
        assert entry["imei"] == IMEI
        assert gw.running  # no restart
        wait("network polled again", lambda: modem()["network"]["operator"] == "Telekom.de",
             15.0)
    finally:
        gw.stop()
        emu.stop()
        release(sip_port)


def test_a_hung_module_is_reported_unresponsive_and_recovers(tmp_path: Path) -> None:
    """The port stays open but nothing answers (firmware hang): liveness probes find it."""
    import threading

    emu = ModemEmulator("ec25", imei=IMEI).start()
    release_hang = threading.Event()
    hung = threading.Event()

    def hang() -> None:
        with emu._lock:  # the emulator's service loop stops: a module that went silent
            hung.set()
            release_hang.wait(10.0)

    async def run() -> None:
        cfg = ModemConfig(name="lte", profile="quectel-ec25", port=emu.at_path,
                          audio=ModemAudio("uac"), probe_interval=0.5, unresponsive_after=1.5)
        driver = ModemDriver(cfg, asyncio.get_running_loop(), scan_globs=[])
        await driver.start()
        try:
            assert driver.up
            threading.Thread(target=hang, daemon=True).start()
            hung.wait(2.0)
            took = await _wait("unresponsive", lambda: driver.status()["state"] == "unresponsive",
                               6.0)
            print(f"unresponsive reported after {took * 1000:.0f} ms")
            assert not driver.up
            assert "liveness" in driver.status()["last_error"]
            release_hang.set()
            await _wait("up again", lambda: driver.status()["state"] == "up", 6.0)
            assert driver.up
            assert (await driver.command("AT+CGSN")).lines[0].endswith(IMEI)
        finally:
            release_hang.set()
            await driver.close()

    try:
        asyncio.run(run())
    finally:
        emu.stop()


def test_a_modem_absent_at_start_is_attached_when_it_appears(tmp_path: Path) -> None:
    dev = DevDir(tmp_path / "dev")
    emu = ModemEmulator("ec25", imei=IMEI).start()

    async def run() -> None:
        cfg = ModemConfig(name="lte", profile="quectel-ec25", port=str(dev.root / "ttyUSB2"),
                          match=ModemMatch(imei=IMEI), audio=ModemAudio("uac"),
                          probe_interval=0.5)
        driver = ModemDriver(cfg, asyncio.get_running_loop(), scan_globs=[dev.glob])
        await driver.start()
        try:
            st = driver.status()
            assert st["state"] == "absent" and not driver.up
            assert st["last_error"]
            with pytest.raises(ModemLost):
                await driver.command("AT")
            dev.plug("ttyUSB9", emu.at_path)  # enumerates under another name than configured
            await _wait("attached", lambda: driver.up, 5.0)
            assert driver.status()["device"] == str(dev.root / "ttyUSB9")
        finally:
            await driver.close()

    try:
        asyncio.run(run())
    finally:
        emu.stop()
