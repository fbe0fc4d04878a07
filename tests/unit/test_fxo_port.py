"""The runtime's FXO port (gateway/runtime/fxo_port.py) on the sim backend, frame by frame:
its caller ID decoder, its tone detector and its DTMF sender drive the real line machine,
with the simulated exchange on the far side and the exchange's frame clock as `now`."""

from __future__ import annotations

from typing import Any

from gateway.dsp.tones import get_profile
from gateway.lines import events as lev
from gateway.lines.fxo import FxoLine, FxoSettings, FxoState, IncomingOffer
from gateway.runtime.fxo_port import FxoLinePort, FxoMachine, settings_from
from hal.sim.fxo_line import SimFxo


class Rig:
    def __init__(self, settings: FxoSettings | None = None, **options: Any) -> None:
        self.hal = SimFxo("pstn", {"clock": "frames", **options})
        self.exchange = self.hal.exchange
        line = FxoLine("pstn", settings)
        self.port = FxoLinePort("pstn", "5550100", None, self.hal, FxoMachine(line, self.hal),
                                get_profile("US"), self.exchange.clock)
        self.offers: list[IncomingOffer] = []
        self.failed: list[tuple[str, int, str]] = []
        self.actions: list[lev.Action] = []
        self.port.fxo.on_offer = self.offers.append
        self.port.fxo.on_failed = lambda c, s, w: self.failed.append((c, s, w))
        self.hal.start(lambda on, t: line.ring(on, t), lambda r, t: line.polarity(r, t),
                       lambda ok, t: line.loop_current(ok, t))

    @property
    def line(self) -> FxoLine:
        return self.port.line

    def run(self, seconds: float, frame: bytes | None = None) -> None:
        """The runtime's tick: capture, machine, timers, play."""
        for _ in range(round(seconds / 0.02)):
            self.port.capture()
            now = self.exchange.clock()
            timer = self.line.get_timer()
            if timer is not None and timer <= now:
                self.line.handle_timer(now)
            self.actions += self.port.fxo.actions()
            self.port.play(frame if self.port.accepts_audio() else None)


def test_bellcore_caller_id_is_decoded_from_the_line_and_offers_the_call() -> None:
    rig = Rig()
    rig.exchange.call_in("5551234", "ALICE", method="bellcore")
    rig.run(2.4)
    assert rig.offers == [] and rig.line.fxo_state is FxoState.RINGING
    rig.run(1.2)  # the data in the silent interval after the first ring
    assert rig.offers == [IncomingOffer("5551234", "ALICE")]
    assert rig.exchange.clock() < 4.0  # not held back to the second ring (at 6 s)


def test_etsi_caller_id_before_the_first_ring_offers_at_that_ring() -> None:
    rig = Rig()
    rig.exchange.call_in("01632960123", None, method="etsi_fsk_prering")
    rig.run(0.8)
    assert rig.offers == []  # no ring yet
    rig.run(0.8)
    assert rig.offers == [IncomingOffer("01632960123", None)]


def test_outgoing_call_waits_for_dial_tone_and_the_exchange_hears_the_digits() -> None:
    rig = Rig()
    assert rig.port.fxo.place("o1", "5551234", 0.0) is lev.IncomingResult.ACCEPTED
    rig.actions += rig.port.fxo.actions()
    rig.run(0.2)
    assert rig.exchange.state == "dialtone" and rig.line.fxo_state is FxoState.SEIZED
    rig.run(2.0)
    assert rig.exchange.digits == "5551234"
    assert lev.AnswerCall("o1") in rig.actions and rig.line.fxo_state is FxoState.CONNECTED


def test_busy_tone_after_the_far_end_clears_hangs_up_within_three_seconds() -> None:
    """US busy (0.5/0.5 s) must hold over a full period before it counts: ~2.3 s on the
    frame clock (the first burst runs on from the far party's tone)."""
    rig = Rig(FxoSettings(dial_mode="delay", dial_delay=0.5))
    rig.port.fxo.place("o1", "42", 0.0)
    rig.actions += rig.port.fxo.actions()
    rig.run(4.0)
    assert rig.exchange.state == "talking"
    rig.exchange.far_hang_up("busy")
    cleared = rig.exchange.clock()
    while lev.HangUp("o1") not in rig.actions and rig.exchange.clock() - cleared < 5:
        rig.run(0.02)
    took = rig.exchange.clock() - cleared
    assert lev.HangUp("o1") in rig.actions and not rig.exchange.off_hook
    assert rig.line.end_reason == "busy tone" and took <= 3.0, took


