"""Ordered failover (gateway.runtime.failover.Attempt) and the media timeout (MediaWatch):
the pure decisions, with no sockets and no clock."""

from __future__ import annotations

from typing import Any

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


# ---------------------------------------------------------------------- the runtime glue
# FailoverCalls as Gateway uses it, with the placing of each target recorded instead of
# done (the real placing is covered by tests/integration/test_route_failover.py).


class _Machine:
    def __init__(self) -> None:
        self.state = lev.LineState.CALLING
        self.call_id: str | None = None
        self.ended: list[tuple[str, int | None]] = []

    def call_ended(self, reason: str, status: int | None, now: float) -> None:
        self.ended.append((reason, status))
        self.state = lev.LineState.WAIT_ONHOOK


class _Port:
    name, kind, number = "1", "fxs", "101"
    config = None

    def __init__(self) -> None:
        self.machine = _Machine()
        self.call_id: str | None = None


class _Guard:
    def __init__(self, deny: bool = False) -> None:
        self.deny = deny
        self.checked: list[str] = []

    def check(self, source: object, number: str, target: str) -> object:
        from gateway.security.permissions import Allowed, Denied

        self.checked.append(target)
        return Denied(target, "number", "prefix 900 denied") if self.deny \
            else Allowed(target, number)


class _Health:
    def __init__(self, states: dict[str, object]) -> None:
        self._states = states
        self.timed_out: list[str] = []

    def states(self) -> dict[str, object]:
        return self._states

    def invite_timed_out(self, trunk: str, now: float) -> None:
        self.timed_out.append(trunk)


def _gateway(to: tuple[str, ...], *, health: dict[str, object] | None = None,
             deny: bool = False, emergency: tuple[str, ...] = ()) -> Any:
    from types import SimpleNamespace

    from gateway.config.schema import DialPlan, Route
    from gateway.config.survivable import EmergencySettings
    from gateway.routing.router import Router
    from gateway.runtime.failover import FailoverCalls
    from gateway.runtime.sip_calls import Call, SipCalls

    class Gw(FailoverCalls):
        def __init__(self) -> None:
            self.config = SimpleNamespace(gsm_groups=[SimpleNamespace(name="cell")])
            self.calls: dict[str, Call] = {}
            self.lines = {}
            self.trunks = {"a": object(), "b": object()}
            self.router = Router(DialPlan(routes=(Route(r"\d+", "", targets=to),)),
                                 emergency=EmergencySettings(emergency, to) if emergency
                                 else None)
            self.route_guard = _Guard(deny)
            if health is not None:
                self.trunk_health = _Health(health)
            self.placed: list[str] = []

        def _spawn(self, coro: Any) -> None:
            coro.close()

        async def _place_sip_call(self, lp: Any, number: str, trunk_name: str,
                                  attempt: Attempt | None = None) -> None:
            pass

        def sip_placed(self, lp: Any, trunk: str) -> Call:
            """What _place_sip_call does once its RTP socket is open."""
            attempt = self.attempt_for(lp)
            call = Call(f"c{len(self.placed)}", lp, "out", "sip:300@x", "sip", 0.0)
            self.calls[call.call_id] = call
            lp.call_id = call.call_id
            SipCalls._note_attempt(call, attempt)
            self.placed.append(f"trunk:{trunk}")
            return call

        def _place_gsm_call(self, lp: Any, group: str, number: str, now: float, *,
                            emergency: bool = False) -> None:
            self.placed.append(f"gsm:{group}")

        def end(self, call: Call, reason: str, status: int | None) -> None:
            del self.calls[call.call_id]
            self._sip_call_failed(call, reason, status, 1.5)

    return Gw()


def test_a_silent_trunk_passes_the_call_to_gsm_and_tells_health() -> None:
    gw, port = _gateway(("trunk:a", "gsm:cell"), health={}), _Port()
    gw._route_call(port, "300", 0.0)
    call = gw.sip_placed(port, "a")
    assert call.route == "trunk:a"
    gw.end(call, "timeout", 408)
    assert gw.placed == ["trunk:a", "gsm:cell"]
    assert port.machine.ended == []  # the line heard nothing in between
    assert gw.trunk_health.timed_out == ["a"]


