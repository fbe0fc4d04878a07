"""Trunk health at run time: probes, signals and transitions for every trunk (adapter).

One pure `TrunkHealth` (gateway/routing/health.py) per trunk. This module is the thin part
around them:
- it sends the OPTIONS probes (`ua.send_options`, one stream per trunk, to the trunk's proxy
  targets) whenever a trunk's health asks for one, on its own asyncio timer;
- it feeds every other signal: probe answers and failures, registration outcomes of the
  accounts on the trunk, transport errors to the trunk's addresses (`ua.transport_listener`),
  the host's route to the trunk (gateway/runtime/netlink.py) and INVITE timeouts
  (`invite_timed_out`, from the failover code);
- on each transition it logs one line with the cause and the detection time
  (`trunk main: up -> down (5 probes unanswered), detected in 1.52 s`), counts it, tells the
  subscribers, and acts on the trunk's registration accounts: DOWN parks them (not registered,
  "trunk down", nothing sent), UP makes them register again at once.

The registration accounts of a monitored trunk send no OPTIONS of their own (the daemon sets
their probe interval to 0), so 20 lines on one trunk make one probe stream, not 20.

A trunk with `keepalive: none` is sent nothing unsolicited, so it is not monitored: no
probes, no health state (the router treats it as unknown, i.e. usable), and its accounts
keep their own rare probing as before. That is for peers that must not get OPTIONS (a
carrier that bans them, a test peer that takes every new Call-ID for a call).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from gateway.config.schema import TrunkConfig
from gateway.routing.health import HealthChanged, HealthSettings, HealthState, TrunkHealth
from gateway.runtime.logs import fields
from gateway.runtime.netlink import RouteWatch
from gateway.sip.dns import is_ip
from gateway.sip.events import OptionsAnswered, OptionsFailed, RegistrationStateChanged
from gateway.sip.target import Target

log = logging.getLogger("branchline.trunk_health")

Address = tuple[str, int]
Subscriber = Callable[[HealthChanged], None]

#: Registration failures that say something about the trunk's reachability; a wrong
#: password or an unknown user does not make a trunk unhealthy.
_TROUBLE_STATUSES = ("408", "480", "500", "502", "503", "504")


class _Ua(Protocol):
    """What the monitor needs of gateway.sip.ua.UserAgent."""

    transport_listener: Callable[[Address, str, float], None] | None

    def send_options(self, *, target_uri: str, from_uri: str,
                     dest: Address | tuple[Target, ...], timeout: float, now: float) -> str: ...

    def trunk_down(self, account_id: str, now: float) -> None: ...

    def register_now(self, account_id: str, now: float) -> None: ...


class _Account(Protocol):
    trunk: str


def settings_of(trunk: TrunkConfig) -> HealthSettings:
    """The trunk's health settings (defaults when the config carries none)."""
    found = getattr(trunk, "health", None)
    return found if isinstance(found, HealthSettings) else HealthSettings()


def monitored(trunk: TrunkConfig) -> bool:
    """False for a trunk that must get nothing unsolicited (`keepalive: none`)."""
    return getattr(trunk, "keepalive", "options") != "none"


def registration_trouble(reason: str) -> bool:
    """True when a failed registration means the trunk may be unreachable or failing."""
    text = reason.strip().lower()
    return ("unreachable" in text or "timed out" in text or "timeout" in text
            or text[:3] in _TROUBLE_STATUSES)


