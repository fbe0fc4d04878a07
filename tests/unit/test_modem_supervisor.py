"""Modem supervisor: liveness, vanish at EOF, re-attach by IMEI under a new name, power cycles
with backoff and a cap."""

from __future__ import annotations

import pytest

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
    SupervisorState,
)

IMEI = "867962041234567"


def state(sup: ModemSupervisor) -> SupervisorState:
    """Read through a call so mypy does not narrow the state between steps."""
    return sup.state


def drain(sup: ModemSupervisor) -> list[SupervisorAction]:
    out: list[SupervisorAction] = []
    while (a := sup.next_action()) is not None:
        out.append(a)
    return out


def run_until(sup: ModemSupervisor, until: float) -> list[SupervisorAction]:
    """Fire every deadline up to `until` as the adapter would."""
    out: list[SupervisorAction] = []
    while (t := sup.get_timer()) is not None and t <= until:
        sup.handle_timer(t)
        out += drain(sup)
    return out


def make(**kw: object) -> ModemSupervisor:
    sup = ModemSupervisor(imei=IMEI, path="/dev/ttyUSB2", **kw)  # type: ignore[arg-type]
    sup.start(0.0)
    assert drain(sup) == [ModemUp("/dev/ttyUSB2")]
    return sup


def test_liveness_probe_and_unresponsive_after_k_misses() -> None:
    sup = make(probe_interval=5.0, missed_limit=3)
    assert sup.get_timer() == 5.0
    sup.handle_timer(5.0)
    assert drain(sup) == [ProbeLiveness("AT", 2.0)]
    sup.probe_answered(5.1)
    for i, t in enumerate((10.0, 15.0, 20.0)):
        sup.handle_timer(t)
        assert drain(sup) == [ProbeLiveness("AT", 2.0)]
        sup.probe_missed(t + 2)
        events = drain(sup)
        if i < 2:
            assert events == []
    assert events == [ModemUnresponsive("/dev/ttyUSB2", 3)]
    assert state(sup) is SupervisorState.UNRESPONSIVE
    sup.handle_timer(25.0)
    assert drain(sup) == [ProbeLiveness("AT", 2.0)]  # keeps asking
    sup.probe_answered(25.1)
    assert drain(sup) == [ModemUp("/dev/ttyUSB2")]


def test_a_miss_between_answers_does_not_count_up() -> None:
    sup = make(missed_limit=2)
    sup.handle_timer(5.0)
    drain(sup)
    sup.probe_missed(7.0)
    sup.activity(8.0)  # a URC arrived: alive
    sup.handle_timer(10.0)
    drain(sup)
    sup.probe_missed(12.0)
    assert drain(sup) == [] and state(sup) is SupervisorState.UP


def test_eof_is_vanished_at_once_and_imei_reattached_under_new_name() -> None:
    sup = make()
    sup.port_lost("serial EOF", 3.0)
    assert drain(sup) == [ModemVanished("/dev/ttyUSB2", "serial EOF")]
    assert state(sup) is SupervisorState.VANISHED
    assert sup.get_timer() == 3.0  # scan at once
    assert run_until(sup, 3.0) == [ScanPorts()]
    sup.ports_found([], 3.0)  # not back yet
    assert drain(sup) == []
    assert run_until(sup, 5.0) == [ScanPorts()]
    sup.ports_found(["/dev/ttyUSB0", "/dev/ttyUSB6", "/dev/ttyUSB6"], 5.0)
    assert drain(sup) == [ProbePort("/dev/ttyUSB0")]
    sup.port_probed("/dev/ttyUSB0", "999999999999999", 5.2)  # another modem
    assert drain(sup) == [ProbePort("/dev/ttyUSB6")]
    sup.port_probed("/dev/ttyUSB6", IMEI, 5.4)
    assert drain(sup) == [
        Attach("/dev/ttyUSB6"),
        ModemReattached("/dev/ttyUSB6", "/dev/ttyUSB2"),
        ModemUp("/dev/ttyUSB6"),
    ]
    assert sup.path == "/dev/ttyUSB6" and state(sup) is SupervisorState.UP
    assert sup.get_timer() == pytest.approx(10.4)  # liveness probing again