def test_a_remote_bye_after_the_answer_is_an_ordinary_end() -> None:
    gw, port = _gateway(("trunk:a", "gsm:cell")), _Port()
    gw._route_call(port, "300", 0.0)
    call = gw.sip_placed(port, "a")
    call.state = "connected"
    gw.end(call, "remote hangup", None)
    assert gw.placed == ["trunk:a"] and port.machine.ended == [("remote hangup", None)]


def test_a_503_after_180_is_not_failed_over() -> None:
    gw, port = _gateway(("trunk:a", "trunk:b")), _Port()
    gw._route_call(port, "300", 0.0)
    call = gw.sip_placed(port, "a")
    call.state = "ringing"
    gw.end(call, "rejected", 503)
    assert gw.placed == ["trunk:a"] and port.machine.ended == [("rejected", 503)]


def test_busy_is_final_and_the_last_failure_is_what_the_line_hears() -> None:
    gw, port = _gateway(("trunk:a", "trunk:b", "gsm:cell")), _Port()
    gw._route_call(port, "300", 0.0)
    gw.end(gw.sip_placed(port, "a"), "busy", 486)
    assert gw.placed == ["trunk:a"] and port.machine.ended == [("busy", 486)]

    gw, port = _gateway(("trunk:a", "trunk:b")), _Port()
    gw._route_call(port, "300", 0.0)
    gw.end(gw.sip_placed(port, "a"), "timeout", 408)
    second = gw.sip_placed(port, "b")
    assert second.attempts[0] == {"target": "trunk:a", "result": "timeout", "status": 408}
    gw.end(second, "rejected", 503)
    assert port.machine.ended == [("rejected", 503)]


def test_down_trunks_are_skipped_and_all_down_fails_at_once() -> None:
    from gateway.routing.health import HealthState

    gw, port = _gateway(("trunk:a", "trunk:b"), health={"a": HealthState.DOWN}), _Port()
    gw._route_call(port, "300", 0.0)
    gw.sip_placed(port, "b")
    assert gw.placed == ["trunk:b"]

    gw = _gateway(("trunk:a", "trunk:b"),
                  health={"a": HealthState.DOWN, "b": HealthState.DOWN})
    port = _Port()
    gw._route_call(port, "300", 0.0)
    assert gw.placed == [] and port.machine.ended == [("trunk down", 503)]


def test_emergency_calls_skip_the_route_guard_and_try_down_trunks_last() -> None:
    from gateway.routing.health import HealthState

    gw, port = _gateway(("trunk:a", "trunk:b"), deny=True), _Port()
    gw._route_call(port, "300", 0.0)
    assert gw.placed == [] and port.machine.ended == [("not permitted", 403)]

    gw = _gateway(("trunk:a", "trunk:b"), deny=True, emergency=("300",),
                  health={"a": HealthState.DOWN, "b": HealthState.UP})
    port = _Port()
    gw._route_call(port, "300", 0.0)
    gw.end(gw.sip_placed(port, "b"), "timeout", 408)
    gw.sip_placed(port, "a")
    assert gw.placed == ["trunk:b", "trunk:a"] and gw.route_guard.checked == []
    assert port.machine.ended == []


def test_hanging_up_between_targets_stops_the_attempt() -> None:
    gw, port = _gateway(("trunk:a", "trunk:b")), _Port()
    gw._route_call(port, "300", 0.0)
    attempt = gw.attempt_for(port)
    gw.end(gw.sip_placed(port, "a"), "timeout", 408)
    assert gw._attempt_live(port, attempt)  # trunk b is being placed
    port.machine.state = lev.LineState.IDLE  # the handset went on hook meanwhile
    assert not gw._attempt_live(port, attempt)
    gw._route_call(port, "300", 2.0)  # and dialled again: the old attempt is stale
    port.machine.state = lev.LineState.CALLING
    assert not gw._attempt_live(port, attempt)
    assert gw._attempt_live(port, gw.attempt_for(port))
