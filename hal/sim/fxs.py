"""The "sim" FXS backend: the real AG1171 driver on mock pins, with a virtual phone attached.

Nothing here imitates the driver; the driver under test is :class:`Ag1171Fxs` itself. The
phone drives the SHK pin and watches RM and F/R, and audio flows through a
:class:`MemoryAudio` whose far end is the phone. Hook callbacks fire synchronously when
the phone changes the pin.

Options (all optional):

- ``country``: tone profile the phone listens with (default "US");
- ``ring_hz``: ring frequency (default 20);
- ``clock``: "monotonic" (default; edge times are time.monotonic(), as on hardware) or
  "frames" (edge times are the phone's frame clock: exact and deterministic, for tests);
- ``time_origin``: start of the frame clock (default 0.0);
- ``shk_pin``, ``rm_pin``, ``fr_pin``: mock pin numbers (default 17, 27, 22);
- ``auto_answer_ms``: the phone goes off-hook this long after ringing starts, with nobody
  at the control socket (load tests, benchmarks); off when absent or null;
- ``auto_hangup_ms``: an auto-answered call is hung up this long after the answer. Without
  it the phone stays off-hook until it hears dial, busy or reorder tone, i.e. until the far
  end has hung up.
- ``debounce_ms``: the driver's SHK debounce (default 10);
- ``bounce_count``, ``bounce_ms``: the phone's hook switch bounces this many times after
  every make and break, each stay and jump 0.3 ms to ``bounce_ms`` long (default 0 = clean
  edges, 2 ms), so the driver's debounce is exercised;
- ``fault``: a broken line, for `branchline line-test` and its tests: "shk-open" (the hook
  switch is not wired to SHK: lifting the handset is never seen) or "ear-mute" (nothing
  the port plays reaches the earpiece);
- ``echo_delay_ms``, ``echo_erl_db``: simulate the SLIC's 2-wire hybrid: what the port plays
  comes back in what it captures this much later and this much weaker (default ERL 6 dB;
  see hal/sim/hybrid.py). Off when absent. The line's echo canceller is then on by default.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from gateway.dsp.tones import get_profile
from hal.base import AudioPort, HalError
from hal.gpio.mock import ObservableMockPin, mock_factory
from hal.sim.phone import VirtualPhone
from hal.slic.ag1171 import Ag1171Fxs

if TYPE_CHECKING:
    from hal.sim.hybrid import HybridEcho

_KNOWN = {
    "country",
    "ring_hz",
    "clock",
    "time_origin",
    "shk_pin",
    "rm_pin",
    "fr_pin",
    "auto_answer_ms",
    "auto_hangup_ms",
    "echo_delay_ms",
    "echo_erl_db",
    "debounce_ms",
    "bounce_count",
    "bounce_ms",
    "fault",
    "echo_canceller",  # read by the runtime's line port, not here
    "echo_tail_ms",
    "callerid",  # read by the runtime's line port (gateway/runtime/ports.py), not here
}


class SimFxs(Ag1171Fxs):
    """An FXS port with a simulated phone on it; ``.phone`` is that phone."""

    def __init__(self, name: str, options: Mapping[str, Any] | None = None) -> None:
        opts = dict(options or {})
        unknown = set(opts) - _KNOWN
        if unknown:
            raise HalError(
                f"sim FXS {name}: unknown option(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(_KNOWN))}"
            )
        try:
            profile = get_profile(str(opts.get("country", "US")))
        except ValueError as exc:
            raise HalError(f"sim FXS {name}: {exc}") from exc
        clock_kind = opts.get("clock", "monotonic")
        if clock_kind not in ("monotonic", "frames"):
            raise HalError(f"sim FXS {name}: clock {clock_kind!r}, expected monotonic or frames")
        self.pin_factory = mock_factory()
        pins = {k: opts.get(k, d) for k, d in (("shk_pin", 17), ("rm_pin", 27), ("fr_pin", 22))}
        shk, rm, fr = (self._pin(pins[k]) for k in ("shk_pin", "rm_pin", "fr_pin"))
        fault = opts.get("fault")
        if fault not in (None, "shk-open", "ear-mute"):
            raise HalError(f"sim FXS {name}: fault {fault!r}, expected shk-open or ear-mute")
        if fault == "shk-open":  # the phone's switch drives a pin nobody reads
            shk = mock_factory().pin(pins["shk_pin"])
        phone = VirtualPhone(
            shk=shk, rm=rm, fr=fr, profile=profile, time_origin=float(opts.get("time_origin", 0.0))
        )
        self.phone = phone
        """The virtual handset on this port."""
        answer_ms = _optional_ms(name, "auto_answer_ms", opts.get("auto_answer_ms"))
        hangup_ms = _optional_ms(name, "auto_hangup_ms", opts.get("auto_hangup_ms"))
        if hangup_ms is not None and answer_ms is None:
            raise HalError(f"sim FXS {name}: auto_hangup_ms needs auto_answer_ms")
        phone.set_auto_answer(answer_ms, hangup_ms)
        bounces = opts.get("bounce_count", 0)
        if bounces:
            from hal.gpio.mock import ContactBounce

            try:
                phone.bounce = ContactBounce(
                    int(bounces), 0.3, float(opts.get("bounce_ms", 2.0)), seed=name
                )
            except (TypeError, ValueError) as exc:
                raise HalError(f"sim FXS {name}: {exc}") from exc
        clock: Callable[[], float] = phone.clock if clock_kind == "frames" else time.monotonic
        audio: AudioPort = phone.line_audio
        if fault == "ear-mute":
            audio = _MutedEarpiece(audio)
        self.hybrid: HybridEcho | None = None
        """The simulated 2-wire hybrid's echo path, when echo_delay_ms asks for one."""
        echo_ms = _optional_ms(name, "echo_delay_ms", opts.get("echo_delay_ms"))
        if echo_ms is not None:
            from hal.sim.hybrid import HybridAudio, HybridEcho

            self.hybrid = HybridEcho(echo_ms, float(opts.get("echo_erl_db", 6.0)))
            audio = HybridAudio(phone.line_audio, self.hybrid)
        super().__init__(
            name,
            shk_pin=pins["shk_pin"],
            rm_pin=pins["rm_pin"],
            fr_pin=pins["fr_pin"],
            audio=audio,
            pin_factory=self.pin_factory,
            ring_hz=float(opts.get("ring_hz", profile.ring_hz if "country" in opts else 20)),
            clock=clock,
            realtime=clock_kind == "monotonic",
            debounce_ms=float(opts.get("debounce_ms", 10.0)),
        )

    def _pin(self, number: int | str) -> ObservableMockPin:
        pin = self.pin_factory.pin(number)
        assert isinstance(pin, ObservableMockPin)
        return pin


def _optional_ms(name: str, key: str, value: Any) -> float | None:
    """A non-negative millisecond option, or None when absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise HalError(f"sim FXS {name}: {key} {value!r}, expected milliseconds >= 0 or null")
    return float(value)


class _MutedEarpiece(AudioPort):
    """The "ear-mute" fault: the mouthpiece works, the earpiece gets silence."""

    def __init__(self, inner: AudioPort) -> None:
        self._inner = inner

    def read_frame(self) -> bytes | None:
        return self._inner.read_frame()

    def write_frame(self, frame: bytes) -> None:
        self._inner.write_frame(bytes(len(frame)))

    def close(self) -> None:
        self._inner.close()
