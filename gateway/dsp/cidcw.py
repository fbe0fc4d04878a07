"""The call-waiting alert an FXS port plays over a call in progress, with off-hook
(type 2) caller ID: the country's call-waiting tone, then the CPE alerting signal, then
FSK caller ID once the phone acknowledges.

The sequence (Telcordia GR-575-CORE / SR-TSV-002476 "CIDCW"; ETSI EN 300 659-2 for the
off-hook ETSI form):

1. the call-waiting tone of the country profile (US: the subscriber alerting signal,
   440 Hz for 300 ms), its cadence up to the long silence that ends it;
2. the CPE alerting signal: 2130 + 2750 Hz for 80 ms (Bellcore CAS; ETSI calls the same
   dual tone DT-AS);
3. the phone mutes its handset and acknowledges with DTMF D (or A, an ADSI set); the
   port waits `ACK_WAIT` for it;
4. 50-500 ms after the acknowledgement, the caller ID: MDMF (date and time, number, name)
   as FSK with no channel seizure and 80 ms of marks, Bell 202 or V.23 as the line's
   method says. No acknowledgement: no data, and the call carries on.

DTMF caller ID methods (NL, IN, SA) have no off-hook form here: those lines get the tone
alone. Pure: frames out, the acknowledgement in; the port (gateway/runtime/ports.py)
plays the frames over the call and keeps the handset's audio from the far end meanwhile.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime

from gateway.dsp import FRAME_BYTES, FRAME_MS, SILENCE_FRAME
from gateway.dsp.callerid import METHODS, CallerId, dtas, fsk, mdmf_message
from gateway.dsp.tones import ToneGenerator, ToneProfile

__all__ = ["ACK_DIGITS", "ACK_WAIT", "CAS_SECONDS", "CallWaitingAlert", "cw_burst"]

CAS_SECONDS = 0.08
"""CPE alerting signal length (GR-575: 75-85 ms; EN 300 659-2 DT-AS: 80-85 ms)."""
TONE_TO_CAS = 0.02
"""Silence between the call-waiting tone and the CAS."""
ACK_WAIT = 0.3
"""How long after the CAS the port listens for the acknowledgement. GR-575 gives the set
100 ms to start it (55-65 ms long); the rest covers the DTMF detector's confirmation delay
on 20 ms frames."""
ACK_TO_DATA = 0.1
"""From the acknowledgement being heard to the first FSK bit (50-500 ms)."""
TYPE2_MARK_BITS = 96
"""80 ms of marks at 1200 baud; off-hook data has no channel seizure."""
ACK_DIGITS = frozenset("AD")

_FRAME_S = FRAME_MS / 1000.0


def cw_burst(profile: ToneProfile) -> bytes:
    """One alert of the country's call-waiting tone: its cadence without the final silence."""
    spec = profile.call_waiting
    seconds = sum(spec.cadence[:-1]) if len(spec.cadence) >= 2 else 0.3
    gen = ToneGenerator(spec)
    return b"".join(gen.next_frame() for _ in range(max(1, math.ceil(seconds / _FRAME_S))))


class CallWaitingAlert:
    """One alert, frame by frame: tone, then (with caller ID) CAS, the wait for the
    acknowledgement and the data."""

    def __init__(self, profile: ToneProfile, method: str, cid: CallerId | None,
                 when: datetime) -> None:
        self._pcm = bytearray(cw_burst(profile))
        self._data: bytes | None = None
        self._ack_frames = 0
        self.acknowledged: str | None = None
        m = METHODS.get(method)
        if cid is not None and m is not None and m.signal == "fsk":
            modem = replace(m.modem, seizure_bits=0, mark_bits=TYPE2_MARK_BITS)
            self._pcm += bytes(2 * round(TONE_TO_CAS * 8000)) + dtas(CAS_SECONDS)
            self._data = bytes(2 * round(ACK_TO_DATA * 8000)) + fsk(mdmf_message(cid, when),
                                                                     modem)
            self._ack_frames = math.ceil(ACK_WAIT / _FRAME_S)

    @property
    def awaiting_ack(self) -> bool:
        """The CAS has been sent and the phone's D/A may come now."""
        return not self._pcm and self._data is not None and self._ack_frames > 0

    @property
    def done(self) -> bool:
        return not self._pcm and not self.awaiting_ack

    def ack(self, digit: str) -> bool:
        """A digit from the handset: True when it was the acknowledgement (the data follows)."""
        if not self.awaiting_ack or digit not in ACK_DIGITS or self._data is None:
            return False
        self.acknowledged = digit
        self._pcm += self._data
        self._data = None
        return True

    def next_frame(self) -> bytes | None:
        """The earpiece's next 20 ms; None once the alert is over."""
        if self._pcm:
            frame = bytes(self._pcm[:FRAME_BYTES]).ljust(FRAME_BYTES, b"\0")
            del self._pcm[:FRAME_BYTES]
            return frame
        if self.awaiting_ack:
            self._ack_frames -= 1
            return SILENCE_FRAME
        return None
