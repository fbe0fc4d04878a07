"""A simulated analog handset that hears and speaks through the frames hardware would.

The phone sits on the far side of a real SLIC driver: lifting the handset drives the
mock SHK pin high, ringing is seen on the RM and F/R pins the driver sets, the
mouthpiece and earpiece are the driver's audio frames.

Time in the phone advances only with audio frames: each 20 ms frame read from the
mouthpiece or written to the earpiece is 20 ms (reads and writes in lock-step count
once), so pulse dialling, flashes and recordings are deterministic. Scheduled hook
changes (pulse digits, flash) fire at their exact times as the clock passes them.
"""

from __future__ import annotations

import functools
import heapq
import itertools
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from gateway.dsp import FRAME_BYTES, FRAME_MS, SILENCE_FRAME
from gateway.dsp import dtmf as dtmf_mod
from gateway.dsp.analysis import ListenReport, ToneClassifier
from gateway.dsp.tones import ToneGenerator, ToneProfile, ToneSpec, get_profile
from hal.audio.memory import MemoryAudio
from hal.audio.wav import read_wav_8k, write_wav
from hal.gpio.mock import ContactBounce, ObservableMockPin

_FRAME_S = FRAME_MS / 1000.0
PULSE_BREAK_MS = 60
PULSE_MAKE_MS = 40
PULSE_INTERDIGIT_MS = 600
HISTORY_S = 30.0
"""How much earpiece audio :meth:`VirtualPhone.heard` can return."""
ALERT_GAP_S = 6.0
"""A ring that ended this recently still counts as "being called" for auto-answer
(longer than any country's silent interval in the ring cadence)."""
AUTO_HANGUP_ON = frozenset({"dial", "stutter", "busy", "reorder"})
"""What an auto-answered phone hangs up on hearing: the line offers anything but the call
(the far end hung up, or the caller gave up before the answer)."""


class PhoneError(Exception):
    """The handset cannot do that now (e.g. dialling while on-hook)."""


