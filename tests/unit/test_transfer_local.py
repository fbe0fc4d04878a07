"""LocalBlindTransfers (gateway/runtime/transfer_local.py) against a small stand-in for
the gateway: real FxsLine machines for the target, the real Call legs, a loop whose
timers the test fires. The daemon path is tests/integration/test_transfer_local.py."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from gateway.lines.events import LineState
from gateway.lines.fxs import FxsLine
from gateway.routing.dialplan import DigitMap
from gateway.runtime.sip_calls import Call
from gateway.runtime.transfer_local import RECALL_AFTER, LocalBlindTransfers


class Loop:
    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, Any, tuple[Any, ...], SimpleNamespace]] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, fn: Any, *args: Any) -> SimpleNamespace:
        handle = SimpleNamespace(cancelled=False)
        handle.cancel = lambda: setattr(handle, "cancelled", True)
        self.timers.append((self.now + delay, fn, args, handle))
        return handle

    def run_until(self, t: float) -> None:
        self.now = t
        for at, fn, args, handle in list(self.timers):
            if at <= t and not handle.cancelled:
                handle.cancelled = True
                fn(*args)


class Gw:
    def __init__(self, ports: dict[str, Any]) -> None:
        self.calls: dict[str, Call] = {}
        self.loop = Loop()
        self.ports = ports
        self.ended: list[tuple[str, str]] = []

    def _local_port_for(self, number: str) -> Any:
        return next((p for p in self.ports.values() if p.number == number), None)

    def end_call(self, call: Call, cause: Any, now: float) -> bool:
        if self.calls.get(call.call_id) is not call:
            return False
        del self.calls[call.call_id]
        self.ended.append((call.call_id, str(cause)))
        return True

    def _pump(self) -> None:
        pass


def _port(name: str, number: str, machine: Any) -> SimpleNamespace:
    port = SimpleNamespace(name=name, number=number, config=SimpleNamespace(display_name=None),
                           call_id=None, machine=machine, tone_name=None)
    port.play_tone = lambda tone: setattr(port, "tone_name", tone)
    port.stop_tone = lambda: setattr(port, "tone_name", None)
    return port


def _setup() -> tuple[Gw, LocalBlindTransfers, Any, Call, Call, list[bool]]:
    results: list[bool] = []
    line1 = _port("1", "101", SimpleNamespace(
        transfer_result=lambda ok, now: results.append(ok)))
    line2 = _port("2", "102", SimpleNamespace())
    line3 = _port("3", "103", FxsLine("3", digit_map=DigitMap("x")))
    gw = Gw({"1": line1, "2": line2, "3": line3})
    held = Call("held", line1, "out", "102", "local", 0.0, state="connected")
    far = Call("far", line2, "in", "101", "local", 0.0, state="connected")
    held.peer, far.peer = far, held
    gw.calls.update(held=held, far=far)
    line2.call_id = "far"
    local = LocalBlindTransfers(gw)
    assert local.start(line1, held, "103", 0.0)
    return gw, local, line3, held, far, results


def test_target_rings_and_the_transferee_hears_ringback() -> None:
    gw, _, line3, _, far, results = _setup()
    assert line3.machine.state is LineState.RINGING and line3.call_id in gw.calls
    assert far.port.tone_name == "ringback" and results == []


def test_answer_joins_the_transferee_and_ends_line_1_leg() -> None:
    gw, local, line3, held, far, results = _setup()
    leg = gw.calls[line3.call_id]
    assert local.answered(leg, 1.0)
    assert far.peer is leg and leg.peer is far and far.port.tone_name is None
    assert "held" not in gw.calls and results == [True]
    gw.loop.run_until(RECALL_AFTER + 1)  # the recall timer was cancelled
    assert results == [True] and leg.call_id in gw.calls


def test_nobody_answers_within_the_recall_time_line_1_gets_the_call_back() -> None:
    gw, _, line3, held, far, results = _setup()
    gw.loop.run_until(RECALL_AFTER - 1)
    assert results == []
    gw.loop.run_until(RECALL_AFTER)
    assert results == [False]
    assert line3.machine.state is LineState.IDLE  # stopped ringing
    assert set(gw.calls) == {"held", "far"} and far.peer is held
    assert far.port.tone_name is None


def test_target_busy_when_offered_fails_at_once() -> None:
    gw, local, line3, held, _, _ = _setup()
    busy = LocalBlindTransfers(gw)
    assert not busy.start(held.port, held, "102", 0.0)  # the transferee's own line
    assert not busy.start(held.port, held, "199", 0.0)  # nobody has that number


def test_transferee_hangs_up_while_the_target_rings() -> None:
    gw, local, line3, held, far, results = _setup()
    gw.end_call(far, "hangup", 2.0)
    local.leg_ended(far, 2.0)
    assert line3.machine.state is LineState.IDLE and not gw.calls
    assert results == [True]
