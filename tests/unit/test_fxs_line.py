"""FxsLine: every call path driven with a fake clock (plain `now` floats)."""

from __future__ import annotations

import pytest

from gateway.lines.events import (
    Action,
    AnswerCall,
    CancelCall,
    ConnectAudio,
    DisconnectAudio,
    FlashHook,
    HangUp,
    IncomingResult,
    LineState,
    LineUsageError,
    PlaceCall,
    PlayTone,
    RejectCall,
    SendCallerId,
    SendDigit,
    SetRinging,
    StateChanged,
    StopTone,
)
from gateway.lines.fxs import FxsLine
from gateway.routing.dialplan import DigitMap

MAP = DigitMap("(911|1xx|[2-8]xxxxxx|0|00|*xx|#xx.T)")
S = LineState


def make_line(**kwargs: object) -> FxsLine:
    return FxsLine("fxs1", digit_map=MAP, **kwargs)  # type: ignore[arg-type]


def run(line: FxsLine, until: float) -> None:
    """Fire timers one deadline at a time up to `until`, as the runtime adapter does."""
    while (deadline := line.get_timer()) is not None and deadline <= until:
        line.handle_timer(deadline)


def lift(line: FxsLine, now: float) -> list[Action]:
    line.hook(True, now)
    run(line, now + 0.05)
    return line.actions()


def hang_up(line: FxsLine, now: float) -> list[Action]:
    line.hook(False, now)
    run(line, now + 1.0)
    return line.actions()


def rotary(line: FxsLine, digit: str, start: float) -> float:
    """Dial one digit as 60 ms breaks / 40 ms makes; return when the dial came to rest."""
    t = start
    for _ in range(10 if digit == "0" else int(digit)):
        line.hook(False, t)
        line.hook(True, t + 0.060)
        t += 0.100
    return t


def dial(line: FxsLine, digits: str, start: float, step: float = 0.3) -> float:
    t = start
    for d in digits:
        line.dtmf_digit(d, t)
        t += step
    return t - step


def connected_call(line: FxsLine, number: str = "911") -> None:
    lift(line, 0.0)
    dial(line, number, 1.0)
    line.set_call_id("out-1")
    line.call_answered(5.0)
    line.actions()
    assert line.state is S.CONNECTED


def states(actions: list[Action]) -> list[LineState]:
    return [a.state for a in actions if isinstance(a, StateChanged)]


# --------------------------------------------------------------------------- dial tone


def test_idle_line_is_quiet_and_has_no_timer() -> None:
    line = make_line()
    assert line.state is S.IDLE
    assert line.get_timer() is None
    assert line.next_action() is None


def test_offhook_gives_dial_tone() -> None:
    line = make_line()
    assert lift(line, 0.0) == [StateChanged(S.DIAL_TONE), PlayTone("dial")]


def test_message_waiting_gives_stutter_dial_tone() -> None:
    line = make_line()
    line.set_message_waiting(True)
    assert PlayTone("stutter") in lift(line, 0.0)


def test_next_action_pops_in_order() -> None:
    line = make_line()
    line.hook(True, 0.0)
    run(line, 0.1)
    assert line.next_action() == StateChanged(S.DIAL_TONE)
    assert line.next_action() == PlayTone("dial")
    assert line.next_action() is None


def test_first_digit_stops_dial_tone() -> None:
    line = make_line()
    lift(line, 0.0)
    line.dtmf_digit("2", 1.0)
    assert line.actions() == [StopTone(), StateChanged(S.COLLECTING)]
    assert line.digits == "2"


def test_first_digit_timeout_gives_reorder_then_howler() -> None:
    line = make_line(first_digit_timeout=10.0, offhook_warning_timeout=30.0)
    lift(line, 0.0)
    run(line, 9.9)
    assert line.actions() == []
    run(line, 10.01)
    assert line.actions() == [StateChanged(S.WAIT_ONHOOK), PlayTone("reorder")]
    run(line, 39.99)
    assert line.actions() == []
    run(line, 40.01)
    assert line.actions() == [StateChanged(S.HOWLER), PlayTone("howler")]
    assert hang_up(line, 50.0) == [StopTone(), StateChanged(S.IDLE)]


