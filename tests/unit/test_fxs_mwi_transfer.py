"""FxsLine's side of message waiting (VMWI when idle) and of being transferred
(`replace_call`), and the VMWI message bytes (gateway.dsp.callerid.vmwi_message)."""

from __future__ import annotations

from test_fxs_line import hang_up, lift, make_line

from gateway.dsp.callerid import BELL202, fsk, vmwi_message
from gateway.dsp.callerid_rx import fsk_bytes
from gateway.lines.events import PlayTone, SendVmwi


def test_vmwi_is_sent_when_idle_and_stutter_replaces_dial_tone() -> None:
    line = make_line()
    line.set_message_waiting(True)
    assert line.actions() == [SendVmwi(True)]
    assert PlayTone("stutter") in lift(line, 1.0)
    hang_up(line, 2.0)
    line.set_message_waiting(False)
    assert line.actions() == [SendVmwi(False)]
    assert PlayTone("dial") in lift(line, 3.0)


def test_vmwi_waits_for_the_line_to_go_idle() -> None:
    line = make_line()
    lift(line, 1.0)
    line.set_message_waiting(True)
    assert SendVmwi(True) not in line.actions()
    assert SendVmwi(True) in hang_up(line, 2.0)


def test_replace_call_moves_the_current_call() -> None:
    line = make_line()
    line.incoming_call("old", "300", None, 0.0)
    lift(line, 1.0)  # answered: connected
    assert not line.replace_call("other", "new")
    assert line.replace_call("old", "new")
    assert line.call_id == "new"
    assert line.state.value == "connected"


def test_vmwi_message_bytes_and_fsk_round_trip() -> None:
    on = vmwi_message(True)
    assert on == bytes([0x82, 0x03, 0x0B, 0x01, 0xFF, (-(0x82 + 3 + 0x0B + 1 + 0xFF)) & 0xFF])
    assert sum(vmwi_message(False)) % 256 == 0 and vmwi_message(False)[4] == 0x00
    assert vmwi_message(True, sdmf=True) == bytes([0x06, 0x03, 0x42, 0x42, 0x42,
                                                   (-(6 + 3 + 0x42 * 3)) & 0xFF])
    assert on in fsk_bytes(fsk(on, BELL202), BELL202)
