"""The FXO line machine: every path through a fake clock, first and last cases, races."""

from __future__ import annotations

import pytest

from gateway.lines import events as lev
from gateway.lines.fxo import (
    DialDigit,
    FxoLine,
    FxoSettings,
    FxoState,
    IncomingOffer,
    SetHook,
)


def run(line: FxoLine, until: float) -> None:
    """Fire every timer due up to `until`."""
    while (t := line.get_timer()) is not None and t <= until:
        line.handle_timer(t)


def ring_burst(line: FxoLine, start: float, length: float = 2.0) -> None:
    line.ring(True, start)
    run(line, start + length)
    line.ring(False, start + length)


def offers(actions: list[object]) -> list[IncomingOffer]:
    return [a for a in actions if isinstance(a, IncomingOffer)]


# --- incoming ------------------------------------------------------------------------


def test_bellcore_caller_id_between_rings_offers_the_call_with_the_number() -> None:
    line = FxoLine("pstn")
    ring_burst(line, 0.0)
    first = line.actions()
    assert offers(first) == [] and line.fxo_state is FxoState.RINGING
    assert lev.StateChanged(lev.LineState.RINGING) in first
    line.caller_id("5551234", "ALICE", False, 3.0)  # in the silent interval
    assert offers(line.actions()) == [IncomingOffer("5551234", "ALICE")]
    ring_burst(line, 6.0)
    assert offers(line.actions()) == []  # offered once


def test_no_caller_id_offers_at_the_second_ring() -> None:
    line = FxoLine("pstn")
    ring_burst(line, 0.0)
    assert offers(line.actions()) == []
    line.ring(True, 6.0)
    run(line, 6.1)
    assert offers(line.actions()) == []  # 100 ms is not a ring yet
    run(line, 6.2)
    assert offers(line.actions()) == [IncomingOffer(None, None)]


def test_etsi_caller_id_before_the_first_ring_offers_at_that_ring() -> None:
    line = FxoLine("pstn")
    line.polarity(True, 0.0)  # the reversal before the data is not a call event
    line.caller_id("01632960123", None, False, 0.6)
    assert line.actions() == [] and line.fxo_state is FxoState.IDLE
    line.polarity(False, 1.1)
    line.ring(True, 1.2)
    run(line, 1.4)
    assert offers(line.actions()) == [IncomingOffer("01632960123", None)]


def test_a_caller_id_from_long_before_belongs_to_no_call() -> None:
    line = FxoLine("pstn")
    line.caller_id("111", None, False, 0.0)
    ring_burst(line, 10.0)
    assert offers(line.actions()) == []
    ring_burst(line, 16.0)
    assert offers(line.actions()) == [IncomingOffer(None, None)]


def test_withheld_caller_is_offered_as_withheld() -> None:
    line = FxoLine("pstn")
    ring_burst(line, 0.0)
    line.caller_id(None, None, True, 2.7)
    assert offers(line.actions()) == [IncomingOffer(None, None, True)]


def test_a_line_without_caller_id_offers_at_the_first_ring() -> None:
    line = FxoLine("pstn", FxoSettings(wait_callerid=False))
    line.ring(True, 0.0)
    run(line, 0.15)
    assert offers(line.actions()) == [IncomingOffer(None, None)]


def test_a_spike_shorter_than_ring_min_is_no_ring() -> None:
    line = FxoLine("pstn")
    line.ring(True, 0.0)
    run(line, 0.1)
    line.ring(False, 0.1)
    run(line, 10.0)
    assert line.actions() == [] and line.fxo_state is FxoState.IDLE


def test_answer_by_the_other_leg_seizes_and_connects() -> None:
    line = FxoLine("pstn")
    ring_burst(line, 0.0)
    line.caller_id("5551234", None, False, 2.5)
    line.actions()
    line.set_call_id("c1")
    line.call_answered(4.0)
    acts = line.actions()
    assert acts == [SetHook(True), lev.StateChanged(lev.LineState.CONNECTED),
                    lev.ConnectAudio("c1")]
    run(line, 30.0)  # no ring gap runs out on an answered call
    assert line.fxo_state is FxoState.CONNECTED


def test_caller_gives_up_before_answer_cancels_the_call() -> None:
    line = FxoLine("pstn")
    ring_burst(line, 0.0)
    line.caller_id("5551234", None, False, 2.5)
    line.set_call_id("c1")
    line.actions()
    ring_burst(line, 6.0)
    run(line, 8.0 + 6.4)
    assert line.actions() == []  # the gap is not over yet
    run(line, 8.0 + 6.5)
    assert line.actions() == [lev.CancelCall("c1"), lev.StateChanged(lev.LineState.IDLE)]


def test_a_refused_call_rings_out_and_is_never_offered_again() -> None:
    line = FxoLine("pstn")
    ring_burst(line, 0.0)
    line.caller_id("5551234", None, False, 2.5)
    line.set_call_id("c1")
    line.actions()
    line.call_ended("busy", 486, 2.6)
    ring_burst(line, 6.0)
    assert line.actions() == [] and not line.off_hook
    run(line, 20.0)
    assert line.actions() == [lev.StateChanged(lev.LineState.IDLE)]