# ---------------------------------------------------------------------- digit collection


def test_full_match_places_call_at_once() -> None:
    line = make_line()
    lift(line, 0.0)
    dial(line, "911", 1.0)
    assert line.actions()[-2:] == [PlaceCall("911"), StateChanged(S.CALLING)]
    assert line.state is S.CALLING


def test_full_may_extend_waits_for_the_short_timer() -> None:
    line = make_line(short_inter_digit_timeout=2.0, inter_digit_timeout=5.0)
    lift(line, 0.0)
    line.dtmf_digit("0", 1.0)  # "0" is complete but "00" is longer
    line.actions()
    assert line.get_timer() == pytest.approx(3.0)
    run(line, 2.99)
    assert line.actions() == []
    run(line, 3.0)
    assert line.actions() == [PlaceCall("0"), StateChanged(S.CALLING)]


def test_digit_during_short_timer_extends_the_number() -> None:
    line = make_line()
    lift(line, 0.0)
    line.dtmf_digit("0", 1.0)
    line.dtmf_digit("0", 2.5)
    assert PlaceCall("00") in line.actions()


def test_partial_waits_the_long_timer_then_dials_timer_match() -> None:
    line = make_line(inter_digit_timeout=5.0, short_inter_digit_timeout=2.0)
    lift(line, 0.0)
    end = dial(line, "#123", 1.0)  # matches #xx.T only on timeout
    line.actions()
    run(line, end + 4.99)
    assert line.actions() == []
    run(line, end + 5.0)
    assert line.actions() == [PlaceCall("#123"), StateChanged(S.CALLING)]


def test_partial_without_timer_match_gives_reorder_on_timeout() -> None:
    line = make_line(inter_digit_timeout=5.0)
    lift(line, 0.0)
    dial(line, "555", 1.0)  # [2-8]xxxxxx needs more
    line.actions()
    run(line, 1.6 + 5.0)
    assert line.actions() == [StateChanged(S.WAIT_ONHOOK), PlayTone("reorder")]


def test_no_match_gives_reorder_at_once() -> None:
    line = make_line()
    lift(line, 0.0)
    dial(line, "91", 1.0)
    line.actions()
    line.dtmf_digit("2", 2.0)  # no alternative starts with 912
    assert line.actions() == [StateChanged(S.WAIT_ONHOOK), PlayTone("reorder")]


def test_pulse_dialled_digits_place_the_call() -> None:
    line = make_line()
    lift(line, 0.0)
    t = rotary(line, "9", 1.0)
    t = rotary(line, "1", t + 0.6)
    t = rotary(line, "1", t + 0.6)
    run(line, t + 0.3)
    actions = line.actions()
    assert PlaceCall("911") in actions
    assert actions[0] == StopTone()  # dial tone stopped by the first rotary digit
    assert line.state is S.CALLING


def test_pulse_two_is_two_sixty_ms_breaks() -> None:
    line = make_line()
    lift(line, 0.0)
    t = rotary(line, "2", 1.0)
    run(line, t + 0.3)
    assert line.digits == "2"
    assert line.state is S.COLLECTING


def test_flash_while_collecting_restarts_dial_tone() -> None:
    line = make_line()
    lift(line, 0.0)
    dial(line, "55", 1.0)
    line.actions()
    line.hook(False, 3.0)
    line.hook(True, 3.4)
    run(line, 3.5)
    assert line.actions() == [StateChanged(S.DIAL_TONE), PlayTone("dial")]
    assert line.digits == ""


# ----------------------------------------------------------------------- outgoing calls


