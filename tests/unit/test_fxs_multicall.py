"""FxsLine with two calls: call waiting, hold and swap, consultation, three-way conference,
transfer and recall (gateway/lines/fxs_calls.py), driven with a fake clock."""

from __future__ import annotations

from gateway.lines.events import (
    Action,
    AlertCallWaiting,
    AnswerCall,
    CancelCall,
    ConnectAudio,
    DisconnectAudio,
    HangUp,
    HoldCall,
    IncomingResult,
    LineState,
    MixCalls,
    PlaceCall,
    PlayTone,
    RejectCall,
    ResumeCall,
    SetRinging,
    StateChanged,
    StopTone,
    TransferCall,
)
from gateway.lines.fxs import FxsLine
from gateway.routing.dialplan import DigitMap

MAP = DigitMap("(911|1xx|[2-8]xxxxxx)")
S = LineState


def run(line: FxsLine, until: float) -> None:
    while (deadline := line.get_timer()) is not None and deadline <= until:
        line.handle_timer(deadline)


def flash(line: FxsLine, at: float) -> list[Action]:
    line.hook(False, at)
    line.hook(True, at + 0.4)
    run(line, at + 1.5)
    return line.actions()


def connected(**kwargs: object) -> FxsLine:
    """A line talking on out-1 (to 911) at t=5."""
    line = FxsLine("fxs1", digit_map=MAP, **kwargs)  # type: ignore[arg-type]
    line.hook(True, 0.0)
    for i, d in enumerate("911"):
        line.dtmf_digit(d, 1.0 + 0.3 * i)
    line.set_call_id("out-1")
    line.call_answered(5.0)
    line.actions()
    assert line.state is S.CONNECTED
    return line


def waiting(line: FxsLine, at: float = 6.0) -> list[Action]:
    assert line.incoming_call("in-2", "sip:200@x", "Bob", at) is IncomingResult.ACCEPTED
    return line.actions()


def consulting(at: float = 10.0) -> FxsLine:
    """out-1 held by a flash, 101 dialled as out-2 and answered."""
    line = connected()
    flash(line, at)
    for i, d in enumerate("101"):
        line.dtmf_digit(d, at + 2 + 0.3 * i)
    line.set_call_id("out-2")
    line.call_answered(at + 4)
    line.actions()
    return line


def test_second_call_while_talking_waits_with_tone_and_type2_caller_id() -> None:
    line = connected()
    assert waiting(line) == [AlertCallWaiting("in-2", "sip:200@x", "Bob", True)]
    assert line.state is S.CONNECTED and line.call_id == "out-1"
    run(line, 16.1)  # the tone again every 10 s, without the caller ID
    assert line.actions() == [AlertCallWaiting("in-2", "sip:200@x", "Bob", False)]
    assert line.call_ids() == ("out-1", "in-2")


def test_waiting_call_nobody_takes_gets_480() -> None:
    line = connected()
    waiting(line)
    run(line, 6.0 + 120.0)
    acts = line.actions()
    assert acts[-1] == RejectCall("in-2", 480)
    assert line.other_call is None and line.state is S.CONNECTED
    run(line, 200.0)
    assert line.actions() == []  # no more tones


def test_flash_answers_waiting_call_and_holds_the_first_then_swaps() -> None:
    line = connected()
    waiting(line)
    assert flash(line, 8.0) == [HoldCall("out-1"), DisconnectAudio("out-1"),
                                AnswerCall("in-2"), ConnectAudio("in-2")]
    assert line.call_id == "in-2"
    other = line.other_call
    assert other is not None and other.call_id == "out-1" and other.role == "held"
    run(line, 40.0)
    assert line.actions() == []  # answered: no more call-waiting tone, no 480
    assert flash(line, 41.0) == [HoldCall("in-2"), DisconnectAudio("in-2"),
                                 ResumeCall("out-1"), ConnectAudio("out-1")]
    assert flash(line, 43.0) == [HoldCall("out-1"), DisconnectAudio("out-1"),
                                 ResumeCall("in-2"), ConnectAudio("in-2")]
    assert line.state is S.CONNECTED


def test_hanging_up_with_a_call_on_hold_rings_again_and_lifting_resumes_it() -> None:
    line = connected()
    waiting(line)
    flash(line, 8.0)
    line.hook(False, 20.0)
    run(line, 21.0)
    acts = line.actions()
    assert acts[:2] == [DisconnectAudio("in-2"), HangUp("in-2")]
    assert StateChanged(S.RINGING) in acts and SetRinging(True) in acts
    assert line.call_id == "out-1" and line.other_call is None
    line.hook(True, 22.0)
    run(line, 22.0 + 0.5)
    acts = line.actions()
    assert [a for a in acts if not isinstance(a, StateChanged)] == [
        SetRinging(False), ResumeCall("out-1"), ConnectAudio("out-1")]
    assert line.state is S.CONNECTED


