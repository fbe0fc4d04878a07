"""The simulated exchange's pair can be unplugged (what `line-test` on an FXO line must
catch): no loop current, no dial tone, no ringing, no digits heard; plugged back in, a
gateway already off hook gets loop current and dial tone. And the line-test report names
the simulated exchange."""

from __future__ import annotations

import pytest

from gateway.cli_line_test import format_report
from gateway.dsp.analysis import frequencies_present
from hal.base import HalError
from hal.sim.fxo_line import SimFxo


def seized() -> SimFxo:
    port = SimFxo("pstn", {"clock": "frames"})
    port.start(lambda on, t: None, lambda r, t: None, lambda ok, t: None)
    return port


def listen(port: SimFxo, seconds: float) -> bytes:
    out = b""
    for _ in range(round(seconds / 0.02)):
        out += port.read_frame() or b""
        port.write_frame(b"\0" * 320)
    return out


def test_an_unplugged_line_gives_no_loop_current_dial_tone_or_ring() -> None:
    port = seized()
    ex = port.exchange
    ex.unplug()
    with pytest.raises(HalError, match="unplugged"):
        ex.call_in("5551234")
    port.set_off_hook(True)
    pcm = listen(port, 0.6)
    assert ex.describe()["loop"] is False and ex.state == "idle"
    assert frequencies_present(pcm, [350.0, 440.0]) == ()
    ex.plug()
    pcm = listen(port, 0.6)
    assert ex.describe()["loop"] is True and ex.state == "dialtone"
    assert frequencies_present(pcm[-3200:], [350.0, 440.0]) == (350.0, 440.0)


def test_unplugging_ends_a_call_in_progress() -> None:
    port = seized()
    ex = port.exchange
    port.set_off_hook(True)
    listen(port, 0.2)
    ex.unplug()
    assert ex.calls[-1]["ended"] == "line unplugged" and ex.describe()["plugged"] is False


def test_the_report_says_where_it_was_measured() -> None:
    text = format_report({"line": "pstn", "backend": "sim", "where": "simulated exchange",
                          "checks": [{"name": "dial tone", "ok": True, "figure": "x"}]})
    assert text.splitlines()[0] == "line pstn (sim, simulated exchange)"
