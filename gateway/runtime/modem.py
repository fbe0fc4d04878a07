"""One configured modem on the asyncio loop: its AT port, profile, SIM, network and supervisor.

Several users share the one AT port: the GSM line's commands, the SIM check, the supervisor's
liveness probes, network polling and SMS reads (`command()`). The port's AT engine sends them
one at a time and hands each result back to whoever asked; unsolicited result codes fan out to
every subscriber (`subscribe()`). Nothing here blocks the loop: the port is read with
add_reader, every wait is an await, and the pure cores (SimCard, ModemSupervisor) are driven
from small tasks.

Life of a driver:

- `start()` opens the configured port (or finds the module by IMEI among the candidate
  device paths), identifies it (ATI, AT+CGSN), picks the profile, sends its init commands,
  checks the SIM (the PIN at most once, see gateway.modem.sim_card), opens the audio path
  and polls the network every `NETWORK_POLL` seconds and on registration URCs;
- an absent module is reported (state ``absent``) and looked for again every probe interval;
- once attached, the ModemSupervisor probes liveness; a serial EOF/EIO is a vanish at once
  (state ``vanished``), then the candidate paths are scanned for the same IMEI and the
  module is re-attached under its new name; a configured GPIO pin power-cycles it when it
  stays away.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import math
import os
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from gateway.config.modems import ModemConfig
from gateway.modem.at import CommandDone, Unsolicited
from gateway.modem.profiles import ModemProfile, UnknownProfile
from gateway.modem.sim_card import PinMemory, SimCard, SimStatus
from gateway.modem.supervisor import (
    Attach,
    ModemGaveUp,
    ModemReattached,
    ModemSupervisor,
    ModemUnresponsive,
    ModemUp,
    ModemVanished,
    PowerCycle,
    PowerCycling,
    ProbeLiveness,
    ProbePort,
    ScanPorts,
    SupervisorAction,
)
from gateway.runtime.modem_setup import (
    PROBE_TIMEOUT,
    PowerSwitch,
    check_sim,
    identify,
    initialise,
    pcm_path_for,
    probe_imei,
)
from gateway.runtime.modem_state import REGISTRATION_URCS, ModemState
from hal.base import AtPort, AudioPort, CommandError, HalError, ModemEvent, ModemLost, PortLost

__all__ = ["DEFAULT_SCAN_GLOBS", "ModemDriver", "Profile", "SCAN_ENV"]

log = logging.getLogger("branchline.modem")

Profile = ModemProfile

NETWORK_POLL = 10.0
"""Seconds between network polls (registration, operator, signal) while attached."""
DEFAULT_SCAN_GLOBS: tuple[str, ...] = ("/dev/serial/by-id/*", "/dev/ttyUSB*", "/dev/ttyACM*")
"""Where a module that re-enumerated is looked for (by IMEI), besides the configured port."""
SCAN_ENV = "BRANCHLINE_MODEM_SCAN"
"""Environment variable: extra globs to scan, separated by os.pathsep (tests point it at a
directory of links to emulator ptys)."""


def _open_serial(path: str) -> AtPort:
    from hal.modem.serial_port import SerialAtPort

    return SerialAtPort(path)


class ModemDriver:
    """One configured modem: owns its serial AtPort, AtEngine, profile init, SimCard,
    network polling and ModemSupervisor; re-attaches by IMEI under a new /dev name."""

    name: str
    config: ModemConfig
    imei: str | None
    profile: Profile | None
    audio: AudioPort | None
    """The voice path for calls (serial-pcm pty, uac/usb-soundcard ALSA, sim); None while
    the modem is not attached or its audio could not be opened."""

    #: Device paths attached by any driver in this process (real paths): never probed by another.
    _claimed: ClassVar[dict[str, str]] = {}

    def __init__(
        self,
        config: ModemConfig,
        loop: asyncio.AbstractEventLoop,
        *,
        on_change: Callable[[ModemDriver], None] | None = None,
        scan_globs: Iterable[str] | None = None,
        pin_memory: PinMemory | None = None,
        open_port: Callable[[str], AtPort] = _open_serial,
        pin_factory: Any = None,
        supervision: dict[str, float] | None = None,
    ) -> None:
        # pin_factory: the power pin's gpiozero factory or hal.gpio name (None: the board's);
        # supervision: ModemSupervisor timings (power_cycle_after, boot_wait, max_backoff...).
        self.name = config.name
        self.config = config
        self.imei = config.match.imei if config.match is not None else None
        self.profile = None
        self.audio = None
        self._loop = loop
        self._on_change = on_change
        self._watchers: list[Callable[[ModemDriver], None]] = []
        if scan_globs is None:
            extra = [g for g in os.environ.get(SCAN_ENV, "").split(os.pathsep) if g]
            scan_globs = (*DEFAULT_SCAN_GLOBS, *extra)
        self._scan_globs = tuple(scan_globs)
        self._pins = pin_memory if pin_memory is not None else PinMemory()
        self._open_port = open_port
        self._port: AtPort | None = None
        self._path: str | None = None
        self._subscribers: list[Callable[[Unsolicited], None]] = []
        self._st = ModemState(config.name, config.profile)
        self._sim: SimCard | None = None
        self._supervisor: ModemSupervisor | None = None
        self._sup_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._poll_task: asyncio.Task[None] | None = None
        self._probe_out: asyncio.Task[Any] | None = None
        self._poll_now = asyncio.Event()
        self._attaching = False
        self._was_up = False  # attached at least once (a failure later is a vanish)
        self._closed = False
        self._up = False
        power = config.power_gpio
        self._power = None if power is None else PowerSwitch(power.pin, self._st, pin_factory)
        self._supervision = dict(supervision or {})

    # ------------------------------------------------------------------ public interface

    async def start(self) -> None:
        """Open, probe and initialise the modem; never raises for an absent modem: it is
        reported in `status()` and re-probed."""
        if self._closed:
            raise HalError(f"modem {self.name}: start() after close()")
        if self._power is not None:
            self._power.on()  # powered from the start, whatever the pin's boot state
        path = self._first_path()
        attached = False
        if path is not None:
            attached = await self._attach(path, first=True)
        if not attached and self.imei is not None:
            attached = await self._scan_for_imei()
        if not attached and not self._closed:
            if self._st.state == "starting":
                self._set_state("absent")
            self._spawn(self._look_for_it())

    async def close(self) -> None:
        """Stop polling and supervising, release the AT port and the audio. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._sup_timer is not None:
            self._sup_timer.cancel()
            self._sup_timer = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - they are being stopped
                pass
        self._detach()
        if self._power is not None:
            self._power.close()
        self._set_state("closed")

    @property
    def up(self) -> bool:
        """Attached, initialised, SIM ready."""
        return self._up

    @property
    def device(self) -> str | None:
        """The device path the modem is attached on now (None while it is not)."""
        return self._path

    async def command(
        self, line: str, *, timeout: float = 5.0, body: bytes | None = None
    ) -> CommandDone:
        """Send one AT command through the shared port, after those already queued.

        Raises hal.base.CommandError on an error result or timeout, ModemLost when the
        modem is not attached or goes away meanwhile.
        """
        port = self._port
        if port is None:
            raise ModemLost(f"modem {self.name}: not attached ({self._st.state})")
        try:
            done = await port.command(line, timeout, body=body)
        except CommandError as exc:
            if not exc.timed_out:
                self._alive()  # an error result is still an answer
            raise
        self._alive()
        return done

    def subscribe(self, fn: Callable[[Unsolicited], None]) -> Callable[[], None]:
        """Call `fn` with every unsolicited result code; returns the unsubscribe function."""
        self._subscribers.append(fn)

        def unsubscribe() -> None:
            if fn in self._subscribers:
                self._subscribers.remove(fn)

        return unsubscribe

    def watch(self, fn: Callable[[ModemDriver], None]) -> Callable[[], None]:
        """Call `fn(driver)` whenever the state shown by `status()` changes (up, vanished,
        re-attached, SIM state ...); returns the unwatch function."""
        self._watchers.append(fn)

        def unwatch() -> None:
            if fn in self._watchers:
                self._watchers.remove(fn)

        return unwatch

    def status(self) -> dict[str, Any]:
        """name, profile, state, device, imei, model, revision, sim: {state, detail},
        network: {registration, operator, technology}, signal: {rssi_dbm, rsrp_dbm, ...},
        last_error."""
        out = self._st.as_dict()
        if self.profile is not None:
            out["profile"] = self.profile.name
            out["configured_profile"] = self.config.profile
        return out

    async def poll_network(self) -> None:
        """Ask registration, operator and signal now (also done every NETWORK_POLL s)."""
        profile, st = self.profile, self._st
        if profile is None or self._port is None:
            return
        for cmd in (*profile.registration_commands, "AT+COPS?", profile.signal_command):
            try:
                done = await self.command(cmd, timeout=5.0)
            except CommandError as exc:
                log.debug("modem %s: %s failed: %s", self.name, cmd, exc)
                continue
            for line in done.lines:
                (st.registration_line(line, solicited=True) or st.operator_line(line)
                 or st.signal_line(line))
        self._changed()

    # ------------------------------------------------------------------ attaching

    def _first_path(self) -> str | None:
        port = self.config.port
        if port is None:
            return None
        return port

    async def _look_for_it(self) -> None:
        """Not found at start: try again every probe interval, by IMEI if one is known."""
        while not self._closed and self._port is None:
            await asyncio.sleep(self.config.probe_interval)
            if self._closed or self._port is not None or self._attaching:
                continue
            if self.imei is None:
                path = self._first_path()
                if path is not None and await self._attach(path):
                    return
            elif await self._scan_for_imei():
                return

    async def _scan_for_imei(self) -> bool:
        """Probe every candidate path for our IMEI; attach the one that has it."""
        for path in self._candidates():
            if self._closed or self._port is not None:
                return self._port is not None
            if await self._probe_imei(path) == self.imei and await self._attach(path):
                return True
        return False

    def _candidates(self) -> list[str]:
        """Device paths the module may have come back as, minus other drivers' ports."""
        paths: list[str] = []
        if self.config.port is not None and "://" not in self.config.port:
            paths.append(self.config.port)
        for pattern in self._scan_globs:
            paths.extend(sorted(glob.glob(pattern)))
        out: list[str] = []
        pcm = self.config.audio.pcm_port
        seen: set[str] = set()  # the PCM port(s) are never an AT port to probe
        pcm_real = {os.path.realpath(p) for p in glob.glob(pcm)} if pcm else set()
        for p in paths:
            real = os.path.realpath(p)
            owner = self._claimed.get(real)
            if real in seen or real in pcm_real or (owner is not None and owner != self.name):
                continue
            seen.add(real)
            out.append(p)
        return out

    async def _probe_imei(self, path: str) -> str | None:
        """Open `path` briefly and ask its IMEI; None if it is not an answering modem."""
        try:
            port = self._open_port(path)
            port.start(lambda event: None)
        except (HalError, OSError) as exc:
            log.debug("modem %s: probing %s: %s", self.name, path, exc)
            return None
        return await probe_imei(port)

    async def _attach(self, path: str, *, first: bool = False) -> bool:
        """Run the module on `path`: identify, init, SIM, audio, polling. True once attached
        (even with a SIM problem, which status reports); False if it is not there."""
        if self._attaching or self._closed:
            return False
        self._attaching = True
        try:
            return await self._attach_on(path, first)
        finally:
            self._attaching = False

    async def _attach_on(self, path: str, first: bool) -> bool:
        self._detach()
        st = self._st
        try:
            port = self._open_port(path)
            port.start(self._on_event)
        except (HalError, OSError) as exc:
            st.last_error = str(exc)
            if first:
                log.warning("modem %s: %s; looking for it again every %g s",
                            self.name, exc, self.config.probe_interval)
            self._changed()
            return False
        self._port, self._path = port, path
        self._claimed[os.path.realpath(path)] = self.name
        st.device = path
        self._set_state("starting")
        try:
            self.profile = await identify(self.command, st, self.config, path)
            self.imei = st.imei
            await initialise(self.command, self.profile, st)
            self._sim = SimCard(
                pin=self.config.pin, memory=self._pins, imei=self.imei, iccid=st.iccid,
                pin_retries_command=self.profile.pin_retries_command)
            await check_sim(self.command, self._loop.time, self._sim, st)
        except (HalError, UnknownProfile) as exc:
            st.last_error = f"{path}: {exc}"
            log.warning("modem %s: attaching %s failed: %s", self.name, path, exc)
            if self._port is port:
                self._detach()
                if st.state not in ("vanished", "unresponsive"):
                    self._set_state("vanished" if self._was_up else "absent")
            return False
        self._was_up = True
        self._open_audio()
        self._start_supervisor(path)
        self._up = st.sim_state == SimStatus.READY.value
        self._set_state("up" if self._up else "sim-error")
        log.info("modem %s up on %s: %s %s, IMEI %s, SIM %s", self.name, path,
                 st.manufacturer or "", st.model or "?", self.imei, st.sim_state)
        if self._poll_task is None or self._poll_task.done():
            self._poll_task = self._spawn(self._poll_loop())
        else:
            self._poll_now.set()
        return True

    def _open_audio(self) -> None:
        audio = self.config.audio
        self._close_audio()
        try:
            if audio.type in ("serial-pcm", "sim") and audio.pcm_port:
                from hal.modem.pcm_audio import PcmSerialAudio

                pcm = pcm_path_for(audio.pcm_port, self._path or "")
                if pcm is None:
                    raise HalError(f"no PCM port {audio.pcm_port} beside {self._path}")
                self.audio = PcmSerialAudio(pcm)
            elif audio.type in ("uac", "usb-soundcard") and audio.device:
                from hal.audio.alsa import AlsaAudio

                self.audio = AlsaAudio(audio.device)
        except (HalError, OSError) as exc:
            self._st.last_error = f"audio: {exc}"
            log.error("modem %s: audio %s not opened: %s", self.name, audio.type, exc)
        self._st.audio = audio.type if self.audio is not None else None

    def _close_audio(self) -> None:
        audio, self.audio = self.audio, None
        if audio is not None:
            audio.close()

    def _detach(self) -> None:
        """Let go of the port and the audio (the modem vanished, or we are closing)."""
        port, self._port = self._port, None
        if self._path is not None:
            real = os.path.realpath(self._path)
            if self._claimed.get(real) == self.name:
                del self._claimed[real]
        if port is not None:
            port.close()
        self._close_audio()
        self._up = False

    # ------------------------------------------------------------------ events

    def _on_event(self, event: ModemEvent) -> None:
        if isinstance(event, PortLost):
            self._port_lost(event.reason)
            return
        self._alive()
        if event.name in REGISTRATION_URCS:
            line = f"{event.name}: {event.value}"
            if self._st.registration_line(line, solicited=False):
                self._poll_now.set()
                self._changed()
        for fn in list(self._subscribers):
            try:
                fn(event)
            except Exception:
                log.exception("modem %s: URC subscriber failed on %r", self.name, event)

    def _port_lost(self, reason: str) -> None:
        if self._closed:
            return
        was = self._path
        self._st.last_error = f"{was}: {reason}"
        self._detach()
        self._st.forget_network()
        sup = self._supervisor
        if sup is not None:
            sup.port_lost(reason, self._loop.time())
            self._run_supervisor()
        else:
            self._set_state("vanished")
            log.warning("modem %s vanished from %s: %s", self.name, was, reason)
            self._spawn(self._look_for_it())

    def _alive(self) -> None:
        sup = self._supervisor
        if sup is not None and self._port is not None:
            sup.activity(self._loop.time())
            self._run_supervisor()

    # ------------------------------------------------------------------ supervisor

    def _start_supervisor(self, path: str) -> None:
        if self._supervisor is not None or self.imei is None:
            if self._supervisor is not None:
                self._run_supervisor()
            return
        cfg = self.config
        missed = max(1, math.ceil(cfg.unresponsive_after / cfg.probe_interval))
        power = cfg.power_gpio
        self._supervisor = ModemSupervisor(
            imei=self.imei, path=path, probe_interval=cfg.probe_interval,
            probe_timeout=min(PROBE_TIMEOUT, cfg.probe_interval), missed_limit=missed,
            scan_interval=min(2.0, cfg.probe_interval),
            power_pin=None if power is None else str(power.pin),
            off_seconds=3.0 if power is None else power.off_seconds,
            **self._supervision,  # type: ignore[arg-type]
        )
        self._supervisor.start(self._loop.time())
        self._run_supervisor()

    def _run_supervisor(self) -> None:
        sup = self._supervisor
        if sup is None or self._closed:
            return
        while (action := sup.next_action()) is not None:
            self._supervisor_action(action)
        if self._sup_timer is not None:
            self._sup_timer.cancel()
            self._sup_timer = None
        at = sup.get_timer()
        if at is not None:
            self._sup_timer = self._loop.call_at(at, self._supervisor_timer)

    def _supervisor_timer(self) -> None:
        self._sup_timer = None
        if self._supervisor is not None and not self._closed:
            self._supervisor.handle_timer(self._loop.time())
            self._run_supervisor()

    def _supervisor_action(self, action: SupervisorAction) -> None:
        sup = self._supervisor
        assert sup is not None
        match action:
            case ProbeLiveness(command=cmd, timeout=timeout):
                self._spawn(self._liveness(cmd, timeout))
            case ScanPorts():
                sup.ports_found(self._candidates(), self._loop.time())
            case ProbePort(path=path):
                self._spawn(self._probe_for_supervisor(path))
            case Attach(path=path):
                self._spawn(self._reattach(path))
            case PowerCycle(off_seconds=off):
                if self._power is not None:
                    self._spawn(self._power.cycle(off))
            case ModemUp():
                pass
            case ModemUnresponsive(path=path, missed=missed):
                self._st.last_error = f"{path}: no answer to {missed} liveness probes"
                log.warning("modem %s on %s is unresponsive", self.name, path)
                self._up = False
                self._set_state("unresponsive")
            case ModemVanished(path=path, reason=reason):
                log.warning("modem %s vanished from %s: %s", self.name, path, reason)
                self._set_state("vanished")
            case ModemReattached(path=path, previous_path=previous):
                self._st.reattached += 1
                log.warning("modem %s (IMEI %s) is back on %s (was %s)",
                            self.name, self.imei, path, previous)
            case PowerCycling(attempt=attempt, pin=pin):
                log.warning("modem %s: power-cycling it through %s (attempt %d)",
                            self.name, pin, attempt)
                self._set_state("power-cycling")
            case ModemGaveUp(message=message):
                self._st.last_error = message
                log.error("modem %s: %s", self.name, message)
                self._set_state("gave-up")

    async def _liveness(self, cmd: str, timeout: float) -> None:
        """One probe. It shares the port's queue, so it may wait behind other commands that
        a hung module never answers: it counts as missed when no answer came `timeout` s
        after it was asked for, however long the queue, and no new probe is queued while
        an earlier one still waits there (the queue never grows while the module hangs)."""
        sup = self._supervisor
        answered = False
        if self._probe_out is None or self._probe_out.done():
            self._probe_out = self._spawn(self.command(cmd, timeout=timeout))
        probe = self._probe_out
        done, _ = await asyncio.wait({probe}, timeout=timeout + 0.1)
        if probe in done:
            exc = probe.exception()
            if isinstance(exc, ModemLost):
                return
            answered = exc is None or (isinstance(exc, CommandError) and not exc.timed_out)
        if sup is None or self._closed or sup is not self._supervisor:
            return
        if answered:
            sup.probe_answered(self._loop.time())
            if self._st.state == "unresponsive":
                self._up = self._st.sim_state == SimStatus.READY.value
                self._set_state("up" if self._up else "sim-error")
        else:
            sup.probe_missed(self._loop.time())
        self._run_supervisor()

    async def _probe_for_supervisor(self, path: str) -> None:
        imei = await self._probe_imei(path)
        if self._supervisor is not None and not self._closed:
            self._supervisor.port_probed(path, imei, self._loop.time())
            self._run_supervisor()

    async def _reattach(self, path: str) -> None:
        if not await self._attach(path) and self._supervisor is not None and not self._closed:
            self._supervisor.port_lost("re-attach failed", self._loop.time())
            self._run_supervisor()

    # ------------------------------------------------------------------ network polling

    async def _poll_loop(self) -> None:
        while not self._closed:
            if self._port is not None and self._st.state not in ("starting",):
                try:
                    await self.poll_network()
                except ModemLost:
                    pass
            self._poll_now.clear()
            try:
                # asyncio.timeout: Python 3.11's wait_for can swallow a cancel that races
                # the wait's completion, and this loop would then never stop
                async with asyncio.timeout(NETWORK_POLL):
                    await self._poll_now.wait()
                await asyncio.sleep(0.2)  # let a burst of URCs settle into one poll
            except TimeoutError:
                pass

    # ------------------------------------------------------------------ plumbing

    def _set_state(self, state: str) -> None:
        self._st.state = state
        self._changed()

    def _changed(self) -> None:
        for fn in ([self._on_change] if self._on_change else []) + list(self._watchers):
            try:
                fn(self)
            except Exception:
                log.exception("modem %s: change callback failed", self.name)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, CommandError | ModemLost):
            log.debug("modem %s: %s", self.name, exc)  # a probe's answer, read by its waiter
        elif exc is not None:
            log.error("modem %s: task failed", self.name, exc_info=exc)
