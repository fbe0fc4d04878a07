"""The steps of bringing a modem up, for gateway.runtime.modem: identify the module, send its
init commands, run the SIM check to a verdict, probe a device path's IMEI, cycle its power (PowerSwitch).

Each step talks through `command` (the driver's shared, queued AT channel) and writes what it
learns into the driver's ModemState.
"""

from __future__ import annotations

import asyncio
import glob
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from gateway.config.modems import ModemConfig
from gateway.modem.at import CommandDone, CommandFailed
from gateway.modem.fields import ResponseError
from gateway.modem.identity import parse_ati, parse_iccid, parse_imei, parse_info
from gateway.modem.profiles import ModemProfile, mismatch_message, profile_for
from gateway.modem.sim_card import PinMemory, SendCommand, SimCard, SimStateChanged, SimStatus
from gateway.runtime.modem_state import ModemState
from gateway.store.atomic import write_atomic
from hal.base import AtPort, CommandError, HalError
from hal.gpio import output_device

__all__ = ["PROBE_TIMEOUT", "PowerSwitch", "StoredPinMemory", "pcm_path_for", "WrongModem", "check_sim", "identify", "initialise",
           "probe_imei"]

log = logging.getLogger("branchline.modem")

PROBE_TIMEOUT = 2.0
"""Per command while identifying a module (AT, ATI, AT+CGSN)."""
SIM_CHECK_TIMEOUT = 60.0


class Command(Protocol):
    def __call__(self, line: str, *, timeout: float = 5.0,
                 body: bytes | None = None) -> Awaitable[CommandDone]: ...


class WrongModem(HalError):
    """The device answers, but it is not the module the config names (another IMEI)."""


def _first(lines: tuple[str, ...], parse: Callable[[str], str]) -> str | None:
    for line in lines:
        try:
            return parse(line)
        except ResponseError:
            continue
    return None


async def identify(command: Command, st: ModemState, config: ModemConfig,
                   path: str) -> ModemProfile:
    """AT (thrice at most), ATI, AT+CGSN, AT+GMR: who is there, and which profile runs it."""
    for attempt in range(3):
        try:
            await command("AT", timeout=PROBE_TIMEOUT)
            break
        except CommandError:
            if attempt == 2:
                raise
    ati = await command("ATI", timeout=PROBE_TIMEOUT)
    try:
        ident = parse_ati(ati.lines)
        st.manufacturer, st.model, st.revision = ident.manufacturer, ident.model, ident.revision
    except ResponseError:
        st.model = " ".join(ati.lines) or None
    imei = _first((await command("AT+CGSN", timeout=PROBE_TIMEOUT)).lines, parse_imei)
    wanted = config.match.imei if config.match is not None else None
    if wanted is not None and imei != wanted:
        raise WrongModem(f"the modem there has IMEI {imei}, the config wants {wanted}")
    st.imei = imei
    if st.revision is None:
        try:
            st.revision = parse_info((await command("AT+GMR")).lines, "+GMR")
        except (CommandError, ResponseError):
            pass
    mismatch = mismatch_message(config.profile, ati.lines, path)
    if mismatch is not None:
        log.warning("modem %s: %s", config.name, mismatch)
    profile = profile_for(config.profile, ati.lines)
    # A module that cannot register on LTE (no +CEREG) is 2G-only in our profiles.
    st.fallback_technology = None if "AT+CEREG?" in profile.registration_commands else "GSM"
    return profile


async def initialise(command: Command, profile: ModemProfile, st: ModemState) -> None:
    """The profile's init commands (a refusal is logged, not fatal), then the ICCID."""
    for cmd in profile.init_commands:
        try:
            await command(cmd)
        except CommandError as exc:
            log.info("modem %s: init %s refused: %s", st.name, cmd, exc)
    try:
        st.iccid = _first((await command(profile.iccid_command)).lines, parse_iccid)
    except CommandError:
        pass  # a locked SIM may hide it; the PIN memory then keys on the IMEI


async def check_sim(command: Command, now: Callable[[], float], sim: SimCard,
                    st: ModemState) -> None:
    """Run the pure SimCard to its verdict; the PIN goes out at most once per SIM."""
    st.sim_state, st.sim_detail = SimStatus.CHECKING.value, sim.message
    deadline = now() + SIM_CHECK_TIMEOUT
    sim.start(now())
    while sim.status is SimStatus.CHECKING and now() < deadline:
        action = sim.next_action()
        if isinstance(action, SendCommand):
            try:
                done = await command(action.command, timeout=action.timeout)
                sim.command_done(action.command, done.lines, now())
            except CommandError as exc:
                if exc.timed_out:
                    sim.command_timed_out(action.command, now())
                elif isinstance(exc.result, CommandFailed):
                    sim.command_failed(action.command, exc.result.final, exc.result.lines,
                                       now())
        elif isinstance(action, SimStateChanged):
            continue
        elif (at := sim.get_timer()) is not None:
            await asyncio.sleep(max(0.0, at - now()))
            sim.handle_timer(now())
        else:
            break  # nothing to do and no timer: the check is stuck; reported below
    st.sim_state, st.sim_detail = sim.status.value, sim.message
    if sim.status is not SimStatus.READY:
        st.last_error = f"SIM: {sim.message}"
        log.error("modem %s: %s", st.name, sim.message)


