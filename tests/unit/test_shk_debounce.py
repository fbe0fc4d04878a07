"""The SHK debouncer (hal.gpio.debounce) and the AG1171 driver applying it on mock pins."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from hal.audio.memory import MemoryAudio
from hal.base import HalError
from hal.gpio.debounce import DebouncedEdge, Debouncer
from hal.gpio.mock import ContactBounce, mock_factory
from hal.sim.fxs import SimFxs
from hal.slic.ag1171 import Ag1171Fxs


def _feed(deb: Debouncer, changes: list[tuple[float, bool]], until: float) -> list[DebouncedEdge]:
    out: list[DebouncedEdge] = []
    for t, level in changes:
        out += deb.raw(level, t)
    out += deb.handle_timer(until)
    return out


def test_bouncing_make_is_one_edge_at_the_first_contact() -> None:
    deb = Debouncer(0.010)
    bounce = ContactBounce(5, 0.3, 2.0, seed=1).after_edge(True)
    changes = [(1.0, True)] + [(1.0 + dt, lvl) for dt, lvl in bounce]
    assert _feed(deb, changes, 2.0) == [DebouncedEdge(True, 1.0)]
    assert deb.level is True
    assert deb.raw_edges == 11


def test_level_counts_only_after_stable_time() -> None:
    deb = Debouncer(0.010)
    assert deb.raw(True, 0.0) == []
    assert deb.get_timer() == pytest.approx(0.010)
    assert deb.handle_timer(0.0099) == []
    deb.raw(False, 0.005)
    deb.raw(True, 0.006)  # a bounce restarts the stable time...
    assert deb.get_timer() == pytest.approx(0.016)
    # ...but the edge keeps the time of the first contact
    assert deb.handle_timer(0.016) == [DebouncedEdge(True, 0.0)]


def test_spike_is_dropped() -> None:
    deb = Debouncer(0.010)
    assert _feed(deb, [(0.0, True), (0.002, False)], 1.0) == []
    assert deb.level is False and deb.dropped == 1


def test_edges_come_out_in_order_when_only_edges_tell_the_time() -> None:
    deb = Debouncer(0.010)
    out = deb.raw(True, 0.0) + deb.raw(False, 0.060)  # the second edge settles the first
    out += deb.raw(True, 0.100) + deb.handle_timer(0.2)
    assert [(e.level, round(e.t, 3)) for e in out] == [(True, 0.0), (False, 0.06), (True, 0.1)]


def test_bad_stable_time_is_refused() -> None:
    with pytest.raises(ValueError, match="stable time"):
        Debouncer(0.5)


def test_driver_settles_on_its_timer_thread_with_no_audio_running() -> None:
    """On hardware nothing else may look at the clock: the driver's own timer delivers."""
    factory = mock_factory()
    port = Ag1171Fxs("t", shk_pin=17, rm_pin=27, fr_pin=22, audio=MemoryAudio(),
                     pin_factory=factory)
    got: list[tuple[bool, float]] = []
    done = threading.Event()

    def on_edge(off: bool, t: float) -> None:
        got.append((off, t))
        done.set()

    port.start(on_edge)
    try:
        shk = factory.pin(17)
        shk.drive_high()
        shk.drive_low()
        shk.drive_high()  # a bounce, all within microseconds
        assert done.wait(5.0), "no edge delivered by the timer thread"
        assert [off for off, _ in got] == [True]
        assert port.is_off_hook() is True
    finally:
        port.close()


def test_ring_frequency_from_config_and_checked() -> None:
    port = SimFxs("r", {"clock": "frames", "ring_hz": 25})
    try:
        port.start(lambda off, t: None)
        port.set_ringing(True)
        assert port.phone.state()["ring_hz"] == 25
        assert port.phone.is_ringing()
        port.set_ringing(False)
        assert not port.phone.is_ringing()
        assert port.phone.polarity == "normal"  # F/R back at rest
    finally:
        port.close()
    with pytest.raises(HalError, match="ring_hz"):
        SimFxs("r", {"ring_hz": 5})
    with pytest.raises(HalError, match="debounce_ms"):
        SimFxs("r", {"debounce_ms": 45})


def test_fr_toggles_without_pwm_and_rests_at_the_polarity_level() -> None:
    """A pin factory without PWM (gpiozero's native one; a plain MockPin here): F/R is
    toggled by a blink thread while ringing and comes back to rest when it stops."""
    from gpiozero.pins.mock import MockFactory

    factory = MockFactory()  # plain MockPin: no PWM
    port = Ag1171Fxs("np", shk_pin=17, rm_pin=27, fr_pin=22, audio=MemoryAudio(),
                     pin_factory=factory, ring_hz=25)
    fr, rm = factory.pin(22), factory.pin(27)
    try:
        assert fr.state is True  # forward polarity at rest
        port.set_ringing(True)
        assert rm.state is True
        deadline = threading.Event()
        for _ in range(200):
            if _changes(fr.states) >= 6:
                break
            deadline.wait(0.01)
        assert _changes(fr.states) >= 6, fr.states
        port.set_polarity(True)  # while ringing: takes effect when ringing stops
        port.set_ringing(False)
        assert rm.state is False and fr.state is False
        settled = len(fr.states)
        deadline.wait(0.1)
        assert len(fr.states) == settled  # the toggling stopped
    finally:
        port.close()


def _changes(states: list[Any]) -> int:
    return sum(1 for a, b in zip(states, states[1:], strict=False) if a.state != b.state)
