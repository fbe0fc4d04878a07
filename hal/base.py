"""The interfaces every hardware backend meets.

Backends are chosen by name in the config (see :mod:`hal.registry`). Each interface
lists what a backend must implement; the contract suites in ``tests/contract`` check the
behaviour on the simulated backends and ``hardware-tests/`` re-runs them on real boards.

Audio frames are always 20 ms of 8 kHz S16LE mono PCM (320 bytes).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from gateway.modem.at import CommandDone, CommandFailed, CommandTimedOut, Unsolicited

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

    Audio is the inherited `AudioPort` frame stream to and from the line (on hook too, so
    caller ID can be heard between or before the rings).

    Must implement:

    - ``name``;
    - ``start(on_ring, on_polarity, on_loop=None)``: report ring bursts ``(ringing, t)``,
      line polarity ``(reversed, t)`` and, where the hardware senses it, loop current
      ``(present, t)``; callbacks may come from a driver thread (the caller marshals);
    - ``set_off_hook(off)``: seize or release the line; ``is_off_hook()``;
    - ``senses_loop_current``: whether ``on_loop`` will ever be called;
    - ``read_frame()`` / ``write_frame(frame)``: line audio;
    - ``close()``: release the line, the pins and the audio; idempotent.
    """

    name: str

    @abstractmethod
    def start(
        self,
        on_ring: Callable[[bool, float], None],
        on_polarity: Callable[[bool, float], None],
        on_loop: Callable[[bool, float], None] | None = None,
    ) -> None:
        """Begin reporting ring, polarity and loop-current events."""

    @abstractmethod
    def set_off_hook(self, off: bool) -> None:
        """Seize (True) or release (False) the line."""

    @abstractmethod
    def is_off_hook(self) -> bool:
        """Whether the line is held."""

    @property
    def senses_loop_current(self) -> bool:
        """Whether this hardware reports loop current."""
        return False


@dataclass(frozen=True)
class PortLost:
    """The AT port went away: end of file or an I/O error, as when a USB modem is
    unplugged or resets. The port is closed; the supervisor re-probes and re-opens."""

    port: str
    reason: str


ModemEvent = Unsolicited | PortLost
"""What an `AtPort` reports on its own: an unsolicited result code, or its own loss."""


class CommandError(HalError):
    """An AT command ended without OK: `result` says how (an error code or a timeout)."""

    def __init__(self, result: CommandFailed | CommandTimedOut) -> None:
        self.result = result
        if isinstance(result, CommandTimedOut):
            super().__init__(f"{result.command}: no final result (timed out)")
        else:
            super().__init__(f"{result.command}: {result.final}")

    @property
    def timed_out(self) -> bool:
        """True if no final result came in time (the modem may be unresponsive)."""
        return isinstance(self.result, CommandTimedOut)

    @property
    def final(self) -> str | None:
        """The final result code as received (``+CME ERROR: 10``), None after a timeout."""
        return None if isinstance(self.result, CommandTimedOut) else self.result.final


class ModemLost(HalError):
    """The AT port is gone (or was closed) while a command was out, or before it was sent."""


class AtPort(ABC):
    """An AT command channel to a modem, driven from the asyncio loop without blocking it.

    Commands are answered in the order sent, one at a time; replies never reach
    `on_event`, and unsolicited result codes never end up in a reply, even when one
    arrives in the middle of it (see :mod:`gateway.modem.at`).

    Must implement:

    - ``start(on_event)``: open the port (called from inside the running loop) and report
      each :class:`~gateway.modem.at.Unsolicited` and, once, :class:`PortLost` to
      ``on_event`` on the loop thread; raise :class:`HalError` if the port cannot be opened;
    - ``await command(line, timeout, body=None)``: send one command (``body`` is typed
      after the ``> `` prompt of AT+CMGS/AT+CMGW and ended with Ctrl-Z) and return its
      :class:`~gateway.modem.at.CommandDone`; raise :class:`CommandError` on an error
      result or timeout, :class:`ModemLost` if the port is or goes away. Cancelling the
      await does not recall a command already queued;
    - ``close()``: release the port; commands still out raise ModemLost; idempotent.
    """

    @abstractmethod
    def start(self, on_event: Callable[[ModemEvent], None]) -> None:
        """Open the port and begin delivering unsolicited result codes."""

    @abstractmethod
    async def command(
        self, line: str, timeout: float = 5.0, *, body: bytes | None = None
    ) -> CommandDone:
        """Send an AT command (without CR); return its result once it ends with OK."""

    @abstractmethod
    def close(self) -> None:
        """Release the port."""


class Modem(AtPort):
    """A cellular voice modem: its AT channel plus the audio path of its calls.

    The AT side never blocks: the 20 ms audio tick runs on the same loop.

    Must implement, beyond :class:`AtPort`:

    - ``name``: the modem name from the config;
    - ``audio``: the :class:`AudioPort` carrying call audio (USB audio or serial PCM),
      or None for a modem whose audio is wired elsewhere (an analog sound card);
    - ``close()``: release the AT port and the audio.
    """

    name: str
    audio: AudioPort | None
