"""The FXO contract on the "sim" backend: the DAA driver on mock pins with a simulated
exchange; plus the ring-detect filter on a pulsing (20 Hz) ring-detect pin."""

from __future__ import annotations

from collections.abc import Callable

from hal.base import FxoPort
from hal.fxo.daa import RingFilter
from hal.sim.fxo_line import SimExchange, SimFxo

from .fxo_contract import ExchangeSide, FxoContract


class SimExchangeSide(ExchangeSide):
    """Adapts the simulated exchange to the contract's exchange side."""

    timing_tolerance_s = 1e-6  # frame clock: exact
    level_tolerance_db = 0.2

    def __init__(self, exchange: SimExchange) -> None:
        self.exchange = exchange

    def set_ringing(self, on: bool) -> None:
        self.exchange.drive_ringing(on)

    def set_polarity(self, reversed: bool) -> None:
        self.exchange.drive_polarity(reversed)

    def set_loop_current(self, present: bool) -> None:
        self.exchange.drive_loop(present)

    def is_seized(self) -> bool:
        return self.exchange.off_hook

    def send(self, source: Callable[[], bytes] | None) -> None:
        self.exchange.send(source)

    def heard(self, seconds: float) -> bytes:
        return self.exchange.heard(seconds)


class TestSimFxo(FxoContract):
    def make_port(self) -> FxoPort:
        return SimFxo("pstn", {"clock": "frames"})

    def make_exchange(self, port: FxoPort) -> ExchangeSide:
        assert isinstance(port, SimFxo)
        return SimExchangeSide(port.exchange)


def test_a_pulsing_ring_detect_input_is_one_burst() -> None:
    """Opto ring detectors often pulse at the ring frequency: 20 Hz for 2 s is one burst,
    reported from its first edge to its last."""
    f = RingFilter(0.12)
    out: list[tuple[bool, float]] = []
    t = 0.0
    while t < 2.0 - 1e-9:
        out += f.raw(True, t)
        out += f.raw(False, t + 0.0125)
        t += 0.05
    for step in range(1, 10):
        out += f.handle_timer(t + step * 0.05)
    assert [on for on, _ in out] == [True, False]
    assert out[0][1] == 0.0 and abs(out[1][1] - 1.9625) < 1e-9
    assert f.get_timer() is None and not f.ringing