# --- outgoing ------------------------------------------------------------------------


def place(line: FxoLine, number: str = "5551234", now: float = 0.0) -> None:
    assert line.place("o1", number, now) is lev.IncomingResult.ACCEPTED


def digits_sent(actions: list[object]) -> str:
    return "".join(a.digit for a in actions if isinstance(a, DialDigit))


def test_outgoing_waits_for_dial_tone_then_dials_each_digit_and_answers() -> None:
    line = FxoLine("pstn")
    place(line, "5551234")
    assert line.actions() == [SetHook(True), lev.StateChanged(lev.LineState.CALLING)]
    run(line, 0.9)
    assert line.actions() == []  # nothing before the dial tone
    line.tone("dial", 1.0)
    acts = line.actions()
    assert digits_sent(acts) == "5"
    for t in (1.2, 1.4, 1.6, 1.8, 2.0, 2.2):
        run(line, t + 0.001)
    assert digits_sent(line.actions()) == "551234"
    run(line, 2.401)
    assert line.actions() == [lev.StateChanged(lev.LineState.RINGBACK),
                              lev.StateChanged(lev.LineState.CONNECTED),
                              lev.AnswerCall("o1"), lev.ConnectAudio("o1")]


def test_delay_mode_dials_after_the_delay_without_dial_tone() -> None:
    line = FxoLine("pstn", FxoSettings(dial_mode="delay", dial_delay=1.5))
    place(line, "12")
    line.actions()
    run(line, 1.49)
    assert line.actions() == []
    run(line, 1.5)
    assert digits_sent(line.actions()) == "1"


def test_no_dial_tone_fails_with_503_and_releases() -> None:
    line = FxoLine("pstn")
    place(line)
    line.actions()
    run(line, 3.0)
    acts = line.actions()
    assert SetHook(False) in acts and lev.RejectCall("o1", 503) in acts
    assert line.end_reason == "no dial tone" and line.fxo_state is FxoState.GUARD


def test_busy_before_answer_is_486_and_reorder_503() -> None:
    for tone, status in (("busy", 486), ("reorder", 503)):
        line = FxoLine("pstn", FxoSettings(answer="polarity"))
        place(line, "1")
        line.tone("dial", 0.5)
        run(line, 0.7)
        line.actions()
        line.tone(tone, 3.0)
        assert lev.RejectCall("o1", status) in line.actions()


def test_polarity_answer_mode_answers_at_the_reversal() -> None:
    line = FxoLine("pstn", FxoSettings(answer="polarity"))
    place(line, "7")
    line.tone("dial", 0.5)
    run(line, 0.7)
    line.actions()
    assert line.fxo_state is FxoState.CALLING
    line.polarity(True, 5.0)
    assert line.actions()[-2:] == [lev.AnswerCall("o1"), lev.ConnectAudio("o1")]
    line.polarity(False, 9.0)  # reversed back: the far end cleared
    acts = line.actions()
    assert SetHook(False) in acts and lev.HangUp("o1") in acts
    assert line.end_reason == "polarity reversal"


def test_polarity_answer_mode_gives_up_after_the_answer_timeout() -> None:
    line = FxoLine("pstn", FxoSettings(answer="polarity", answer_timeout=20.0))
    place(line, "7")
    line.tone("dial", 0.5)
    run(line, 0.7)
    line.actions()
    run(line, 20.7)
    assert lev.RejectCall("o1", 480) in line.actions()


def test_the_line_is_busy_while_ringing_held_or_resting() -> None:
    line = FxoLine("pstn")
    line.ring(True, 0.0)  # a burst not yet validated is already a call coming in
    assert line.place("x", "1", 0.05) is lev.IncomingResult.BUSY
    run(line, 0.2)
    assert line.place("x", "1", 0.3) is lev.IncomingResult.BUSY
    other = FxoLine("b")
    place(other)
    assert other.place("y", "2", 0.1) is lev.IncomingResult.BUSY
    other.hang_up(0.2)
    assert other.place("y", "2", 0.5) is lev.IncomingResult.BUSY  # release guard
    run(other, 1.2)
    assert other.place("y", "2", 1.2) is lev.IncomingResult.ACCEPTED


def test_hang_up_while_dialling_stops_the_digits() -> None:
    line = FxoLine("pstn")
    place(line, "5551234")
    line.tone("dial", 0.5)
    run(line, 0.7)
    line.actions()
    line.call_ended("remote hangup", None, 0.8)
    run(line, 5.0)
    acts = line.actions()
    assert digits_sent(acts) == "" and acts[0] == SetHook(False)


def test_bad_numbers_are_refused() -> None:
    with pytest.raises(ValueError):
        FxoLine("p").place("c", "12x", 0.0)


# --- disconnect supervision ----------------------------------------------------------