async def probe_imei(port: AtPort) -> str | None:
    """Ask a freshly opened port its IMEI; None if it is not an answering modem. Closes it."""
    try:
        await port.command("AT", PROBE_TIMEOUT)
        done = await port.command("AT+CGSN", PROBE_TIMEOUT)
        return _first(done.lines, parse_imei)
    except (HalError, OSError):
        return None
    finally:
        port.close()


class PowerSwitch:
    """The modem's power pin (active high: on = powered), a gpiozero output from a named hal
    pin factory (hal.gpio). Driven high from `on()` at start and held for the driver's life:
    a released pin may float and cut the module's power."""

    def __init__(self, pin: int | str, st: ModemState, factory: Any = None) -> None:
        self.pin = pin
        self._st = st
        self._factory = factory
        self._device: Any = None

    def on(self) -> bool:
        """Open the pin (if not yet) and drive it high; False (logged) when there is no GPIO."""
        if self._device is None:
            try:
                self._device = output_device(self.pin, factory=self._factory,
                                             initial_value=True)
            except Exception as exc:  # noqa: BLE001 - no GPIO here, or a bad pin: say so
                self._st.last_error = f"power GPIO {self.pin}: {exc}"
                log.error("modem %s: cannot drive power pin %s: %s", self._st.name, self.pin,
                          exc)
                return False
        self._device.on()
        return True

    async def cycle(self, off_seconds: float) -> None:
        """Drive the pin low for `off_seconds`, then high again."""
        if not self.on():
            return
        self._device.off()
        try:
            await asyncio.sleep(off_seconds)
        finally:
            self._device.on()

    def close(self) -> None:
        if self._device is not None:
            self._device.close()
            self._device = None


class StoredPinMemory(PinMemory):
    """PinMemory kept in a file (the daemon's state_dir), so a restart does not spend a
    second try of a SIM's PIN that it already refused. Only salted digests of refused PINs
    are written (mode 0600), never a PIN."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.path = os.fspath(path)
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            self._rejected.update({str(k): str(v) for k, v in dict(data).items()})
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError) as exc:
            log.error("SIM PIN memory %s unreadable (%s): starting empty", self.path, exc)

    def record_rejection(self, key: str | None, pin: str) -> None:
        super().record_rejection(key, pin)
        self._save()

    def forget(self, key: str) -> None:
        super().forget(key)
        self._save()

    def _save(self) -> None:
        try:
            write_atomic(self.path, json.dumps(self._rejected).encode())
        except OSError as exc:
            log.error("SIM PIN memory %s not written: %s", self.path, exc)


_GLOB = re.compile(r"[*?\[]")
_INTERFACE = re.compile(r"-if\d+(-port\d+)?$")  # /dev/serial/by-id/usb-...-if02-port0
_USB_DEVICE = re.compile(r"^\d+-[\d.]+$")  # sysfs name of a USB device: 1-1.2


def _usb_device(path: str) -> str | None:
    """The sysfs USB device a tty belongs to (its interfaces share it), None if unknown."""
    name = os.path.basename(os.path.realpath(path))
    try:
        node = os.path.realpath(f"/sys/class/tty/{name}/device")
    except OSError:
        return None
    while node not in ("/", "") and node.startswith("/sys/"):
        if _USB_DEVICE.match(os.path.basename(node)):
            return node
        node = os.path.dirname(node)
    return None


def _stem(path: str) -> str:
    """A by-id name without its interface part: the same for every port of one module."""
    return _INTERFACE.sub("", os.path.basename(path))


def pcm_path_for(pattern: str, at_path: str) -> str | None:
    """The PCM port to open for a module attached on `at_path`.

    A plain path (such as a /dev/serial/by-id/ link, repointed by udev when the module
    re-enumerates) is used as it is. A glob picks, among its matches, the port on the same
    USB device as the AT port: by sysfs, else by the by-id name (the same name but for
    ``-ifNN-portN``, comparing every link in the glob's directory that resolves to the AT
    port), else the only match. None when nothing matches or it is ambiguous.
    """
    if not _GLOB.search(pattern):
        return pattern
    matches = sorted(glob.glob(pattern))
    at_real = os.path.realpath(at_path)
    matches = [m for m in matches if os.path.realpath(m) != at_real]
    usb = _usb_device(at_path)
    if usb is not None:
        same = [m for m in matches if _usb_device(m) == usb]
        if same:
            return same[0]
    names = {_stem(at_path)}
    folder = os.path.dirname(pattern)
    names.update(_stem(p) for p in glob.glob(os.path.join(glob.escape(folder), "*"))
                 if os.path.realpath(p) == at_real)
    same = [m for m in matches if _stem(m) in names]
    if same:
        return same[0]
    return matches[0] if len(matches) == 1 else None
