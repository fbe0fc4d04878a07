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
        self.actions: list[tuple[float, int, Callable[[float], None]]] = []
        self.state_changes = 0
        self._n = 0
        self._seq = 0

    def at(self, t: float, action: Callable[[float], None]) -> None:
        """Run `action(now)` (a signal to the health machine) at simulated time t."""
        self._seq += 1
        heapq.heappush(self.actions, (t, self._seq, action))

    def reachable(self, t: float) -> bool:
        return not any(a <= t < b for a, b in self.outages)

    def run_until(self, end: float, stop: Callable[[], bool] = lambda: False) -> None:
        h = self.health
        while True:
            timer = h.get_timer()
            nexts = [t for t in (timer, self.pending[0][0] if self.pending else None,
                                 self.actions[0][0] if self.actions else None)
                     if t is not None]
            t = min(nexts) if nexts else end
            if t > end:
                self.now = end
                return
            self.now = max(self.now, t)
            before = h.state
            while self.actions and self.actions[0][0] <= self.now:
                heapq.heappop(self.actions)[2](self.now)
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
            step = h.events()
            self.check_events(before, step)
            self.events.extend(step)
            self.state_changes += h.state is not before
            if stop():
                return


    def check_events(self, before: HealthState, step: list[HealthChanged]) -> None:
        """Every transition is exactly one event: none without a change, a chained one per
        change, each stamped with the step's now and the state's new `since`."""
        h = self.health
        if h.state is before:
            assert step == [], step
            return
        assert step, f"{before} -> {h.state} with no event"
        assert step[0].old is before and step[-1].new is h.state
        for a, b in zip(step, step[1:], strict=False):
            assert a.new is b.old
        for e in step:
            assert e.old is not e.new and e.at == self.now and e.trunk == "main"
        assert h.since == self.now


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


def test_settings_refuse_a_timeout_longer_than_the_window() -> None:
    with pytest.raises(ValueError, match="^probe_timeout: expected at most window"):
        HealthSettings(probe_timeout=3, window=2)


def test_settings_accept_the_edges() -> None:
    HealthSettings(probe_interval=0.05, probe_timeout=1, misses=1, failback_after=0,
                   degraded_loss=1, window=1)
    HealthSettings(probe_timeout=60, window=60)
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


def test_outage_detection_figures() -> None:
    """Over many phases and round-trip times: the figures the issue asks for (printed, -s)."""
    s = HealthSettings()
    bound = s.misses * s.probe_interval + s.probe_timeout + s.probe_interval
    seen, reported = [], []
    for seed in range(200):
        rng = random.Random(1000 + seed)
        sim = Sim(s, rtt=rng.uniform(0.001, 0.1))
        start = 12.0 + rng.uniform(0, 1)
        sim.outages.append((start, 1e9))
        sim.run_until(start + 10, stop=lambda sim=sim: sim.health.state is DOWN)  # type: ignore[misc]
        assert transitions(sim.events) == [(UP, DOWN)], seed
        seen.append(sim.events[0].at - start)
        detection = sim.events[0].detection_time
        assert detection is not None and detection <= bound, seed
        reported.append(detection)
    assert max(seen) <= bound
    seen.sort()
    reported.sort()
    print(f"\noutage -> DOWN over 200 phases: min {seen[0]:.3f} s, median {seen[100]:.3f} s, "
          f"max {seen[-1]:.3f} s (bound {bound:.2f} s); reported detection_time "
          f"{reported[0]:.3f}..{reported[-1]:.3f} s")


def test_down_needs_misses_in_a_row_in_sending_order() -> None:
    """A probe lost while a later one is answered breaks no row, even with misses=1: the
    later answer already proved the trunk alive."""
    s = HealthSettings(misses=1)
    h = TrunkHealth("main", s, 0.0)
    h.probe_sent("a", 0.0)
    h.probe_sent("b", 0.25)
    h.probe_answered("b", 200, 0.27)
    h.handle_timer(0.5)  # "a" is missed now, but "b" was sent after it and answered
    assert h.state is UP and h.events() == []
    assert h.describe(0.5)["probes_missed"] == 1
    h.probe_sent("c", 0.5)
    h.handle_timer(1.0)
    assert h.state is DOWN
    [e] = h.events()
    assert e.cause == "1 probe unanswered" and e.detection_time == 0.5


def test_failed_probes_are_misses_at_once_and_name_the_reason() -> None:
    h = TrunkHealth("main", HealthSettings(misses=2), 0.0)
    h.probe_sent("a", 0.0)
    h.probe_failed("a", "transport error", 0.01)
    assert h.get_timer() == 0.25  # nothing left outstanding to time out
    h.probe_sent("b", 0.25)
    h.probe_failed("b", "transport error", 0.26)
    [e] = h.events()
    assert (e.new, e.cause, e.at) == (DOWN, "2 probes unanswered (transport error)", 0.26)
    assert e.detection_time == pytest.approx(0.26)
    h.probe_failed("b", "timeout", 0.75)  # a second report of the same probe counts nothing
    assert h.describe(0.75)["probes_missed"] == 2


