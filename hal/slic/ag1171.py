"""Silvertel AG1171 SLIC on GPIO pins, with audio through a separate codec (AudioPort).

Wiring (Raspberry Pi BCM numbers come from the config):

- SHK (switch hook, SLIC output -> GPIO input): high = off-hook;
- RM (ring mode, GPIO output): high while ringing;
- F/R (forward/reverse, GPIO output): toggled at the ring frequency while ringing,
  otherwise held steady to set loop polarity (high = forward, the normal polarity).

SHK is debounced by the pin factory (``bounce_s``, 10 ms by default): enough to swallow
contact bounce, short enough to keep pulse-dial breaks and makes of 40-60 ms.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from gpiozero import DigitalInputDevice, DigitalOutputDevice, PWMOutputDevice

from hal.base import AudioPort, FxsPort, HookCallback

FORWARD_LEVEL = 1.0
"""F/R level (PWM duty) for normal loop polarity; reversed polarity is the opposite."""


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
        bounce_s: float | None = 0.010,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.ring_hz = float(ring_hz)
        self._audio = audio
        self._clock = clock
        self._lock = threading.Lock()
        self._callback: HookCallback | None = None
        self._reported: bool | None = None
        self._ringing = False
        self._reversed = False
        self._closed = False
        self._devices: list[Any] = []
        try:
            self._shk = DigitalInputDevice(
                shk_pin,
                pull_up=None,
                active_state=True,
                bounce_time=bounce_s,
                pin_factory=pin_factory,
            )
            self._devices.append(self._shk)
            self._rm = DigitalOutputDevice(rm_pin, initial_value=False, pin_factory=pin_factory)
            self._devices.append(self._rm)
            self._fr = PWMOutputDevice(
                fr_pin,
                initial_value=self._polarity_level(),
                frequency=self.ring_hz,
                pin_factory=pin_factory,
            )
            self._devices.append(self._fr)
        except Exception:
            self._close_devices()
            raise

    def _polarity_level(self) -> float:
        return 1.0 - FORWARD_LEVEL if self._reversed else FORWARD_LEVEL

    def start(self, on_hook_change: HookCallback) -> None:
        """Report SHK edges to ``on_hook_change(off_hook, t)`` from now on."""
        self._callback = on_hook_change
        self._reported = bool(self._shk.is_active)
        self._shk.when_activated = self._on_activated
        self._shk.when_deactivated = self._on_deactivated

    def _on_activated(self) -> None:
        self._edge(True)

    def _on_deactivated(self) -> None:
        self._edge(False)

    def _edge(self, off_hook: bool) -> None:
        t = self._clock()
        with self._lock:
            if off_hook == self._reported or self._closed:
                return  # each level change is reported once
            self._reported = off_hook
            callback = self._callback
        if callback is not None:
            callback(off_hook, t)

    def is_off_hook(self) -> bool:
        """SHK level: high = off-hook."""
        return bool(self._shk.is_active)

    def set_ringing(self, on: bool) -> None:
        """RM high and F/R toggling at ring_hz, or RM low with F/R back at the polarity level."""
        if self._closed or on == self._ringing:
            return
        self._ringing = on
        if on:
            self._rm.on()
            self._fr.frequency = self.ring_hz
            self._fr.value = 0.5
        else:
            self._fr.value = self._polarity_level()
            self._rm.off()

    @property
    def ringing(self) -> bool:
        """Whether ring voltage is being applied."""
        return self._ringing

    def set_polarity(self, reversed: bool) -> None:
        """Set loop polarity; while ringing it takes effect when ringing stops."""
        self._reversed = reversed
        if not self._ringing and not self._closed:
            self._fr.value = self._polarity_level()

    def read_frame(self) -> bytes | None:
        """Mouthpiece audio from the codec."""
        return self._audio.read_frame()

    def write_frame(self, frame: bytes) -> None:
        """Earpiece audio to the codec."""
        self._audio.write_frame(frame)

    def close(self) -> None:
        """Stop ringing, release the pins and the audio device."""
        if self._closed:
            return
        self.set_ringing(False)
        self._closed = True
        self._callback = None
        self._close_devices()
        self._audio.close()

    def _close_devices(self) -> None:
        for dev in reversed(self._devices):
            dev.close()
        self._devices.clear()