class TrunkHealthMonitor:
    """The health of every trunk, kept up to date while the daemon runs."""

    def __init__(self, trunks: Iterable[TrunkConfig], ua: _Ua,
                 loop: asyncio.AbstractEventLoop, pump: Callable[[], None], *,
                 proxy_targets: Mapping[str, tuple[Target, ...]],
                 accounts: Mapping[str, _Account],
                 registrar_targets: Mapping[str, tuple[Target, ...]] | None = None,
                 from_uri: str = "sip:branchline@localhost", use_netlink: bool = True) -> None:
        self.loop = loop
        self.ua = ua
        self.pump = pump
        every = list(trunks)
        self.trunks = {t.name: t for t in every if monitored(t)}
        self.unmonitored = [t.name for t in every if not monitored(t)]
        self.proxy_targets = proxy_targets
        self.registrar_targets = registrar_targets or {}
        self.accounts = accounts
        self.from_uri = from_uri
        self.use_netlink = use_netlink
        self.counters: Counter[str] = Counter()
        self.last_link: dict[str, str] = {}
        self._health: dict[str, TrunkHealth] = {}
        self._probes: dict[str, str] = {}  # probe handle -> trunk
        self._subscribers: list[Subscriber] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._processing = False
        self._process_soon = False
        self._link_ips: dict[str, tuple[str, ...]] = {}
        self.netlink: RouteWatch | None = None
        self.running = False

    # -- life cycle ------------------------------------------------------------------------

    def monitors(self, trunk: str) -> bool:
        """True for a trunk whose accounts leave probing to this monitor."""
        return trunk in self.trunks

    def start(self) -> None:
        """Start every trunk UP, listen for transport errors and netlink, send first probes."""
        now = self.loop.time()
        for name, trunk in self.trunks.items():
            self._health[name] = TrunkHealth(name, settings_of(trunk), now)
        self.ua.transport_listener = self._transport_error
        if self.use_netlink and self.trunks:
            self.netlink = RouteWatch(self.loop, self._links_changed)
            if self.netlink.start():
                self._links_changed()
        self.running = True
        self._run(now)

    def stop(self) -> None:
        """Stop probing and listening; the states stay readable."""
        self.running = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = None
        if self.netlink is not None:
            self.netlink.close()
            self.netlink = None
        if getattr(self.ua, "transport_listener", None) == self._transport_error:
            self.ua.transport_listener = None

    # -- what others read ------------------------------------------------------------------

    def state(self, trunk: str) -> HealthState:
        """The trunk's state now (UP for a trunk that is not monitored)."""
        health = self._health.get(trunk)
        return health.state if health is not None else HealthState.UP

    def states(self) -> dict[str, HealthState]:
        """Every monitored trunk's state (the router's input)."""
        return {name: h.state for name, h in self._health.items()}

    def describe(self, now: float) -> dict[str, dict[str, Any]]:
        """Per trunk: TrunkHealth.describe plus the probe targets, the link and counters."""
        out: dict[str, dict[str, Any]] = {}
        for name, health in self._health.items():
            info: dict[str, Any] = dict(health.describe(now))
            info["targets"] = [f"{t.transport}:{t.host}:{t.port}"
                               for t in self.proxy_targets.get(name, ())]
            info["link"] = self.last_link.get(name)
            info["entered"] = {state.value: self.counters[f"{name}:{state.value}"]
                               for state in HealthState}
            out[name] = info
        for name in self.unmonitored:
            out[name] = {"state": "unknown", "probing": False,
                         "reason": "not probed (keepalive: none)"}
        return out

    def subscribe(self, callback: Subscriber) -> None:
        """Call `callback(event)` on every transition of any trunk, after the log line."""
        self._subscribers.append(callback)

    # -- signals ---------------------------------------------------------------------------

    def on_sip_event(self, ev: object) -> bool:
        """Take the agent's events that concern health; True when the event was a probe's.

        Registration outcomes are only looked at (False: the daemon handles them too).
        """
        if isinstance(ev, (OptionsAnswered, OptionsFailed)):
            trunk = self._probes.pop(ev.handle, None)
            if trunk is None:
                return False
            health = self._health.get(trunk)
            if health is not None:
                now = self.loop.time()
                if isinstance(ev, OptionsAnswered):
                    health.probe_answered(ev.handle, ev.status, now)
                else:
                    health.probe_failed(ev.handle, ev.reason, now)
                self._run(now)
            return True
        if isinstance(ev, RegistrationStateChanged):
            account = self.accounts.get(ev.account_id)
            health = self._health.get(account.trunk) if account is not None else None
            if health is None:
                return False
            now = self.loop.time()
            if ev.registered:
                health.registration_result(True, ev.reason, now)
            elif registration_trouble(ev.reason):
                health.registration_result(False, ev.reason, now)
            else:
                return False
            self._run(now)
        return False

    def invite_timed_out(self, trunk: str, now: float) -> None:
        """An INVITE to `trunk` got no response at all (the failover code tells us)."""
        health = self._health.get(trunk)
        if health is not None:
            health.invite_timed_out(now)
            self._run(now)

    def _transport_error(self, addr: Address, transport: str, now: float) -> None:
        """From inside the agent: note it now, act on it once the agent is done."""
        hit = False
        for name, health in self._health.items():
            targets = (*self.proxy_targets.get(name, ()), *self.registrar_targets.get(name, ()))
            if any(t.addr == addr and t.transport == transport for t in targets):
                kind = "ICMP unreachable" if transport == "udp" else \
                    f"{transport.upper()} connection failed"
                health.transport_error(f"{kind} ({addr[0]}:{addr[1]})", now)
                hit = True
        if hit and not self._process_soon:
            self._process_soon = True
            self.loop.call_soon(self._deferred)

    def _deferred(self) -> None:
        self._process_soon = False
        self._run(self.loop.time())
        self.pump()

    def _links_changed(self) -> None:
        """Netlink saw a link or route change: ask again for every trunk's targets."""
        if self.netlink is None or not self.netlink.available:
            return
        now = self.loop.time()
        for name in self._health:
            self._check_link(name, now)
        self._run(now)
        self.pump()

    def _target_ips(self, name: str) -> tuple[str, ...]:
        hosts = [t.host.strip("[]") for t in self.proxy_targets.get(name, ())]
        return tuple(dict.fromkeys(h for h in hosts if is_ip(h)))

    def _check_link(self, name: str, now: float) -> None:
        watch = self.netlink
        health = self._health.get(name)
        if watch is None or not watch.available or health is None:
            return
        ips = self._target_ips(name)
        self._link_ips[name] = ips
        verdicts = [v for v in (watch.check(ip) for ip in ips) if v is not None]
        if not verdicts:
            return
        usable = [reason for ok, reason in verdicts if ok]
        reason = usable[0] if usable else verdicts[0][1]
        self.last_link[name] = reason
        health.link_changed(bool(usable), reason, now)

    # -- probing and the timer -------------------------------------------------------------

    def _send_probe(self, name: str, health: TrunkHealth, now: float) -> None:
        trunk = self.trunks[name]
        targets = self.proxy_targets.get(name, ())
        if self.netlink is not None and self._target_ips(name) != self._link_ips.get(name):
            self._check_link(name, now)  # DNS moved the trunk: look at the new route
        if not targets:
            handle = f"no-address-{name}-{self.counters['probes_unsent']}"
            self.counters["probes_unsent"] += 1
            health.probe_sent(handle, now)
            health.probe_failed(handle, "no address", now)
            return
        handle = self.ua.send_options(
            target_uri=f"sip:{trunk.domain}", from_uri=self.from_uri, dest=tuple(targets),
            timeout=health.settings.probe_timeout, now=now)
        self._probes[handle] = name
        self.counters["probes_sent"] += 1
        health.probe_sent(handle, now)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if not self.running:
            return
        self._run(self.loop.time())
        self.pump()

    def _run(self, now: float) -> None:
        """Timers, due probes and transitions of every trunk; then re-arm the timer."""
        if self._processing:
            return
        self._processing = True
        try:
            for name, health in self._health.items():
                deadline = health.get_timer()
                if deadline is not None and deadline <= now:
                    health.handle_timer(now)
                if self.running and health.probe_due(now):
                    self._send_probe(name, health, now)
            for health in self._health.values():
                for event in health.events():
                    self._transition(event, now)
        finally:
            self._processing = False
        self._arm()

    def _arm(self) -> None:
        if not self.running:
            return
        due = [t for h in self._health.values() if (t := h.get_timer()) is not None]
        when = min(due) if due else None
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is not None:
            self._timer = self.loop.call_at(when, self._on_timer)

    # -- transitions -----------------------------------------------------------------------

    def _transition(self, event: HealthChanged, now: float) -> None:
        detected = ("" if event.detection_time is None
                    else f", detected in {event.detection_time:.2f} s")
        level = logging.INFO if event.new is HealthState.UP else logging.WARNING
        record = {"event": "trunk-health", "trunk": event.trunk, "from": event.old.value,
                  "to": event.new.value, "cause": event.cause,
                  "detection_time": event.detection_time, "at": event.at}
        log.log(level, "trunk %s: %s -> %s (%s)%s", event.trunk, event.old.value,
                event.new.value, event.cause, detected,
                extra={"health": record, **fields(trunk=event.trunk, event="trunk-health")})
        self.counters["transitions"] += 1
        self.counters[f"{event.trunk}:{event.new.value}"] += 1
        accounts = [a for a, acc in self.accounts.items() if acc.trunk == event.trunk]
        for account_id in accounts:
            if event.new is HealthState.DOWN:
                self.ua.trunk_down(account_id, now)
            elif event.new is HealthState.UP:
                self.ua.register_now(account_id, now)
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                log.exception("trunk health subscriber raised")


__all__ = ["TrunkHealthMonitor", "monitored", "registration_trouble", "settings_of"]