def connected(settings: FxoSettings | None = None) -> FxoLine:
    line = FxoLine("pstn", settings or FxoSettings(dial_mode="delay", dial_delay=0.0))
    line.loop_current(False, 0.0)  # no current on hook
    place(line, "1")
    line.loop_current(True, 0.05)
    run(line, 0.5)
    assert line.fxo_state is FxoState.CONNECTED
    line.actions()
    return line


def test_busy_tone_while_connected_hangs_up() -> None:
    line = connected()
    line.tone("busy", 10.0)
    assert line.actions() == [SetHook(False), lev.StateChanged(lev.LineState.WAIT_ONHOOK),
                              lev.HangUp("o1")]
    run(line, 11.0)
    assert line.actions() == [lev.StateChanged(lev.LineState.IDLE)]


def test_loop_current_loss_longer_than_loop_drop_hangs_up() -> None:
    line = connected()
    line.loop_current(False, 10.0)
    line.loop_current(True, 10.2)  # a 200 ms blip (a flash elsewhere): kept
    run(line, 12.0)
    assert line.actions() == []
    line.loop_current(False, 12.0)
    run(line, 12.24)
    assert line.actions() == []
    run(line, 12.25)
    assert lev.HangUp("o1") in line.actions()
    assert line.end_reason == "loop current lost"


def test_no_loop_current_after_seizing_fails_the_call() -> None:
    line = FxoLine("pstn")
    line.loop_current(False, 0.0)
    place(line)
    run(line, 0.56)
    assert lev.RejectCall("o1", 503) in line.actions()
    assert line.end_reason == "no loop current"


def test_polarity_reversal_while_connected_hangs_up_unless_turned_off() -> None:
    line = connected()
    line.polarity(True, 8.0)
    assert lev.HangUp("o1") in line.actions()
    quiet = connected(FxoSettings(dial_mode="delay", dial_delay=0.0,
                                  reversal_disconnect=False))
    quiet.polarity(True, 8.0)
    assert quiet.actions() == [] and quiet.fxo_state is FxoState.CONNECTED


def test_a_reversal_inside_the_seize_guard_counts_only_if_it_stays() -> None:
    line = FxoLine("pstn", FxoSettings(dial_mode="delay", dial_delay=0.0, seize_guard=0.3))
    place(line, "1")
    run(line, 0.2)
    line.actions()
    line.polarity(True, 0.25)  # a glitch of the seize...
    line.polarity(False, 0.27)  # ...that went back
    run(line, 1.0)
    assert line.fxo_state is FxoState.CONNECTED and line.actions() == []
    line2 = FxoLine("pstn", FxoSettings(dial_mode="delay", dial_delay=0.0, seize_guard=0.3))
    place(line2, "1")
    run(line2, 0.2)
    line2.actions()
    line2.polarity(True, 0.25)  # the far end cleared at once: seen once the guard is over
    assert line2.actions() == []
    run(line2, 0.3)
    assert lev.HangUp("o1") in line2.actions()


def test_rings_during_the_release_guard_are_ignored() -> None:
    line = connected()
    line.tone("busy", 5.0)
    line.actions()
    line.ring(True, 5.1)
    run(line, 5.5)
    line.ring(False, 5.5)
    run(line, 6.0)
    assert offers(line.actions()) == [] and line.fxo_state is FxoState.IDLE


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="dial_mode"):
        FxoSettings(dial_mode="pulse")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="loop_drop"):
        FxoSettings(loop_drop=-1)


# --- races -----------------------------------------------------------------------------


def test_a_caller_id_after_the_offer_is_not_a_second_call() -> None:
    line = FxoLine("pstn")
    ring_burst(line, 0.0)
    ring_burst(line, 6.0)  # offered at the second ring, no caller ID
    assert offers(line.actions()) == [IncomingOffer(None, None)]
    line.caller_id("5551234", None, False, 8.5)  # late data: same call
    assert offers(line.actions()) == []


def test_an_answer_after_the_caller_gave_up_does_not_seize() -> None:
    line = FxoLine("pstn")
    ring_burst(line, 0.0)
    line.caller_id("5551234", None, False, 2.5)
    line.set_call_id("c1")
    run(line, 2.0 + 6.5)  # gave up
    line.actions()
    line.call_answered(8.5)
    assert line.actions() == [] and not line.off_hook


def test_rings_while_seized_for_an_outgoing_call_are_ignored() -> None:
    line = FxoLine("pstn")
    place(line, "12")
    line.actions()
    line.ring(True, 0.05)  # glare: the exchange was about to ring
    run(line, 0.3)
    line.ring(False, 0.3)
    assert offers(line.actions()) == [] and line.fxo_state is FxoState.SEIZED


def test_polarity_reversals_on_an_idle_line_are_no_call() -> None:
    line = FxoLine("pstn")
    line.polarity(True, 0.0)
    line.polarity(False, 1.0)
    run(line, 10.0)
    assert line.actions() == [] and line.fxo_state is FxoState.IDLE
