"""TrunkHealth: the pure per-trunk health machine, driven by a simulated adapter and clock."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable

import pytest

from gateway.routing.health import HealthChanged, HealthSettings, HealthState, TrunkHealth

UP, DEGRADED, DOWN = HealthState.UP, HealthState.DEGRADED, HealthState.DOWN


class Sim:
    """A stand-in for the runtime adapter: sends a probe whenever one is due, answers it after
    `rtt` unless the trunk is unreachable at send or answer time or `drop(sent_at)` says so,
    and fires the health timer on a simulated clock."""

    def __init__(
        self,
        settings: HealthSettings | None = None,
        *,
        rtt: float = 0.02,
        drop: Callable[[float], bool] = lambda _sent: False,
        start: float = 0.0,
    ) -> None:
        self.settings = settings or HealthSettings()
        self.health = TrunkHealth("main", self.settings, start)
        self.now = start
        self.rtt = rtt
        self.drop = drop
        self.outages: list[tuple[float, float]] = []
        self.pending: list[tuple[float, str]] = []
        self.sent_times: dict[str, float] = {}
        self.events: list[HealthChanged] = []
        self._n = 0

    def reachable(self, t: float) -> bool:
        return not any(a <= t < b for a, b in self.outages)

    def run_until(self, end: float, stop: Callable[[], bool] = lambda: False) -> None:
        h = self.health
        while True:
            timer = h.get_timer()
            nexts = [t for t in (timer, self.pending[0][0] if self.pending else None)
                     if t is not None]
            t = min(nexts) if nexts else end
            if t > end:
                self.now = end
                return
            self.now = max(self.now, t)
            while self.pending and self.pending[0][0] <= self.now:
                _, pid = heapq.heappop(self.pending)
                h.probe_answered(pid, 200, self.now)
            h.handle_timer(self.now)
            if h.probe_due(self.now):
                self._n += 1
                pid = f"p{self._n}"
                h.probe_sent(pid, self.now)
                self.sent_times[pid] = self.now
                back = self.now + self.rtt
                if self.reachable(self.now) and self.reachable(back) and not self.drop(self.now):
                    heapq.heappush(self.pending, (back, pid))
            self.events.extend(h.events())
            if stop():
                return


def transitions(events: list[HealthChanged]) -> list[tuple[HealthState, HealthState]]:
    return [(e.old, e.new) for e in events]


# --- settings -------------------------------------------------------------------------------


def test_settings_defaults_match_the_design() -> None:
    s = HealthSettings()
    assert (s.probe_interval, s.probe_timeout, s.misses) == (0.25, 0.5, 5)
    assert (s.failback_after, s.degraded_loss, s.window) == (5.0, 0.4, 10.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("probe_interval", 0.01),
        ("probe_interval", 4000),
        ("probe_interval", "1"),
        ("probe_interval", float("nan")),
        ("probe_timeout", 0.0),
        ("probe_timeout", 61),
        ("misses", 0),
        ("misses", 101),
        ("misses", 2.5),
        ("misses", True),
        ("failback_after", -1),
        ("degraded_loss", 0.0),
        ("degraded_loss", 1.5),
        ("window", 0.5),
        ("window", 601),
    ],
)
def test_settings_refuse_bad_values_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"^{field}: expected"):
        HealthSettings(**{field: value})  # type: ignore[arg-type]


def test_settings_accept_the_edges() -> None:
    HealthSettings(probe_interval=0.05, probe_timeout=60, misses=1, failback_after=0,
                   degraded_loss=1, window=1)
    HealthSettings(probe_interval=3600, probe_timeout=0.05, misses=100, failback_after=3600,
                   window=600)


# --- basics ---------------------------------------------------------------------------------


def test_starts_up_and_probes_at_once() -> None:
    h = TrunkHealth("main", HealthSettings(), 100.0)
    assert h.state is UP and h.since == 100.0
    assert h.probe_due(100.0)
    h.probe_sent("a", 100.0)
    assert not h.probe_due(100.2)
    assert h.probe_due(100.25)
    assert h.get_timer() == 100.25
    h.probe_answered("a", 200, 100.03)
    assert h.events() == []


def test_link_down_is_down_at_the_same_now() -> None:
    sim = Sim()
    sim.run_until(3.0)
    sim.health.link_changed(False, "link down: veth0", 3.0)
    assert sim.health.state is DOWN
    [event] = sim.health.events()
    assert (event.old, event.new, event.at) == (UP, DOWN, 3.0)
    assert event.cause == "link down: veth0"
    assert event.detection_time == 0.0
    assert sim.health.since == 3.0


# --- outage detection -----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(40))
def test_outage_at_a_random_phase_is_down_within_the_bound(seed: int) -> None:
    rng = random.Random(seed)
    s = HealthSettings()
    sim = Sim(s, rtt=rng.uniform(0.001, 0.2))
    start = 12.0 + rng.uniform(0, 3 * s.probe_interval)
    sim.outages.append((start, 1e9))
    sim.run_until(start + 10, stop=lambda: sim.health.state is DOWN)
    bound = s.misses * s.probe_interval + s.probe_timeout + s.probe_interval
    assert transitions(sim.events) == [(UP, DOWN)]
    [down] = sim.events
    assert down.at - start <= bound
    assert down.detection_time is not None
    # The first unanswered probe may have left before the outage (its answer was cut off).
    assert 0 < down.detection_time <= down.at - start + sim.rtt + 1e-9
    assert down.detection_time <= bound
    assert down.cause == "5 probes unanswered"
