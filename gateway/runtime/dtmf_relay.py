"""DTMF from a handset's tones to the far end of its call, with the length the key was held.

A line's state machine asks for a digit to be sent (`SendDigit`) when the tone detector
confirms a press, about 40 ms into it; how long the key stays down is known only when the
detector sees the tone end. So a press that is still sounding is sent as it goes:

- ``sip.dtmf: rfc4733`` (the default): an RFC 4733 event opens at once, its duration field
  grows with every update, and the tone's end closes it with the measured length (whole
  20 ms slots) and three end packets. A peer without telephone-event keeps the tones in
  the audio, as it expects.
- ``sip.dtmf: info``: one SIP INFO (application/dtmf-relay) with ``Duration=`` the measured
  length, sent when the key is released; from the press's confirmation to its end the
  call's audio is silence, so the far end does not hear the digit twice.
- ``sip.dtmf: inband``: nothing is sent apart; the tones stay in the audio.

Digits that are not tones (rotary pulses) have no length to measure and go out as 100 ms.
The other direction (RFC 4733 or INFO in, tones to the handset) is `Port.play_digit`.
"""

from __future__ import annotations

import logging
from typing import Any

from gateway.runtime.ports import LinePort, Port
from gateway.sip.ua import UserAgent

log = logging.getLogger("branchline")

DEFAULT_MS = 100
"""Length given to a digit whose end cannot be measured (pulse dialling)."""
MIN_MS = 40
"""Shortest press sent on: Q.24's minimum, whatever the detector measured."""


class DtmfRelay:
    """Which port's held key is being relayed; the mode is `sip.dtmf`."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[str, str]] = {}  # port name -> (call id, digit)

    def pressed(self, mode: str, ua: UserAgent | None, call: Any, port: Port, digit: str,
                now: float) -> None:
        """The port's machine sent `digit` in `call` (a runtime Call with media)."""
        held = isinstance(port, LinePort) and port.detector.in_digit == digit
        if held:
            self._held[port.name] = (call.call_id, digit)
        else:
            self._held.pop(port.name, None)
        if mode == "info":
            call.media.mute_audio = held  # a held key's tones go as INFO, not in the audio
            if not held and ua is not None:
                ua.send_dtmf_info(call.call_id, digit, DEFAULT_MS, now)
            return
        if mode == "inband":
            return
        call.media.send_dtmf(digit, now, None if held else DEFAULT_MS)

    def released(self, mode: str, ua: UserAgent | None, calls: dict[str, Any], port: Port,
                 now: float) -> None:
        """After the port's audio was analysed: close the presses that ended."""
        if not isinstance(port, LinePort):
            return
        for end in port.detector.ended():
            held = self._held.get(port.name)
            if held is None or held[1] != end.digit:
                continue  # a dialling digit, not one sent in a call
            del self._held[port.name]
            call = calls.get(held[0])
            if call is None or call.media is None:
                continue
            ms = max(MIN_MS, end.duration_ms)
            log.debug("line %s: DTMF %s held %d ms", port.name, end.digit, end.duration_ms)
            if mode == "info":
                call.media.mute_audio = False
                if ua is not None:
                    ua.send_dtmf_info(call.call_id, end.digit, ms, now)
            elif mode != "inband":
                call.media.end_dtmf(ms)