def test_outgoing_call_ringback_then_answer() -> None:
    line = make_line()
    lift(line, 0.0)
    dial(line, "911", 1.0)
    line.actions()
    line.set_call_id("out-1")
    line.call_progress(100, 2.0)
    assert line.actions() == []  # trying: silence
    line.call_progress(180, 2.5)
    assert line.actions() == [StateChanged(S.RINGBACK), PlayTone("ringback")]
    line.call_answered(6.0)
    assert line.actions() == [StopTone(), ConnectAudio("out-1"), StateChanged(S.CONNECTED)]
    assert line.call_id == "out-1"


def test_early_media_connects_audio_and_stops_ringback() -> None:
    line = make_line()
    lift(line, 0.0)
    dial(line, "911", 1.0)
    line.set_call_id("out-1")
    line.call_progress(180, 2.0)
    line.actions()
    line.call_progress(183, 2.5, early_media=True)
    assert line.actions() == [StopTone(), ConnectAudio("out-1"), StateChanged(S.EARLY_MEDIA)]
    line.call_answered(4.0)
    assert line.actions() == [StateChanged(S.CONNECTED)]  # audio already flowing


def test_183_without_sdp_keeps_silence() -> None:
    line = make_line()
    lift(line, 0.0)
    dial(line, "911", 1.0)
    line.set_call_id("out-1")
    line.actions()
    line.call_progress(183, 2.0, early_media=False)
    assert line.actions() == []
    assert line.state is S.CALLING


def test_dtmf_during_early_media_and_call_is_sent_out_of_band() -> None:
    line = make_line()
    connected_call(line)
    line.dtmf_digit("5", 6.0)
    line.dtmf_digit("#", 6.5)
    assert line.actions() == [SendDigit("out-1", "5"), SendDigit("out-1", "#")]


def test_rotary_digit_during_call_is_sent_as_digit() -> None:
    line = make_line()
    connected_call(line)
    t = rotary(line, "3", 6.0)
    run(line, t + 0.3)
    assert line.actions() == [SendDigit("out-1", "3")]


@pytest.mark.parametrize(
    ("status", "tone"),
    [(None, "busy"), (486, "busy"), (600, "busy"), (603, "busy"),
     (404, "reorder"), (408, "reorder"), (503, "reorder"), (480, "reorder")],
)
def test_remote_end_or_failure_plays_busy_or_reorder(status: int | None, tone: str) -> None:
    line = make_line()
    lift(line, 0.0)
    dial(line, "911", 1.0)
    line.set_call_id("out-1")
    line.actions()
    line.call_ended("failure" if status else "bye", status, 3.0)
    assert line.actions() == [StateChanged(S.WAIT_ONHOOK), PlayTone(tone)]  # type: ignore[arg-type]


def test_remote_bye_disconnects_audio_then_busy_then_howler() -> None:
    line = make_line(offhook_warning_timeout=30.0)
    connected_call(line)
    line.call_ended("bye", None, 10.0)
    assert line.actions() == [
        DisconnectAudio("out-1"),
        StateChanged(S.WAIT_ONHOOK),
        PlayTone("busy"),
    ]
    run(line, 40.0)
    assert line.actions() == [StateChanged(S.HOWLER), PlayTone("howler")]


def test_local_hangup_of_connected_call_sends_bye_after_flash_window() -> None:
    line = make_line()
    connected_call(line)
    line.hook(False, 10.0)
    run(line, 10.89)
    assert line.actions() == []  # could still be a flash
    run(line, 10.9)
    assert line.actions() == [DisconnectAudio("out-1"), HangUp("out-1"), StateChanged(S.IDLE)]
    assert line.call_id is None
    assert line.get_timer() is None


def test_flash_during_call_is_reported_not_hung_up() -> None:
    line = make_line(three_way=False)  # no consultation call: the runtime's hold toggle
    connected_call(line)
    line.hook(False, 10.0)
    line.hook(True, 10.5)
    run(line, 12.0)
    assert line.actions() == [FlashHook("out-1")]
    assert line.state is S.CONNECTED


def test_short_break_during_call_is_neither_flash_nor_hangup() -> None:
    line = make_line()
    connected_call(line)
    line.hook(False, 10.0)
    line.hook(True, 10.05)  # one stray pulse: a digit "1"
    run(line, 12.0)
    assert line.actions() == [SendDigit("out-1", "1")]


