"""Ports at run time: anything that can carry a call, with its state machine and its audio.

A port has a `kind` ("fxs" today; "fxo" and "gsm" next), a pure state machine from
gateway.lines (`PortMachine`) and an audio source and sink (a hal `AudioPort`). The runtime
drives every port through `Port`; what only one kind does (a handset's tones, ringing and
DTMF detection) stays inside that kind's class here, so the bridge and the call code never
ask what a port is.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from gateway.dsp import FRAME_BYTES, FRAME_MS, SILENCE_FRAME
from gateway.dsp.dtmf import DigitPlayer, DtmfDetector
from gateway.dsp.tones import ToneGenerator, ToneProfile
from gateway.lines import PortMachine
from gateway.lines import events as lev
from gateway.lines.events import LineState
from gateway.lines.fxs import FxsLine
from hal.base import AudioPort, FxsPort

if TYPE_CHECKING:
    from gateway.dsp.callerid import CallerIdPlan
    from gateway.dsp.cidcw import CallWaitingAlert
    from gateway.dsp.echo import EchoCanceller

FRAME_S = FRAME_MS / 1000

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


def machine_for(port: Port, call_id: str) -> PortMachine:
    """The port's machine as told about one call: an FXS line can have two (call waiting,
    consultation), so its call events name the call; other kinds have one at a time."""
    machine = port.machine
    if isinstance(machine, FxsLine):
        return machine.for_call(call_id)
    return machine


class PortTable(dict[str, Port]):
    """The runtime's ports by name, telling it when one is added or taken away.

    A plain dict to everything that reads it; `on_add` and `on_remove` let the runtime keep
    its own indexes (which ports to poll, which ones signal their changes) in step.
    """

    def __init__(self, on_add: Callable[[Port], None],
                 on_remove: Callable[[Port], None]) -> None:
        super().__init__()
        self._on_add = on_add
        self._on_remove = on_remove

    def __setitem__(self, name: str, port: Port) -> None:
        old = self.get(name)
        if old is not None:
            self._on_remove(old)
        super().__setitem__(name, port)
        self._on_add(port)

    def __delitem__(self, name: str) -> None:
        port = self[name]
        super().__delitem__(name)
        self._on_remove(port)

    def pop(self, name: str, *default: Any) -> Any:
        if name not in self:
            return super().pop(name, *default)
        port = super().pop(name)
        self._on_remove(port)
        return port


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
    ear_digits: DigitPlayer = field(default_factory=DigitPlayer)
    caller_id: bytearray = field(default_factory=bytearray)
    kind: str = "fxs"
    cid_pending: CallerIdPlan | None = None
    """Caller ID waiting for a silent interval long enough to hold it."""
    bell_queue: list[tuple[int, bool]] = field(default_factory=list)
    """Bell changes held back (frame due, on) while caller ID goes before the first ring."""
    bell_delay: int = 0
    frames: int = 0
    ring_index: int = -1
    echo: EchoCanceller | None = None
    """The line's echo canceller (options.echo_canceller), made when first needed."""
    echo_checked: bool = False
    ear_recent: int = 0  # frames since something audible went to the earpiece, counting down
    last_ear: bytes = SILENCE_FRAME
    mixing: tuple[str, ...] = ()
    """Calls mixed with the handset (three-way conference); the bridge reads this."""
    cw_alert: CallWaitingAlert | None = None
    """A call-waiting alert sounding over the call (gateway.dsp.cidcw)."""
    mic_heard: bytes = SILENCE_FRAME
    """The mouthpiece as captured, for DTMF detection; `mic` is muted during an alert."""
    vmwi_reversed: bool = False
    """The line is reversed for an ETSI VMWI still being sent (normal again after it)."""

    @property
    def machine(self) -> PortMachine:
        return self.line

    @property
    def audio(self) -> AudioPort:
        return self.port

    def capture(self) -> bytes:
        mic = self.port.read_frame() or SILENCE_FRAME
        if self.ear_recent > 0 and self.port.is_off_hook():
            # take the hybrid's echo of what we played out of what the handset sends
            ec = self.echo_canceller()
            if ec is not None:
                mic = ec.process(self.last_ear, mic)
        self.mic_heard = mic
        # The phone mutes its own handset for the alert and answers it in DTMF: none of
        # that is for the far end.
        self.mic = mic if self.cw_alert is None else SILENCE_FRAME
        return self.mic

    def echo_canceller(self) -> EchoCanceller | None:
        """The line's echo canceller: on by default on hardware, and on the sim backend when
        it simulates a hybrid echo (echo_delay_ms); `options.echo_canceller` decides."""
        if not self.echo_checked:
            self.echo_checked = True
            options = getattr(self.config, "options", None) or {}
            backend = getattr(self.config, "backend", "sim")
            default = backend not in ("sim", "null") or "echo_delay_ms" in options
            if options.get("echo_canceller", default):
                from gateway.dsp.echo import EchoCanceller

                self.echo = EchoCanceller(int(options.get("echo_tail_ms", 64)))
        return self.echo

    def digits_heard(self) -> list[str]:
        if not self.port.is_off_hook():
            return []  # nobody can dial on an on-hook phone; spare the detector
        if self.cw_alert is None:
            return self.detector.feed(self.mic)
        digits = self.detector.feed(self.mic_heard)  # `mic` is muted for the far end
        if self.cw_alert is not None:
            for digit in digits:
                self.cw_alert.ack(digit)  # D or A: the phone asks for the caller ID
            return []
        return digits

    def accepts_audio(self) -> bool:
        return self.tone is None  # a tone (dial, ringback, busy) masks what is bridged

    def play(self, frame: bytes | None) -> None:
        self.frames += 1
        if self.ring_index >= 0 and self.port.is_off_hook():
            self._end_call_signals()  # answered: no held bell, no caller ID still to come
        while self.bell_queue and self.bell_queue[0][0] <= self.frames:
            self._bell(self.bell_queue.pop(0)[1])
        if self.caller_id and self.port.is_off_hook():
            self.caller_id.clear()  # picked up during the caller ID: the call is heard
        if self.cw_alert is not None and not self.port.is_off_hook():
            self.cw_alert = None  # hung up (or flashing): the alert is over
        alert = self.cw_alert.next_frame() if self.cw_alert is not None else None
        if alert is None:
            self.cw_alert = None
        if self.caller_id:  # on hook, between rings: nothing else is heard then
            ear = bytes(self.caller_id[:FRAME_BYTES]).ljust(FRAME_BYTES, b"\0")
            del self.caller_id[:FRAME_BYTES]
        elif alert is not None:
            ear = alert  # over the call: the far end is not heard meanwhile
        elif self.tone is not None:
            ear = self.tone.next_frame()
        elif frame is not None:
            ear = self.next_digit_frame() or frame
        else:
            ear = SILENCE_FRAME
        self.port.write_frame(ear)
        self.last_ear = ear
        if self.vmwi_reversed and not self.caller_id:  # the VMWI is over (or cut short)
            self.vmwi_reversed = False
            self.port.set_polarity(False)
        if ear != SILENCE_FRAME:
            self.ear_recent = 8  # the echo canceller runs while an echo can still come back
        elif self.ear_recent > 0:
            self.ear_recent -= 1

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
            case lev.SendVmwi(on=on):
                self.send_vmwi(on)
            case lev.AlertCallWaiting(caller=caller, caller_name=name, caller_id=cid):
                self.alert_call_waiting(caller, name, cid)
            case _:
                return False
        return True

    def close(self) -> None:
        self.port.close()

    def play_digit(self, digit: str, duration_ms: int) -> None:
        """Regenerate a digit the far end sent out of band, so the handset hears it in band.

        The tone lasts the event's (or INFO's Duration=) length, 40 ms to 8 s; one that
        `start_digit` began sounds on until then (see gateway.dsp.dtmf.DigitPlayer).
        """
        self.ear_digits.end(digit, duration_ms)

    def start_digit(self, digit: str) -> None:
        """The far end's key went down (an RFC 4733 event began): sound it now."""
        self.ear_digits.start(digit)

    @property
    def callerid_method(self) -> str:
        """The line's `options.callerid`, else the country profile's method."""
        options = getattr(self.config, "options", None) or {}
        return str(options.get("callerid") or getattr(self.profile, "callerid", "bellcore"))

    def _callerid_plan(self, caller: str, name: str | None) -> CallerIdPlan | None:
        from datetime import datetime

        from gateway.dsp.callerid import CallerId, plan

        number = caller.split(":", 1)[-1].split("@", 1)[0] if caller else None
        # Withheld: said so, or the RFC 3323 anonymous URI; no number otherwise: unavailable.
        withheld = name == "Withheld" or (number or "").lower() == "anonymous"
        number = None if withheld else number
        cid = CallerId(number or None, None if name == "Withheld" else name, withheld)
        return plan(self.callerid_method, cid, datetime.now())

    def send_caller_id(self, caller: str, name: str | None) -> None:
        """The line's first silent interval began: caller ID sent after the first ring goes
        in the first silent interval long enough for it (>= 500 ms after the ring ends and
        over 200 ms before the next); a method that sends before the ring already has."""
        cid = self._callerid_plan(caller, name)
        if cid is None or cid.before_ring:
            return
        self.cid_pending = cid
        self._start_pending_callerid()

    def send_vmwi(self, on: bool) -> None:
        """The message waiting lamp, as on-hook FSK now: MDMF 0x82 (SDMF 0x06 when the
        line's caller ID is SDMF), in the modem of its caller-ID method (Bell 202 when that
        is not FSK); on an ETSI FSK line after a reversal and DT-AS, the polarity restored
        when the data is over (gateway.dsp.callerid.vmwi_plan)."""
        from gateway.dsp.callerid import METHODS, vmwi_plan

        if self.port.is_off_hook() or self.caller_id:
            return  # someone is on the line, or caller ID is being sent: not now
        plan = vmwi_plan(METHODS.get(self.callerid_method) or METHODS["bellcore"], on)
        if plan.reversal:  # ETSI: reversal, DT-AS, data (EN 300 659-1, without ringing)
            self.port.set_polarity(True)
            self.vmwi_reversed = True
        self.caller_id[:] = plan.pcm

    def alert_call_waiting(self, caller: str, name: str | None, with_caller_id: bool) -> None:
        """Sound the call-waiting tone over the call; with caller ID, the CAS and (once the
        phone acknowledges) type-2 FSK follow (gateway.dsp.cidcw)."""
        from datetime import datetime

        from gateway.dsp.callerid import CallerId
        from gateway.dsp.cidcw import CallWaitingAlert

        cid = None
        if with_caller_id:
            number = caller.split(":", 1)[-1].split("@", 1)[0] if caller else None
            withheld = name == "Withheld" or (number or "").lower() == "anonymous"
            cid = CallerId(None if withheld else number or None,
                           None if name == "Withheld" else name, withheld)
        self.cw_alert = CallWaitingAlert(self.profile, self.callerid_method, cid,
                                         datetime.now())

    def _off_seconds(self) -> float:
        cadence = (getattr(self.line, "active_ring_cadence", None)  # distinctive ring
                   or getattr(self.line, "ring_cadence", None) or self.profile.ring_cadence)
        return float(cadence[self.ring_index % len(cadence)])

    def _start_pending_callerid(self) -> None:
        if self.cid_pending is not None and self.cid_pending.needs_silence <= self._off_seconds():
            self.caller_id[:] = self.cid_pending.pcm
            self.cid_pending = None

    def set_ringing(self, on: bool) -> None:
        """The line's bell cadence. Before a call's first ring, a method that sends caller
        ID before ringing reverses the line, sends, and holds every bell change of the call
        back by the time that takes."""
        first = on and not self.ringing and self.ring_index < 0
        self.ringing = on
        self.ring_index = self.ring_index + 1 if (on or self.ring_index >= 0) else -1
        if first:
            caller = getattr(self.line, "caller", None)
            cid = self._callerid_plan(*caller) if caller is not None else None
            if cid is not None and cid.before_ring:
                if cid.reversal:
                    self.port.set_polarity(True)
                self.caller_id[:] = cid.pcm
                self.bell_delay = max(1, math.ceil(cid.ring_after / FRAME_S))
        ringing_call = getattr(self.line, "state", None) == LineState.RINGING
        if not on and not ringing_call:  # answered, cancelled or gone: no held bell
            self._end_call_signals()
            self._bell(False)
            return
        if self.bell_delay:
            self.bell_queue.append((self.frames + self.bell_delay, on))
        else:
            self._bell(on)
        if not on:
            self._start_pending_callerid()

    def _end_call_signals(self) -> None:
        if self.bell_delay:  # the bell may be running behind the line's: stop it too
            self.port.set_polarity(False)
            self.port.set_ringing(False)
        self.bell_queue.clear()
        self.bell_delay = 0
        self.cid_pending = None
        self.caller_id.clear()
        self.ring_index = -1

    def _bell(self, on: bool) -> None:
        if on:
            self.caller_id.clear()  # never over the bell
            if self.bell_delay:
                self.port.set_polarity(False)  # the data is over: normal polarity again
        self.port.set_ringing(on)

    def next_digit_frame(self) -> bytes | None:
        return self.ear_digits.next_frame()

    def play_tone(self, name: str) -> None:
        try:
            spec = self.profile.tone(name.replace("-", "_"))  # "call-waiting" in the profile
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
