"""TrunkHealthMonitor (gateway/runtime/trunk_health.py) on a simulated clock: the probe
stream per trunk, every signal, and what each transition does (log, counters, accounts)."""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from gateway.config.schema import HostPort, TrunkConfig
from gateway.routing.health import HealthChanged, HealthSettings, HealthState
from gateway.runtime.trunk_health import TrunkHealthMonitor, registration_trouble
from gateway.sip.events import OptionsAnswered, OptionsFailed, RegistrationStateChanged
from gateway.sip.target import Target

FAST = HealthSettings(probe_interval=0.25, probe_timeout=0.5, misses=3, failback_after=2.0)
MAIN = Target("udp", "192.0.2.10", 5060)
BACKUP = Target("udp", "192.0.2.20", 5060)


class Handle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """time(), call_at and call_soon on a clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0
        self._queue: list[tuple[float, int, Handle, Callable[[], None]]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, cb: Callable[[], None]) -> Handle:
        handle = Handle()
        heapq.heappush(self._queue, (when, next(self._seq), handle, cb))
        return handle

    def call_soon(self, cb: Callable[[], None]) -> Handle:
        return self.call_at(self.now, cb)

    def advance(self, until: float, each: Callable[[], None] | None = None) -> None:
        while self._queue and self._queue[0][0] <= until:
            when, _, handle, cb = heapq.heappop(self._queue)
            if handle.cancelled:
                continue
            self.now = max(self.now, when)
            cb()
            if each is not None:
                each()
        self.now = until


@dataclass
class FakeUa:
    """Records what the monitor asks of the user agent."""

    loop: FakeLoop
    probes: list[tuple[str, str, tuple[Target, ...], float, float]] = field(default_factory=list)
    downs: list[str] = field(default_factory=list)
    registers: list[str] = field(default_factory=list)
    answered: set[str] = field(default_factory=set)
    transport_listener: Callable[[tuple[str, int], str, float], None] | None = None

    def send_options(self, *, target_uri: str, from_uri: str, dest: tuple[Target, ...],
                     timeout: float, now: float) -> str:
        handle = f"p{len(self.probes) + 1}"
        self.probes.append((handle, target_uri, tuple(dest), timeout, now))
        return handle

    def trunk_down(self, account_id: str, now: float) -> None:
        self.downs.append(account_id)

    def register_now(self, account_id: str, now: float) -> None:
        self.registers.append(account_id)


@dataclass
class Account:
    trunk: str


def trunk(name: str, health: HealthSettings = FAST) -> TrunkConfig:
    return TrunkConfig(name, HostPort("192.0.2.10", 5060), HostPort("192.0.2.10", 5060),
                       f"{name}.example", health=health)


def monitor(**kw: object) -> tuple[TrunkHealthMonitor, FakeUa, FakeLoop, list[HealthChanged]]:
    loop = FakeLoop()
    ua = FakeUa(loop)
    accounts = {"line1": Account("main"), "line2": Account("main"), "line3": Account("main"),
                "line9": Account("backup")}
    args: dict[str, object] = dict(
        proxy_targets={"main": (MAIN,), "backup": (BACKUP,)}, accounts=accounts,
        use_netlink=False, from_uri="sip:gw@branch")
    args.update(kw)
    mon = TrunkHealthMonitor([trunk("main"), trunk("backup")], ua, loop,  # type: ignore[arg-type]
                             lambda: None, **args)  # type: ignore[arg-type]
    seen: list[HealthChanged] = []
    mon.subscribe(seen.append)
    mon.start()
    return mon, ua, loop, seen


def answer_all(mon: TrunkHealthMonitor, ua: FakeUa, *trunks: str) -> Callable[[], None]:
    """After every loop callback: answer each new probe to one of `trunks` at once."""
    hosts = {{"main": MAIN, "backup": BACKUP}[t].host for t in trunks}
    def each() -> None:
        for handle, _uri, dest, _t, _now in ua.probes:
            if handle not in ua.answered and dest[0].host in hosts:
                ua.answered.add(handle)
                assert mon.on_sip_event(OptionsAnswered(handle, 200))
    return each


def test_one_probe_stream_per_trunk_to_its_proxy_targets() -> None:
    mon, ua, loop, _ = monitor()
    loop.advance(102.0)
    main = [p for p in ua.probes if p[2] == (MAIN,)]
    backup = [p for p in ua.probes if p[2] == (BACKUP,)]
    # every 0.25 s over 2 s (+ the first at start), three accounts on main change nothing
    assert len(main) == len(backup) == 9
    assert all(p[1] == "sip:main.example" and p[3] == FAST.probe_timeout for p in main)
    gaps = [b[4] - a[4] for a, b in itertools.pairwise(main)]
    assert gaps == [pytest.approx(0.25)] * 8
    mon.stop()
    loop.advance(110.0)
    assert len(ua.probes) == 18  # stopped: nothing more


def test_unanswered_probes_make_the_trunk_down_and_park_its_accounts(
        caplog: pytest.LogCaptureFixture) -> None:
    mon, ua, loop, seen = monitor()
    loop.advance(103.0, answer_all(mon, ua, "main", "backup"))
    assert mon.states() == {"main": HealthState.UP, "backup": HealthState.UP}
    with caplog.at_level(logging.INFO, logger="branchline.trunk_health"):
        loop.advance(106.0, answer_all(mon, ua, "backup"))  # main answers no more
    assert mon.state("main") is HealthState.DOWN and mon.state("backup") is HealthState.UP
    (event,) = seen
    assert (event.trunk, event.old, event.new) == ("main", HealthState.UP, HealthState.DOWN)
    assert event.cause == "3 probes unanswered"
    assert event.detection_time is not None
    assert event.detection_time <= FAST.misses * FAST.probe_interval + FAST.probe_timeout
    (line,) = [r for r in caplog.records if "trunk main" in r.getMessage()]
    assert line.levelno == logging.WARNING
    assert line.getMessage() == (f"trunk main: up -> down (3 probes unanswered), detected in "
                                 f"{event.detection_time:.2f} s")
    assert ua.downs == ["line1", "line2", "line3"]  # not line9 (backup)
    info = mon.describe(loop.now)["main"]
    assert info["state"] == "down" and info["entered"]["down"] == 1
    assert info["last_transition"]["cause"] == "3 probes unanswered"  # type: ignore[index]
    assert info["targets"] == ["udp:192.0.2.10:5060"]
    assert mon.counters["transitions"] == 1


def test_fail_back_after_clean_probes_re_registers_at_once(
        caplog: pytest.LogCaptureFixture) -> None:
    mon, ua, loop, seen = monitor()
    loop.advance(104.0)  # nothing answers: both trunks down
    assert mon.states() == {"main": HealthState.DOWN, "backup": HealthState.DOWN}
    ua.registers.clear()
    answer = answer_all(mon, ua, "main")
    with caplog.at_level(logging.INFO, logger="branchline.trunk_health"):
        loop.advance(105.5, answer)
        assert mon.state("main") is HealthState.DOWN  # 1.5 s clean < failback_after
        assert ua.registers == []
        loop.advance(107.0, answer)
    assert mon.state("main") is HealthState.UP and mon.state("backup") is HealthState.DOWN
    up = seen[-1]
    assert (up.old, up.new) == (HealthState.DOWN, HealthState.UP)
    assert up.cause.startswith("probes answered for")
    assert ua.registers == ["line1", "line2", "line3"]
    (line,) = [r for r in caplog.records if "-> up" in r.getMessage()]
    assert line.levelno == logging.INFO


def test_registration_failures_that_mean_trouble_degrade_the_trunk() -> None:
    mon, ua, loop, seen = monitor()
    loop.advance(101.0, answer_all(mon, ua, "main", "backup"))
    # a wrong password is not the trunk's health
    assert not mon.on_sip_event(RegistrationStateChanged(
        "line1", False, "401 authentication failed (check password)", None))
    assert not mon.on_sip_event(RegistrationStateChanged("line1", False, "trunk down", None))
    assert mon.state("main") is HealthState.UP
    assert not mon.on_sip_event(RegistrationStateChanged(
        "line2", False, "registrar unreachable", None))  # still the daemon's event too
    assert mon.state("main") is HealthState.DEGRADED
    assert seen[-1].cause == "registration failed: registrar unreachable"
    assert ua.downs == []  # DEGRADED leaves the accounts alone


def test_transport_error_to_the_trunk_is_acted_on_after_the_agent_returns() -> None:
    mon, ua, loop, seen = monitor()
    loop.advance(100.5, answer_all(mon, ua, "main", "backup"))
    assert ua.transport_listener is not None
    ua.transport_listener(("198.51.100.1", 5060), "udp", loop.now)  # not a trunk's
    ua.transport_listener(MAIN.addr, "udp", loop.now)
    assert mon.state("main") is HealthState.DEGRADED  # noted at once
    assert seen == []  # ... but acted on from the loop, not inside the agent
    loop.advance(loop.now)
    assert [(e.trunk, e.new, e.cause) for e in seen] == \
        [("main", HealthState.DEGRADED, "ICMP unreachable (192.0.2.10:5060)")]
    mon.stop()
    assert ua.transport_listener is None


def test_invite_timeout_degrades_and_probes_at_once() -> None:
    mon, ua, loop, seen = monitor()
    loop.advance(100.1)
    before = len(ua.probes)
    mon.invite_timed_out("main", loop.now)
    assert mon.state("main") is HealthState.DEGRADED and seen[-1].cause == "INVITE timeout"
    assert len(ua.probes) == before + 1 and ua.probes[-1][2] == (MAIN,)
    mon.invite_timed_out("nosuch", loop.now)  # unknown trunk: ignored


def test_probe_events_are_taken_only_when_they_are_ours() -> None:
    mon, ua, loop, _ = monitor()
    handle = ua.probes[0][0]
    assert mon.on_sip_event(OptionsFailed(handle, "transport error"))
    assert not mon.on_sip_event(OptionsFailed(handle, "timeout"))  # already done
    assert not mon.on_sip_event(OptionsAnswered("someone-else", 200))
    assert mon.describe(loop.now)["main"]["probes_missed"] == 1


def test_a_trunk_without_address_goes_down_for_that_reason() -> None:
    mon, ua, loop, seen = monitor(proxy_targets={"main": (), "backup": (BACKUP,)})
    loop.advance(102.0, answer_all(mon, ua, "backup"))
    assert mon.state("main") is HealthState.DOWN
    assert seen[0].cause == "3 probes unanswered (no address)"
    assert all(p[2] == (BACKUP,) for p in ua.probes)


class FakeWatch:
    available = True

    def __init__(self) -> None:
        self.routes: dict[str, tuple[bool, str]] = {}

    def check(self, ip: str) -> tuple[bool, str] | None:
        return self.routes.get(ip)

    def close(self) -> None:
        pass


def test_link_down_is_down_at_once_and_up_again_after_clean_probes() -> None:
    mon, ua, loop, seen = monitor()
    watch = FakeWatch()
    mon.netlink = watch  # type: ignore[assignment]
    answer = answer_all(mon, ua, "main")
    loop.advance(101.0, answer)
    watch.routes["192.0.2.10"] = (False, "link down: veth0")
    mon._links_changed()
    assert mon.state("main") is HealthState.DOWN
    assert (seen[-1].cause, seen[-1].detection_time) == ("link down: veth0", 0.0)
    assert mon.describe(loop.now)["main"]["link"] == "link down: veth0"
    watch.routes["192.0.2.10"] = (True, "route to 192.0.2.10 dev veth0")
    mon._links_changed()
    assert mon.state("main") is HealthState.DOWN  # the link alone does not fail back
    loop.advance(104.0, answer)
    assert mon.state("main") is HealthState.UP


def test_a_trunk_with_keepalive_none_is_not_probed() -> None:
    from dataclasses import replace

    loop = FakeLoop()
    ua = FakeUa(loop)
    quiet = replace(trunk("backup"), keepalive="none")
    mon = TrunkHealthMonitor([trunk("main"), quiet], ua, loop,  # type: ignore[arg-type]
                             lambda: None, proxy_targets={"main": (MAIN,), "backup": (BACKUP,)},
                             accounts={"line9": Account("backup")}, use_netlink=False)
    mon.start()
    loop.advance(105.0)  # nothing answers
    assert all(p[2] == (MAIN,) for p in ua.probes)
    assert mon.monitors("main") and not mon.monitors("backup")
    assert mon.states() == {"main": HealthState.DOWN}
    assert mon.state("backup") is HealthState.UP  # unknown: usable
    assert mon.describe(loop.now)["backup"]["state"] == "unknown"
    assert ua.downs == []  # its account is left alone


def test_which_registration_reasons_are_trouble() -> None:
    assert registration_trouble("registrar unreachable")
    assert registration_trouble("REGISTER timed out")
    assert registration_trouble("503 Service Unavailable")
    assert not registration_trouble("403 Forbidden")
    assert not registration_trouble("401 authentication failed (check password)")
    assert not registration_trouble("trunk down")


def test_status_text_shows_each_trunks_health_and_why() -> None:
    from gateway.cli import format_status

    mon, ua, loop, _ = monitor()
    loop.advance(104.0, answer_all(mon, ua, "backup"))  # main never answers
    result = {"trunks": [{"name": n, "health": h} for n, h in mon.describe(loop.now).items()]}
    text = format_status(result)
    assert "Trunks" in text
    (main,) = [row for row in text.splitlines() if row.split()[:1] == ["main"]]
    assert "down" in main and "up -> down" in main and "3 probes unanswered" in main
    assert "s" in main.split("unanswered", 1)[1]  # the detection time
    (backup,) = [row for row in text.splitlines() if row.split()[:1] == ["backup"]]
    assert backup.split()[1] == "up" and "0%" in backup
    assert "Trunks" not in format_status({})
