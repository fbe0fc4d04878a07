"""Backend registry: names, lazy imports, and errors that say what to install."""

from __future__ import annotations

import builtins
import sys
from typing import Any

import pytest

from hal import registry
from hal.base import FxsPort, HalError
from hal.sim.fxs import SimFxs


def test_sim_backend_by_name() -> None:
    port = registry.create_fxs("sim", "line1", {"country": "DE", "clock": "frames"})
    try:
        assert isinstance(port, FxsPort) and isinstance(port, SimFxs)
        assert port.name == "line1"
        assert port.ring_hz == 25.0  # from the DE profile
        assert port.phone.profile.country == "DE"
    finally:
        port.close()


def test_unknown_backend_lists_known_names() -> None:
    with pytest.raises(HalError) as info:
        registry.create_fxs("si3215", "line1", {})
    assert "si3215" in str(info.value)
    for name in ("ag1171", "sim"):
        assert name in str(info.value)


def test_sim_rejects_unknown_option() -> None:
    with pytest.raises(HalError, match="ring_freq"):
        registry.create_fxs("sim", "line1", {"ring_freq": 25})


def test_ag1171_requires_pins() -> None:
    with pytest.raises(HalError, match="shk_pin"):
        registry.create_fxs("ag1171", "line1", {"rm_pin": 27, "fr_pin": 22})


def _hide_module(monkeypatch: pytest.MonkeyPatch, hidden: str) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == hidden or name.startswith(hidden + "."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, hidden, raising=False)
    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_missing_alsa_names_module_and_package(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_module(monkeypatch, "alsaaudio")
    with pytest.raises(HalError) as info:
        registry.create_fxs("ag1171", "line1", {"shk_pin": 17, "rm_pin": 27, "fr_pin": 22})
    assert "alsaaudio" in str(info.value)
    assert "pyalsaaudio" in str(info.value)


def test_backend_whose_module_fails_to_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "hal.slic.ag1171", raising=False)
    _hide_module(monkeypatch, "gpiozero")
    monkeypatch.delitem(sys.modules, "gpiozero", raising=False)
    with pytest.raises(HalError) as info:
        registry.create_fxs("ag1171", "line1", {"shk_pin": 17, "rm_pin": 27, "fr_pin": 22})
    assert "gpiozero" in str(info.value)
    assert "install" in str(info.value)


def test_known_backends() -> None:
    assert set(registry.known_fxs_backends()) == {"sim", "ag1171", "null"}
