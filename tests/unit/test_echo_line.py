"""The echo canceller where the daemon runs it: LinePort.capture() on a sim FXS port whose
simulated hybrid (options echo_delay_ms / echo_erl_db) returns what the port plays."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from gateway.dsp.tones import get_profile
from gateway.lines.fxs import FxsLine
from gateway.routing.dialplan import DigitMap
from gateway.runtime.ports import LinePort
from hal.null import NullFxs
from hal.registry import check_fxs_options, create_fxs
from hal.sim.fxs import SimFxs
from tests.unit.test_echo import frames, speech_like


def line_port(options: dict[str, Any], backend: str = "sim") -> tuple[LinePort, SimFxs]:
    profile = get_profile("US")
    port = SimFxs("1", {"clock": "frames", **options})
    line = FxsLine("1", digit_map=DigitMap("x"), ring_cadence=profile.ring_cadence)
    config = SimpleNamespace(options=options, backend=backend)
    lp = LinePort("1", "201", config, port, line, profile)
    port.start(lambda off, t: line.hook(off, t))
    port.phone.off_hook()
    return lp, port


def energy_db(pcm: list[bytes]) -> float:
    x = np.concatenate([np.frombuffer(f, dtype="<i2").astype(np.float64) for f in pcm])
    return 10 * float(np.log10(x @ x + 1.0))


def talk_into(lp: LinePort, seconds: float) -> list[bytes]:
    """The far end talks: its voice goes to the earpiece; return what the mouthpiece gave."""
    mic = []
    for frame in frames(speech_like(seconds, seed=1)):
        mic.append(lp.capture())
        lp.play(frame)
    return mic


def test_sim_hybrid_echo_is_cancelled_in_capture() -> None:
    lp, port = line_port({"echo_delay_ms": 20, "echo_erl_db": 6})
    assert port.hybrid is not None
    mic = talk_into(lp, 3.0)
    assert lp.echo is not None and lp.echo.adapted_blocks > 0
    # the echo arrives 6 dB down (about 63 dB of energy per second here) ...
    raw = 10 * np.log10(sum(float(np.frombuffer(f, "<i2").astype(float) @
                                  np.frombuffer(f, "<i2").astype(float))
                              for f in frames(speech_like(3.0, seed=1))[50:]) / 4)
    # ... and after the first second less than -25 dB of it is left (the NLP takes more)
    assert energy_db(mic[50:]) < raw - 25


def test_echo_canceller_can_be_turned_off_per_line() -> None:
    lp, _ = line_port({"echo_delay_ms": 20, "echo_canceller": False})
    mic = talk_into(lp, 2.0)
    assert lp.echo is None
    played = frames(speech_like(2.0, seed=1))
    assert energy_db(mic[50:]) > energy_db(played[50:]) - 12  # the echo, some 6-9 dB down


def test_echo_canceller_defaults() -> None:
    hw = SimpleNamespace(options={}, backend="ag1171")
    sim = SimpleNamespace(options={}, backend="sim")
    lp = LinePort("1", "201", hw, port=None, line=None, profile=None)  # type: ignore[arg-type]
    assert lp.echo_canceller() is not None  # on by default on hardware
    lp = LinePort("1", "201", sim, port=None, line=None, profile=None)  # type: ignore[arg-type]
    assert lp.echo_canceller() is None  # the plain sim has no hybrid to cancel
    assert check_fxs_options("ag1171", {"shk_pin": 1, "rm_pin": 2, "fr_pin": 3,
                                        "echo_canceller": "yes"})
    assert not check_fxs_options("sim", {"echo_delay_ms": 5, "echo_erl_db": 6,
                                         "echo_canceller": True, "echo_tail_ms": 128})


def test_null_backend_says_a_steady_tone_and_answers_when_rung() -> None:
    port = create_fxs("null", "9", {"auto_answer_ms": 40, "auto_hangup_ms": 100})
    assert isinstance(port, NullFxs)
    edges: list[bool] = []
    port.start(lambda off, t: edges.append(off))
    assert port.read_frame() is None  # on hook: silent
    port.set_ringing(True)
    got = [port.read_frame() for _ in range(10)]
    assert edges == [True, False]  # answered after 40 ms of ringing, hung up 100 ms later
    said = [f for f in got if f is not None]
    x = np.concatenate([np.frombuffer(f, "<i2").astype(np.float64) for f in said])
    spectrum = np.abs(np.fft.rfft(x))
    assert np.argmax(spectrum) * 8000 / x.size == pytest.approx(1000, abs=10)
    rms_dbm0 = 20 * np.log10(np.sqrt(np.mean(x * x)) / (32768 * 10 ** (-3.14 / 20) / np.sqrt(2)))
    assert rms_dbm0 == pytest.approx(-20, abs=0.1)
    port.write_frame(bytes(320))
    assert port.frames_heard == 1
