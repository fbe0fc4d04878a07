"""Keeps one modem attached: liveness probes, vanish detection, re-attach by IMEI, power cycles.

USB modems drop off the bus and come back under another name (/dev/ttyUSB2 becomes
/dev/ttyUSB6), or hang with the port still open. The supervisor decides what to do; the
adapter does it (sends AT, lists and probes device paths, toggles the GPIO pin) and reports
back. Pure: `now` in, actions and events out, one deadline from `get_timer()`.

- Every `probe_interval` seconds it asks for a liveness probe (plain ``AT``); any answer or
  other traffic counts as alive. `missed_limit` misses in a row: `ModemUnresponsive`.
- A serial EOF or error is reported with `port_lost`: `ModemVanished` at once (the 5 s
  budget is the adapter's read loop, not a timer here).
- While gone (vanished, or unresponsive) it scans the candidate paths every `scan_interval`
  and probes each one's IMEI; the path whose IMEI matches is re-attached, whatever its name.
- Still gone `power_cycle_after` seconds later, with a GPIO pin configured, it power-cycles
  the modem; the wait before the next cycle doubles up to `max_backoff`, and after
  `max_power_cycles` it gives up (`ModemGaveUp`) but keeps scanning slowly, so a modem that
  comes back by itself is still found.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

__all__ = [
    "Attach",
    "ModemGaveUp",
    "ModemReattached",
    "ModemSupervisor",
    "ModemUnresponsive",
    "ModemUp",
    "ModemVanished",
    "PowerCycle",
    "PowerCycling",
    "ProbeLiveness",
    "ProbePort",
    "ScanPorts",
    "SupervisorAction",
    "SupervisorState",
]


class SupervisorState(Enum):
    UP = "up"
    UNRESPONSIVE = "unresponsive"
    VANISHED = "vanished"
    POWER_CYCLING = "power-cycling"
    GAVE_UP = "gave-up"


# --- actions (for the adapter) ----------------------------------------------------------


@dataclass(frozen=True)
class ProbeLiveness:
    """Send `command` on the attached port; report `probe_answered` or `probe_missed`."""

    command: str = "AT"
    timeout: float = 2.0


@dataclass(frozen=True)
class ScanPorts:
    """List the candidate device paths now; report them with `ports_found`."""


@dataclass(frozen=True)
class ProbePort:
    """Open `path`, ask ATI / AT+CGSN, close it; report with `port_probed`."""

    path: str


@dataclass(frozen=True)
class Attach:
    """Run the modem on `path` from now on (init commands, SIM check)."""

    path: str


@dataclass(frozen=True)
class PowerCycle:
    """Drive the modem's power pin off for `off_seconds`, then on again."""

    pin: str
    off_seconds: float


# --- events (for status and the log) ----------------------------------------------------


@dataclass(frozen=True)
class ModemUp:
    path: str


@dataclass(frozen=True)
class ModemUnresponsive:
    path: str
    missed: int


@dataclass(frozen=True)
class ModemVanished:
    path: str
    reason: str


@dataclass(frozen=True)
class ModemReattached:
    path: str
    previous_path: str


@dataclass(frozen=True)
class PowerCycling:
    attempt: int
    pin: str
    next_try_in: float | None
    """Seconds until the next cycle if this one does not help; None after the last one."""


@dataclass(frozen=True)
class ModemGaveUp:
    message: str


SupervisorAction = (
    ProbeLiveness
    | ScanPorts
    | ProbePort
    | Attach
    | PowerCycle
    | ModemUp
    | ModemUnresponsive
    | ModemVanished
    | ModemReattached
    | PowerCycling
    | ModemGaveUp
)