def test_a_busy_number_is_busy_before_the_answer() -> None:
    rig = Rig(FxoSettings(answer="polarity"), reverse_on_answer=True)
    rig.exchange.busy_numbers.add("42")
    rig.port.fxo.place("o1", "42", 0.0)
    rig.actions += rig.port.fxo.actions()
    rig.run(4.0)
    assert rig.failed == [("o1", 486, "busy tone")]


def test_polarity_answer_supervision_through_the_port() -> None:
    rig = Rig(FxoSettings(answer="polarity"), reverse_on_answer=True)
    rig.port.fxo.place("o1", "42", 0.0)
    rig.actions += rig.port.fxo.actions()
    rig.run(2.0)
    assert rig.line.fxo_state is FxoState.CALLING and lev.AnswerCall("o1") not in rig.actions
    rig.run(1.5)  # number complete 1 s after the last digit, answered 1 s later
    assert lev.AnswerCall("o1") in rig.actions


def test_settings_from_options_take_milliseconds() -> None:
    s = settings_from({"dial_mode": "delay", "dial_delay_ms": 1500, "loop_drop_ms": 400,
                       "answer": "polarity", "wait_callerid": False})
    assert (s.dial_mode, s.dial_delay, s.loop_drop, s.answer, s.wait_callerid) == \
        ("delay", 1.5, 0.4, "polarity", False)


def test_etsi_dtmf_caller_id_before_the_ring_is_read_with_the_dtmf_detector() -> None:
    rig = Rig()
    rig.exchange.call_in("4930123456", None, method="etsi_dtmf_prering")
    rig.run(3.5)
    assert rig.offers == [IncomingOffer("4930123456", None)]


def test_a_withheld_caller_is_offered_as_withheld() -> None:
    rig = Rig()
    rig.exchange.call_in(None, None, withheld=True, method="bellcore")
    rig.run(4.0)
    assert rig.offers == [IncomingOffer(None, None, True)]


def test_the_daa_hybrid_echo_is_cancelled_on_a_held_line() -> None:
    """What the port sends comes back 6 dB down after 8 ms (the sim's hybrid); with the
    line's echo canceller the far party's tone is what the call hears, not our own."""
    from gateway.dsp.analysis import component_levels
    from gateway.dsp.tones import ToneGenerator, ToneSpec
    from gateway.runtime.fxo_port import echo_canceller_for

    results = {}
    for cancel in (False, True):
        rig = Rig(FxoSettings(dial_mode="delay", dial_delay=0.1), echo_delay_ms=8)
        options = {"echo_delay_ms": 8, "echo_canceller": cancel}
        rig.port.echo = echo_canceller_for("sim", options)
        assert (rig.port.echo is not None) is cancel
        rig.exchange.far_tone_hz = 1000.0
        rig.port.fxo.place("o1", "42", 0.0)
        rig.actions += rig.port.fxo.actions()
        rig.run(3.5)
        assert rig.exchange.state == "talking"
        ours = ToneGenerator(ToneSpec((700.0,), level_dbfs=-12.0)).next_frame
        mic = bytearray()
        for _ in range(150):  # 3 s of our 700 Hz going out, the far party's 1000 Hz coming in
            mic += rig.port.capture()
            rig.port.play(ours())
        levels = component_levels(bytes(mic[-320 * 50:]), (700.0, 1000.0))
        results[cancel] = levels
    echo_drop = results[False][700.0] - results[True][700.0]
    print(f"\necho of our 700 Hz: {results[False][700.0]:.1f} dBFS without the canceller, "
          f"{results[True][700.0]:.1f} with it; far party 1000 Hz {results[True][1000.0]:.1f}")
    assert echo_drop >= 20.0
    assert abs(results[True][1000.0] - results[False][1000.0]) <= 3.0
