"""FxsLine's FEAT hooks: digit-map substitution and timers, distinctive ring cadence per
call, and the confirm/reorder answer to a feature code (star code)."""

from __future__ import annotations

import pytest

from gateway.lines.events import (
    IncomingResult,
    LineState,
    PlaceCall,
    PlayTone,
    SetRinging,
    StateChanged,
    TimerKind,
)
from gateway.lines.fxs import FxsLine
from gateway.routing.dialplan import DigitMap

S = LineState


def lift_and_dial(line: FxsLine, digits: str, start: float = 1.0) -> float:
    line.hook(True, 0.0)
    line.handle_timer(0.05)
    t = start
    for d in digits:
        line.dtmf_digit(d, t)
        t += 0.2
    return t - 0.2


def test_placed_number_has_the_digit_map_substitution_applied() -> None:
    line = FxsLine("fxs1", digit_map=DigitMap("(<9:>[2-9]xxxxxx|<:1>[2-9]xxxxxxxxx)"))
    t = lift_and_dial(line, "95551234")
    line.handle_timer(t + 5.0)  # 9555123400 would match the 10-digit form: short timer
    placed = [a for a in line.actions() if isinstance(a, PlaceCall)]
    assert placed == [PlaceCall("5551234")]
    assert line.state is S.CALLING


def test_prepend_substitution_places_the_long_number() -> None:
    line = FxsLine("fxs1", digit_map=DigitMap("<:1>[2-9]xxxxxxxxx"))
    lift_and_dial(line, "2125551234")
    assert [a for a in line.actions() if isinstance(a, PlaceCall)] == [
        PlaceCall("12125551234")]


def test_digit_map_timer_seconds_replace_the_line_timers() -> None:
    line = FxsLine("fxs1", digit_map=DigitMap("(2xxS3|2xxxx|5x.T7)"),
                   short_inter_digit_timeout=1.0, inter_digit_timeout=9.0)
    t = lift_and_dial(line, "234")
    assert line.get_timer() == pytest.approx(t + 3.0)  # S3, not the line's 1 s
    line.hook(False, t + 0.5)
    line.handle_timer(t + 2.0)
    t = lift_and_dial(line, "55", start=t + 3.0)
    assert line.get_timer() == pytest.approx(t + 7.0)  # T7, not the line's 9 s
    line.handle_timer(t + 7.0)
    assert [a for a in line.actions() if isinstance(a, PlaceCall)] == [PlaceCall("55")]


def test_s0_places_the_call_at_once() -> None:
    line = FxsLine("fxs1", digit_map=DigitMap("(1xxS0|1xxxxxx)"))
    lift_and_dial(line, "123")
    assert [a for a in line.actions() if isinstance(a, PlaceCall)] == [PlaceCall("123")]


def test_distinctive_ring_cadence_rings_this_call_only() -> None:
    line = FxsLine("fxs1", digit_map=DigitMap("1xx"), ring_cadence=(2.0, 4.0))
    dr2 = (0.8, 0.4, 0.8, 4.0)
    assert line.incoming_call("in-1", "100", None, 0.0, ring_cadence=dr2) \
        is IncomingResult.ACCEPTED
    assert line.active_ring_cadence == dr2
    assert line.actions() == [StateChanged(S.RINGING), SetRinging(True)]
    edges = []
    while (deadline := line.get_timer()) is not None and deadline <= 6.0:
        line.handle_timer(deadline)
        edges += [(round(deadline, 6), a.on) for a in line.actions() if isinstance(a, SetRinging)]
    assert edges == [(0.8, False), (1.2, True), (2.0, False), (6.0, True)]
    line.incoming_cancelled(6.5)
    line.actions()
    # the next call without Alert-Info rings the line's own cadence again
    line.incoming_call("in-2", "100", None, 10.0)
    assert line.active_ring_cadence == (2.0, 4.0)
    assert line.get_timer() == pytest.approx(12.0)


def test_busy_line_keeps_the_ringing_calls_cadence() -> None:
    line = FxsLine("fxs1", digit_map=DigitMap("1xx"), ring_cadence=(2.0, 4.0))
    line.incoming_call("in-1", "100", None, 0.0, ring_cadence=(0.5, 5.5))
    line.incoming_call("in-2", "100", None, 0.1, ring_cadence=(0.8, 0.4, 0.8, 4.0))
    assert line.active_ring_cadence == (0.5, 5.5)


@pytest.mark.parametrize("cadence", [(), (1.0,), (1.0, 0.0), (-1.0, 2.0)])
def test_bad_distinctive_cadence_is_refused(cadence: tuple[float, ...]) -> None:
    line = FxsLine("fxs1", digit_map=DigitMap("1xx"))
    with pytest.raises(ValueError, match="ring_cadence"):
        line.incoming_call("in-1", "100", None, 0.0, ring_cadence=cadence)


@pytest.mark.parametrize(("ok", "tone"), [(True, "confirm"), (False, "reorder")])
def test_feature_done_confirms_or_refuses_then_howler(ok: bool, tone: str) -> None:
    line = FxsLine("fxs1", digit_map=DigitMap("(*72x.T|*73)"), offhook_warning_timeout=20.0)
    t = lift_and_dial(line, "*73")
    assert [a for a in line.actions() if isinstance(a, PlaceCall)] == [PlaceCall("*73")]
    line.feature_done(ok, t + 0.1)
    assert line.actions() == [StateChanged(S.WAIT_ONHOOK), PlayTone(tone)]
    assert line.state is S.WAIT_ONHOOK
    line.handle_timer(t + 0.1 + 20.0)
    assert line.actions() == [StateChanged(S.HOWLER), PlayTone("howler")]


def test_feature_done_after_a_real_call_started_changes_nothing() -> None:
    line = FxsLine("fxs1", digit_map=DigitMap("1xx"))
    lift_and_dial(line, "123")
    line.set_call_id("out-1")
    line.actions()
    line.feature_done(True, 3.0)
    assert line.actions() == []
    assert line.state is S.CALLING
    assert TimerKind.OFFHOOK_WARNING not in line._timers
