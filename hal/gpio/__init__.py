"""GPIO access through gpiozero pin factories.

Drivers take a ``pin_factory`` and never touch ``gpiozero.Device.pin_factory``, so a
simulated board and a real one can run in the same process (and tests stay isolated).
"""

from __future__ import annotations

from typing import Any

from hal.base import HalError


def pin_factory(kind: str | None = None) -> Any:
    """A gpiozero pin factory by name: "mock", "lgpio", "rpigpio", "native" or None.

    None lets gpiozero pick its default for the board it runs on.
    """
    if kind is None:
        from gpiozero import Device

        if Device.pin_factory is None:
            Device.pin_factory = Device._default_pin_factory()
        return Device.pin_factory
    if kind == "mock":
        from hal.gpio.mock import mock_factory

        return mock_factory()
    modules = {
        "lgpio": ("gpiozero.pins.lgpio", "LGPIOFactory", "python3-lgpio (or pip install lgpio)"),
        "rpigpio": (
            "gpiozero.pins.rpigpio",
            "RPiGPIOFactory",
            "python3-rpi.gpio (or pip install RPi.GPIO)",
        ),
        "native": ("gpiozero.pins.native", "NativeFactory", "gpiozero"),
    }
    try:
        module_name, cls_name, package = modules[kind]
    except KeyError:
        raise HalError(
            f"unknown GPIO pin factory {kind!r}; expected mock, lgpio, rpigpio, native"
        ) from None
    import importlib

    try:
        module = importlib.import_module(module_name)
        return getattr(module, cls_name)()
    except ImportError as exc:
        raise HalError(
            f"GPIO pin factory {kind!r} needs module {exc.name or module_name!r}; install {package}"
        ) from exc


def output_device(pin: int | str, *, factory: Any = None, initial_value: bool = False) -> Any:
    """A gpiozero DigitalOutputDevice (active high) on `pin`.

    `factory` is a pin factory object, or a name for :func:`pin_factory` ("mock", "lgpio",
    ...), or None for the board's default.
    """
    from gpiozero import DigitalOutputDevice

    if factory is None or isinstance(factory, str):
        factory = pin_factory(factory)
    return DigitalOutputDevice(pin, initial_value=initial_value, pin_factory=factory)