def test_recall_nobody_answers_hangs_up_the_held_call() -> None:
    line = connected()
    waiting(line)
    flash(line, 8.0)
    line.hook(False, 20.0)
    run(line, 20.0 + 121.0)
    acts = line.actions()
    assert HangUp("out-1") in acts and line.state is S.IDLE


def test_hanging_up_with_a_call_waiting_rings_for_it() -> None:
    line = connected()
    waiting(line)
    line.hook(False, 9.0)
    run(line, 10.0)
    acts = line.actions()
    assert HangUp("out-1") in acts and SetRinging(True) in acts
    assert line.state is S.RINGING and line.call_id == "in-2"
    line.hook(True, 11.0)
    run(line, 11.0 + 0.5)
    assert AnswerCall("in-2") in line.actions()


def test_waiting_caller_gives_up() -> None:
    line = connected()
    waiting(line)
    line.for_call("in-2").incoming_cancelled(7.0)
    assert line.other_call is None and line.state is S.CONNECTED
    run(line, 30.0)
    assert line.actions() == []
    # A flash now is a plain consultation: dial tone with out-1 held.
    acts = flash(line, 31.0)
    assert acts[:2] == [HoldCall("out-1"), DisconnectAudio("out-1")]
    assert PlayTone("dial") in acts


def test_held_party_hangs_up_the_current_call_stays() -> None:
    line = connected()
    waiting(line)
    flash(line, 8.0)
    line.for_call("out-1").call_ended("remote hangup", None, 12.0)
    assert line.actions() == []
    assert line.state is S.CONNECTED and line.call_id == "in-2" and line.other_call is None
    line.hook(False, 13.0)
    run(line, 14.0)
    assert line.actions() == [DisconnectAudio("in-2"), HangUp("in-2"), StateChanged(S.IDLE)]


def test_third_call_is_busy() -> None:
    line = connected()
    waiting(line)
    assert line.incoming_call("in-3", "300", None, 7.0) is IncomingResult.BUSY
    assert line.actions() == [RejectCall("in-3", 486)]
    assert line.incoming_call("in-2", "sip:200@x", "Bob", 7.5) is IncomingResult.ACCEPTED


def test_flash_in_a_single_call_holds_it_and_gives_dial_tone_for_a_second_number() -> None:
    line = connected()
    acts = flash(line, 10.0)
    assert acts == [HoldCall("out-1"), DisconnectAudio("out-1"), StateChanged(S.DIAL_TONE),
                    PlayTone("dial")]
    for i, d in enumerate("101"):
        line.dtmf_digit(d, 12.0 + 0.3 * i)
    acts = line.actions()
    assert PlaceCall("101") in acts and line.state is S.CALLING
    line.set_call_id("out-2")
    line.call_progress(180, 13.0)
    assert line.actions() == [StateChanged(S.RINGBACK), PlayTone("ringback")]


def test_flash_while_the_consultation_rings_drops_it_and_returns() -> None:
    line = connected()
    flash(line, 10.0)
    for i, d in enumerate("101"):
        line.dtmf_digit(d, 12.0 + 0.3 * i)
    line.set_call_id("out-2")
    line.call_progress(180, 13.0)
    line.actions()
    acts = flash(line, 14.0)
    assert acts == [StopTone(), CancelCall("out-2"), ResumeCall("out-1"), ConnectAudio("out-1"),
                    StateChanged(S.CONNECTED)]
    assert line.call_id == "out-1" and line.other_call is None
    # The dropped call's late 200 or BYE is not ours any more.
    line.call_answered(15.0, call_id="out-2")
    line.call_ended("remote hangup", None, 15.5, call_id="out-2")
    assert line.actions() == [] and line.state is S.CONNECTED


def test_consultation_refused_then_flash_returns_to_the_held_call() -> None:
    line = connected()
    flash(line, 10.0)
    for i, d in enumerate("101"):
        line.dtmf_digit(d, 12.0 + 0.3 * i)
    line.set_call_id("out-2")
    line.call_ended("busy", 486, 13.0)
    assert PlayTone("busy") in line.actions() and line.state is S.WAIT_ONHOOK
    acts = flash(line, 14.0)
    assert acts[-3:] == [ResumeCall("out-1"), ConnectAudio("out-1"), StateChanged(S.CONNECTED)]


def test_flash_with_the_consultation_connected_joins_all_three() -> None:
    line = consulting()
    assert flash(line, 20.0) == [ResumeCall("out-1"), MixCalls(("out-2", "out-1"))]
    assert line.conference
    line.hook(False, 30.0)
    run(line, 31.0)
    assert line.actions() == [DisconnectAudio("out-2"), MixCalls(()), HangUp("out-2"),
                              HangUp("out-1"), StateChanged(S.IDLE)]
    assert not line.conference and line.call_ids() == ()