def test_a_late_answer_does_not_undo_a_miss() -> None:
    h = TrunkHealth("main", HealthSettings(), 0.0)
    h.probe_sent("a", 0.0)
    h.handle_timer(0.5)
    h.probe_answered("a", 200, 0.6)
    d = h.describe(0.6)
    assert (d["probes_answered"], d["probes_missed"], d["rtt_ms"]) == (0, 1, None)


# --- no flapping ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_twenty_percent_loss_for_thirty_minutes_is_at_most_one_transition_a_minute(
    seed: int,
) -> None:
    rng = random.Random(seed)
    minutes = 30
    sim = Sim(drop=lambda _sent: rng.random() < 0.2)
    sim.run_until(minutes * 60.0)
    d = sim.health.describe(sim.now)
    loss = d["probes_missed"] / d["probes_sent"]  # type: ignore[operator]
    print(f"\nseed {seed}: {len(sim.events)} transitions in {minutes} min at {loss:.1%} "
          f"loss: {[f'{e.at:.0f}s {e.new.value}' for e in sim.events]}")
    assert 0.17 < loss < 0.23  # the simulation really lost a fifth of the probes
    assert len(sim.events) <= minutes
    assert d["transitions"] == len(sim.events) == sim.state_changes


def test_without_hysteresis_the_same_loss_would_flap() -> None:
    """The control for the test above: with fail-back at once and a hair-trigger, 20 % loss
    does flap, so the bound above is a real one."""
    rng = random.Random(1)
    sim = Sim(HealthSettings(misses=1, failback_after=0), drop=lambda _sent: rng.random() < 0.2)
    sim.run_until(30 * 60.0)
    assert len(sim.events) > 30


# --- fail-back ------------------------------------------------------------------------------


def _outage_then_failback(drop_at: float | None) -> tuple[Sim, float]:
    """Outage from 10 s to 20 s; optionally one probe dropped at drop_at. Returns the sim and
    the time of the first good answer after the outage."""
    dropped: list[float] = []

    def drop(sent: float) -> bool:
        if drop_at is not None and sent >= drop_at and not dropped:
            dropped.append(sent)
            return True
        return False

    sim = Sim(drop=drop)
    sim.outages.append((10.0, 20.0))
    sim.run_until(20.0)
    assert sim.health.state is DOWN
    sim.run_until(20.5)
    first_answer = min(t + sim.rtt for t in sim.sent_times.values() if t >= 20.0)
    sim.run_until(40.0)
    return sim, first_answer


def test_failback_needs_failback_after_seconds_of_answered_probes() -> None:
    sim, first_answer = _outage_then_failback(None)
    assert transitions(sim.events) == [(UP, DOWN), (DOWN, UP)]
    up = sim.events[1]
    s = sim.settings
    assert first_answer + s.failback_after <= up.at <= first_answer + s.failback_after \
        + s.probe_interval + 1e-9
    assert up.detection_time == pytest.approx(up.at - first_answer)
    assert up.cause == f"probes answered for {up.detection_time:.1f} s"
    print(f"\nfail-back {up.at - 20.0:.2f} s after the trunk came back")


def test_a_miss_during_failback_restarts_the_clock() -> None:
    sim, _ = _outage_then_failback(23.0)
    assert transitions(sim.events) == [(UP, DOWN), (DOWN, UP)]
    up = sim.events[1]
    missed = [t for t in sim.sent_times.values() if t >= 23.0][0]
    s = sim.settings
    # The clock starts again with the first answer after the miss was known (at its timeout).
    assert up.at >= missed + s.probe_timeout + s.failback_after
    assert up.at <= missed + s.probe_timeout + s.failback_after + 2 * s.probe_interval
    clean, _ = _outage_then_failback(None)
    assert up.at - clean.events[1].at > 3.0


def test_a_probe_lost_in_the_outage_does_not_delay_failback() -> None:
    """A probe sent just before the trunk came back times out after the first good answer;
    it belongs to the outage, not to the clean run."""
    h = TrunkHealth("main", HealthSettings(misses=1), 0.0)
    h.probe_sent("lost", 0.0)
    h.handle_timer(0.5)
    h.probe_sent("lost2", 0.9)
    h.probe_sent("ok1", 1.15)
    h.probe_answered("ok1", 200, 1.16)
    h.handle_timer(1.4)  # lost2 (sent before ok1) times out
    for i in range(1, 25):
        h.probe_sent(f"ok{i + 1}", 1.15 + 0.25 * i)
        h.probe_answered(f"ok{i + 1}", 200, 1.16 + 0.25 * i)
    events = h.events()
    assert [(e.new, e.at) for e in events] == [(DOWN, 0.5), (UP, pytest.approx(6.16))]


