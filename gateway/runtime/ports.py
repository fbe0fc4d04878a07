"""One analog port at run time: the hal port, its line state machine and its audio.

The line state machine (gateway.lines.fxs) is pure; this object carries out its actions on
the hardware port (ringing, tones) and owns the per-port audio processing that runs on every
20 ms tick: DTMF detection on the mouthpiece, tone generation for the earpiece.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from gateway.dsp import FRAME_BYTES, SILENCE_FRAME
from gateway.dsp.dtmf import DtmfDetector
from gateway.dsp.dtmf import generate as dtmf_generate
from gateway.dsp.tones import ToneGenerator, ToneProfile
from gateway.lines.fxs import FxsLine
from hal.base import FxsPort

log = logging.getLogger("branchline.line")


@dataclass
class LinePort:
    """Everything the runtime keeps for one configured line."""

    name: str
    number: str
    config: Any
    port: FxsPort
    line: FxsLine
    profile: ToneProfile
    detector: DtmfDetector = field(default_factory=DtmfDetector)
    tone: ToneGenerator | None = None
    tone_name: str | None = None
    ringing: bool = False
    call_id: str | None = None
    mic: bytes = SILENCE_FRAME
    ear_digits: bytearray = field(default_factory=bytearray)

    def play_digit(self, digit: str, duration_ms: int) -> None:
        """Regenerate a digit the far end sent out of band, so the handset hears it in band."""
        if digit in "0123456789*#ABCD" and len(self.ear_digits) < 16000:
            self.ear_digits += dtmf_generate(digit, max(40, min(duration_ms, 500)))
            self.ear_digits += bytes(FRAME_BYTES * 3)  # a gap, so repeats stay separate

    def next_digit_frame(self) -> bytes | None:
        if not self.ear_digits:
            return None
        frame = bytes(self.ear_digits[:FRAME_BYTES]).ljust(FRAME_BYTES, b"\0")
        del self.ear_digits[:FRAME_BYTES]
        return frame

    def play_tone(self, name: str) -> None:
        try:
            spec = self.profile.tone(name)
        except KeyError:
            log.warning("line %s: no %s tone in profile; playing reorder", self.name, name)
            spec = self.profile.reorder
        self.tone = ToneGenerator(spec)
        self.tone_name = name

    def stop_tone(self) -> None:
        self.tone = None
        self.tone_name = None

    def set_ringing(self, on: bool) -> None:
        self.ringing = on
        self.port.set_ringing(on)

    @property
    def simulated_phone(self) -> Any:
        """The virtual handset attached to a simulated port, or None on real hardware."""
        return getattr(self.port, "phone", None)
