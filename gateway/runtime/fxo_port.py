"""An exchange line as a runtime port of kind "fxo": its `FxoLine`, its hal port and its ears.

`FxoMachine` is `PortMachine` over the pure `gateway.lines.fxo.FxoLine`: it carries out the
line's own actions on the hal port at once (the hook relay, DTMF digits to send) and hands
the runtime the call actions. Two line events need the runtime's routing rather than a
verb: an incoming call (`IncomingOffer`: `on_offer`) and an outgoing call that failed before
the answer (`RejectCall`: `on_failed`, so ordered failover can try the route's next target).

`FxoLinePort` listens to the line's audio the way the line machine needs it: on hook, a
caller ID decoder (Bell 202 or V.23 FSK, or DTMF) takes each burst of sound between
silences; off hook, the tone classifier names dial, busy and reorder tone, each reported
once it has held long enough to trust its cadence. Settings come from the line's
`options` (see `hal.fxo.FXO_LINE_OPTIONS`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.dsp import FRAME_BYTES, FRAME_MS, SILENCE_FRAME
from gateway.dsp.dtmf import peak
from gateway.dsp.tones import ToneProfile
from gateway.lines import events as lev
from gateway.lines.fxo import (
    DialDigit,
    FxoAction,
    FxoLine,
    FxoSettings,
    FxoState,
    IncomingOffer,
    SetHook,
)
from hal.base import AudioPort, FxoPort, HalError

log = logging.getLogger("branchline.fxo")

FRAME_S = FRAME_MS / 1000
CID_LOUD = 300
"""A frame whose peak reaches this carries caller ID signal (FSK is sent near -13 dBm0)."""
CID_END_FRAMES = 10
"""200 ms of quiet ends a caller ID burst (DT-AS to FSK is 45-75 ms)."""
CID_MAX_FRAMES = 200
TONE_HOLD_S = {"dial": 0.3, "busy": 1.2, "reorder": 0.8}
"""How long a classification must hold before it counts: over one cadence period."""
SOUND_DBFS = -45.0
"""`answer: voice`: a frame at least this loud carries sound (ringback or an answer)."""
RINGBACK_FRAMES = 15
"""300 ms of ringback frames: the exchange is ringing the callee."""
VOICE_FRAMES = 20
RINGBACK_FFT = 512
RINGBACK_BAND_HZ = 80.0
"""A frame is ringback when over half its power lies this close to the ringback's tones."""
"""400 ms of sound that is not ringback, after it: the callee answered."""


def settings_from(options: Mapping[str, Any]) -> FxoSettings:
    """The line machine's settings from an FXO line's options (ms in the config)."""
    def s(key: str, default: float) -> float:
        return float(options.get(key, default * 1000.0)) / 1000.0

    d = FxoSettings()
    return FxoSettings(
        ring_timeout=s("ring_timeout_ms", d.ring_timeout),
        wait_callerid=bool(options.get("wait_callerid", d.wait_callerid)),
        dial_mode=options.get("dial_mode", d.dial_mode),
        dial_tone_timeout=s("dial_tone_timeout_ms", d.dial_tone_timeout),
        dial_delay=s("dial_delay_ms", d.dial_delay),
        answer=_answer_mode(options.get("answer", d.answer)),
        answer_timeout=s("answer_timeout_ms", d.answer_timeout),
        loop_drop=s("loop_drop_ms", d.loop_drop),
        reversal_disconnect=bool(options.get("reversal_disconnect", d.reversal_disconnect)),
        release_guard=s("release_guard_ms", d.release_guard),
    )


def _answer_mode(value: Any) -> Any:
    """`answer: immediate` is another name for the default, "dialled"."""
    return "dialled" if value == "immediate" else value


def echo_canceller_for(backend: str, options: Mapping[str, Any]) -> Any:
    """The line's echo canceller: on by default on hardware and on a sim line that
    simulates a hybrid (echo_delay_ms); `options.echo_canceller` decides."""
    default = backend != "sim" or options.get("echo_delay_ms") is not None
    if not options.get("echo_canceller", default):
        return None
    from gateway.dsp.echo import EchoCanceller

    return EchoCanceller(int(options.get("echo_tail_ms", 64)))


