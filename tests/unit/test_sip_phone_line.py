"""SipPhoneLine: a local SIP phone's call as a port machine (pure, fake clock)."""

from __future__ import annotations

from gateway.lines import PortMachine
from gateway.lines import events as lev
from gateway.lines.sip_phone import (
    AlertPhone,
    AnswerPhone,
    ByePhone,
    CancelPhone,
    PhoneSignal,
    RefusePhone,
    RingPhone,
    SipPhoneLine,
)

S = lev.LineState


def line() -> SipPhoneLine:
    return SipPhoneLine("phone:201", no_answer_timeout=30.0)


def test_meets_the_port_machine_protocol() -> None:
    machine: PortMachine = line()
    assert machine.state is S.IDLE and machine.call_id is None


def test_phone_dials_out_ringback_answer_and_far_end_hangs_up() -> None:
    m = line()
    assert m.phone_dialled("101", 0.0) is lev.IncomingResult.ACCEPTED
    assert m.actions() == [lev.StateChanged(S.CALLING), lev.PlaceCall("101")]
    m.set_call_id("c1")
    m.call_progress(180, 0.1)
    assert m.signals() == [AlertPhone(False)]
    assert m.state is S.RINGBACK
    m.call_progress(180, 0.2)  # a second 180 tells the phone nothing new
    assert m.signals() == []
    m.call_answered(1.0)
    assert m.signals() == [AnswerPhone()]
    assert m.actions() == [lev.StateChanged(S.RINGBACK), lev.StateChanged(S.CONNECTED),
                           lev.ConnectAudio("c1")]
    m.dtmf_digit("5", 1.5)
    assert m.actions() == [lev.SendDigit("c1", "5")]
    m.call_ended("remote hangup", None, 2.0)
    assert m.signals() == [ByePhone()]
    assert m.actions() == [lev.StateChanged(S.IDLE)]
    assert m.call_id is None


def test_failed_outgoing_call_refuses_the_phones_invite_with_the_status() -> None:
    m = line()
    m.phone_dialled("999", 0.0)
    m.call_ended("no route", 404, 0.0)
    assert m.signals() == [RefusePhone(404)]
    m.phone_dialled("101", 1.0)
    m.set_call_id("c2")
    m.call_ended("timeout", None, 2.0)  # no status: 480
    assert m.signals() == [RefusePhone(480)]
    assert m.state is S.IDLE


def test_early_media_connects_audio_before_answer() -> None:
    m = line()
    m.phone_dialled("5551234", 0.0)
    m.set_call_id("c1")
    m.actions()
    m.call_progress(183, 0.5, early_media=True)
    assert m.signals() == [AlertPhone(True)]
    assert m.actions() == [lev.StateChanged(S.EARLY_MEDIA), lev.ConnectAudio("c1")]
    m.call_answered(1.0)
    assert m.signals() == [AnswerPhone()] and m.state is S.CONNECTED


def test_phone_cancels_or_hangs_up_its_own_call() -> None:
    m = line()
    m.phone_dialled("101", 0.0)
    m.actions()
    m.phone_hung_up(0.1)  # CANCEL before the runtime named the call
    assert m.actions() == [lev.CancelCall(None), lev.StateChanged(S.IDLE)]
    m.phone_dialled("101", 1.0)
    m.set_call_id("c3")
    m.call_answered(1.5)
    m.actions()
    m.phone_hung_up(3.0)  # BYE
    assert m.actions() == [lev.HangUp("c3"), lev.StateChanged(S.IDLE)]
    assert m.signals() == [AnswerPhone()]


def test_busy_phone_refuses_a_second_call_both_ways() -> None:
    m = line()
    m.phone_dialled("101", 0.0)
    m.actions()
    assert m.incoming_call("x", "102", None, 0.1) is lev.IncomingResult.BUSY
    assert m.actions() == [lev.RejectCall("x", 486)]  # the runtime ends the caller's leg
    assert m.signals() == []  # nothing rings
    assert m.phone_dialled("102", 0.2) is lev.IncomingResult.BUSY


def test_call_for_the_phone_rings_its_bindings_and_the_first_answer_connects() -> None:
    m = line()
    assert m.incoming_call("in1", "101", "Front desk", 0.0) is lev.IncomingResult.ACCEPTED
    assert m.signals() == [RingPhone("in1", "101", "Front desk")]
    assert m.state is S.RINGING and m.call_id == "in1"
    m.phone_answered(2.0)
    assert m.actions() == [lev.StateChanged(S.RINGING), lev.StateChanged(S.CONNECTED),
                           lev.AnswerCall("in1"), lev.ConnectAudio("in1")]
    m.phone_answered(2.1)  # a second fork answering changes nothing
    assert m.actions() == []
    m.phone_hung_up(5.0)
    assert m.actions() == [lev.HangUp("in1"), lev.StateChanged(S.IDLE)]


def test_call_for_the_phone_refused_cancelled_or_unanswered() -> None:
    m = line()
    m.incoming_call("in1", "101", None, 0.0)
    m.phone_refused(486, 1.0)
    assert m.actions()[-2:] == [lev.RejectCall("in1", 486), lev.StateChanged(S.IDLE)]
    m.incoming_call("in2", "101", None, 2.0)
    m.signals()
    m.incoming_cancelled(3.0)
    assert m.signals() == [CancelPhone()] and m.state is S.IDLE
    m.incoming_call("in3", "101", None, 10.0)
    m.signals()
    m.actions()
    assert m.get_timer() == 40.0
    m.handle_timer(39.9)
    assert m.state is S.RINGING
    m.handle_timer(40.0)
    assert m.signals() == [CancelPhone()]
    assert m.actions() == [lev.RejectCall("in3", 480), lev.StateChanged(S.IDLE)]
    assert m.get_timer() is None


def test_caller_hangs_up_a_connected_call_for_the_phone() -> None:
    m = line()
    m.incoming_call("in1", "101", None, 0.0)
    m.phone_answered(1.0)
    m.call_ended("remote hangup", None, 2.0)
    assert m.signals() == [RingPhone("in1", "101", None), ByePhone()]


def test_actions_hand_signals_to_on_signal_first_in_order() -> None:
    m = line()
    seen: list[PhoneSignal] = []
    m.on_signal = seen.append
    m.phone_dialled("101", 0.0)
    m.set_call_id("c1")
    m.call_answered(1.0)
    actions = m.actions()
    assert seen == [AnswerPhone()]
    assert lev.ConnectAudio("c1") in actions
    assert m.signals() == []


def test_digits_outside_a_call_or_not_dtmf_are_dropped() -> None:
    m = line()
    m.dtmf_digit("1", 0.0)
    m.incoming_call("in1", "101", None, 0.0)
    m.dtmf_digit("1", 0.1)  # still ringing
    m.phone_answered(1.0)
    m.actions()
    m.dtmf_digit("x", 1.1)
    assert m.actions() == []