def test_link_down_holds_down_until_link_up_and_clean_probes() -> None:
    sim = Sim()
    sim.at(5.0, lambda now: sim.health.link_changed(False, "no route to 10.9.0.2 (blackhole)",
                                                    now))
    sim.at(12.0, lambda now: sim.health.link_changed(True, "route back", now))
    sim.run_until(30.0)
    assert transitions(sim.events) == [(UP, DOWN), (DOWN, UP)]
    down, up = sim.events
    assert (down.at, down.cause, down.detection_time) == (5.0, "no route to 10.9.0.2 (blackhole)",
                                                          0.0)
    # Probes kept being answered while the link was "down": they do not count.
    assert 12.0 + 5.0 <= up.at <= 12.0 + 5.0 + sim.settings.probe_interval + sim.rtt
    assert sim.health.describe(up.at)["link"] is None


def test_link_up_asks_for_a_probe_at_once() -> None:
    h = TrunkHealth("main", HealthSettings(probe_interval=10), 0.0)
    h.probe_sent("a", 0.0)
    h.link_changed(False, "link down: eth0", 1.0)
    h.link_changed(False, "link down: eth0", 1.5)  # no news, no event
    assert not h.probe_due(2.0)
    d = h.describe(2.0)
    assert (d["link_up"], d["link"], d["since"]) == (False, "link down: eth0", 1.0)
    h.link_changed(True, "link up: eth0", 2.0)
    assert h.probe_due(2.0)
    assert [e.new for e in h.events()] == [DOWN]


# --- degraded -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signal", "cause"),
    [
        (lambda h, now: h.invite_timed_out(now), "INVITE timeout"),
        (lambda h, now: h.registration_result(False, "408 Request Timeout", now),
         "registration failed: 408 Request Timeout"),
        (lambda h, now: h.transport_error("ICMP unreachable", now), "ICMP unreachable"),
    ],
)
def test_trouble_signals_degrade_probe_at_once_and_recover_on_clean_probes(
    signal: Callable[[TrunkHealth, float], None], cause: str,
) -> None:
    sim = Sim()
    sent_before = 0

    def fire(now: float) -> None:
        nonlocal sent_before
        sent_before = len(sim.sent_times)
        signal(sim.health, now)

    sim.at(3.1, fire)
    sim.run_until(3.1)
    # The probe that was due at 3.25 went out at the signal's now.
    assert len(sim.sent_times) == sent_before + 1
    assert max(sim.sent_times.values()) == 3.1
    sim.run_until(20.0)
    assert transitions(sim.events) == [(UP, DEGRADED), (DEGRADED, UP)]
    degraded, up = sim.events
    assert (degraded.at, degraded.cause, degraded.detection_time) == (3.1, cause, 0.0)
    assert 3.1 + 5.0 <= up.at <= 3.1 + 5.0 + sim.rtt + 1e-9


def test_registration_success_changes_nothing() -> None:
    h = TrunkHealth("main", HealthSettings(), 0.0)
    h.probe_sent("a", 0.0)
    h.registration_result(True, "200 OK", 0.1)
    assert h.state is UP and not h.probe_due(0.1) and h.events() == []


def test_a_storm_of_errors_asks_for_one_early_probe_until_an_answer() -> None:
    h = TrunkHealth("main", HealthSettings(), 0.0)
    h.probe_sent("a", 0.0)
    h.transport_error("ICMP unreachable", 0.01)
    assert h.probe_due(0.01)
    h.probe_sent("b", 0.01)
    h.transport_error("ICMP unreachable", 0.02)
    h.invite_timed_out(0.03)
    assert not h.probe_due(0.03) and h.probe_due(0.26)
    h.probe_answered("b", 200, 0.05)
    h.transport_error("ICMP unreachable", 0.06)
    assert h.probe_due(0.06)
    assert [e.new for e in h.events()] == [DEGRADED]


def test_trouble_while_degraded_restarts_the_failback_clock() -> None:
    sim = Sim()
    sim.at(3.0, lambda now: sim.health.invite_timed_out(now))
    sim.at(6.0, lambda now: sim.health.invite_timed_out(now))
    sim.run_until(20.0)
    assert transitions(sim.events) == [(UP, DEGRADED), (DEGRADED, UP)]
    assert sim.events[1].at >= 6.0 + 5.0


