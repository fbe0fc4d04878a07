"""The FXS port contract: what the line state machine relies on, checked from the phone side.

Subclass :class:`FxsContract` (its name has no Test prefix, so pytest collects only the
subclasses), implement :meth:`FxsContract.make_port` and :meth:`FxsContract.make_phone`,
and override :meth:`FxsContract.pump` if time on the backend is not driven by frames.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from gateway.dsp import FRAME_MS, SILENCE_FRAME
from gateway.dsp.analysis import dominant_frequency, level_dbfs
from gateway.dsp.dtmf import DtmfDetector
from gateway.dsp.pulse import Flash, HookDecoder, HookEvent, OffHook, OnHook, PulseDigit
from gateway.dsp.tones import ToneGenerator, ToneSpec
from hal.base import FxsPort

PULSE_BREAK_S = 0.060
PULSE_MAKE_S = 0.040
PULSE_INTERDIGIT_S = 0.600


def pulse_train_seconds(digits: str) -> float:
    """How long a pulse-dialled string takes at 10 pps with 600 ms between digits."""
    pulses = sum(10 if d == "0" else int(d) for d in digits)
    return pulses * (PULSE_BREAK_S + PULSE_MAKE_S) + max(0, len(digits) - 1) * PULSE_INTERDIGIT_S


class PhoneSide(ABC):
    """The far end of an FXS port: a handset, simulated or a test jig on a real board."""

    timing_tolerance_s: float = 0.0
    """How far hook-edge intervals may stray from what the phone did."""
    level_tolerance_db: float = 0.5
    """How far audio levels may change end to end."""

    @abstractmethod
    def off_hook(self) -> None:
        """Lift the handset."""

    @abstractmethod
    def on_hook(self) -> None:
        """Hang up."""

    @abstractmethod
    def dial_pulse(self, digits: str) -> None:
        """Start pulse dialling at 10 pps, 60/40 ms break/make, 600 ms between digits."""

    @abstractmethod
    def flash(self, duration_ms: float) -> None:
        """Start one hook flash: on-hook for ``duration_ms``, then off-hook again."""

    @abstractmethod
    def dial_dtmf(self, digits: str) -> None:
        """Start keying DTMF into the mouthpiece (100 ms on / 100 ms off)."""

    @abstractmethod
    def is_ringing(self) -> bool:
        """Ring voltage is on the line."""

    @abstractmethod
    def ring_hz(self) -> float | None:
        """Measured ring frequency while ringing."""

    @abstractmethod
    def polarity_reversed(self) -> bool:
        """Loop polarity as the phone side sees it."""

    @abstractmethod
    def speak_tone(self, freq_hz: float, level_dbfs: float) -> None:
        """Hold a sine into the mouthpiece."""

    @abstractmethod
    def stop_speaking(self) -> None:
        """Silence the mouthpiece."""

    @abstractmethod
    def heard(self, seconds: float) -> bytes:
        """The last ``seconds`` of earpiece audio."""


@dataclass
class Rig:
    """A started port, the phone on it, and the hook edges reported so far."""

    port: FxsPort
    phone: PhoneSide
    edges: list[tuple[bool, float]] = field(default_factory=list)


class FxsContract(ABC):
    """Behaviour every :class:`FxsPort` backend must show."""

    expected_ring_hz: float = 20.0

    @abstractmethod
    def make_port(self) -> FxsPort:
        """A fresh, not yet started port."""

    @abstractmethod
    def make_phone(self, port: FxsPort) -> PhoneSide:
        """The phone side attached to ``port``."""

    def pump(
        self, port: FxsPort, seconds: float, ear: Callable[[], bytes] | None = None
    ) -> list[bytes]:
        """Run the port for ``seconds``: read mouthpiece frames, write earpiece frames.

        The default counts frames (simulated time); real boards override with a paced loop.
        """
        frames = []
        for _ in range(round(seconds * 1000 / FRAME_MS)):
            frame = port.read_frame()
            frames.append(frame if frame is not None else SILENCE_FRAME)
            port.write_frame(ear() if ear is not None else SILENCE_FRAME)
        return frames

    @pytest.fixture
    def rig(self) -> Iterator[Rig]:
        with self.open_rig() as rig:
            yield rig

    @contextmanager
    def open_rig(self) -> Iterator[Rig]:
        """A started port with its phone; closed on exit."""
        port = self.make_port()
        phone = self.make_phone(port)
        rig = Rig(port, phone)
        port.start(lambda off, t: rig.edges.append((off, t)))
        try:
            yield rig
        finally:
            port.close()

    # -- hook -------------------------------------------------------------------------

    def test_starts_on_hook_without_edges(self, rig: Rig) -> None:
        self.pump(rig.port, 0.1)
        assert rig.port.is_off_hook() is False
        assert rig.edges == []

    def test_hook_edges_reported_once_in_order(self, rig: Rig) -> None:
        rig.phone.off_hook()
        self.pump(rig.port, 0.2)
        assert rig.port.is_off_hook() is True
        rig.phone.off_hook()  # no change, no edge
        self.pump(rig.port, 0.2)
        rig.phone.on_hook()
        self.pump(rig.port, 0.2)
        assert rig.port.is_off_hook() is False
        assert [off for off, _ in rig.edges] == [True, False]
        assert rig.edges[0][1] <= rig.edges[1][1]

    def test_pulse_dial_edges_keep_their_timing(self, rig: Rig) -> None:
        rig.phone.off_hook()
        self.pump(rig.port, 0.5)
        rig.edges.clear()
        rig.phone.dial_pulse("31")
        self.pump(rig.port, pulse_train_seconds("31") + 0.5)
        tol = self.tolerance(rig)
        assert [off for off, _ in rig.edges] == [False, True] * 4
        times = [t for _, t in rig.edges]
        breaks = [times[i + 1] - times[i] for i in range(0, len(times), 2)]
        makes = [times[i + 1] - times[i] for i in range(1, len(times) - 1, 2)]
        assert all(abs(b - PULSE_BREAK_S) <= tol for b in breaks), breaks
        # the make between digit 3's pulses is 40 ms; the one before "1" is the gap
        assert all(abs(m - PULSE_MAKE_S) <= tol for m in makes[:2]), makes
        assert abs(makes[2] - PULSE_INTERDIGIT_S) <= tol, makes
        assert rig.port.is_off_hook() is True

    def test_pulse_digits_and_flash_decode_with_no_false_digit(self, rig: Rig) -> None:
        """Through whatever the switch does (bounce on a real one, simulated bounce on
        the sim), the edges decode to exactly the digits dialled and one flash."""
        rig.phone.off_hook()
        self.pump(rig.port, 0.5)
        rig.phone.dial_pulse("305")
        self.pump(rig.port, pulse_train_seconds("305") + 0.8)
        rig.phone.flash(400)
        self.pump(rig.port, 1.0)
        rig.phone.on_hook()
        self.pump(rig.port, 1.5)
        events = decode_edges(rig.edges)
        digits = "".join(e.digit for e in events if isinstance(e, PulseDigit))
        assert digits == "305", events
        assert [type(e) for e in events if not isinstance(e, PulseDigit)] == [
            OffHook, Flash, OnHook], events
        flash_edges = [t for _, t in rig.edges[-3:]]
        assert abs(flash_edges[1] - flash_edges[0] - 0.4) <= self.tolerance(rig), rig.edges

    @staticmethod
    def tolerance(rig: Rig) -> float:
        return max(rig.phone.timing_tolerance_s, 1e-6)

    # -- ringing and polarity -----------------------------------------------------------

    def test_ringing_visible_at_the_phone(self, rig: Rig) -> None:
        assert rig.phone.is_ringing() is False
        rig.port.set_ringing(True)
        self.pump(rig.port, 0.5)
        assert rig.phone.is_ringing() is True
        hz = rig.phone.ring_hz()
        assert hz is not None and math.isclose(hz, self.expected_ring_hz, rel_tol=0.1)
        rig.port.set_ringing(False)
        self.pump(rig.port, 0.2)
        assert rig.phone.is_ringing() is False

    def test_polarity_reversal_visible_and_survives_ringing(self, rig: Rig) -> None:
        assert rig.phone.polarity_reversed() is False
        rig.port.set_polarity(True)
        self.pump(rig.port, 0.1)
        assert rig.phone.polarity_reversed() is True
        rig.port.set_ringing(True)
        self.pump(rig.port, 0.3)
        rig.port.set_ringing(False)
        self.pump(rig.port, 0.1)
        assert rig.phone.polarity_reversed() is True
        rig.port.set_polarity(False)
        self.pump(rig.port, 0.1)
        assert rig.phone.polarity_reversed() is False

    def test_close_stops_ringing_and_is_idempotent(self, rig: Rig) -> None:
        rig.port.set_ringing(True)
        self.pump(rig.port, 0.2)
        rig.port.close()
        assert rig.phone.is_ringing() is False
        rig.port.close()

    # -- audio --------------------------------------------------------------------------

    def test_earpiece_keeps_frequency_and_level(self, rig: Rig) -> None:
        rig.phone.off_hook()
        gen = ToneGenerator(ToneSpec((1000.0,), level_dbfs=-16.0))
        self.pump(rig.port, 1.0, ear=gen.next_frame)
        pcm = rig.phone.heard(0.5)
        assert dominant_frequency(pcm) == pytest.approx(1000.0, rel=0.005)
        assert level_dbfs(pcm) == pytest.approx(-16.0, abs=rig.phone.level_tolerance_db)

    def test_mouthpiece_keeps_frequency_and_level(self, rig: Rig) -> None:
        rig.phone.off_hook()
        rig.phone.speak_tone(700.0, -20.0)
        frames = self.pump(rig.port, 1.0)
        pcm = b"".join(frames[-25:])
        assert dominant_frequency(pcm) == pytest.approx(700.0, rel=0.005)
        assert level_dbfs(pcm) == pytest.approx(-20.0, abs=rig.phone.level_tolerance_db)
        rig.phone.stop_speaking()
        frames = self.pump(rig.port, 0.5)
        assert level_dbfs(b"".join(frames[-10:])) < -50.0

    def test_dtmf_from_the_phone_is_detected_on_the_mouthpiece(self, rig: Rig) -> None:
        rig.phone.off_hook()
        self.pump(rig.port, 0.2)
        rig.phone.dial_dtmf("147*0#")
        detector = DtmfDetector()
        digits: list[str] = []
        for frame in self.pump(rig.port, 6 * 0.2 + 0.5):
            digits += detector.feed(frame)
        assert "".join(digits) == "147*0#"


def decode_edges(edges: list[tuple[bool, float]]) -> list[HookEvent]:
    """What the line's hook decoder makes of reported edges (timers run to the end)."""
    decoder = HookDecoder()
    events: list[HookEvent] = []
    for off, t in edges:
        events += decoder.hook(off, t)
    if edges:
        events += decoder.handle_timer(edges[-1][1] + 5.0)
    return events