class ModemSupervisor:
    """One modem's health; identity is its IMEI, not its device path."""

    def __init__(
        self,
        *,
        imei: str,
        path: str,
        probe_interval: float = 5.0,
        probe_timeout: float = 2.0,
        missed_limit: int = 3,
        scan_interval: float = 2.0,
        power_cycle_after: float = 60.0,
        power_pin: str | None = None,
        off_seconds: float = 3.0,
        boot_wait: float = 20.0,
        max_backoff: float = 3600.0,
        max_power_cycles: int = 5,
        slow_scan_interval: float = 60.0,
    ) -> None:
        if missed_limit < 1 or max_power_cycles < 0:
            raise ValueError("missed_limit must be >= 1 and max_power_cycles >= 0")
        self.imei = imei
        self.path = path
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self._missed_limit = missed_limit
        self._scan_interval = scan_interval
        self._cycle_after = power_cycle_after
        self._pin = power_pin
        self._off = off_seconds
        self._boot_wait = boot_wait
        self._max_backoff = max_backoff
        self._max_cycles = max_power_cycles
        self._slow_scan = slow_scan_interval
        self.state = SupervisorState.UP
        self._actions: deque[SupervisorAction] = deque()
        self._timers: dict[str, float] = {}
        self._missed = 0
        self._probing = False  # a liveness probe is out
        self._to_probe: deque[str] = deque()
        self._port_probe: str | None = None
        self._cycles = 0
        self._lost_path = path

    # --- inputs ------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """The modem was found at `path` (first probe done): announce it, start probing."""
        self._actions.append(ModemUp(self.path))
        self._timers["probe"] = now + self._probe_interval

    def activity(self, now: float) -> None:
        """Anything arrived from the modem (a reply, a URC): it is alive."""
        if self.state is SupervisorState.UNRESPONSIVE:
            self._up(now)
        self._missed = 0

    def probe_answered(self, now: float) -> None:
        self._probing = False
        self.activity(now)

    def probe_missed(self, now: float) -> None:
        self._probing = False
        if self.state not in (SupervisorState.UP, SupervisorState.UNRESPONSIVE):
            return
        self._missed += 1
        if self._missed == self._missed_limit and self.state is SupervisorState.UP:
            self.state = SupervisorState.UNRESPONSIVE
            self._actions.append(ModemUnresponsive(self.path, self._missed))
            self._gone(now)

    def port_lost(self, reason: str, now: float) -> None:
        """The serial port hit EOF or an error: the modem is gone from this path."""
        if self.state in (SupervisorState.VANISHED, SupervisorState.POWER_CYCLING):
            return
        if self.state is SupervisorState.GAVE_UP:
            return
        self.state = SupervisorState.VANISHED
        self._probing = False
        self._actions.append(ModemVanished(self.path, reason))
        self._timers.pop("probe", None)
        self._gone(now)
        self._timers["scan"] = now  # look at once: a quick re-plug is back within a second

    def ports_found(self, paths: Iterable[str], now: float) -> None:
        """The candidate device paths (already without the ones other modems use)."""
        if self.state in (SupervisorState.UP, SupervisorState.UNRESPONSIVE):
            return
        self._to_probe = deque(dict.fromkeys(paths))
        self._probe_next()

    def port_probed(self, path: str, imei: str | None, now: float) -> None:
        """What `path` said its IMEI was (None: no answer, or not a modem)."""
        if path != self._port_probe:
            return
        self._port_probe = None
        if self.state in (SupervisorState.UP, SupervisorState.UNRESPONSIVE):
            return
        if imei == self.imei:
            previous, self.path = self._lost_path, path
            self._to_probe.clear()
            self._actions.append(Attach(path))
            self._actions.append(ModemReattached(path, previous))
            self._up(now)
            return
        self._probe_next()

    # --- timers ------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        return min(self._timers.values(), default=None)

    def handle_timer(self, now: float) -> None:
        for kind, _ in sorted(self._timers.items(), key=lambda kv: kv[1]):
            due = self._timers.get(kind)
            if due is None or due > now:
                continue  # not due, or cleared or re-armed by an earlier timer just now
            del self._timers[kind]
            if kind == "probe":
                self._liveness(now)
            elif kind == "scan":
                self._scan(now)
            elif kind == "cycle":
                self._power_cycle(now)

    def next_action(self) -> SupervisorAction | None:
        return self._actions.popleft() if self._actions else None

    # --- steps -------------------------------------------------------------------------

    def _liveness(self, now: float) -> None:
        if self.state in (SupervisorState.UP, SupervisorState.UNRESPONSIVE):
            if not self._probing:
                self._probing = True
                self._actions.append(ProbeLiveness("AT", self._probe_timeout))
            self._timers["probe"] = now + self._probe_interval

    def _gone(self, now: float) -> None:
        """Start the clock towards a power cycle (kept if it is already running)."""
        self._lost_path = self.path
        if self._pin is not None and self._max_cycles > 0:
            self._timers.setdefault("cycle", now + self._cycle_after)

    def _scan(self, now: float) -> None:
        if self.state in (SupervisorState.UP, SupervisorState.UNRESPONSIVE):
            return
        if self._port_probe is None and not self._to_probe:
            self._actions.append(ScanPorts())
        slow = self.state is SupervisorState.GAVE_UP
        self._timers["scan"] = now + (self._slow_scan if slow else self._scan_interval)

    def _probe_next(self) -> None:
        if self._port_probe is not None or not self._to_probe:
            return
        self._port_probe = self._to_probe.popleft()
        self._actions.append(ProbePort(self._port_probe))

    def _power_cycle(self, now: float) -> None:
        if self.state is SupervisorState.UP or self._pin is None:
            return
        if self._cycles >= self._max_cycles:
            self.state = SupervisorState.GAVE_UP
            self._actions.append(
                ModemGaveUp(
                    f"modem {self.imei} (last at {self._lost_path}) still gone after "
                    f"{self._cycles} power cycles; looking for it every {self._slow_scan:g} s"
                )
            )
            self._timers["scan"] = now + self._slow_scan
            return
        self._cycles += 1
        last = self._cycles >= self._max_cycles
        wait = min(self._cycle_after * 2**self._cycles, self._max_backoff)
        self.state = SupervisorState.POWER_CYCLING
        self._probing = False
        self._timers.pop("probe", None)
        self._actions.append(PowerCycle(self._pin, self._off))
        self._actions.append(PowerCycling(self._cycles, self._pin, None if last else wait))
        # Nothing enumerates while the power is off and the module boots: scan after that.
        self._to_probe.clear()
        self._port_probe = None
        self._timers["scan"] = now + self._off + self._boot_wait
        self._timers["cycle"] = now + self._off + wait

    def _up(self, now: float) -> None:
        self.state = SupervisorState.UP
        self._missed = 0
        self._probing = False
        self._cycles = 0
        self._timers.clear()
        self._timers["probe"] = now + self._probe_interval
        self._actions.append(ModemUp(self.path))
