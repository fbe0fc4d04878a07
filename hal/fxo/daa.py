"""An exchange line through a DAA module on GPIO pins, with audio on an ALSA device.

Wiring (BCM numbers from the config; docs/hardware.md has tables):

- ring detect (DAA opto output -> GPIO input): active while ring voltage is on the line.
  Many modules pulse it at the ring frequency (20/25 Hz) rather than holding it; both
  work: a burst starts at the first active edge and ends once the input has stayed
  inactive for ``ring_hold_ms`` (default 120 ms, over a 16 2/3 Hz ring's half period);
- hook relay (GPIO output -> relay or the DAA's OH input): active = off-hook (seized);
- loop current (optional input): active while loop current flows through the held line;
- polarity (optional input): active while the line's polarity is reversed.

``ring_active_high`` etc. say which level is "active" for each input (opto outputs
usually pull low). Ring bursts are reported with the time of their first active edge and
of their last inactive edge. A pending burst end is settled when the next pin edge or
audio frame looks at the clock, or, with ``realtime`` (hardware), on a timer thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from gpiozero import DigitalInputDevice, DigitalOutputDevice

from hal.base import AudioPort, FxoPort, HalError

EventCallback = Callable[[bool, float], None]


class RingFilter:
    """Ring-detect input levels in, ring bursts out (pure: times are passed in)."""

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self.ringing = False
        self._active = False
        self._inactive_since: float | None = None

    def raw(self, active: bool, t: float) -> list[tuple[bool, float]]:
        out = self.handle_timer(t)
        if active == self._active:
            return out
        self._active = active
        if active:
            self._inactive_since = None
            if not self.ringing:
                self.ringing = True
                out.append((True, t))
        elif self.ringing:
            self._inactive_since = t
        return out

    def get_timer(self) -> float | None:
        return None if self._inactive_since is None else self._inactive_since + self.hold_s

    def handle_timer(self, now: float) -> list[tuple[bool, float]]:
        since = self._inactive_since
        if since is not None and now >= since + self.hold_s and not self._active:
            self._inactive_since = None
            self.ringing = False
            return [(False, since)]
        return []


class DaaFxo(FxoPort):
    """One FXO port: ring detect and hook relay on GPIO, line audio on an `AudioPort`."""

    def __init__(
        self,
        name: str,
        *,
        ring_pin: int | str,
        hook_pin: int | str,
        audio: AudioPort,
        loop_pin: int | str | None = None,
        polarity_pin: int | str | None = None,
        pin_factory: Any = None,
        ring_active_high: bool = False,
        loop_active_high: bool = True,
        polarity_active_high: bool = True,
        ring_hold_ms: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
        realtime: bool = True,
    ) -> None:
        self.name = name
        if not 20 <= ring_hold_ms <= 1000:
            raise HalError(f"daa port {name}: ring_hold_ms {ring_hold_ms!r}, expected 20 to 1000")
        self._audio = audio
        self._clock = clock
        self._realtime = realtime
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._filter = RingFilter(ring_hold_ms / 1000.0)
        self._on_ring: EventCallback | None = None
        self._on_polarity: EventCallback | None = None
        self._on_loop: EventCallback | None = None
        self._off_hook = False
        self._closed = False
        self._devices: list[Any] = []
        try:
            self._ring = self._input(ring_pin, ring_active_high, pin_factory)
            self._hook = DigitalOutputDevice(hook_pin, initial_value=False,
                                             pin_factory=pin_factory)
            self._devices.append(self._hook)
            self._loop = (None if loop_pin is None
                          else self._input(loop_pin, loop_active_high, pin_factory))
            self._polarity = (None if polarity_pin is None
                              else self._input(polarity_pin, polarity_active_high, pin_factory))
        except Exception:
            self._close_devices()
            raise

    def _input(self, pin: int | str, active_high: bool, factory: Any) -> Any:
        device = DigitalInputDevice(pin, pull_up=None, active_state=active_high,
                                    bounce_time=None, pin_factory=factory)
        self._devices.append(device)
        return device

    # -- events ---------------------------------------------------------------------------

    @property
    def senses_loop_current(self) -> bool:
        return self._loop is not None

    def start(
        self,
        on_ring: EventCallback,
        on_polarity: EventCallback,
        on_loop: EventCallback | None = None,
    ) -> None:
        """Report ring bursts, polarity and loop current changes from now on (callbacks may
        run on a driver thread: the caller marshals)."""
        with self._lock:
            self._on_ring, self._on_polarity, self._on_loop = on_ring, on_polarity, on_loop
        self._ring.when_activated = lambda: self._ring_edge(True)
        self._ring.when_deactivated = lambda: self._ring_edge(False)
        if self._ring.is_active:
            self._ring_edge(True)
        if self._polarity is not None:
            self._polarity.when_activated = lambda: self._report(self._on_polarity, True)
            self._polarity.when_deactivated = lambda: self._report(self._on_polarity, False)
            if self._polarity.is_active:
                self._report(self._on_polarity, True)
        if self._loop is not None:
            self._loop.when_activated = lambda: self._report(self._on_loop, True)
            self._loop.when_deactivated = lambda: self._report(self._on_loop, False)
            self._report(self._on_loop, bool(self._loop.is_active))
        if self._realtime and self._thread is None:
            self._thread = threading.Thread(target=self._timer_loop,
                                            name=f"daa-{self.name}-ring", daemon=True)
            self._thread.start()

    def _report(self, callback: EventCallback | None, value: bool) -> None:
        with self._lock:
            if not self._closed and callback is not None:
                callback(value, self._clock())

    def _ring_edge(self, active: bool) -> None:
        with self._lock:
            if self._closed:
                return
            self._deliver(self._filter.raw(active, self._clock()))
            self._wake.notify()

    def poll(self) -> None:
        """Settle a ring burst whose end is due (also done on every audio frame)."""
        with self._lock:
            if not self._closed:
                self._deliver(self._filter.handle_timer(self._clock()))

    def _deliver(self, bursts: list[tuple[bool, float]]) -> None:
        callback = self._on_ring
        if callback is not None:
            for on, t in bursts:
                callback(on, t)

    def _timer_loop(self) -> None:
        with self._lock:
            while not self._closed:
                deadline = self._filter.get_timer()
                if deadline is None:
                    self._wake.wait()
                    continue
                wait = deadline - self._clock()
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                self._deliver(self._filter.handle_timer(self._clock()))

    # -- hook and state -------------------------------------------------------------------

    def set_off_hook(self, off: bool) -> None:
        """Close (seize) or open (release) the hook relay."""
        if self._closed or off == self._off_hook:
            return
        self._off_hook = off
        if off:
            self._hook.on()
        else:
            self._hook.off()

    def is_off_hook(self) -> bool:
        return self._off_hook

    @property
    def ringing(self) -> bool:
        """Whether a ring burst is on now."""
        self.poll()
        return self._filter.ringing

    # -- audio ----------------------------------------------------------------------------

    def read_frame(self) -> bytes | None:
        frame = self._audio.read_frame()
        self.poll()
        return frame

    def write_frame(self, frame: bytes) -> None:
        self._audio.write_frame(frame)
        self.poll()

    @property
    def audio(self) -> AudioPort:
        return self._audio

    def close(self) -> None:
        """Release the line, the pins and the audio device; idempotent."""
        if self._closed:
            return
        self.set_off_hook(False)
        with self._lock:
            self._closed = True
            self._on_ring = self._on_polarity = self._on_loop = None
            self._wake.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(1.0)
        self._close_devices()
        self._audio.close()

    def _close_devices(self) -> None:
        for dev in reversed(self._devices):
            dev.close()
        self._devices.clear()
