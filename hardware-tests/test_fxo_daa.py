"""The FXO contract on a real DAA module, with an FXS port of the jig acting as the exchange.

Skipped unless BRANCHLINE_BOARD is set (hardware-tests/conftest.py). The exchange side is an
AG1171 SLIC wired to the DAA's tip/ring: it rings the line, reverses its polarity, sees the
DAA's hook as its own off-hook, and its sound card carries the line's audio. Loop current
can be interrupted only with an extra relay in series with the line (optional).

| Variable | Wiring | Default |
|---|---|---|
| `BRANCHLINE_DAA_RING_PIN` | GPIO input from the DAA's ring-detect output | required |
| `BRANCHLINE_DAA_HOOK_PIN` | GPIO output to the DAA's hook relay / OH input (high = off-hook) | required |
| `BRANCHLINE_DAA_LOOP_PIN` | GPIO input, active while loop current flows | optional |
| `BRANCHLINE_DAA_POLARITY_PIN` | GPIO input, active while the polarity is reversed | optional |
| `BRANCHLINE_DAA_RING_ACTIVE_HIGH` | `1` if ring detect is active high | active low |
| `BRANCHLINE_DAA_AUDIO` | ALSA device of the DAA's codec | `default` |
| `BRANCHLINE_CO_SHK_PIN`, `_RM_PIN`, `_FR_PIN` | the jig's AG1171 (the exchange) | required |
| `BRANCHLINE_CO_AUDIO` | ALSA device of the jig SLIC's codec | `default` |
| `BRANCHLINE_CO_LOOP_BREAK_PIN` | GPIO output to a relay that opens the loop (high = open) | optional |

```sh
BRANCHLINE_BOARD=pi4-daa BRANCHLINE_DAA_RING_PIN=23 BRANCHLINE_DAA_HOOK_PIN=24 \
BRANCHLINE_DAA_AUDIO=hw:1,0 BRANCHLINE_CO_SHK_PIN=17 BRANCHLINE_CO_RM_PIN=27 \
BRANCHLINE_CO_FR_PIN=22 BRANCHLINE_CO_AUDIO=hw:2,0 \
.venv/bin/pytest hardware-tests/test_fxo_daa.py -v
```
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest
from conftest import env_pin
from contract.fxo_contract import ExchangeSide, FxoContract

from gateway.dsp import FRAME_MS, SILENCE_FRAME
from hal.base import FxoPort


def _require(name: str) -> int:
    pin = env_pin(name)
    if pin is None:
        pytest.skip(f"{name} is not set")
    return pin


class SlicExchangeSide(ExchangeSide):
    """An AG1171 FXS port as the exchange: ringing, polarity, hook and audio."""

    timing_tolerance_s = 0.16  # the DAA's ring detector and the driver's 120 ms hold
    level_tolerance_db = 3.0  # two codecs and two hybrids

    def __init__(self, pin_factory: Any) -> None:
        from gpiozero import DigitalOutputDevice

        from hal.audio.alsa import AlsaAudio
        from hal.slic.ag1171 import Ag1171Fxs

        self.slic = Ag1171Fxs(
            "exchange",
            shk_pin=_require("BRANCHLINE_CO_SHK_PIN"),
            rm_pin=_require("BRANCHLINE_CO_RM_PIN"),
            fr_pin=_require("BRANCHLINE_CO_FR_PIN"),
            audio=AlsaAudio(os.environ.get("BRANCHLINE_CO_AUDIO", "default"), drift=False),
            pin_factory=pin_factory,
        )
        self.slic.start(lambda off, t: None)
        brk = env_pin("BRANCHLINE_CO_LOOP_BREAK_PIN")
        self._break = (DigitalOutputDevice(brk, initial_value=False, pin_factory=pin_factory)
                       if brk is not None else None)
        self._source: Callable[[], bytes] | None = None
        self._heard: deque[bytes] = deque(maxlen=250)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._audio_loop, daemon=True)
        self._thread.start()

    def _audio_loop(self) -> None:
        while not self._stop.is_set():
            frame = self.slic.read_frame()
            if frame is None:
                time.sleep(0.002)
                continue
            self._heard.append(frame)
            source = self._source
            self.slic.write_frame(source() if source is not None else SILENCE_FRAME)

    def set_ringing(self, on: bool) -> None:
        self.slic.set_ringing(on)

    def set_polarity(self, reversed: bool) -> None:
        self.slic.set_polarity(reversed)

    def set_loop_current(self, present: bool) -> None:
        if self._break is None:
            pytest.skip("BRANCHLINE_CO_LOOP_BREAK_PIN is not set")
        (self._break.off if present else self._break.on)()

    def is_seized(self) -> bool:
        return self.slic.is_off_hook()

    def send(self, source: Callable[[], bytes] | None) -> None:
        self._source = source

    def heard(self, seconds: float) -> bytes:
        frames = list(self._heard)
        return b"".join(frames[-round(seconds * 1000 / FRAME_MS):])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)
        self.slic.close()
        if self._break is not None:
            self._break.close()


class TestDaaBoard(FxoContract):
    """The FXO contract on the DAA port described by BRANCHLINE_DAA_* variables."""

    @pytest.fixture(autouse=True)
    def _factory(self) -> Any:
        from hal.gpio import pin_factory

        self.pin_factory = pin_factory(os.environ.get("BRANCHLINE_PIN_FACTORY") or None)
        yield

    def make_port(self) -> FxoPort:
        from hal.audio.alsa import AlsaAudio
        from hal.fxo.daa import DaaFxo

        return DaaFxo(
            "board",
            ring_pin=_require("BRANCHLINE_DAA_RING_PIN"),
            hook_pin=_require("BRANCHLINE_DAA_HOOK_PIN"),
            loop_pin=env_pin("BRANCHLINE_DAA_LOOP_PIN"),
            polarity_pin=env_pin("BRANCHLINE_DAA_POLARITY_PIN"),
            ring_active_high=os.environ.get("BRANCHLINE_DAA_RING_ACTIVE_HIGH") == "1",
            audio=AlsaAudio(os.environ.get("BRANCHLINE_DAA_AUDIO", "default"), drift=False),
            pin_factory=self.pin_factory,
        )

    def make_exchange(self, port: FxoPort) -> ExchangeSide:
        return SlicExchangeSide(self.pin_factory)

    def pump(self, port: FxoPort, seconds: float,
             send: Callable[[], bytes] | None = None) -> list[bytes]:
        """Real time: read frames as the codec delivers them, answer each with one."""
        frames: list[bytes] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            frame = port.read_frame()
            if frame is None:
                time.sleep(0.002)
                continue
            frames.append(frame)
            port.write_frame(send() if send is not None else SILENCE_FRAME)
        return frames
