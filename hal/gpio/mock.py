"""Mock pins that tell a listener when they change.

gpiozero's MockPin only calls back on input edges it is driven with. The simulated
phone also has to *see* outputs the driver sets (RM, F/R), so these pins notify a
listener on every state or PWM-frequency change, whichever side made it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpiozero.pins.mock import MockFactory, MockPWMPin

PinListener = Callable[["ObservableMockPin"], None]


class ObservableMockPin(MockPWMPin):  # type: ignore[misc]
    """A PWM-capable mock pin whose changes are reported to ``listeners``."""

    def __init__(self, factory: Any, info: Any) -> None:
        self.listeners: list[PinListener] = []
        super().__init__(factory, info)

    def _notify(self) -> None:
        for listener in list(self.listeners):
            listener(self)

    def _change_state(self, value: Any) -> bool:
        changed = bool(super()._change_state(value))
        if changed:
            self._notify()
        return changed

    def _set_frequency(self, value: Any) -> None:
        old = self._frequency
        super()._set_frequency(value)
        if value != old:
            self._notify()


def mock_factory() -> MockFactory:
    """A fresh MockFactory whose pins are all :class:`ObservableMockPin`."""
    return MockFactory(pin_class=ObservableMockPin)


class ContactBounce:
    """How a mechanical hook switch bounces: after each make or break the contact jumps
    back to the old level ``count`` times, each stay and each jump lasting ``min_ms`` to
    ``max_ms`` (drawn from a seeded generator, so a run repeats).

    The simulated phone asks it for the raw edges to put on the SHK pin after each
    nominal hook change; the driver's own debounce must then hide them.
    """

    def __init__(
        self, count: int = 5, min_ms: float = 0.3, max_ms: float = 2.0, seed: int | str = 0
    ) -> None:
        import random

        if count < 0 or not 0 < min_ms <= max_ms:
            raise ValueError(
                f"contact bounce: count {count!r}, {min_ms!r}-{max_ms!r} ms; "
                "expected count >= 0 and 0 < min_ms <= max_ms"
            )
        self.count = count
        self.min_ms = min_ms
        self.max_ms = max_ms
        self._rng = random.Random(seed)

    def after_edge(self, level: bool) -> list[tuple[float, bool]]:
        """Raw (seconds after the nominal edge, level) changes that follow a change to
        ``level``; the last one always lands back on ``level``."""
        out: list[tuple[float, bool]] = []
        t = 0.0
        for _ in range(self.count):
            t += self._rng.uniform(self.min_ms, self.max_ms) / 1000.0
            out.append((t, not level))
            t += self._rng.uniform(self.min_ms, self.max_ms) / 1000.0
            out.append((t, level))
        return out

    @property
    def longest_s(self) -> float:
        """The longest a bounce burst can last."""
        return 2 * self.count * self.max_ms / 1000.0
