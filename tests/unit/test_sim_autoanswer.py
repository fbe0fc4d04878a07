"""The simulated phone's auto-answer: it lets benches and load tests call lines unattended.

Everything runs on the phone's frame clock (``clock: frames``): time advances only as the
test reads and writes 20 ms frames, so the timings below are exact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from gateway.dsp import FRAME_MS, SILENCE_FRAME
from gateway.dsp.tones import ToneGenerator, ToneSpec, get_profile
from hal.base import HalError
from hal.sim.fxs import SimFxs

Edge = tuple[bool, float]


def make(options: dict[str, object]) -> tuple[SimFxs, list[Edge]]:
    port = SimFxs("1", {"clock": "frames", **options})
    edges: list[Edge] = []
    port.start(lambda off, t: edges.append((off, t)))
    return port, edges


@pytest.fixture
def closing() -> Iterator[list[SimFxs]]:
    ports: list[SimFxs] = []
    yield ports
    for port in ports:
        port.close()


def pump(port: SimFxs, seconds: float, ear: Callable[[], bytes] | None = None) -> None:
    """Run the port like the daemon's tick does: read the mouthpiece, write the earpiece."""
    for _ in range(round(seconds * 1000 / FRAME_MS)):
        port.read_frame()
        port.write_frame(ear() if ear is not None else SILENCE_FRAME)


def tone(name: str) -> Callable[[], bytes]:
    return ToneGenerator(get_profile("US").tone(name)).next_frame


def test_answers_the_set_time_after_ringing_starts(closing: list[SimFxs]) -> None:
    port, edges = make({"auto_answer_ms": 300})
    closing.append(port)
    pump(port, 0.5)
    port.set_ringing(True)
    pump(port, 1.0)
    assert edges == [(True, pytest.approx(0.8))]
    assert port.phone.off_hook_now
    assert port.phone.auto_answered == 1


def test_without_the_option_the_phone_just_rings(closing: list[SimFxs]) -> None:
    port, edges = make({})
    closing.append(port)
    port.set_ringing(True)
    pump(port, 5.0)
    assert edges == []
    assert port.phone.ring_count == 1
    assert port.phone.auto_answer == (None, None)


def test_hangs_up_on_busy_tone_after_the_far_end_leaves(closing: list[SimFxs]) -> None:
    port, edges = make({"auto_answer_ms": 100})
    closing.append(port)
    port.set_ringing(True)
    pump(port, 0.2)
    port.set_ringing(False)  # the line stops ringing once it sees the answer
    pump(port, 1.0)  # the call: silence from the far end
    assert edges == [(True, pytest.approx(0.1))]
    pump(port, 3.0, ear=tone("busy"))  # the far end hung up: the line plays busy
    assert [off for off, _ in edges] == [True, False]
    hung_up_at = edges[1][1]
    assert 1.2 < hung_up_at < 1.2 + 1.5
    assert not port.phone.off_hook_now


def test_a_speech_like_tone_does_not_end_the_call(closing: list[SimFxs]) -> None:
    port, edges = make({"auto_answer_ms": 0})
    closing.append(port)
    port.set_ringing(True)
    pump(port, 0.1)
    port.set_ringing(False)
    pump(port, 3.0, ear=ToneGenerator(ToneSpec((1000.0,), level_dbfs=-16.0)).next_frame)
    assert [off for off, _ in edges] == [True]


def test_hangs_up_after_auto_hangup_ms(closing: list[SimFxs]) -> None:
    port, edges = make({"auto_answer_ms": 200, "auto_hangup_ms": 500})
    closing.append(port)
    port.set_ringing(True)
    pump(port, 0.4)
    port.set_ringing(False)
    pump(port, 1.0)
    assert edges == [(True, pytest.approx(0.2)), (False, pytest.approx(0.7))]


def test_answers_every_call_not_only_the_first(closing: list[SimFxs]) -> None:
    port, edges = make({"auto_answer_ms": 100, "auto_hangup_ms": 200})
    closing.append(port)
    for _ in range(3):
        port.set_ringing(True)
        pump(port, 0.2)
        port.set_ringing(False)
        pump(port, 1.0)
    assert [off for off, _ in edges] == [True, False] * 3
    assert port.phone.auto_answered == 3


def test_a_call_cancelled_before_the_answer_is_not_picked_up_late(
    closing: list[SimFxs],
) -> None:
    # Answer after 3 s: the first 2 s burst ends, and the caller gives up in the silence.
    port, edges = make({"auto_answer_ms": 3000})
    closing.append(port)
    port.set_ringing(True)
    pump(port, 2.0)
    port.set_ringing(False)
    pump(port, 0.5)
    # The phone cannot tell a cancel from the cadence's silence: it lifts at 3 s, hears
    # dial tone instead of a caller, and puts the handset back.
    pump(port, 2.0, ear=tone("dial"))
    assert [off for off, _ in edges] == [True, False]
    assert edges[0][1] == pytest.approx(3.0)
    # Long after the last ring, a pending answer is dropped instead.
    port2, edges2 = make({"auto_answer_ms": 9000})
    closing.append(port2)
    port2.set_ringing(True)
    pump(port2, 2.0)
    port2.set_ringing(False)
    pump(port2, 9.0)
    assert edges2 == []


def test_manual_hang_up_cancels_the_pending_auto_hang_up(closing: list[SimFxs]) -> None:
    port, edges = make({"auto_answer_ms": 0, "auto_hangup_ms": 1000})
    closing.append(port)
    port.set_ringing(True)
    pump(port, 0.1)
    port.set_ringing(False)
    port.phone.on_hook()
    pump(port, 0.2)  # a real break: the driver debounces a zero-length one away
    port.phone.off_hook()  # picked up again by hand, e.g. to dial out
    pump(port, 2.0)
    assert [off for off, _ in edges] == [True, False, True]
    assert port.phone.off_hook_now


def test_state_reports_auto_answered_calls(closing: list[SimFxs]) -> None:
    port, _ = make({"auto_answer_ms": 0, "auto_hangup_ms": 100})
    closing.append(port)
    port.set_ringing(True)
    pump(port, 0.5)
    assert port.phone.state()["auto_answered"] == 1
    assert port.phone.auto_answer == (0.0, 100.0)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"auto_answer_ms": -1}, "auto_answer_ms"),
        ({"auto_answer_ms": "soon"}, "auto_answer_ms"),
        ({"auto_answer_ms": True}, "auto_answer_ms"),
        ({"auto_hangup_ms": 100}, "needs auto_answer_ms"),
        ({"auto_answer_ms": 10, "auto_hangup_ms": -5}, "auto_hangup_ms"),
    ],
)
def test_bad_options_are_refused_by_name(options: dict[str, object], words: str) -> None:
    with pytest.raises(HalError, match=words):
        SimFxs("1", {"clock": "frames", **options})


def test_set_auto_answer_can_turn_it_off() -> None:
    port = SimFxs("1", {"clock": "frames", "auto_answer_ms": 100})
    edges: list[Edge] = []
    port.start(lambda off, t: edges.append((off, t)))
    try:
        port.phone.set_auto_answer(None)
        port.set_ringing(True)
        pump(port, 1.0)
        assert edges == []
        with pytest.raises(ValueError, match="answer_ms"):
            port.phone.set_auto_answer(-3)
    finally:
        port.close()
