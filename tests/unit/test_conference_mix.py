"""The three-way conference mix (gateway/runtime/bridge.py MixLeg through `plan`): the
handset hears both far ends, each far end hears the handset and the other far end, never
itself; 16-bit linear, saturating."""

from __future__ import annotations

from typing import Any

import numpy as np

from gateway.dsp import SILENCE_FRAME
from gateway.dsp.analysis import frequencies_present
from gateway.runtime.bridge import bridge, plan
from gateway.runtime.ports import PlainPort
from gateway.runtime.sip_calls import Call
from tests.unit.test_bridge import FakeAudio, tone_frames

FREQS = (300.0, 500.0, 700.0)


def port(name: str, hz: float, n: int = 10, dbfs: float = -12.0) -> PlainPort:
    return PlainPort(name, name, "fxs", None, FakeAudio(tone_frames(hz, n, dbfs)), Any)  # type: ignore[arg-type]


def local_pair(a: PlainPort, b: PlainPort, now: float = 0.0) -> tuple[Call, Call]:
    x = Call(f"{a.name}-{b.name}", a, "out", b.number, "local", now, audio=True)
    y = Call(f"{b.name}-{a.name}", b, "in", a.number, "local", now, audio=True)
    x.peer, y.peer = y, x
    b.call_id = y.call_id
    return x, y


def run(ports: list[Any], calls: dict[str, Call], ticks: int = 5) -> None:
    for k in range(ticks):
        for p in ports:
            p.capture()
        pairs, idle = plan(ports, calls)
        bridge(pairs, idle, k * 0.02)


def heard(p: PlainPort) -> bytes:
    return b"".join(p.audio.heard[1:])  # type: ignore[attr-defined]


def three_way(**levels: float) -> tuple[PlainPort, PlainPort, PlainPort, dict[str, Call]]:
    handset = port("h", 300.0, dbfs=levels.get("h", -12.0))
    a = port("a", 500.0, dbfs=levels.get("a", -12.0))
    b = port("b", 700.0, dbfs=levels.get("b", -12.0))
    ha, ah = local_pair(handset, a)
    hb, bh = local_pair(handset, b)
    handset.call_id = ha.call_id
    handset.mixing = (ha.call_id, hb.call_id)  # type: ignore[attr-defined]
    calls = {c.call_id: c for c in (ha, ah, hb, bh)}
    return handset, a, b, calls


def test_each_hears_the_other_two_and_never_itself() -> None:
    handset, a, b, calls = three_way()
    run([a, handset, b], calls)  # the peers first: the mixing port still claims them
    assert frequencies_present(heard(handset), FREQS) == (500.0, 700.0)
    assert frequencies_present(heard(a), FREQS) == (300.0, 700.0)
    assert frequencies_present(heard(b), FREQS) == (300.0, 500.0)


def test_without_mixing_the_handset_hears_only_its_current_call() -> None:
    handset, a, b, calls = three_way()
    handset.mixing = ()  # type: ignore[attr-defined]
    run([handset, a, b], calls)
    assert frequencies_present(heard(handset), FREQS) == (500.0,)
    assert b.audio.heard[-1] == SILENCE_FRAME  # type: ignore[attr-defined]


def test_the_mix_saturates_instead_of_wrapping() -> None:
    handset, a, b, calls = three_way(h=-1.0, a=-1.0, b=-1.0)
    run([handset, a, b], calls)
    for p in (handset, a, b):
        x = np.frombuffer(heard(p), dtype="<i2")
        assert x.max() == 32767 and x.min() == -32768
        # a wrap would flip the sign at the peaks: the samples next to a clipped one agree
        peaks = np.flatnonzero(x == 32767)
        assert (x[peaks[peaks < len(x) - 1] + 1] > 0).all()