def test_no_answer_from_a_candidate_moves_on() -> None:
    sup = make()
    sup.port_lost("read error", 1.0)
    run_until(sup, 1.0)
    drain(sup)
    sup.ports_found(["/dev/ttyACM0", "/dev/ttyUSB3"], 1.0)
    assert drain(sup) == [ProbePort("/dev/ttyACM0")]
    sup.port_probed("/dev/ttyUSB9", IMEI, 1.1)  # not the one asked: ignored
    assert drain(sup) == []
    sup.port_probed("/dev/ttyACM0", None, 1.5)
    assert drain(sup) == [ProbePort("/dev/ttyUSB3")]


def test_power_cycle_after_timeout_with_backoff_and_cap() -> None:
    sup = make(
        power_pin="GPIO17",
        power_cycle_after=60.0,
        off_seconds=3.0,
        boot_wait=20.0,
        max_backoff=200.0,
        max_power_cycles=3,
        scan_interval=2.0,
    )
    sup.port_lost("serial EOF", 10.0)
    drain(sup)
    before = run_until(sup, 69.9)
    assert not any(isinstance(a, PowerCycle) for a in before)
    assert ScanPorts() in before
    cycles: list[float] = []
    t = 69.9
    actions: list[SupervisorAction] = []
    while len(cycles) < 3:
        nxt = sup.get_timer()
        assert nxt is not None
        sup.handle_timer(nxt)
        t = nxt
        got = drain(sup)
        actions += got
        if PowerCycle("GPIO17", 3.0) in got:
            cycles.append(t)
        for a in got:
            if isinstance(a, ScanPorts):
                sup.ports_found(["/dev/ttyUSB0"], t)
                drain(sup)
                sup.port_probed("/dev/ttyUSB0", None, t)
                drain(sup)
    assert cycles[0] == pytest.approx(70.0)  # 60 s after the loss
    assert cycles[1] - cycles[0] == pytest.approx(3.0 + 120.0)  # waits double...
    assert cycles[2] - cycles[1] == pytest.approx(3.0 + 200.0)  # ...up to max_backoff
    progress = [a for a in actions if isinstance(a, PowerCycling)]
    assert [p.attempt for p in progress] == [1, 2, 3]
    assert progress[-1].next_try_in is None
    assert state(sup) is SupervisorState.POWER_CYCLING
    # After the last cycle's wait it gives up but keeps looking, slowly.
    rest = run_until(sup, cycles[2] + 3.0 + 400.0 + 1)
    assert not any(isinstance(a, PowerCycle) for a in rest)
    (gave_up,) = [a for a in rest if isinstance(a, ModemGaveUp)]
    assert "3 power cycles" in gave_up.message and IMEI in gave_up.message
    assert state(sup) is SupervisorState.GAVE_UP
    sup.handle_timer(sup.get_timer() or 0.0)
    assert drain(sup) == [ScanPorts()]
    sup.ports_found(["/dev/ttyUSB1"], 2000.0)
    drain(sup)
    sup.port_probed("/dev/ttyUSB1", IMEI, 2000.5)
    assert ModemReattached("/dev/ttyUSB1", "/dev/ttyUSB2") in drain(sup)


def test_scan_waits_for_boot_after_power_cycle() -> None:
    sup = make(power_pin="GPIO17", power_cycle_after=30.0, off_seconds=2.0, boot_wait=15.0)
    sup.port_lost("serial EOF", 0.0)
    drain(sup)
    run_until(sup, 29.0)
    sup.handle_timer(30.0)
    got = drain(sup)
    assert PowerCycle("GPIO17", 2.0) in got
    assert ScanPorts() not in got
    assert sup.get_timer() == pytest.approx(47.0)  # off + boot wait


def test_unresponsive_then_power_cycled_when_it_stays_dead() -> None:
    sup = make(missed_limit=1, power_pin="GPIO5", power_cycle_after=20.0)
    sup.handle_timer(5.0)
    drain(sup)
    sup.probe_missed(7.0)
    assert drain(sup) == [ModemUnresponsive("/dev/ttyUSB2", 1)]
    got = run_until(sup, 27.0)
    assert ScanPorts() not in got  # the port is still open: nothing to re-scan yet
    assert PowerCycle("GPIO5", 3.0) in got
    sup.port_lost("serial EOF", 27.5)  # the power cut closes the port: already handled
    assert drain(sup) == []


def test_without_a_pin_it_only_scans() -> None:
    sup = make()
    sup.port_lost("serial EOF", 0.0)
    drain(sup)
    got = run_until(sup, 1000.0)
    assert got and all(isinstance(a, ScanPorts) for a in got)


def test_bad_settings() -> None:
    with pytest.raises(ValueError):
        ModemSupervisor(imei=IMEI, path="/dev/x", missed_limit=0)
