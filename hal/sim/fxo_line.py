"""The "sim" FXO backend: the real DAA driver on mock pins, with a simulated exchange line.

Nothing here imitates the driver: the port is :class:`hal.fxo.daa.DaaFxo` itself. The
exchange (:class:`SimExchange`) is the central office's side of the pair: it drives the
ring-detect, loop-current and polarity pins, watches the hook relay pin, and its audio is
the far side of the driver's :class:`MemoryAudio`.

What it does, as an exchange would:

- an incoming call (:meth:`SimExchange.call_in`) rings with the country's cadence and
  sends caller ID by the chosen method: Bellcore FSK in the first silent interval, ETSI FSK
  before the first ring after a polarity reversal (and DT-AS), ...; seizing answers it;
- a seize gives loop current and dial tone; the digits sent are heard with the daemon's
  own DTMF detector; a second after the last one the dialled number rings (ringback) and
  answers after ``answer_after_ms``, reversing the polarity if ``reverse_on_answer``;
  numbers in `busy_numbers` get busy tone instead;
- the far party says a steady tone (``far_tone_hz``, default 1000 Hz) or what
  :meth:`SimExchange.play` gives, and everything the gateway sends is kept for `heard`;
- the far end hangs up (:meth:`SimExchange.far_hang_up`) with busy tone, by dropping the
  loop current, or by reversing the polarity;
- the line can be unplugged (:meth:`SimExchange.unplug`): no loop current, no dial tone, no
  ringing and no sound until it is plugged back in (what `line-test` must catch).

Time in the exchange advances with audio frames (20 ms per frame written), so cadences and
caller ID timings follow the daemon's audio clock exactly.

Options (all optional): ``country``, ``callerid`` (a method of
:data:`gateway.dsp.callerid.METHODS`, default the country's), ``reverse_on_answer``,
``answer_after_ms`` (default 1000), ``far_tone_hz``, ``dial_tone`` (false: none), ``ring_pin``, ``hook_pin``,
``loop_pin``, ``polarity_pin`` (mock pin numbers), ``clock`` ("monotonic" or "frames"),
``echo_delay_ms`` / ``echo_erl_db`` (the DAA hybrid's echo of what the port sends).
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from gateway.dsp import FRAME_BYTES, FRAME_MS, SILENCE_FRAME
from gateway.dsp.callerid import METHODS, CallerId, plan
from gateway.dsp.dtmf import DtmfDetector
from gateway.dsp.tones import ToneGenerator, ToneProfile, ToneSpec, get_profile
from hal.audio.memory import MemoryAudio
from hal.base import AudioPort, HalError
from hal.fxo.daa import DaaFxo
from hal.gpio.mock import ObservableMockPin, mock_factory

if TYPE_CHECKING:
    from hal.sim.hybrid import HybridEcho

_FRAME_S = FRAME_MS / 1000.0
DIGIT_TIMEOUT_S = 1.0
"""The number is complete this long after the last digit."""
HISTORY_S = 10.0
RING_LIMIT_S = 120.0


class SimExchange:
    """The exchange side of one analog line; see the module docstring."""

    def __init__(
        self,
        *,
        ring: ObservableMockPin,
        hook: ObservableMockPin,
        loop: ObservableMockPin,
        polarity: ObservableMockPin,
        profile: ToneProfile,
        callerid: str | None = None,
        reverse_on_answer: bool = False,
        answer_after: float = 1.0,
        far_tone_hz: float = 1000.0,
        dial_tone: bool = True,
    ) -> None:
        self._ring_pin, self._hook_pin = ring, hook
        self._loop_pin, self._polarity_pin = loop, polarity
        self.profile = profile
        method = callerid or profile.callerid
        if method not in METHODS:
            raise HalError(f"sim exchange: unknown caller ID method {method!r}; "
                           f"known: {', '.join(sorted(METHODS))}")
        self.callerid = method
        self.reverse_on_answer = reverse_on_answer
        self.answer_after = answer_after
        self.far_tone_hz = far_tone_hz
        self.dial_tone = dial_tone
        """False: a seize gets silence (a dead or faulty line), the digits are still heard."""
        self.busy_numbers: set[str] = set()
        self.plugged = True
        """False: the pair is cut (unplugged at the wall): nothing reaches the gateway."""
        self._t = 0.0
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._out = bytearray()  # caller ID / one-shot audio queued for the line
        self._tone: ToneGenerator | None = None
        self._far: Callable[[], bytes] | None = None
        self._manual: Callable[[], bytes] | None = None
        self._detector = DtmfDetector()
        self._history: deque[bytes] = deque(maxlen=int(HISTORY_S / _FRAME_S))
        self._epoch = 0  # bumps when a call ends: its scheduled events are dropped
        self.state = "idle"
        self.digits = ""
        self.calls: list[dict[str, Any]] = []
        """One entry per finished call: direction, number/caller, how it ended."""
        self._call: dict[str, Any] | None = None
        self.line_audio = MemoryAudio(sink=self._hear, source=self._speak)
        """The AudioPort to give the DAA driver: its far end is this exchange."""
        for pin in (ring, loop, polarity):
            pin.drive_low()
        hook.listeners.append(self._hook_changed)

    # -- time ---------------------------------------------------------------------------

    @property
    def now(self) -> float:
        return self._t

    def clock(self) -> float:
        return self._t

    def _at(self, delay: float, action: Callable[[], None]) -> None:
        epoch = self._epoch

        def run() -> None:
            if epoch == self._epoch:
                action()

        heapq.heappush(self._events, (self._t + delay, next(self._seq), run))

    def _advance(self) -> None:
        self._t += _FRAME_S
        while self._events and self._events[0][0] <= self._t + 1e-9:
            _, _, action = heapq.heappop(self._events)
            action()

    def advance(self, seconds: float) -> None:
        """Let time pass with nobody reading the line (tests without a daemon)."""
        for _ in range(round(seconds / _FRAME_S)):
            self._speak()
            self._hear(SILENCE_FRAME)

    # -- what the driver sees -------------------------------------------------------------

    @property
    def off_hook(self) -> bool:
        return bool(self._hook_pin.state)

    @property
    def reversed(self) -> bool:
        return bool(self._polarity_pin.state)

    @property
    def ringing(self) -> bool:
        return bool(self._ring_pin.state)

    def _set_ring(self, on: bool) -> None:
        if on != self.ringing:
            (self._ring_pin.drive_high if on else self._ring_pin.drive_low)()

    def _set_loop(self, on: bool) -> None:
        if on != bool(self._loop_pin.state):
            (self._loop_pin.drive_high if on else self._loop_pin.drive_low)()

    def _set_polarity(self, reversed: bool) -> None:
        if reversed != self.reversed:
            (self._polarity_pin.drive_high if reversed else self._polarity_pin.drive_low)()

    # -- incoming calls -------------------------------------------------------------------

    def call_in(self, caller: str | None, name: str | None = None, *,
                withheld: bool = False, method: str | None = None) -> None:
        """A call for this line: ring with caller ID until it is answered or cancelled."""
        if not self.plugged:
            raise HalError("sim exchange: the line is unplugged, cannot ring it")
        if self.state != "idle" or self.off_hook:
            raise HalError(f"sim exchange: line is {self.state}, cannot ring it")
        how = method or self.callerid
        if how not in METHODS:
            raise HalError(f"sim exchange: unknown caller ID method {how!r}")
        self.state = "ringing"
        self._call = {"direction": "in", "caller": caller, "method": how}
        cid = plan(how, CallerId(caller, name, withheld), datetime.now())
        first_ring = 0.0
        if cid is not None and cid.before_ring:
            if cid.reversal:
                self._set_polarity(True)
            self._out[:] = cid.pcm
            first_ring = cid.ring_after
        cadence = list(self.profile.ring_cadence)
        t, i = first_ring, 0
        while t < RING_LIMIT_S:
            on = i % 2 == 0
            length = cadence[i % len(cadence)]
            self._at(t, self._ring_step_for(on, i == 0))
            if on and i == 0 and cid is not None and not cid.before_ring:
                # data after the first ring: in its silent interval
                self._at(t + length, self._queue_for(cid.pcm))
            t += length
            i += 1
        self._at(t, lambda: self.cancel())

    def _ring_step_for(self, on: bool, first: bool) -> Callable[[], None]:
        return lambda: self._ring_step(on, first)

    def _queue_for(self, pcm: bytes) -> Callable[[], None]:
        return lambda: self._queue_out(pcm)

    def _ring_step(self, on: bool, first: bool) -> None:
        if self.state != "ringing":
            return
        if on and first:
            self._set_polarity(False)  # an ETSI reversal ends at the first ring
        self._set_ring(on)

    def _queue_out(self, pcm: bytes) -> None:
        if self.state == "ringing" and not self.off_hook:
            self._out[:] = pcm

    def cancel(self) -> None:
        """The caller gives up before the answer."""
        if self.state == "ringing":
            self._end_call("caller gave up")

    # -- outgoing calls -------------------------------------------------------------------

    def _hook_changed(self, _pin: ObservableMockPin) -> None:
        if not self.plugged:
            return  # nobody at the other end of the pair
        if self.off_hook:
            self._set_ring(False)
            self._set_loop(True)
            if self.state == "ringing":
                self._out.clear()
                self._talk()
            elif self.state == "idle":
                self.state = "dialtone"
                self.digits = ""
                self._call = {"direction": "out", "number": ""}
                self._tone = ToneGenerator(self.profile.dial) if self.dial_tone else None
        else:
            self._set_loop(False)
            self._set_polarity(False)
            if self.state != "idle":
                self._end_call("gateway hung up")

    def _digit(self, digit: str) -> None:
        if self.state not in ("dialtone", "collecting"):
            return
        self.state = "collecting"
        self._tone = None
        self.digits += digit
        count = len(self.digits)
        self._at(DIGIT_TIMEOUT_S, lambda: self._number_complete(count))

    def _number_complete(self, count: int) -> None:
        if self.state != "collecting" or len(self.digits) != count:
            return
        if self._call is not None:
            self._call["number"] = self.digits
        if self.digits in self.busy_numbers:
            self.state = "busy"
            self._tone = ToneGenerator(self.profile.busy)
            return
        self.state = "ringback"
        self._tone = ToneGenerator(self.profile.ringback)
        self._at(self.answer_after, self._far_answers)

    def _far_answers(self) -> None:
        if self.state != "ringback":
            return
        if self.reverse_on_answer:
            self._set_polarity(True)
        self._talk()

    def _talk(self) -> None:
        self.state = "talking"
        self._tone = None
        if self._far is None:
            self._far = ToneGenerator(ToneSpec((self.far_tone_hz,), level_dbfs=-16.0)).next_frame

    def play(self, source: Callable[[], bytes] | None) -> None:
        """What the far party says from now on (None: the steady far tone)."""
        self._far = source

    # -- the bare line, for the contract suite (no call logic) ----------------------------

    def drive_ringing(self, on: bool) -> None:
        """Ring voltage on or off, whatever the call state."""
        self._set_ring(on)

    def drive_polarity(self, reversed: bool) -> None:
        self._set_polarity(reversed)

    def drive_loop(self, present: bool) -> None:
        self._set_loop(present)

    def send(self, source: Callable[[], bytes] | None) -> None:
        """Send this down the line, on hook or off, over any tone (None: back to normal)."""
        self._manual = source

    # -- the pair itself -------------------------------------------------------------------

    def unplug(self) -> None:
        """Cut the pair: any call ends, loop current, ringing and polarity go, and nothing
        is heard either way until `plug`."""
        if self.state != "idle":
            self._end_call("line unplugged")
        self._set_ring(False)
        self._set_loop(False)
        self._set_polarity(False)
        self.plugged = False

    def plug(self) -> None:
        """Reconnect the pair; a gateway already off hook gets loop current and dial tone."""
        if self.plugged:
            return
        self.plugged = True
        if self.off_hook:
            self._hook_changed(self._hook_pin)

    # -- the far end hangs up -------------------------------------------------------------

    def far_hang_up(self, how: str = "busy") -> None:
        """The far end clears: "busy" (busy tone), "loop" (loop current drops) or
        "polarity" (the polarity reverses)."""
        if how not in ("busy", "loop", "polarity"):
            raise HalError(f"sim exchange: hang up by {how!r}? expected busy, loop or polarity")
        if self.state not in ("talking", "ringback"):
            raise HalError(f"sim exchange: no call to hang up ({self.state})")
        if self._call is not None:
            self._call["cleared_by"] = how
        self._far = None
        self.state = "cleared"
        if how == "busy":
            self._tone = ToneGenerator(self.profile.busy)
        elif how == "loop":
            self._tone = None
            self._set_loop(False)
        else:
            self._tone = None
            self._set_polarity(not self.reversed)

    def _end_call(self, how: str) -> None:
        self._set_ring(False)
        self._out.clear()
        self._tone = None
        self._far = None
        self._epoch += 1
        if self._call is not None:
            self.calls.append({**self._call, "ended": how})
        self._call = None
        self.state = "idle"

    # -- audio ----------------------------------------------------------------------------

    def _speak(self) -> bytes:
        """The next 20 ms the exchange sends down the line."""
        if not self.plugged:
            return SILENCE_FRAME
        if self._out:
            frame = bytes(self._out[:FRAME_BYTES]).ljust(FRAME_BYTES, b"\0")
            del self._out[:FRAME_BYTES]
            return frame
        if self._manual is not None:
            return self._manual()
        if self._tone is not None:
            return self._tone.next_frame()
        if self._far is not None and self.off_hook:
            return self._far()
        return SILENCE_FRAME

    def _hear(self, frame: bytes) -> None:
        """20 ms the gateway sent: kept, listened to for digits; the clock moves on."""
        self._history.append(frame)
        if self.off_hook and self.plugged:
            for digit in self._detector.feed(frame):
                self._digit(digit)
        self._advance()

    def heard(self, seconds: float) -> bytes:
        """The last `seconds` of what the gateway sent down the line."""
        n = max(1, round(seconds / _FRAME_S))
        return b"".join(list(self._history)[-n:])

    def describe(self) -> dict[str, Any]:
        return {"state": self.state, "plugged": self.plugged, "off_hook": self.off_hook,
                "ringing": self.ringing,
                "reversed": self.reversed, "loop": bool(self._loop_pin.state),
                "digits": self.digits, "calls": list(self.calls)}


_KNOWN = {"country", "callerid", "reverse_on_answer", "answer_after_ms", "far_tone_hz", "dial_tone",
          "echo_delay_ms", "echo_erl_db",
          "ring_pin", "hook_pin", "loop_pin", "polarity_pin", "clock"}


class SimFxo(DaaFxo):
    """An FXO port on a simulated exchange line; ``.exchange`` is that exchange."""

    def __init__(self, name: str, options: Mapping[str, Any] | None = None) -> None:
        opts = dict(options or {})
        unknown = set(opts) - _KNOWN
        if unknown:
            raise HalError(f"sim FXO {name}: unknown option(s) {', '.join(sorted(unknown))}; "
                           f"known: {', '.join(sorted(_KNOWN))}")
        try:
            profile = get_profile(str(opts.get("country", "US")))
        except ValueError as exc:
            raise HalError(f"sim FXO {name}: {exc}") from exc
        clock_kind = opts.get("clock", "monotonic")
        if clock_kind not in ("monotonic", "frames"):
            raise HalError(f"sim FXO {name}: clock {clock_kind!r}, expected monotonic or frames")
        self.pin_factory = mock_factory()
        numbers = {k: opts.get(k, d) for k, d in (("ring_pin", 5), ("hook_pin", 6),
                                                    ("loop_pin", 13), ("polarity_pin", 19))}
        pins = {k: self.pin_factory.pin(v) for k, v in numbers.items()}
        exchange = SimExchange(
            ring=pins["ring_pin"], hook=pins["hook_pin"], loop=pins["loop_pin"],
            polarity=pins["polarity_pin"], profile=profile,
            callerid=opts.get("callerid"),
            reverse_on_answer=bool(opts.get("reverse_on_answer", False)),
            answer_after=float(opts.get("answer_after_ms", 1000)) / 1000.0,
            far_tone_hz=float(opts.get("far_tone_hz", 1000.0)),
            dial_tone=bool(opts.get("dial_tone", True)),
        )
        self.exchange = exchange
        clock: Callable[[], float] = exchange.clock if clock_kind == "frames" else time.monotonic
        audio: AudioPort = exchange.line_audio
        self.hybrid: HybridEcho | None = None
        """The DAA's 2-wire hybrid echo, when echo_delay_ms asks for one."""
        if opts.get("echo_delay_ms") is not None:
            from hal.sim.hybrid import HybridAudio, HybridEcho

            self.hybrid = HybridEcho(float(opts["echo_delay_ms"]),
                                     float(opts.get("echo_erl_db", 6.0)))
            audio = HybridAudio(exchange.line_audio, self.hybrid)
        super().__init__(
            name, ring_pin=numbers["ring_pin"], hook_pin=numbers["hook_pin"],
            loop_pin=numbers["loop_pin"], polarity_pin=numbers["polarity_pin"],
            audio=audio, pin_factory=self.pin_factory,
            ring_active_high=True, clock=clock, realtime=clock_kind == "monotonic",
        )