class FxoMachine:
    """`PortMachine` over an `FxoLine`; see the module docstring."""

    def __init__(self, line: FxoLine, port: FxoPort) -> None:
        self.line = line
        self.port = port
        self.digits: list[tuple[str, float]] = []
        """Digits to send down the line, oldest first (the port plays them)."""
        self.on_offer: Callable[[IncomingOffer], None] = lambda offer: None
        self.on_failed: Callable[[str, int, str], None] = lambda call_id, status, why: None
        self.on_hook_change: Callable[[bool], None] = lambda off: None

    @property
    def state(self) -> lev.LineState:
        return self.line.state

    @property
    def call_id(self) -> str | None:
        return self.line.call_id

    def place(self, call_id: str, number: str, now: float) -> lev.IncomingResult:
        return self.line.place(call_id, number, now)

    def incoming_call(self, call_id: str, caller: str, caller_name: str | None,
                      now: float) -> lev.IncomingResult:
        return self.line.incoming_call(call_id, caller, caller_name, now)

    def call_progress(self, status: int, now: float, early_media: bool = False) -> None:
        self.line.call_progress(status, now, early_media)

    def call_answered(self, now: float) -> None:
        self.line.call_answered(now)

    def call_ended(self, reason: str, status: int | None, now: float) -> None:
        self.line.call_ended(reason, status, now)

    def incoming_cancelled(self, now: float) -> None:
        self.line.incoming_cancelled(now)

    def set_call_id(self, call_id: str) -> None:
        self.line.set_call_id(call_id)

    def dtmf_digit(self, digit: str, now: float) -> None:
        self.line.dtmf_digit(digit, now)

    def get_timer(self) -> float | None:
        return self.line.get_timer()

    def handle_timer(self, now: float) -> None:
        self.line.handle_timer(now)

    def actions(self) -> list[lev.Action]:
        out: list[lev.Action] = []
        for action in self.line.actions():
            self._carry_out(action, out)
        return out

    def _carry_out(self, action: FxoAction, out: list[lev.Action]) -> None:
        match action:
            case SetHook(off=off):
                log.debug("fxo %s: %s", self.line.name, "seize" if off else "release")
                if not off:
                    self.digits.clear()
                try:
                    self.port.set_off_hook(off)
                except (OSError, HalError) as exc:
                    log.error("fxo %s: hook relay: %s", self.line.name, exc)
                self.on_hook_change(off)
            case DialDigit(digit=digit, seconds=seconds):
                self.digits.append((digit, seconds))
            case IncomingOffer():
                self.on_offer(action)
            case lev.RejectCall(call_id=call_id, status=status):
                self.on_failed(call_id, status, self.line.end_reason or "failed")
            case _:
                out.append(action)


class VoiceAnswer:
    """`answer: voice`: tells the exchange's ringback from the callee's voice by energy and
    make-up, frame by frame. Reports "ringback" once it held `RINGBACK_FRAMES`, then "voice"
    once sound that is not ringback (its tones under half of the frame's power) held
    `VOICE_FRAMES` after it; nothing else. Silence between ringback bursts resets the run."""

    def __init__(self, ringback_hz: list[float]) -> None:
        self.ringback_hz = ringback_hz
        self.ringback = False
        self._run = 0
        self._kind = "quiet"
        self.done = False

    def feed(self, frame: bytes) -> str | None:
        import numpy as np

        from gateway.dsp.analysis import level_dbfs

        if self.done:
            return None
        if level_dbfs(frame) < SOUND_DBFS:
            kind = "quiet"
        else:
            x = np.frombuffer(frame, dtype="<i2").astype(np.float64)
            power = np.abs(np.fft.rfft(x * np.hanning(len(x)), RINGBACK_FFT)) ** 2
            hz = np.fft.rfftfreq(RINGBACK_FFT, 1.0 / 8000.0)
            band = np.zeros(len(hz), dtype=bool)
            for f in self.ringback_hz:
                band |= np.abs(hz - f) <= RINGBACK_BAND_HZ
            share = float(power[band].sum() / max(float(power.sum()), 1e-9))
            kind = "ringback" if share >= 0.5 else "voice"
        self._run = self._run + 1 if kind == self._kind else 1
        self._kind = kind
        if kind == "ringback" and not self.ringback and self._run >= RINGBACK_FRAMES:
            self.ringback = True
            return "ringback"
        if kind == "voice" and self.ringback and self._run >= VOICE_FRAMES:
            self.done = True
            return "voice"
        return None