def test_loss_over_a_full_window_degrades_then_clean_probes_restore() -> None:
    """Every other probe lost: never two misses in a row, so never DOWN, but 50 % loss."""
    lossy = [True]

    def drop(sent: float) -> bool:
        lossy[0] = not lossy[0]
        return sent < 30.0 and lossy[0]

    sim = Sim(drop=drop)
    sim.run_until(60.0)
    assert transitions(sim.events) == [(UP, DEGRADED), (DEGRADED, UP)]
    degraded, up = sim.events
    # Not before a full window of samples exists.
    assert 10.0 <= degraded.at <= 10.0 + sim.settings.probe_timeout + sim.settings.probe_interval
    assert degraded.cause == "50% probe loss over 10 s"
    assert degraded.detection_time is not None and 9.0 <= degraded.detection_time <= 10.0
    assert 30.0 + 5.0 <= up.at <= 30.0 + 5.0 + 2 * sim.settings.probe_interval


def test_loss_below_the_threshold_stays_up() -> None:
    n = [0]

    def drop(_sent: float) -> bool:
        n[0] += 1
        return n[0] % 3 == 0  # 33 %

    sim = Sim(drop=drop)
    sim.run_until(120.0)
    assert sim.events == []
    assert sim.health.describe(sim.now)["loss"] == pytest.approx(1 / 3, abs=0.03)


def test_a_down_trunk_is_not_degraded_by_trouble_signals() -> None:
    sim = Sim()
    sim.outages.append((5.0, 1e9))
    sim.at(8.0, lambda now: sim.health.invite_timed_out(now))
    sim.run_until(30.0)
    assert transitions(sim.events) == [(UP, DOWN)]


def test_down_from_degraded_reports_detection_from_the_first_sign() -> None:
    """An INVITE timeout is the first sign; the probes then confirm the outage."""
    sim = Sim()
    sim.outages.append((4.9, 1e9))
    sim.at(5.0, lambda now: sim.health.invite_timed_out(now))
    sim.run_until(10.0)
    assert transitions(sim.events) == [(UP, DEGRADED), (DEGRADED, DOWN)]
    down = sim.events[1]
    assert down.detection_time is not None
    assert down.detection_time == pytest.approx(down.at - 4.9, abs=sim.settings.probe_interval)


# --- describe -------------------------------------------------------------------------------


def test_describe_reports_the_last_transition_and_counters() -> None:
    sim = Sim(rtt=0.0125)
    sim.outages.append((10.0, 20.0))
    sim.run_until(35.0)
    d = sim.health.describe(35.0)
    down, up = sim.events
    assert d["state"] == "up" and d["since"] == up.at and d["for"] == 35.0 - up.at
    assert d["last_transition"] == {"from": "down", "to": "up", "cause": up.cause,
                                    "at": up.at, "detection_time": up.detection_time}
    assert d["transitions"] == 2
    sent, answered, missed = d["probes_sent"], d["probes_answered"], d["probes_missed"]
    assert sent == len(sim.sent_times)
    assert answered + missed + d["probes_outstanding"] == sent  # type: ignore[operator]
    assert 38 <= missed <= 42  # type: ignore[operator]
    assert d["loss"] == 0.0 and d["rtt_ms"] == 12.5 and d["window"] == 10.0
    mid = Sim()
    mid.outages.append((10.0, 1e9))
    mid.run_until(15.0)
    d = mid.health.describe(15.0)
    assert d["state"] == "down" and 0.45 <= d["loss"] <= 0.55  # type: ignore[operator]
    assert d["last_transition"]["cause"] == "5 probes unanswered"  # type: ignore[index]


def test_describe_before_any_probe() -> None:
    d = TrunkHealth("main", HealthSettings(), 5.0).describe(5.0)
    assert d["state"] == "up" and d["last_transition"] is None and d["loss"] is None
    assert d["rtt_ms"] is None and d["transitions"] == 0


@pytest.mark.parametrize(
    "settings",
    [
        HealthSettings(probe_interval=0.1, probe_timeout=0.3, misses=3),
        HealthSettings(probe_interval=1.0, probe_timeout=2.5, misses=2),
        HealthSettings(probe_interval=2.0, probe_timeout=0.5, misses=3, window=30),
        HealthSettings(probe_interval=0.05, probe_timeout=0.05, misses=1),
    ],
)
def test_the_detection_bound_holds_for_other_settings(settings: HealthSettings) -> None:
    s = settings
    bound = s.misses * s.probe_interval + s.probe_timeout + s.probe_interval
    for seed in range(30):
        rng = random.Random(seed)
        sim = Sim(s, rtt=rng.uniform(0.001, s.probe_timeout * 0.9))
        start = 40.0 + rng.uniform(0, 3 * s.probe_interval)
        sim.outages.append((start, 1e9))
        sim.run_until(start + 3 * bound, stop=lambda sim=sim: sim.health.state is DOWN)  # type: ignore[misc]
        assert transitions(sim.events) == [(UP, DOWN)], seed
        down = sim.events[0]
        assert down.at - start <= bound + 1e-9, seed
        assert down.detection_time is not None and down.detection_time <= bound, seed
