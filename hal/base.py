"""The interfaces every hardware backend meets.

Backends are chosen by name in the config (see :mod:`hal.registry`). Each interface
lists what a backend must implement; the contract suites in ``tests/contract`` check the
behaviour on the simulated backends and ``hardware-tests/`` re-runs them on real boards.

Audio frames are always 20 ms of 8 kHz S16LE mono PCM (320 bytes).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

HookCallback = Callable[[bool, float], None]
"""``callback(off_hook, t)``: t is the time.monotonic() of the edge (see each backend)."""


class HalError(Exception):
    """A backend cannot be created or used; the message says what to fix."""


class AudioPort(ABC):
    """A full-duplex 20 ms frame stream to some audio hardware.

    Must implement:

    - ``read_frame()``: the next captured frame, or None if none is ready yet
      (never blocks for longer than one frame);
    - ``write_frame(frame)``: queue one frame for playback;
    - ``close()``: release the device; idempotent.
    """

    @abstractmethod
    def read_frame(self) -> bytes | None:
        """Next captured 320-byte frame, or None if none is ready."""

    @abstractmethod
    def write_frame(self, frame: bytes) -> None:
        """Play one 320-byte frame."""

    @abstractmethod
    def close(self) -> None:
        """Release the device."""


class FxsPort(AudioPort):
    """One analog phone port (a SLIC): hook detection, ringing, polarity and audio.

    Audio is the inherited `AudioPort` frame stream: mouthpiece in, earpiece out.

    The line state machine drives ringing cadence and interprets hook edges (pulse
    digits, flash, hang-up); the port only reports raw edges and switches voltages.

    Must implement:

    - ``name``: the port name from the config;
    - ``start(on_hook_change)``: begin reporting hook edges to the callback as
      ``(off_hook, t)``; it may be called from a driver thread, so the caller marshals;
      edges must be reported in order and each edge exactly once, with pulse-dial
      breaks and makes (40-60 ms) kept;
    - ``is_off_hook()``: current debounced hook state;
    - ``set_ringing(on)``: ring voltage on or off;
    - ``set_polarity(reversed)``: loop polarity (for caller ID and answer supervision);
    - ``read_frame()`` / ``write_frame(frame)``: mouthpiece in, earpiece out;
    - ``close()``: stop ringing, release pins and audio; idempotent.
    """

    name: str

    @abstractmethod
    def start(self, on_hook_change: HookCallback) -> None:
        """Begin reporting hook edges."""

    @abstractmethod
    def is_off_hook(self) -> bool:
        """True while the handset is lifted."""

    @abstractmethod
    def set_ringing(self, on: bool) -> None:
        """Ring voltage on/off; the line state machine times the cadence."""

    @abstractmethod
    def set_polarity(self, reversed: bool) -> None:
        """Reverse (True) or restore (False) the loop polarity."""


class FxoPort(AudioPort):
    """An analog exchange line (a DAA): the gateway acts as the phone.

    Audio is the inherited `AudioPort` frame stream to and from the line.

    Must implement:

    - ``name``;
    - ``start(on_ring, on_polarity)``: report ring bursts ``(ringing, t)`` and line
      polarity reversals ``(reversed, t)``;
    - ``set_off_hook(off)``: seize or release the line;
    - ``read_frame()`` / ``write_frame(frame)``: line audio;
    - ``close()``.
    """

    name: str

    @abstractmethod
    def start(
        self,
        on_ring: Callable[[bool, float], None],
        on_polarity: Callable[[bool, float], None],
    ) -> None:
        """Begin reporting ring and polarity events."""

    @abstractmethod
    def set_off_hook(self, off: bool) -> None:
        """Seize (True) or release (False) the line."""



class Modem(ABC):
    """A cellular voice modem driven by AT commands.

    Must implement:

    - ``name``;
    - ``start(on_event)``: deliver unsolicited results (RING, +CLIP, NO CARRIER, SMS
      indications) as ``(code, text, t)``;
    - ``command(line, timeout)``: send one AT command and return its reply lines
      (raising :class:`HalError` on ERROR/timeout);
    - ``audio``: the :class:`AudioPort` carrying call audio (USB or serial PCM);
    - ``close()``.
    """

    name: str
    audio: AudioPort

    @abstractmethod
    def start(self, on_event: Callable[[str, str, float], None]) -> None:
        """Begin delivering unsolicited result codes."""

    @abstractmethod
    def command(self, line: str, timeout: float = 5.0) -> list[str]:
        """Send an AT command; return the reply lines before the final result."""

    @abstractmethod
    def close(self) -> None:
        """Release the serial port and audio."""
