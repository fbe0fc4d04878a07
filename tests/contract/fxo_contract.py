"""The FXO port contract: what the FXO line machine relies on, checked from the exchange side.

Subclass :class:`FxoContract` (no Test prefix: pytest collects only the subclasses),
implement :meth:`FxoContract.make_port` and :meth:`FxoContract.make_exchange`, and override
:meth:`FxoContract.pump` if time on the backend is not driven by frames.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from gateway.dsp import SILENCE_FRAME
from gateway.dsp.analysis import dominant_frequency, level_dbfs
from gateway.dsp.callerid import CallerId, plan
from gateway.dsp.callerid_rx import decode_fsk
from gateway.dsp.dtmf import DtmfDetector, generate
from gateway.dsp.tones import ToneGenerator, ToneSpec
from hal.base import FxoPort


class ExchangeSide(ABC):
    """The far end of an FXO port: a simulated exchange, or a test jig on a real board."""

    timing_tolerance_s: float = 0.0
    """How far reported ring burst times may stray (the ring detector's hold included)."""
    level_tolerance_db: float = 0.5

    @abstractmethod
    def set_ringing(self, on: bool) -> None:
        """Ring voltage on or off."""

    @abstractmethod
    def set_polarity(self, reversed: bool) -> None:
        """Reverse (True) or restore the line's polarity."""

    @abstractmethod
    def set_loop_current(self, present: bool) -> None:
        """Let loop current flow through a held line (True) or interrupt it."""

    @abstractmethod
    def is_seized(self) -> bool:
        """Whether the port holds the line (off-hook)."""

    @abstractmethod
    def send(self, source: Callable[[], bytes] | None) -> None:
        """What the exchange sends down the line from now on, frame by frame (None: quiet)."""

    @abstractmethod
    def heard(self, seconds: float) -> bytes:
        """The last `seconds` of what the port sent down the line."""

    def close(self) -> None:  # noqa: B027  (optional: most exchange sides hold nothing)
        """Release the jig."""


@dataclass
class FxoRig:
    """A port with its exchange, and every event the port reported."""

    port: FxoPort
    exchange: ExchangeSide
    rings: list[tuple[bool, float]] = field(default_factory=list)
    polarity: list[tuple[bool, float]] = field(default_factory=list)
    loop: list[tuple[bool, float]] = field(default_factory=list)


def tone_source(freq_hz: float, level: float = -16.0) -> Callable[[], bytes]:
    return ToneGenerator(ToneSpec((freq_hz,), level_dbfs=level)).next_frame


def pcm_source(pcm: bytes) -> Callable[[], bytes]:
    buffer = bytearray(pcm)

    def next_frame() -> bytes:
        frame = bytes(buffer[:320]).ljust(320, b"\0")
        del buffer[:320]
        return frame

    return next_frame


class FxoContract(ABC):
    """Behaviour every FXO backend must show; see the module docstring."""

    @abstractmethod
    def make_port(self) -> FxoPort:
        """A fresh, not yet started port."""

    @abstractmethod
    def make_exchange(self, port: FxoPort) -> ExchangeSide:
        """The exchange side wired to `port`."""

    def pump(self, port: FxoPort, seconds: float,
             send: Callable[[], bytes] | None = None) -> list[bytes]:
        """Let `seconds` pass by moving frames: returns what the port read from the line."""
        frames = []
        for _ in range(round(seconds / 0.02)):
            frames.append(port.read_frame() or SILENCE_FRAME)
            port.write_frame(send() if send is not None else SILENCE_FRAME)
        return frames

    @contextmanager
    def rig(self) -> Iterator[FxoRig]:
        port = self.make_port()
        exchange = self.make_exchange(port)
        r = FxoRig(port, exchange)
        try:
            port.start(lambda on, t: r.rings.append((on, t)),
                       lambda rev, t: r.polarity.append((rev, t)),
                       lambda ok, t: r.loop.append((ok, t)))
            yield r
        finally:
            port.close()
            exchange.close()

    # --- ringing -------------------------------------------------------------------------

    def test_a_ring_burst_is_reported_once_with_its_length(self) -> None:
        with self.rig() as r:
            self.pump(r.port, 0.2)
            assert r.rings == []
            r.exchange.set_ringing(True)
            self.pump(r.port, 1.0)
            r.exchange.set_ringing(False)
            self.pump(r.port, 0.5)
            assert [on for on, _ in r.rings] == [True, False]
            length = r.rings[1][1] - r.rings[0][1]
            assert abs(length - 1.0) <= 0.02 + r.exchange.timing_tolerance_s

    def test_a_cadence_gives_one_report_per_burst(self) -> None:
        with self.rig() as r:
            for _ in range(3):
                r.exchange.set_ringing(True)
                self.pump(r.port, 0.4)
                r.exchange.set_ringing(False)
                self.pump(r.port, 0.4)
            assert [on for on, _ in r.rings] == [True, False] * 3

    # --- hook, polarity, loop ------------------------------------------------------------

    def test_seize_and_release_reach_the_exchange(self) -> None:
        with self.rig() as r:
            assert not r.exchange.is_seized() and not r.port.is_off_hook()
            r.port.set_off_hook(True)
            self.pump(r.port, 0.1)
            assert r.exchange.is_seized() and r.port.is_off_hook()
            r.port.set_off_hook(False)
            self.pump(r.port, 0.1)
            assert not r.exchange.is_seized()

    def test_polarity_reversals_are_reported_each_way(self) -> None:
        with self.rig() as r:
            r.exchange.set_polarity(True)
            self.pump(r.port, 0.1)
            r.exchange.set_polarity(False)
            self.pump(r.port, 0.1)
            assert [rev for rev, _ in r.polarity] == [True, False]

    def test_loop_current_changes_are_reported(self) -> None:
        with self.rig() as r:
            r.port.set_off_hook(True)
            r.exchange.set_loop_current(True)
            self.pump(r.port, 0.1)
            r.exchange.set_loop_current(False)
            self.pump(r.port, 0.1)
            if r.port.senses_loop_current:  # the sim backend always does
                assert [ok for ok, _ in r.loop][-2:] == [True, False]
            else:  # a board wired without the optional input says so and reports nothing
                assert r.loop == []

    # --- audio ---------------------------------------------------------------------------

    def test_audio_flows_both_ways_on_a_held_line(self) -> None:
        with self.rig() as r:
            r.port.set_off_hook(True)
            r.exchange.send(tone_source(1000.0, -16.0))
            heard = b"".join(self.pump(r.port, 0.6, tone_source(700.0, -12.0))[10:])
            assert abs(dominant_frequency(heard) - 1000.0) <= 10
            reference = tone_source(1000.0, -16.0)
            sent_level = level_dbfs(b"".join(reference() for _ in range(20)))
            assert abs(level_dbfs(heard) - sent_level) <= r.exchange.level_tolerance_db
            sent = r.exchange.heard(0.4)
            assert abs(dominant_frequency(sent) - 700.0) <= 10

    def test_dtmf_sent_by_the_port_is_heard_by_the_exchange(self) -> None:
        with self.rig() as r:
            r.port.set_off_hook(True)
            pcm = b"".join(generate(d, 100) + bytes(1600) for d in "5551234")
            self.pump(r.port, len(pcm) / 16000 + 0.2, pcm_source(pcm))
            detector = DtmfDetector()
            digits = "".join(detector.feed(r.exchange.heard(2.0)))
            assert digits == "5551234"

    def test_on_hook_audio_carries_caller_id(self) -> None:
        with self.rig() as r:
            cid = plan("bellcore", CallerId("5551234", "ALICE"), datetime(2026, 12, 7, 1, 2))
            assert cid is not None
            r.exchange.send(pcm_source(cid.pcm))
            line = b"".join(self.pump(r.port, cid.seconds + 0.2))
            got = decode_fsk(line, "bell202")
            assert got is not None and (got.number, got.name) == ("5551234", "ALICE")

    def test_close_releases_the_line_and_is_idempotent(self) -> None:
        port = self.make_port()
        exchange = self.make_exchange(port)
        try:
            port.start(lambda on, t: None, lambda rev, t: None)
            port.set_off_hook(True)
            self.pump(port, 0.1)
            port.close()
            port.close()
            assert not exchange.is_seized()
        finally:
            exchange.close()