def test_hangup_while_ringback_cancels() -> None:
    line = make_line()
    lift(line, 0.0)
    dial(line, "911", 1.0)
    line.set_call_id("out-1")
    line.call_progress(180, 2.0)
    line.actions()
    assert hang_up(line, 3.0) == [StopTone(), CancelCall("out-1"), StateChanged(S.IDLE)]


def test_hangup_during_early_media_cancels_and_disconnects() -> None:
    line = make_line()
    lift(line, 0.0)
    dial(line, "911", 1.0)
    line.set_call_id("out-1")
    line.call_progress(183, 2.0, early_media=True)
    line.actions()
    assert hang_up(line, 3.0) == [
        DisconnectAudio("out-1"),
        CancelCall("out-1"),
        StateChanged(S.IDLE),
    ]


def test_hangup_before_call_id_known_cancels_last_placement() -> None:
    line = make_line()
    lift(line, 0.0)
    dial(line, "911", 1.0)
    line.actions()
    assert hang_up(line, 2.0) == [CancelCall(None), StateChanged(S.IDLE)]
    line.set_call_id("late")  # ignored: nothing is waiting for it
    assert line.call_id is None


def test_early_media_before_call_id_is_a_usage_error() -> None:
    line = make_line()
    lift(line, 0.0)
    dial(line, "911", 1.0)
    with pytest.raises(LineUsageError, match="set_call_id"):
        line.call_progress(183, 2.0, early_media=True)


def test_stale_network_events_after_hangup_are_ignored() -> None:
    line = make_line()
    lift(line, 0.0)
    dial(line, "911", 1.0)
    line.set_call_id("out-1")
    hang_up(line, 2.0)
    line.call_progress(180, 3.5)
    line.call_answered(3.6)
    line.call_ended("bye", None, 3.7)
    assert line.actions() == []
    assert line.state is S.IDLE


# ----------------------------------------------------------------------- incoming calls


def test_incoming_call_rings_with_cadence_and_sends_caller_id() -> None:
    line = make_line(ring_cadence=(2.0, 4.0))
    assert line.incoming_call("in-1", "5551234", "Alice", 100.0) is IncomingResult.ACCEPTED
    assert line.actions() == [StateChanged(S.RINGING), SetRinging(True)]
    seen: list[tuple[float, Action]] = []
    while (deadline := line.get_timer()) is not None and deadline <= 112.0:
        line.handle_timer(deadline)
        seen += [(deadline, a) for a in line.actions()]
    assert seen == [
        (102.0, SetRinging(False)),
        (102.0, SendCallerId("5551234", "Alice")),
        (106.0, SetRinging(True)),
        (108.0, SetRinging(False)),
        (112.0, SetRinging(True)),
    ]


def test_uk_double_ring_cadence() -> None:
    line = make_line(ring_cadence=(0.4, 0.2, 0.4, 2.0))
    line.incoming_call("in-1", "100", None, 0.0)
    line.actions()
    edges: list[tuple[float, bool]] = []
    while (deadline := line.get_timer()) is not None and deadline <= 3.0:
        line.handle_timer(deadline)
        edges += [(round(deadline, 6), a.on) for a in line.actions() if isinstance(a, SetRinging)]
    assert edges == [(0.4, False), (0.6, True), (1.0, False), (3.0, True)]


def test_offhook_while_ringing_answers() -> None:
    line = make_line()
    line.incoming_call("in-1", "100", None, 0.0)
    line.actions()
    assert lift(line, 1.0) == [
        SetRinging(False),
        AnswerCall("in-1"),
        ConnectAudio("in-1"),
        StateChanged(S.CONNECTED),
    ]
    line.dtmf_digit("7", 2.0)
    assert line.actions() == [SendDigit("in-1", "7")]
    assert hang_up(line, 3.0) == [DisconnectAudio("in-1"), HangUp("in-1"), StateChanged(S.IDLE)]