class VirtualPhone:
    """An analog phone wired to mock SLIC pins; see the module docstring for timing."""

    def __init__(
        self,
        *,
        shk: ObservableMockPin,
        rm: ObservableMockPin,
        fr: ObservableMockPin,
        profile: ToneProfile | None = None,
        time_origin: float = 0.0,
    ) -> None:
        self._shk = shk
        self._hook = bool(shk.state)
        self.bounce: ContactBounce | None = None
        """Contact bounce put on the SHK pin after every hook change (None: clean edges)."""
        self._rm = rm
        self._fr = fr
        self.profile = profile or get_profile("US")
        self.time_origin = time_origin
        self._t = 0.0  # seconds since origin
        self._mouth_n = 0
        self._ear_n = 0
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._dial_pcm = bytearray()
        self._pulse_until = 0.0
        self._player: Callable[[], bytes | None] | None = None
        self._record: tuple[Path, int, list[bytes]] | None = None
        self._history: deque[bytes] = deque(maxlen=int(HISTORY_S / _FRAME_S))
        self._classifier = ToneClassifier(self.profile)
        self._ringing = False
        self._auto_answer_s: float | None = None
        self._auto_hangup_s: float | None = None
        self._auto_due: tuple[float, Callable[[], None]] | None = None
        self._auto_call = False
        self.auto_answered = 0
        """Calls this phone answered by itself (see :meth:`set_auto_answer`)."""
        self.ring_count = 0
        """Ring bursts since the handset was last hung up."""
        self.rings: list[tuple[float, float | None]] = []
        """(start, end) of every ring burst seen, in phone time."""
        self.hook_log: list[tuple[bool, float]] = []
        """(off_hook, t) of every hook change the phone made."""
        self.polarity_log: list[tuple[float, str]] = []
        """(t, "normal" | "reversed") at every loop polarity change outside ringing."""
        self._polarity_seen = self.polarity
        self.cidcw_ack: str | None = "D"
        """The DTMF digit this phone answers a call-waiting CAS with (a CIDCW set); None:
        a phone without off-hook caller ID, which ignores the CAS."""
        self.cidcw_received: list[dict[str, Any]] = []
        """Off-hook (type 2) caller ID shown while talking, one entry per CAS answered:
        number, name (None when the data did not decode)."""
        self._cas_frames = 0
        self._cidcw_audio: list[bytes] | None = None
        self.line_audio = MemoryAudio(sink=self._hear, source=self._speak)
        """The AudioPort to give the SLIC driver: its far end is this phone."""
        rm.listeners.append(self._pins_changed)
        fr.listeners.append(self._pins_changed)
        self._pins_changed(rm)

    # -- time ---------------------------------------------------------------------------

    @property
    def now(self) -> float:
        """Phone time: ``time_origin`` plus frames elapsed (exact at scheduled events)."""
        return self.time_origin + self._t

    def clock(self) -> float:
        """:attr:`now` as a callable, to hand to a driver as its clock."""
        return self.now

    def _advance_to(self, t: float) -> None:
        while True:
            event_at = self._events[0][0] if self._events else None
            auto_at = self._auto_due[0] if self._auto_due is not None else None
            if auto_at is not None and auto_at <= t + 1e-9 and (
                event_at is None or auto_at < event_at
            ):
                assert self._auto_due is not None
                at, auto_action = self._auto_due
                self._auto_due = None
                self._t = max(self._t, at)
                auto_action()
            elif event_at is not None and event_at <= t + 1e-9:
                at, _, action = heapq.heappop(self._events)
                self._t = max(self._t, at)
                action()
            else:
                break
        self._t = max(self._t, t)

    def _schedule(self, at: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._events, (at, next(self._seq), action))

    def advance(self, seconds: float) -> None:
        """Let time pass without anyone reading audio (mouthpiece frames are dropped)."""
        for _ in range(round(seconds / _FRAME_S)):
            self._speak()
        self._ear_n = max(self._ear_n, self._mouth_n)

    # -- hook ---------------------------------------------------------------------------

    @property
    def off_hook_now(self) -> bool:
        """True while the handset is lifted (the switch's nominal state, bounce aside)."""
        return self._hook

    def _set_hook(self, off: bool) -> None:
        if self._hook == off:
            self._drive_shk(off)  # settle a bounce that on_hook() cut short
            return
        self._hook = off
        self.hook_log.append((off, self.now))
        self._drive_shk(off)
        if self.bounce is not None:
            for offset, level in self.bounce.after_edge(off):
                self._schedule(self._t + offset, functools.partial(self._bounce, off, level))

    def _bounce(self, nominal: bool, level: bool) -> None:
        if self._hook == nominal:  # a later hook change supersedes this edge's bounce
            self._drive_shk(level)

    def _drive_shk(self, level: bool) -> None:
        if bool(self._shk.state) != level:
            if level:
                self._shk.drive_high()
            else:
                self._shk.drive_low()

    def off_hook(self) -> None:
        """Lift the handset (answer, or get dial tone)."""
        if self.off_hook_now:
            return
        self._classifier.reset()
        self._set_hook(True)

    def on_hook(self) -> None:
        """Hang up: drop pending dialling and playback."""
        self._events.clear()
        self._auto_due = None
        self._auto_call = False
        self._dial_pcm.clear()
        self._pulse_until = 0.0
        self._player = None
        self._set_hook(False)
        self.ring_count = 0

    def flash(self, duration_ms: float = 300) -> None:
        """A hook flick: on-hook for ``duration_ms``, then off-hook again."""
        self._require_off_hook("flash")
        start = max(self._t, self._pulse_until)
        self._schedule(start, lambda: self._set_hook(False))
        self._schedule(start + duration_ms / 1000.0, lambda: self._set_hook(True))
        self._pulse_until = start + duration_ms / 1000.0
        if start <= self._t:
            self._advance_to(self._t)

    def _require_off_hook(self, what: str) -> None:
        if not self.off_hook_now and not self._events:
            raise PhoneError(f"cannot {what}: the handset is on-hook")

    # -- dialling -----------------------------------------------------------------------

    def dial(
        self,
        digits: str,
        mode: Literal["dtmf", "pulse"] = "dtmf",
        on_ms: float = 100,
        off_ms: float = 100,
        *,
        break_ms: float = PULSE_BREAK_MS,
        make_ms: float = PULSE_MAKE_MS,
        interdigit_ms: float = PULSE_INTERDIGIT_MS,
    ) -> None:
        """Dial: DTMF digits are played into the mouthpiece; pulse digits are hook flicks
        (``break_ms``/``make_ms`` per pulse, ``interdigit_ms`` between digits)."""
        self._require_off_hook("dial")
        if mode == "dtmf":
            for d in digits:
                dtmf_mod.tone_frequencies(d)  # validates
            self._dial_pcm += dtmf_mod.generate_sequence(digits, on_ms, off_ms)
            return
        if mode != "pulse":
            raise ValueError(f"dial mode {mode!r}: expected 'dtmf' or 'pulse'")
        bad = [d for d in digits if not d.isdigit()]
        if bad:
            raise ValueError(f"pulse dialling sends 0-9 only, got {''.join(bad)!r}")
        t = self._t
        if self._pulse_until > t:
            t = self._pulse_until + interdigit_ms / 1000.0
        for i, d in enumerate(digits):
            if i:
                t += interdigit_ms / 1000.0
            for _ in range(10 if d == "0" else int(d)):
                self._schedule(t, lambda: self._set_hook(False))
                t += break_ms / 1000.0
                self._schedule(t, lambda: self._set_hook(True))
                t += make_ms / 1000.0
            t -= make_ms / 1000.0  # the gap runs from the last make
        self._pulse_until = t

    @property
    def dialing(self) -> bool:
        """True while DTMF audio or hook flicks are still to come."""
        return bool(self._dial_pcm) or bool(self._events)

    # -- mouthpiece ---------------------------------------------------------------------

    def play(self, source: str | Path | bytes, loop: bool = True) -> None:
        """Speak a WAV file (or raw 8 kHz S16LE PCM) into the mouthpiece."""
        pcm = bytes(source) if isinstance(source, bytes | bytearray) else read_wav_8k(source)
        if not pcm:
            raise ValueError("play: no audio")
        pcm += bytes(-len(pcm) % FRAME_BYTES) if not loop else b""
        pos = 0

        def next_frame() -> bytes | None:
            nonlocal pos
            out = bytearray()
            while len(out) < FRAME_BYTES:
                if pos >= len(pcm):
                    if not loop:
                        break
                    pos = 0
                take = pcm[pos : pos + FRAME_BYTES - len(out)]
                out += take
                pos += len(take)
            if not out:
                return None
            return bytes(out.ljust(FRAME_BYTES, b"\0"))

        self._player = next_frame

    def play_tone(self, freq_hz: float, level_dbfs: float = -16.0) -> None:
        """Hold a steady sine into the mouthpiece (e.g. a test tone)."""
        gen = ToneGenerator(ToneSpec((freq_hz,), level_dbfs=level_dbfs))
        self._player = gen.next_frame

    def stop_play(self) -> None:
        """Silence the mouthpiece (dialling continues)."""
        self._player = None

    def _speak(self) -> bytes:
        self._mouth_n += 1
        self._advance_to(max(self._mouth_n, self._ear_n) * _FRAME_S)
        if not self.off_hook_now:
            return SILENCE_FRAME
        if self._dial_pcm:
            frame = bytes(self._dial_pcm[:FRAME_BYTES]).ljust(FRAME_BYTES, b"\0")
            del self._dial_pcm[:FRAME_BYTES]
            return frame
        if self._player is not None:
            frame_or_none = self._player()
            if frame_or_none is None:
                self._player = None
                return SILENCE_FRAME
            return frame_or_none
        return SILENCE_FRAME

    # -- earpiece -----------------------------------------------------------------------

    def _hear(self, frame: bytes) -> None:
        self._ear_n += 1
        self._advance_to(max(self._mouth_n, self._ear_n) * _FRAME_S)
        self._history.append(frame)
        if self.off_hook_now and self.cidcw_ack is not None:
            self._listen_cidcw(frame)
        self._classifier.feed(frame if self.off_hook_now else SILENCE_FRAME)
        if (
            self._auto_call
            and self.off_hook_now
            and self._classifier.classify() in AUTO_HANGUP_ON
        ):
            self.on_hook()
        if self._record is not None:
            path, need, frames = self._record
            frames.append(frame)
            if len(frames) >= need:
                self.stop_record()

    def _listen_cidcw(self, frame: bytes) -> None:
        """A CIDCW set: after a CAS (2130 + 2750 Hz, >= 40 ms) it answers in DTMF and
        reads the FSK that follows (Bell 202 or V.23, whichever decodes)."""
        from gateway.dsp.analysis import frequencies_present

        if self._cidcw_audio is not None:
            self._cidcw_audio.append(frame)
            if len(self._cidcw_audio) * _FRAME_S >= 1.6:
                self._decode_cidcw(b"".join(self._cidcw_audio))
                self._cidcw_audio = None
            return
        if len(frequencies_present(frame, (2130.0, 2750.0), relative_db=8.0)) == 2:
            self._cas_frames += 1
            return
        if self._cas_frames >= 2 and self.cidcw_ack is not None:  # the CAS just ended
            self._dial_pcm[:0] = dtmf_mod.generate_sequence(self.cidcw_ack, 60, 0)
            self._cidcw_audio = []
        self._cas_frames = 0

    def _decode_cidcw(self, pcm: bytes) -> None:
        from gateway.dsp.callerid import METHODS
        from gateway.dsp.callerid_rx import decode_fsk

        method = METHODS.get(getattr(self.profile, "callerid", ""))
        first = method.modem.name if method is not None else "bell202"
        for modem in dict.fromkeys((first, "bell202", "v23")):  # the country's modem first
            got = decode_fsk(pcm, modem)
            if got is not None:
                self.cidcw_received.append(
                    {"number": got.number, "name": got.name, "modem": modem})
                return
        self.cidcw_received.append({"number": None, "name": None, "modem": None})

    def hears(self) -> ListenReport:
        """What the earpiece carries now: tone class, pitch, level and DTMF digits heard."""
        return self._classifier.report()

    def heard(self, seconds: float) -> bytes:
        """The last ``seconds`` of earpiece audio (on-hook too, e.g. for caller ID)."""
        n = min(len(self._history), round(seconds / _FRAME_S))
        return b"".join(list(self._history)[len(self._history) - n :])

    def set_profile(self, profile: ToneProfile) -> None:
        """Listen for another country's tones from now on."""
        self.profile = profile
        self._classifier = ToneClassifier(profile)

    def record(self, path: str | Path, seconds: float) -> None:
        """Record the next ``seconds`` of earpiece audio; the WAV is written when done."""
        if seconds <= 0:
            raise ValueError(f"record seconds: {seconds}, expected > 0")
        self._record = (Path(path), max(1, round(seconds / _FRAME_S)), [])

    def stop_record(self) -> Path | None:
        """Write what has been recorded so far; returns the path, or None if idle."""
        if self._record is None:
            return None
        path, _, frames = self._record
        self._record = None
        write_wav(path, b"".join(frames))
        return path

    # -- ringing ------------------------------------------------------------------------

    def _pins_changed(self, _pin: ObservableMockPin) -> None:
        rm_high = bool(self._rm.state)
        fr = float(self._fr.state)
        toggling = self._fr.frequency is not None and 0.0 < fr < 1.0
        ringing = rm_high and toggling
        if not rm_high and not toggling and self.polarity != self._polarity_seen:
            self._polarity_seen = self.polarity
            self.polarity_log = [*self.polarity_log[-31:], (self.now, self.polarity)]
        if ringing == self._ringing:
            return
        self._ringing = ringing
        if ringing:
            self.ring_count += 1
            self.rings.append((self.now, None))
            if (
                self._auto_answer_s is not None
                and not self.off_hook_now
                and self._auto_due is None
            ):
                self._auto_due = (self._t + self._auto_answer_s, self._auto_answer)
        elif self.rings and self.rings[-1][1] is None:
            self.rings[-1] = (self.rings[-1][0], self.now)

    # -- auto-answer --------------------------------------------------------------------

    def set_auto_answer(self, answer_ms: float | None, hangup_ms: float | None = None) -> None:
        """Answer by itself ``answer_ms`` after ringing starts, so load tests and benches can
        call the line without anyone driving the handset. An auto-answered call ends when
        the phone hears dial, busy or reorder tone (the far end hung up), or ``hangup_ms``
        after the answer if given. ``answer_ms=None`` turns it off."""
        for label, value in (("answer_ms", answer_ms), ("hangup_ms", hangup_ms)):
            if value is not None and value < 0:
                raise ValueError(f"auto-answer {label}: {value}, expected >= 0 or None")
        self._auto_answer_s = None if answer_ms is None else answer_ms / 1000.0
        self._auto_hangup_s = None if hangup_ms is None else hangup_ms / 1000.0
        if self._auto_answer_s is None:
            self._auto_due = None
        elif self._ringing and not self.off_hook_now and self._auto_due is None:
            self._auto_due = (self._t + self._auto_answer_s, self._auto_answer)

    @property
    def auto_answer(self) -> tuple[float | None, float | None]:
        """(answer_ms, hangup_ms) as set by :meth:`set_auto_answer`; (None, None) when off."""
        a, h = self._auto_answer_s, self._auto_hangup_s
        return (None if a is None else a * 1000.0, None if h is None else h * 1000.0)

    def _being_called(self) -> bool:
        if self._ringing:
            return True
        if not self.rings:
            return False
        end = self.rings[-1][1]
        return end is not None and self.now - end <= ALERT_GAP_S

    def _auto_answer(self) -> None:
        if self.off_hook_now or self._auto_answer_s is None or not self._being_called():
            return
        self.off_hook()
        self._auto_call = True
        self.auto_answered += 1
        if self._auto_hangup_s is not None:
            self._auto_due = (self._t + self._auto_hangup_s, self.on_hook)

    def is_ringing(self) -> bool:
        """Ring voltage present: RM high and F/R toggling."""
        return self._ringing

    @property
    def polarity(self) -> Literal["normal", "reversed"]:
        """Loop polarity from the F/R level (meaningful while not ringing)."""
        return "normal" if float(self._fr.state) >= 0.5 else "reversed"

    def state(self) -> dict[str, Any]:
        """A snapshot for control commands and tests."""
        return {
            "hook": "off" if self.off_hook_now else "on",
            "ringing": self._ringing,
            "ring_count": self.ring_count,
            "ring_hz": self._fr.frequency if self._ringing else None,
            "polarity": self.polarity,
            "dialing": self.dialing,
            "playing": self._player is not None,
            "recording": self._record is not None,
            "auto_answered": self.auto_answered,
            "now": self.now,
        }
