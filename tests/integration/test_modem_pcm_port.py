"""The EC25's serial-PCM port found beside its AT port, and found again after the module
re-enumerates: `audio.pcm_port` may be a glob over /dev/serial/by-id-style names; the driver
opens the match on the same USB device as the AT port (here told by the by-id name, as on a
board without sysfs for the emulator's ptys). A directory of links in tmp stands in for
/dev/serial/by-id; the test repoints them at the emulator's new ptys, as udev would."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from gateway.config.modems import ModemAudio, ModemConfig, ModemMatch
from gateway.runtime.modem import ModemDriver
from gateway.runtime.modem_setup import pcm_path_for
from hal.modem.pcm_audio import PcmSerialAudio
from hal.sim.modem import ModemEmulator

IMEI_A = "867698041230101"
IMEI_B = "867698041230202"


def _link(root: Path, module: str, emu: ModemEmulator) -> None:
    """by-id links for one module: if02 its AT port, if01 its PCM port (EC25-like)."""
    for iface, target in (("if02", emu.at_path), ("if01", emu.pcm_path)):
        link = root / f"usb-Quectel_EC25_{module}-{iface}-port0"
        if link.is_symlink():
            link.unlink()
        assert target is not None
        link.symlink_to(target)


async def _wait(what: str, check: Any, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.02)


def test_pcm_glob_picks_the_port_beside_the_at_port(tmp_path: Path) -> None:
    with ModemEmulator("ec25", imei=IMEI_A) as a, ModemEmulator("ec25", imei=IMEI_B) as b:
        root = tmp_path / "by-id"
        root.mkdir()
        _link(root, "AAA", a)
        _link(root, "BBB", b)
        pattern = str(root / "usb-Quectel_EC25_*-if01-port0")
        for at, want in ((root / "usb-Quectel_EC25_AAA-if02-port0", a.pcm_path),
                         (root / "usb-Quectel_EC25_BBB-if02-port0", b.pcm_path)):
            got = pcm_path_for(pattern, str(at))
            assert got is not None and os.path.realpath(got) == want
            # found by the pty's own name too (what a scan glob such as ttyUSB* gives)
            got = pcm_path_for(pattern, os.path.realpath(at))
            assert got is not None and os.path.realpath(got) == want
        assert pcm_path_for("/dev/serial/by-id/x-if01-port0", "/dev/ttyUSB2") \
            == "/dev/serial/by-id/x-if01-port0"  # a plain path is used as it is


def test_pcm_port_reopened_beside_the_at_port_after_the_module_reenumerates(
        tmp_path: Path) -> None:
    a = ModemEmulator("ec25", imei=IMEI_A).start()
    b = ModemEmulator("ec25", imei=IMEI_B).start()
    root = tmp_path / "by-id"
    root.mkdir()
    _link(root, "AAA", a)
    _link(root, "BBB", b)
    config = ModemConfig(
        name="lte", profile="quectel-ec25", port=str(root / "usb-Quectel_EC25_AAA-if02-port0"),
        pin=None, match=ModemMatch(imei=IMEI_A), probe_interval=1.0,
        audio=ModemAudio("serial-pcm", pcm_port=str(root / "usb-Quectel_EC25_*-if01-port0")))

    async def run() -> None:
        driver = ModemDriver(config, asyncio.get_running_loop(),
                             scan_globs=[str(root / "*-if02-port0")])
        try:
            await driver.start()
            assert driver.up
            assert isinstance(driver.audio, PcmSerialAudio), driver.status()["last_error"]
            first = a.pcm_path
            assert os.path.realpath(driver.audio.path) == first  # A's, not B's
            a.unplug()
            await _wait("vanished", lambda: driver.status()["state"] != "up", 5.0)
            a.replug()  # new pty names; udev repoints the by-id links
            _link(root, "AAA", a)
            assert a.pcm_path != first
            await _wait("re-attached", lambda: driver.up and driver.status()["reattached"] == 1,
                        10.0)
            await _wait("audio reopened", lambda: isinstance(driver.audio, PcmSerialAudio), 5.0)
            assert isinstance(driver.audio, PcmSerialAudio)
            assert os.path.realpath(driver.audio.path) == a.pcm_path
            driver.audio.write_frame(bytes(320))  # the new port takes audio
        finally:
            await driver.close()
            a.stop()
            b.stop()

    asyncio.run(run())