def test_cancel_while_ringing_stops_ringing() -> None:
    line = make_line()
    line.incoming_call("in-1", "100", None, 0.0)
    line.actions()
    line.incoming_cancelled(1.0)
    assert line.actions() == [SetRinging(False), StateChanged(S.IDLE)]
    assert line.get_timer() is None
    run(line, 200.0)
    assert line.actions() == []  # no cadence or no-answer timer left behind


def test_cancel_during_silent_interval_still_reports_ringing_off() -> None:
    line = make_line(ring_cadence=(2.0, 4.0))
    line.incoming_call("in-1", "100", None, 0.0)
    run(line, 3.0)
    line.actions()
    line.incoming_cancelled(3.0)
    assert line.actions() == [SetRinging(False), StateChanged(S.IDLE)]


def test_unanswered_call_is_rejected_480() -> None:
    line = make_line(no_answer_timeout=19.0, ring_cadence=(2.0, 4.0))
    line.incoming_call("in-1", "100", None, 0.0)
    run(line, 18.9)
    line.actions()
    run(line, 19.0)  # bell is on (18-20 s) when the timer hits
    assert line.actions() == [SetRinging(False), RejectCall("in-1", 480), StateChanged(S.IDLE)]
    assert line.get_timer() is None


def test_second_incoming_call_while_on_a_call_gets_486() -> None:
    line = make_line(call_waiting=False)
    connected_call(line)
    assert line.incoming_call("in-2", "200", None, 7.0) is IncomingResult.BUSY
    assert line.actions() == [RejectCall("in-2", 486)]
    assert line.state is S.CONNECTED
    assert line.call_id == "out-1"


def test_second_incoming_call_while_ringing_gets_486() -> None:
    line = make_line()
    line.incoming_call("in-1", "100", None, 0.0)
    line.actions()
    assert line.incoming_call("in-2", "200", None, 0.5) is IncomingResult.BUSY
    assert line.actions() == [RejectCall("in-2", 486)]
    lift(line, 1.0)
    assert line.call_id == "in-1"


def test_same_call_offered_twice_is_not_rejected() -> None:
    line = make_line()
    line.incoming_call("in-1", "100", None, 0.0)
    line.actions()
    assert line.incoming_call("in-1", "100", None, 0.2) is IncomingResult.ACCEPTED
    assert line.actions() == []


def test_incoming_call_while_hearing_dial_tone_gets_486() -> None:
    line = make_line()
    lift(line, 0.0)
    assert line.incoming_call("in-1", "100", None, 1.0) is IncomingResult.BUSY
    assert line.actions() == [RejectCall("in-1", 486)]
    assert line.state is S.DIAL_TONE


# ---------------------------------------------------------------------- timers, inputs


def test_overdue_timers_fire_before_a_late_input() -> None:
    line = make_line(first_digit_timeout=10.0)
    lift(line, 0.0)
    line.dtmf_digit("9", 12.0)  # the adapter never called handle_timer
    assert line.actions() == [StateChanged(S.WAIT_ONHOOK), PlayTone("reorder")]
    assert line.digits == ""


def test_get_timer_reports_the_earliest_deadline() -> None:
    line = make_line(first_digit_timeout=10.0)
    line.hook(True, 0.0)
    assert line.get_timer() == pytest.approx(0.01)  # hook debounce first
    run(line, 0.05)
    assert line.get_timer() == pytest.approx(10.01)




def test_bad_inputs_are_refused_by_name() -> None:
    line = make_line()
    with pytest.raises(ValueError, match="DTMF digit"):
        line.dtmf_digit("E", 0.0)
    with pytest.raises(ValueError, match="1xx"):
        line.call_progress(200, 0.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ring_cadence": (2.0,)},
        {"ring_cadence": ()},
        {"ring_cadence": (2.0, 0.0)},
        {"first_digit_timeout": 0.0},
        {"no_answer_timeout": -1.0},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="fxs1"):
        make_line(**kwargs)