@dataclass
class FxoLinePort:
    """One exchange line as a runtime port (kind "fxo")."""

    name: str
    number: str
    config: Any
    port: FxoPort
    fxo: FxoMachine
    profile: ToneProfile
    clock: Callable[[], float]
    call_id: str | None = None
    mic: bytes = SILENCE_FRAME
    kind: str = "fxo"
    caller_ids: list[Any] = field(default_factory=list)
    """Every caller ID decoded on the line (for status and tests), newest last."""
    _cid: bytearray = field(default_factory=bytearray)
    _cid_quiet: int = 0
    _classifier: Any = None
    _heard: str = "silence"
    _heard_since: float = 0.0
    _reported: str | None = None
    _out: bytearray = field(default_factory=bytearray)
    _listening: FxoState | None = None
    _answer: VoiceAnswer | None = None
    echo: Any = None
    """The line's echo canceller (`echo_canceller_for`), None without one."""
    _last_sent: bytes = SILENCE_FRAME
    wake: Callable[[], None] = lambda: None
    """Called after the port fed its machine from the audio (the runtime pumps soon)."""

    def __post_init__(self) -> None:
        self.fxo.on_hook_change = self._hook_changed

    @property
    def machine(self) -> FxoMachine:
        return self.fxo

    @property
    def line(self) -> FxoLine:
        return self.fxo.line

    @property
    def audio(self) -> AudioPort:
        return self.port

    # --- capture: caller ID on hook, call-progress tones off hook -----------------------

    def capture(self) -> bytes:
        try:
            frame = self.port.read_frame() or SILENCE_FRAME
        except (OSError, HalError):
            frame = SILENCE_FRAME
        now = self.clock()
        if self.line.off_hook:
            if self.echo is not None:  # the DAA hybrid returns what we send: take it out
                frame = self.echo.process(self._last_sent, frame)
            self._listen(frame, now)
            self.mic = frame
        else:
            self._caller_id_feed(frame, now)
            self.mic = SILENCE_FRAME
        return self.mic

    def _caller_id_feed(self, frame: bytes, now: float) -> None:
        loud = peak(frame) >= CID_LOUD
        if loud:
            self._cid += frame
            self._cid_quiet = 0
        elif self._cid:
            self._cid += frame
            self._cid_quiet += 1
        if self._cid and (self._cid_quiet >= CID_END_FRAMES
                          or len(self._cid) >= CID_MAX_FRAMES * FRAME_BYTES):
            pcm = bytes(self._cid)
            self._cid.clear()
            self._cid_quiet = 0
            if len(pcm) >= (CID_END_FRAMES + 5) * FRAME_BYTES:
                self._decode_caller_id(pcm, now)

    def _decode_caller_id(self, pcm: bytes, now: float) -> None:
        from gateway.dsp.callerid_rx import decode_dtmf, decode_fsk

        got = decode_fsk(pcm, "bell202") or decode_fsk(pcm, "v23") or decode_dtmf(pcm)
        if got is None:
            log.debug("fxo %s: %d ms of on-hook sound, no caller ID in it", self.name,
                      len(pcm) // 16)
            return
        withheld = got.number_absent == "P"
        log.info("fxo %s: caller ID %s%s", self.name,
                 got.number or ("withheld" if withheld else "unavailable"),
                 f" ({got.name})" if got.name else "")
        self.caller_ids.append(got)
        self.line.caller_id(got.number, got.name, withheld, now)
        self.wake()

    def _hook_changed(self, off: bool) -> None:
        self._cid.clear()
        if self._classifier is not None:
            self._classifier.reset()
        self._heard, self._reported = "silence", None
        if not off:
            self._out.clear()

    def _listen(self, frame: bytes, now: float) -> None:
        if self.line.fxo_state not in (FxoState.SEIZED, FxoState.DIALLING, FxoState.CALLING,
                                       FxoState.CONNECTED):
            return
        if self._classifier is None:
            from gateway.dsp.analysis import ToneClassifier

            self._classifier = ToneClassifier(self.profile)
        if self.line.fxo_state is not self._listening:  # each phase hears afresh
            self._listening = self.line.fxo_state
            self._classifier.reset()
            self._heard, self._heard_since, self._reported = "silence", now, None
            if self.line.settings.answer == "voice":
                self._answer = VoiceAnswer([*self.profile.ringback.frequencies])
        self._classifier.feed(frame)
        what = self._classifier.classify()
        if self._answer is not None and self.line.fxo_state is FxoState.CALLING:
            heard = self._answer.feed(frame)
            if heard is not None:
                log.info("fxo %s: hears %s", self.name, heard)
                self.line.tone(heard, now)
                self.wake()
        if what != self._heard:
            self._heard, self._heard_since = what, now
        hold = TONE_HOLD_S.get(what)
        if hold is not None and what != self._reported and now - self._heard_since >= hold:
            self._reported = what
            log.info("fxo %s: hears %s tone", self.name, what)
            self.line.tone(what, now)
            self.wake()
        elif hold is None and what not in ("silence",):
            self._reported = None

    def digits_heard(self) -> list[str]:
        return []

    # --- play: digits while dialling, the call's audio while connected ------------------

    def accepts_audio(self) -> bool:
        return self.line.fxo_state is FxoState.CONNECTED

    def play(self, frame: bytes | None) -> None:
        if not self._out and self.fxo.digits:
            from gateway.dsp.dtmf import generate

            digit, seconds = self.fxo.digits.pop(0)
            self._out += generate(digit, seconds * 1000.0, level_dbfs=-8.0)
        if self._out:
            out = bytes(self._out[:FRAME_BYTES]).ljust(FRAME_BYTES, b"\0")
            del self._out[:FRAME_BYTES]
        elif frame is not None and self.line.off_hook:
            out = frame
        else:
            out = SILENCE_FRAME
        self._last_sent = out
        try:
            self.port.write_frame(out)
        except (OSError, HalError) as exc:
            log.debug("fxo %s: audio write failed: %s", self.name, exc)

    def play_digit(self, digit: str, duration_ms: int) -> None:
        """A digit from the other leg during the call: sent down the line in band."""
        if self.line.fxo_state is FxoState.CONNECTED:
            self.fxo.digits.append((digit, max(0.04, duration_ms / 1000.0)))

    def carry_out(self, action: lev.Action) -> bool:
        return False

    def close(self) -> None:
        self.port.close()

    @property
    def exchange(self) -> Any:
        """The simulated exchange on a sim port, or None on real hardware."""
        return getattr(self.port, "exchange", None)

    def describe(self) -> dict[str, Any]:
        last = self.caller_ids[-1] if self.caller_ids else None
        return {
            "name": self.name,
            "number": self.number,
            "backend": getattr(self.config, "backend", ""),
            "state": self.line.fxo_state.value,
            "hook": "off" if self.line.off_hook else "on",
            "reversed": self.line.reversed,
            "loop": self.line.loop,
            "call_id": self.call_id,
            "last_caller_id": None if last is None else {"number": last.number,
                                                         "name": last.name},
            "end_reason": self.line.end_reason,
        }