def test_conference_party_hangs_up_the_other_stays() -> None:
    line = consulting()
    flash(line, 20.0)
    line.for_call("out-2").call_ended("remote hangup", None, 21.0)
    assert line.actions() == [MixCalls(()), ConnectAudio("out-1")]
    assert line.call_id == "out-1" and line.state is S.CONNECTED
    line2 = consulting()
    flash(line2, 20.0)
    line2.for_call("out-1").call_ended("remote hangup", None, 21.0)
    assert line2.actions() == [MixCalls(())]
    assert line2.call_id == "out-2" and line2.state is S.CONNECTED


def test_flash_in_the_conference_drops_the_consultation_party() -> None:
    line = consulting()
    flash(line, 20.0)
    assert flash(line, 22.0) == [MixCalls(()), DisconnectAudio("out-2"), HangUp("out-2"),
                                 ConnectAudio("out-1")]
    assert line.call_id == "out-1" and not line.conference


def test_hanging_up_on_the_connected_consultation_is_an_attended_transfer() -> None:
    line = consulting()
    line.hook(False, 20.0)
    run(line, 21.0)
    assert line.actions() == [DisconnectAudio("out-2"), TransferCall("out-1", None, "out-2"),
                              StateChanged(S.IDLE)]
    pending = line.pending_transfer
    assert pending is not None and pending.call_id == "out-1"
    line.call_ended("transferred", None, 22.0, call_id="out-1")  # the runtime's BYE
    line.transfer_result(True, 22.5)
    assert line.actions() == [] and line.state is S.IDLE and line.pending_transfer is None


def test_failed_transfer_gives_the_held_call_back() -> None:
    line = consulting()
    line.hook(False, 20.0)
    run(line, 21.0)
    line.actions()
    line.transfer_result(False, 22.0)
    acts = line.actions()
    assert acts[0] == HangUp("out-2")
    assert SetRinging(True) in acts and line.state is S.RINGING and line.call_id == "out-1"
    line.hook(True, 24.0)
    run(line, 24.0 + 0.5)
    assert ResumeCall("out-1") in line.actions()


def test_hanging_up_while_the_consultation_rings_is_a_blind_transfer() -> None:
    line = connected()
    flash(line, 10.0)
    for i, d in enumerate("101"):
        line.dtmf_digit(d, 12.0 + 0.3 * i)
    line.set_call_id("out-2")
    line.call_progress(180, 13.0)
    line.actions()
    line.hook(False, 14.0)
    run(line, 15.0)
    assert line.actions() == [StopTone(), CancelCall("out-2"), TransferCall("out-1", "101", None),
                              StateChanged(S.IDLE)]


def test_transfer_off_hanging_up_on_the_consultation_recalls() -> None:
    line = connected(transfer_on_hangup=False)
    flash(line, 10.0)
    for i, d in enumerate("101"):
        line.dtmf_digit(d, 12.0 + 0.3 * i)
    line.set_call_id("out-2")
    line.call_answered(14.0)
    line.actions()
    line.hook(False, 20.0)
    run(line, 21.0)
    acts = line.actions()
    assert acts[:2] == [DisconnectAudio("out-2"), HangUp("out-2")]
    assert line.state is S.RINGING and line.call_id == "out-1"


def test_hanging_up_on_dial_tone_with_a_held_call_recalls() -> None:
    line = connected()
    flash(line, 10.0)
    line.hook(False, 12.0)
    run(line, 13.0)
    acts = line.actions()
    assert StopTone() in acts and SetRinging(True) in acts
    assert line.state is S.RINGING and line.call_id == "out-1"


def test_events_for_a_transferred_call_do_not_touch_the_next_call() -> None:
    line = consulting()
    line.hook(False, 20.0)
    run(line, 21.0)
    line.transfer_result(True, 21.5)
    line.incoming_call("in-9", "300", None, 30.0)
    line.hook(True, 31.0)
    run(line, 31.0 + 0.5)
    line.actions()
    line.call_ended("remote hangup", None, 32.0, call_id="out-2")
    line.call_ended("remote hangup", None, 32.0, call_id="out-1")
    assert line.actions() == [] and line.state is S.CONNECTED and line.call_id == "in-9"


def test_call_waiting_off_in_config_is_busy() -> None:
    line = connected(call_waiting=False)
    assert line.incoming_call("in-2", "200", None, 7.0) is IncomingResult.BUSY


def test_recall_rings_with_the_line_cadence_after_a_distinctive_ring() -> None:
    line = FxsLine("fxs1", digit_map=MAP, ring_cadence=(2.0, 4.0))
    line.incoming_call("in-1", "300", None, 0.0, ring_cadence=(0.8, 0.4, 0.8, 4.0))
    line.hook(True, 1.0)
    run(line, 1.5)
    waiting(line, 3.0)
    flash(line, 4.0)  # in-2 answered, in-1 held
    line.hook(False, 10.0)  # in-2 hung up on: the phone rings for in-1
    run(line, 11.0)
    assert line.state is S.RINGING and line.active_ring_cadence == (2.0, 4.0)
