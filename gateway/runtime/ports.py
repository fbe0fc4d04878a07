"""One analog port at run time: the hal port, its line state machine and its audio.

The line state machine (gateway.lines.fxs) is pure; this object carries out its actions on
the hardware port (ringing, tones) and owns the per-port audio processing that runs on every
20 ms tick: DTMF detection on the mouthpiece, tone generation for the earpiece.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from gateway.dsp import SILENCE_FRAME
from gateway.dsp.dtmf import DtmfDetector
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
