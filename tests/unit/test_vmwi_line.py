"""On-hook VMWI through the runtime's own path: `FxsLine.set_message_waiting` on an idle
line, its `SendVmwi` carried out by the daemon's LinePort onto a simulated port whose
handset records its earpiece and the loop polarity frame by frame.

ETSI EN 300 659-1 (data transmission not associated with ringing): a line reversal, DT-AS
at least 100 ms later, the V.23 data 45-75 ms after DT-AS, then normal polarity again.
Bellcore (GR-30-CORE) lines get the Bell 202 FSK alone, the line never reversed."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from gateway.dsp import SAMPLE_RATE
from gateway.dsp.analysis import frequencies_present
from gateway.dsp.callerid import (
    BELL202,
    DTAS_HZ,
    METHODS,
    V23,
    fsk,
    vmwi_message,
    vmwi_plan,
)
from gateway.dsp.callerid_rx import fsk_bytes
from gateway.dsp.tones import get_profile
from gateway.lines.fxs import FxsLine
from gateway.routing.dialplan import DigitMap
from gateway.runtime.ports import LinePort
from hal.sim.fxs import SimFxs

FRAME_S = 0.02


def lamp(country: str, on: bool = True, options: dict[str, Any] | None = None,
         seconds: float = 2.0, offhook_at: float | None = None
         ) -> tuple[bytes, list[tuple[float, str]]]:
    """Set the lamp on an idle line; (earpiece PCM, polarity changes) over `seconds`."""
    profile = get_profile(country)
    port = SimFxs("1", {"country": country, "clock": "frames"})
    line = FxsLine("1", digit_map=DigitMap("x"), ring_cadence=profile.ring_cadence)
    lp = LinePort("1", "201", SimpleNamespace(options=options or {}), port, line, profile)
    port.start(lambda off, t: line.hook(off, t))
    phone = port.phone
    line.set_message_waiting(on)
    polarity = [(0.0, phone.polarity)]
    for k in range(round(seconds / FRAME_S)):
        now = k * FRAME_S
        if offhook_at is not None and abs(now - offhook_at) < FRAME_S / 2:
            phone.off_hook()
        for action in line.actions():
            lp.carry_out(action)
        if phone.polarity != polarity[-1][1]:
            polarity.append((now, phone.polarity))
        lp.play(None)
    return phone.heard(seconds), polarity


def spans(pcm: bytes) -> list[tuple[float, float]]:
    """(start, end) of each stretch of sound (10 ms blocks, gaps under 30 ms joined)."""
    x = np.frombuffer(pcm, dtype="<i2").astype(float).reshape(-1, 80)
    out: list[tuple[float, float]] = []
    for i, loud in enumerate(np.abs(x).max(axis=1) > 50):
        t = i * 0.01
        if loud and out and t - out[-1][1] < 0.03:
            out[-1] = (out[-1][0], t + 0.01)
        elif loud:
            out.append((t, t + 0.01))
    return out


def cut(pcm: bytes, start: float, end: float) -> bytes:
    return pcm[2 * round(start * SAMPLE_RATE): 2 * round(end * SAMPLE_RATE)]


@pytest.mark.parametrize(("country", "on"), [("DE", True), ("UK", True), ("DE", False),
                                             ("FR", True)])
def test_etsi_vmwi_is_preceded_by_reversal_and_dtas(country: str, on: bool) -> None:
    assert METHODS[get_profile(country).callerid].modem is V23  # an ETSI FSK country
    ear, polarity = lamp(country, on)
    assert polarity[0] == (0.0, "normal") and polarity[1] == (0.0, "reversed"), polarity
    parts = spans(ear)
    assert len(parts) == 2, parts  # DT-AS, then the data
    (alert_start, alert_end), (data_start, data_end) = parts
    assert alert_start >= 0.1 - 0.01, parts  # >= 100 ms after the reversal
    assert 0.08 - 0.011 <= alert_end - alert_start <= 0.1 + 0.011, parts
    assert 0.045 - 0.011 <= data_start - alert_end <= 0.075 + 0.011, parts
    assert frequencies_present(cut(ear, alert_start, alert_end),
                               (*DTAS_HZ, 1300.0, 2100.0)) == DTAS_HZ
    assert vmwi_message(on) in fsk_bytes(cut(ear, data_start - 0.01, data_end + 0.01), V23)
    # Normal polarity again once the data is over.
    assert len(polarity) == 3 and polarity[2][1] == "normal", polarity
    assert data_end - 0.011 <= polarity[2][0] <= data_end + 0.05, (polarity, data_end)


def test_etsi_dtas_method_alerts_without_reversing() -> None:
    """A network whose caller ID is DT-AS without a reversal (etsi_fsk_dtas) alerts the
    same way for VMWI."""
    ear, polarity = lamp("DE", options={"callerid": "etsi_fsk_dtas"})
    assert polarity == [(0.0, "normal")]
    (alert_start, alert_end), (data_start, _) = spans(ear)
    assert frequencies_present(cut(ear, alert_start, alert_end),
                               (*DTAS_HZ, 1300.0, 2100.0)) == DTAS_HZ
    assert vmwi_message(True) in fsk_bytes(ear, V23)


@pytest.mark.parametrize("country", ["US", "AU"])
def test_other_lines_keep_plain_fsk(country: str) -> None:
    """Bellcore (US) stays plain Bell 202; AU is ETSI FSK (V.23) and alerts."""
    ear, polarity = lamp(country)
    method = METHODS[get_profile(country).callerid]
    if method.modem is V23:
        assert polarity[1][1] == "reversed"
        return
    assert polarity == [(0.0, "normal")]
    parts = spans(ear)
    assert len(parts) == 1, parts
    assert frequencies_present(ear, (*DTAS_HZ,)) == ()
    assert vmwi_message(True) in fsk_bytes(ear)


def test_lifting_the_handset_during_the_data_restores_polarity() -> None:
    _, polarity = lamp("DE", offhook_at=0.3)
    assert polarity[-1][1] == "normal", polarity


def test_vmwi_plan_shapes() -> None:
    us = vmwi_plan("bellcore", True)
    assert not us.reversal and us.pcm == fsk(vmwi_message(True), BELL202)
    de = vmwi_plan("etsi_fsk", True)
    assert de.reversal and de.seconds > us.seconds - 0.5
    assert not vmwi_plan("etsi_fsk_dtas", True).reversal
    assert vmwi_plan("bellcore_sdmf", False).pcm != us.pcm
