"""Silvertel AG1171 SLIC on GPIO pins, with audio through a separate codec (AudioPort).

Wiring (Raspberry Pi BCM numbers come from the config; docs/hardware.md has tables):

- SHK (switch hook, SLIC output -> GPIO input): high = off-hook;
- RM (ring mode, GPIO output): high while ringing;
- F/R (forward/reverse, GPIO output): toggled at the ring frequency (20 or 25 Hz) while
  ringing, otherwise held steady to set loop polarity (high = forward, the normal one).
  The toggling is a 50 % PWM where the pin factory has PWM (lgpio, RPi.GPIO, mock), else
  gpiozero's blink thread.

SHK is debounced here, in software (:class:`hal.gpio.debounce.Debouncer`): a level counts
once it has been stable for ``debounce_ms`` (10 ms by default), and the edge carries the
time the contact first moved, so contact bounce adds no edge and shifts none, and
pulse-dial breaks and makes of 40-60 ms keep their length. The pin factory's own
``bounce_time`` is not used: factories differ, and gpiozero's MockFactory never applies it.

A level settles either when the next raw edge or audio frame looks at the clock, or, with
``realtime`` (hardware), on a small timer thread at the moment it is due.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from gpiozero import DigitalInputDevice, DigitalOutputDevice, PWMOutputDevice
from gpiozero.exc import PinPWMUnsupported

from hal.base import AudioPort, FxsPort, HalError, HookCallback
from hal.gpio.debounce import DebouncedEdge, Debouncer

FORWARD_LEVEL = 1.0
"""F/R level (PWM duty) for normal loop polarity; reversed polarity is the opposite."""
RING_HZ_RANGE = (15.0, 60.0)
"""Ring frequencies the driver accepts (20 Hz US, 25 Hz much of Europe, 16 2/3, 50)."""


class Ag1171Fxs(FxsPort):
    """One FXS port on an AG1171: hook edges from SHK, ringing via RM + F/R, polarity via F/R."""

    def __init__(
        self,
        name: str,
        *,
        shk_pin: int | str,
        rm_pin: int | str,
        fr_pin: int | str,
        audio: AudioPort,
        pin_factory: Any = None,
        ring_hz: float = 20,
        debounce_ms: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        realtime: bool = True,
    ) -> None:
        self.name = name
        self.ring_hz = float(ring_hz)
        lo, hi = RING_HZ_RANGE
        if not lo <= self.ring_hz <= hi:
            raise HalError(f"ag1171 port {name}: ring_hz {ring_hz!r}, expected {lo:g} to {hi:g}")
        if not 0 <= debounce_ms <= 30:
            raise HalError(
                f"ag1171 port {name}: debounce_ms {debounce_ms!r}, expected 0 to 30 "
                "(pulse-dial makes are 40 ms)"
            )
        self._audio = audio
        self._clock = clock
        self._realtime = realtime
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._timer: threading.Thread | None = None
        self._callback: HookCallback | None = None
        self._debounce = Debouncer(debounce_ms / 1000.0)
        self._ringing = False
        self._reversed = False
        self._closed = False
        self._devices: list[Any] = []
        try:
            self._shk = DigitalInputDevice(
                shk_pin,
                pull_up=None,
                active_state=True,
                bounce_time=None,  # debounced here, see the module docstring
                pin_factory=pin_factory,
            )
            self._devices.append(self._shk)
            self._rm = DigitalOutputDevice(rm_pin, initial_value=False, pin_factory=pin_factory)
            self._devices.append(self._rm)
            try:
                self._fr: Any = PWMOutputDevice(
                    fr_pin,
                    initial_value=self._polarity_level(),
                    frequency=self.ring_hz,
                    pin_factory=pin_factory,
                )
                self._fr_pwm = True
            except PinPWMUnsupported:  # e.g. gpiozero's native factory: toggle it ourselves
                self._fr = DigitalOutputDevice(
                    fr_pin, initial_value=self._polarity_level() >= 0.5, pin_factory=pin_factory
                )
                self._fr_pwm = False
            self._devices.append(self._fr)
        except Exception:
            self._close_devices()
            raise

    def _polarity_level(self) -> float:
        return 1.0 - FORWARD_LEVEL if self._reversed else FORWARD_LEVEL

    # -- hook -----------------------------------------------------------------------------

    def start(self, on_hook_change: HookCallback) -> None:
        """Report debounced SHK edges to ``on_hook_change(off_hook, t)`` from now on."""
        with self._lock:
            self._callback = on_hook_change
            self._debounce.reset(bool(self._shk.is_active), self._clock())
        self._shk.when_activated = self._on_activated
        self._shk.when_deactivated = self._on_deactivated
        if self._realtime and self._timer is None:
            self._timer = threading.Thread(
                target=self._timer_loop, name=f"ag1171-{self.name}-shk", daemon=True
            )
            self._timer.start()

    def _on_activated(self) -> None:
        self._raw_edge(True)

    def _on_deactivated(self) -> None:
        self._raw_edge(False)

    def _raw_edge(self, level: bool) -> None:
        with self._lock:
            if self._closed:
                return
            self._deliver(self._debounce.raw(level, self._clock()))
            self._wake.notify()

    def poll(self) -> None:
        """Settle a pending SHK level that is due by now (also done on every audio frame)."""
        with self._lock:
            if not self._closed:
                self._deliver(self._debounce.handle_timer(self._clock()))

    def _deliver(self, edges: list[DebouncedEdge]) -> None:
        # under the lock, so edges from the pin, timer and audio threads stay in order
        callback = self._callback
        if callback is not None:
            for edge in edges:
                callback(edge.level, edge.t)

    def _timer_loop(self) -> None:
        with self._lock:
            while not self._closed:
                deadline = self._debounce.get_timer()
                if deadline is None:
                    self._wake.wait()
                    continue
                wait = deadline - self._clock()
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                self._deliver(self._debounce.handle_timer(self._clock()))

    @property
    def bounce_stats(self) -> dict[str, int]:
        """Raw SHK changes seen and excursions dropped as bounce or spikes."""
        return {"raw_edges": self._debounce.raw_edges, "dropped": self._debounce.dropped}

    def is_off_hook(self) -> bool:
        """The debounced SHK level: high = off-hook."""
        self.poll()
        with self._lock:
            if self._callback is None:  # not started: nothing debounced yet, read the pin
                return bool(self._shk.is_active)
            return self._debounce.level

    # -- ringing and polarity -------------------------------------------------------------

    def set_ringing(self, on: bool) -> None:
        """RM high with F/R toggling at ring_hz, or RM low with F/R back at rest (the
        polarity level)."""
        if self._closed or on == self._ringing:
            return
        self._ringing = on
        if on:
            self._rm.on()
            if self._fr_pwm:
                self._fr.frequency = self.ring_hz
                self._fr.value = 0.5
            else:  # gpiozero's blink thread: half a ring cycle each way
                half = 0.5 / self.ring_hz
                self._fr.blink(on_time=half, off_time=half, background=True)
        else:
            self._set_fr_rest()
            self._rm.off()

    def _set_fr_rest(self) -> None:
        level = self._polarity_level()
        if self._fr_pwm:
            self._fr.value = level
        elif level >= 0.5:
            self._fr.on()  # also stops a blink
        else:
            self._fr.off()

    @property
    def ringing(self) -> bool:
        """Whether ring voltage is being applied."""
        return self._ringing

    def set_polarity(self, reversed: bool) -> None:
        """Set loop polarity; while ringing it takes effect when ringing stops."""
        self._reversed = reversed
        if not self._ringing and not self._closed:
            self._set_fr_rest()

    # -- audio ----------------------------------------------------------------------------

    def read_frame(self) -> bytes | None:
        """Mouthpiece audio from the codec."""
        frame = self._audio.read_frame()
        self.poll()
        return frame

    def write_frame(self, frame: bytes) -> None:
        """Earpiece audio to the codec."""
        self._audio.write_frame(frame)
        self.poll()

    @property
    def codec(self) -> AudioPort:
        """The codec's audio port (its counters, for diagnostics)."""
        return self._audio

    def close(self) -> None:
        """Stop ringing, release the pins and the audio device."""
        if self._closed:
            return
        self.set_ringing(False)
        with self._lock:
            self._closed = True
            self._callback = None
            self._wake.notify_all()
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.join(1.0)
        self._close_devices()
        self._audio.close()

    def _close_devices(self) -> None:
        for dev in reversed(self._devices):
            dev.close()
        self._devices.clear()
