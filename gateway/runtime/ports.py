"""Ports at run time: anything that can carry a call, with its state machine and its audio.

A port has a `kind` ("fxs" today; "fxo" and "gsm" next), a pure state machine from
gateway.lines (`PortMachine`) and an audio source and sink (a hal `AudioPort`). The runtime
drives every port through `Port`; what only one kind does (a handset's tones, ringing and
DTMF detection) stays inside that kind's class here, so the bridge and the call code never
ask what a port is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.dsp import FRAME_BYTES, SILENCE_FRAME
from gateway.dsp.dtmf import DtmfDetector
from gateway.dsp.dtmf import generate as dtmf_generate
from gateway.dsp.tones import ToneGenerator, ToneProfile
from gateway.lines import PortMachine
from gateway.lines import events as lev
from gateway.lines.fxs import FxsLine
from hal.base import AudioPort, FxsPort

log = logging.getLogger("branchline.line")


class Port(Protocol):
    """What the runtime, the bridge and the call code use of any port."""

    name: str
    number: str
    kind: str
    config: Any
    call_id: str | None
    mic: bytes

    @property
    def machine(self) -> PortMachine:
        """The port's pure call state machine."""
        ...

    @property
    def audio(self) -> AudioPort:
        """The hal audio source and sink (20 ms frames of 16-bit PCM each way)."""
        ...

    def capture(self) -> bytes:
        """Read this tick's 20 ms from the port's source (silence when it has none)."""
        ...

    def digits_heard(self) -> list[str]:
        """DTMF digits in the frame just captured, for kinds that dial in band; else []."""
        ...

    def accepts_audio(self) -> bool:
        """Whether bridged audio may reach the sink now (False while the port plays its own)."""
        ...

    def play(self, frame: bytes | None) -> None:
        """Write this tick's frame to the sink; None: nothing bridged (the port's own sound)."""
        ...

    def play_digit(self, digit: str, duration_ms: int) -> None:
        """A digit the far end sent out of band, for kinds that carry digits in band."""
        ...

    def carry_out(self, action: lev.Action) -> bool:
        """Do a port-local action (tone, ringing); False when it is the runtime's to do."""
        ...

    def close(self) -> None:
        ...


@dataclass
class PlainPort:
    """A port whose audio is only what is bridged: no tones, no ringing, no digit detection.

    For kinds whose far end makes its own call-progress sounds (a GSM channel, the network
    plays ringback) and for tests.
    """

    name: str
    number: str
    kind: str
    config: Any
    audio: AudioPort
    state_machine: PortMachine
    call_id: str | None = None
    mic: bytes = SILENCE_FRAME

    @property
    def machine(self) -> PortMachine:
        return self.state_machine

    def capture(self) -> bytes:
        self.mic = self.audio.read_frame() or SILENCE_FRAME
        return self.mic

    def digits_heard(self) -> list[str]:
        return []

    def accepts_audio(self) -> bool:
        return True

    def play(self, frame: bytes | None) -> None:
        self.audio.write_frame(frame if frame is not None else SILENCE_FRAME)

    def play_digit(self, digit: str, duration_ms: int) -> None:
        log.debug("port %s (%s): digit %s not carried", self.name, self.kind, digit)

    def carry_out(self, action: lev.Action) -> bool:
        return False

    def close(self) -> None:
        self.audio.close()


@dataclass
class LinePort:
    """An FXS line: a handset on a hal `FxsPort`, run by an `FxsLine`.

    It plays its own tones and ringing, regenerates out-of-band digits in band for the
    earpiece, and listens for DTMF on the mouthpiece while off hook.
    """

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
    caller_id: bytearray = field(default_factory=bytearray)
    kind: str = "fxs"

    @property
    def machine(self) -> PortMachine:
        return self.line

    @property
    def audio(self) -> AudioPort:
        return self.port

    def capture(self) -> bytes:
        self.mic = self.port.read_frame() or SILENCE_FRAME
        return self.mic

    def digits_heard(self) -> list[str]:
        if not self.port.is_off_hook():
            return []  # nobody can dial on an on-hook phone; spare the detector
        return self.detector.feed(self.mic)

    def accepts_audio(self) -> bool:
        return self.tone is None  # a tone (dial, ringback, busy) masks what is bridged

    def play(self, frame: bytes | None) -> None:
        if self.caller_id and self.port.is_off_hook():
            self.caller_id.clear()  # picked up during the caller ID: the call is heard
        if self.caller_id:  # on hook, between rings: nothing else is heard then
            ear = bytes(self.caller_id[:FRAME_BYTES]).ljust(FRAME_BYTES, b"\0")
            del self.caller_id[:FRAME_BYTES]
        elif self.tone is not None:
            ear = self.tone.next_frame()
        elif frame is not None:
            ear = self.next_digit_frame() or frame
        else:
            ear = SILENCE_FRAME
        self.port.write_frame(ear)

    def carry_out(self, action: lev.Action) -> bool:
        match action:
            case lev.PlayTone(name=name):
                self.play_tone(name)
            case lev.StopTone():
                self.stop_tone()
            case lev.SetRinging(on=on):
                self.set_ringing(on)
            case lev.SendCallerId(caller=caller, caller_name=name):
                self.send_caller_id(caller, name)
            case _:
                return False
        return True

    def close(self) -> None:
        self.port.close()

    def play_digit(self, digit: str, duration_ms: int) -> None:
        """Regenerate a digit the far end sent out of band, so the handset hears it in band.

        The tone lasts the event's (or INFO's Duration=) length: 40 ms to 8 s; up to 10 s
        of digits wait their turn, beyond that they are dropped.
        """
        if digit in "0123456789*#ABCD" and len(self.ear_digits) < 2 * 8000 * 10:
            self.ear_digits += dtmf_generate(digit, max(40, min(duration_ms, 8000)))
            self.ear_digits += bytes(FRAME_BYTES * 3)  # a gap, so repeats stay separate

    def send_caller_id(self, caller: str, name: str | None) -> None:
        """On-hook caller ID (Bell 202 FSK, MDMF) in this silent interval of the ringing."""
        from datetime import datetime

        from gateway.dsp.callerid import CallerId, bell202_fsk, mdmf_message

        withheld = not caller or name == "Withheld"
        number = caller.split(":", 1)[-1].split("@", 1)[0] if caller else None
        cid = CallerId(number or None, None if name == "Withheld" else name, withheld)
        self.caller_id[:] = bell202_fsk(mdmf_message(cid, datetime.now()))

    def set_ringing(self, on: bool) -> None:
        if on:
            self.caller_id.clear()  # never over the bell
        self.ringing = on
        self.port.set_ringing(on)

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

    @property
    def simulated_phone(self) -> Any:
        """The virtual handset attached to a simulated port, or None on real hardware."""
        return getattr(self.port, "phone", None)
