"""Backend name -> driver, imported only when used.

A board without ALSA or lgpio can still import the hal and run the simulated backends;
asking for a backend whose module is missing says which package to install.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from hal.base import FxsPort, HalError

# name -> (module, factory function in that module, what to install if it is missing)
FXS_BACKENDS: dict[str, tuple[str, str, str]] = {
    "sim": ("hal.sim.fxs", "SimFxs", "branchline (the simulated backend ships with it)"),
    "ag1171": ("hal.slic.ag1171", "Ag1171Fxs", "gpiozero and pyalsaaudio (branchline[hw])"),
}

_PACKAGES = {
    "alsaaudio": "pyalsaaudio (apt install python3-alsaaudio)",
    "gpiozero": "gpiozero (apt install python3-gpiozero)",
    "lgpio": "lgpio (apt install python3-lgpio)",
    "numpy": "numpy",
}


def known_fxs_backends() -> tuple[str, ...]:
    """Names accepted by :func:`create_fxs`."""
    return tuple(sorted(FXS_BACKENDS))


def _load(backend: str) -> Callable[..., Any]:
    try:
        module_name, attr, package = FXS_BACKENDS[backend]
    except KeyError:
        raise HalError(
            f"unknown FXS backend {backend!r}; known: {', '.join(known_fxs_backends())}"
        ) from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = exc.name or module_name
        hint = _PACKAGES.get(missing.split(".")[0], package)
        raise HalError(
            f"FXS backend {backend!r} cannot load: module {missing!r} is missing; install {hint}"
        ) from exc
    factory: Callable[..., Any] = getattr(module, attr)
    return factory


def create_fxs(backend: str, name: str, options: Mapping[str, Any] | None = None) -> FxsPort:
    """Create the FXS port ``name`` with the named backend and its config options."""
    opts = dict(options or {})
    factory = _load(backend)
    if backend == "ag1171":
        return _create_ag1171(factory, name, opts)
    port = factory(name, opts)
    assert isinstance(port, FxsPort)
    return port


def _create_ag1171(factory: Callable[..., Any], name: str, opts: dict[str, Any]) -> FxsPort:
    """Options: shk_pin, rm_pin, fr_pin (required), audio_device, ring_hz, pin_factory."""
    missing = [k for k in ("shk_pin", "rm_pin", "fr_pin") if k not in opts]
    if missing:
        raise HalError(f"ag1171 port {name}: missing option(s) {', '.join(missing)}")
    from hal.audio.alsa import AlsaAudio
    from hal.gpio import pin_factory

    audio = AlsaAudio(str(opts.get("audio_device", "default")))
    try:
        port = factory(
            name,
            shk_pin=opts["shk_pin"],
            rm_pin=opts["rm_pin"],
            fr_pin=opts["fr_pin"],
            audio=audio,
            pin_factory=pin_factory(opts.get("pin_factory")),
            ring_hz=float(opts.get("ring_hz", 20)),
        )
    except Exception:
        audio.close()
        raise
    assert isinstance(port, FxsPort)
    return port
