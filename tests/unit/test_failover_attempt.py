"""Ordered failover (gateway.runtime.failover.Attempt) and the media timeout (MediaWatch):
the pure decisions, with no sockets and no clock."""

from __future__ import annotations

import pytest

from gateway.lines import events as lev
from gateway.routing.targets import FxoTarget, GsmTarget, TrunkTarget, parse_target
from gateway.runtime.failover import Attempt, fails_over
from gateway.runtime.media_watch import MediaWatch

MAIN, BACKUP, CELL = TrunkTarget("main"), TrunkTarget("backup"), GsmTarget("cell")


def attempt(*targets: str) -> Attempt:
    return Attempt("1", "5551234", tuple(parse_target(t) for t in targets), 0.0)


@pytest.mark.parametrize(("reason", "status"), [
    ("timeout", 408), ("timeout", None), ("rejected", 500), ("rejected", 502),
    ("rejected", 503), ("rejected", 504), ("no address", 503), ("transport error", 503),
    ("no modem", 503), ("no modem", 480), ("no such target", 404),
])
def test_these_failures_pass_the_call_on(reason: str, status: int | None) -> None:
    assert fails_over(reason, status)


@pytest.mark.parametrize(("reason", "status"), [
    ("busy", 486), ("declined", 403), ("rejected", 404), ("busy", 600), ("declined", 603),
    ("rejected", 480), ("rejected", 484), ("cancelled", 487), ("not permitted", 403),
    ("remote hangup", None), ("media refused", 488),
])
def test_these_failures_are_final(reason: str, status: int | None) -> None:
    assert not fails_over(reason, status)


def test_targets_are_tried_in_order_until_one_takes() -> None:
    a = attempt("trunk:main", "trunk:backup", "gsm:cell")
    assert a.target == MAIN and a.remaining == (BACKUP, CELL)
    a.placed("c1")
    assert a.failed("timeout", 408, 1.5) == BACKUP
    a.placed("c2")
    assert a.failed("rejected", 503, 1.6) == CELL
    a.placed("c3")
    assert not a.done and a.target == CELL
    assert a.history() == [
        {"target": "trunk:main", "result": "timeout", "status": 408},
        {"target": "trunk:backup", "result": "rejected", "status": 503},
        {"target": "gsm:cell", "result": "placed", "status": None},
    ]


def test_the_last_target_failing_ends_the_attempt_with_its_failure() -> None:
    a = attempt("trunk:main", "fxo:pstn")
    assert a.failed("timeout", 408, 1.5) == FxoTarget("pstn")
    assert a.failed("no such target", 404, 1.5) is None
    assert a.done and [f.status for f in a.failures] == [408, 404]
    assert a.failed("timeout", 408, 2.0) is None  # nothing more happens once done
    assert len(a.failures) == 2


def test_a_final_answer_stops_at_once_even_with_targets_left() -> None:
    a = attempt("trunk:main", "gsm:cell")
    assert a.failed("busy", 486, 0.3) is None
    assert a.done and a.target == MAIN


def test_never_after_the_far_end_rang_or_answered() -> None:
    a = attempt("trunk:main", "gsm:cell")
    assert a.failed("rejected", 503, 5.0, progressed=True) is None
    assert a.done


def test_a_single_target_has_nothing_to_fail_over_to() -> None:
    a = attempt("trunk:main")
    assert a.failed("timeout", 408, 1.5) is None and a.done


def test_the_machines_first_call_id_names_the_live_call() -> None:
    """The port's machine only learnt the first call's id; its actions reach the live one."""
    a = attempt("trunk:main", "trunk:backup")
    a.placed("first")
    a.failed("timeout", 408, 1.5)
    assert a.current_id("first") == "first"  # nothing live in between: unchanged
    a.placed("second")
    assert a.current_id("first") == "second"
    assert a.current_id("second") == "second"
    assert a.current_id("someone-else") == "someone-else"
    assert a.current_id(None) is None


def test_line_actions_are_retargeted_to_the_live_call() -> None:
    from gateway.runtime.failover import FailoverCalls

    class Port:
        name = "1"

    gw = FailoverCalls()
    a = attempt("trunk:main", "gsm:cell")
    gw.attempts = {"1": a}  # type: ignore[attr-defined]
    a.placed("first")
    a.failed("timeout", 408, 1.5)
    a.placed("local-2")
    port = Port()
    assert gw._current_call_action(port, lev.ConnectAudio("first")) == \
        lev.ConnectAudio("local-2")  # type: ignore[arg-type]
    assert gw._current_call_action(port, lev.CancelCall("first")) == \
        lev.CancelCall("local-2")  # type: ignore[arg-type]
    assert gw._current_call_action(port, lev.CancelCall(None)) == \
        lev.CancelCall(None)  # type: ignore[arg-type]
    assert gw._current_call_action(port, lev.StopTone()) == lev.StopTone()  # type: ignore[arg-type]


# ---------------------------------------------------------------------- media timeout


def test_media_timeout_after_silence_while_expecting_rtp() -> None:
    w = MediaWatch(2.0)
    assert not w.observe("c", True, 0, 10.0)  # answered: the clock starts
    assert not w.observe("c", True, 50, 11.0)  # packets arrive: it restarts
    assert not w.observe("c", True, 50, 12.9)
    assert w.observe("c", True, 50, 13.0)
    assert w.silent_for("c", 13.0) == pytest.approx(2.0)


def test_no_timeout_while_not_expecting_rtp_and_the_clock_restarts_on_resume() -> None:
    w = MediaWatch(2.0)
    assert not w.observe("c", True, 10, 0.0)
    assert not w.observe("c", False, 10, 1.9)  # put on hold (inactive)
    assert not w.observe("c", False, 10, 30.0)
    assert not w.observe("c", True, 10, 30.1)  # resumed: counted from now
    assert not w.observe("c", True, 10, 32.0)
    assert w.observe("c", True, 10, 32.1)


def test_zero_means_off_and_ended_calls_are_forgotten() -> None:
    off = MediaWatch(0.0)
    assert not off.observe("c", True, 0, 0.0) and not off.observe("c", True, 0, 1e6)
    w = MediaWatch(1.0)
    w.observe("a", True, 0, 0.0)
    w.observe("b", True, 0, 0.0)
    w.retain(["b"])
    assert w.silent_for("a", 5.0) is None and w.silent_for("b", 5.0) == 5.0
