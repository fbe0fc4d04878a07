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
