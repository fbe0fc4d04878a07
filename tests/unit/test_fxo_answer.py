"""How an outgoing exchange-line call counts as answered (`answer:` on an FXO line):
`dialled` / `immediate` (the default: once the digits are out), `polarity` (the answer
reversal) and `voice` (sound after the ringback), through the pure machine and through the
runtime port against the simulated exchange (frame clock)."""

from __future__ import annotations

import pytest

from gateway.dsp import SILENCE_FRAME
from gateway.dsp.tones import ToneGenerator, ToneSpec, get_profile
from gateway.lines import events as lev
from gateway.lines.fxo import FxoLine, FxoSettings, FxoState
from gateway.runtime.fxo_port import VoiceAnswer, settings_from
from hal.fxo import check_fxo_options
from tests.unit.test_fxo_port import Rig


def dialled(line: FxoLine, number: str = "7") -> None:
    """Place a call and let it dial (dial tone at 0.5 s): the line is then CALLING."""
    assert line.place("o1", number, 0.0) is lev.IncomingResult.ACCEPTED
    line.tone("dial", 0.5)
    t = 0.5
    while (due := line.get_timer()) is not None and due <= t + 0.3 * len(number):
        line.handle_timer(due)
    line.actions()


def test_the_default_answers_once_dialled_and_immediate_is_its_other_name() -> None:
    assert FxoSettings().answer == "dialled"
    assert settings_from({}).answer == "dialled"
    assert settings_from({"answer": "immediate"}).answer == "dialled"
    assert settings_from({"answer": "voice"}).answer == "voice"
    assert check_fxo_options("sim", {"answer": "voice"}) == []
    assert check_fxo_options("sim", {"answer": "immediate"}) == []
    [problem] = check_fxo_options("sim", {"answer": "speech"})
    assert "answer" in problem.message and "voice" in problem.expected


def test_voice_mode_needs_ringback_then_sound() -> None:
    line = FxoLine("pstn", FxoSettings(answer="voice"))
    dialled(line)
    assert line.fxo_state is FxoState.CALLING
    line.tone("voice", 2.0)  # sound before any ringback (an announcement, our own echo)
    assert line.actions() == [] and line.fxo_state is FxoState.CALLING
    line.tone("ringback", 3.0)
    line.tone("voice", 6.0)
    assert line.actions()[-2:] == [lev.AnswerCall("o1"), lev.ConnectAudio("o1")]
    assert line.fxo_state is FxoState.CONNECTED


@pytest.mark.parametrize("mode", ["dialled", "polarity"])
def test_other_modes_ignore_ringback_and_voice(mode: str) -> None:
    line = FxoLine("pstn", FxoSettings(answer=mode))  # type: ignore[arg-type]
    dialled(line)
    before = line.fxo_state
    line.tone("ringback", 3.0)
    line.tone("voice", 6.0)
    assert lev.AnswerCall("o1") not in line.actions() and line.fxo_state is before


def test_voice_mode_gives_up_after_the_answer_timeout_with_480() -> None:
    line = FxoLine("pstn", FxoSettings(answer="voice", answer_timeout=20.0))
    dialled(line)
    line.tone("ringback", 3.0)
    line.handle_timer(21.0)
    assert lev.RejectCall("o1", 480) in line.actions()


def test_settings_refuse_an_unknown_answer_mode() -> None:
    with pytest.raises(ValueError, match="voice"):
        FxoSettings(answer="speech")  # type: ignore[arg-type]


@pytest.mark.parametrize("country", ["US", "UK", "DE"])
def test_voice_answer_detector_tells_ringback_from_the_answer(country: str) -> None:
    profile = get_profile(country)
    det = VoiceAnswer(list(profile.ringback.frequencies))
    ringback = ToneGenerator(profile.ringback)
    far = ToneGenerator(ToneSpec((1000.0,), level_dbfs=-16.0))
    frames = ([SILENCE_FRAME] * 50 + [ringback.next_frame() for _ in range(300)]
              + [far.next_frame() for _ in range(40)])
    got = [(i, r) for i, f in enumerate(frames) if (r := det.feed(f)) is not None]
    assert [r for _, r in got] == ["ringback", "voice"], got
    assert got[1][0] >= 350 + 19  # never during 6 s of ringback cadence, 400 ms into the voice


def test_voice_answer_through_the_port_waits_for_the_far_party() -> None:
    """The sim exchange rings the number 1 s after the last digit and answers 1 s later
    (no reversal): `voice` answers then, not when the digits are out."""
    rig = Rig(FxoSettings(answer="voice"))
    rig.port.fxo.place("o1", "42", 0.0)
    rig.actions += rig.port.fxo.actions()
    rig.run(2.2)
    assert rig.exchange.state == "ringback"
    assert rig.line.fxo_state is FxoState.CALLING and lev.AnswerCall("o1") not in rig.actions
    rig.run(0.6)
    assert rig.exchange.state == "talking" and lev.AnswerCall("o1") not in rig.actions
    rig.run(0.6)
    assert lev.AnswerCall("o1") in rig.actions and rig.line.fxo_state is FxoState.CONNECTED


def test_dialled_mode_answers_before_the_far_party_does() -> None:
    rig = Rig()
    rig.port.fxo.place("o1", "42", 0.0)
    rig.actions += rig.port.fxo.actions()
    rig.run(1.5)
    assert lev.AnswerCall("o1") in rig.actions and rig.exchange.state != "talking"
