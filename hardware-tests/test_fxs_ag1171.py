"""The FXS contract on a real AG1171 board, with a test jig acting as the phone.

Skipped unless BRANCHLINE_BOARD is set; wiring comes from environment variables
(hardware-tests/README.md). Runs in real time: a few seconds per test.
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
from contract.fxs_contract import (
    PULSE_BREAK_S,
    PULSE_INTERDIGIT_S,
    PULSE_MAKE_S,
    FxsContract,
    PhoneSide,
)

from gateway.dsp import FRAME_MS, SILENCE_FRAME
from gateway.dsp.dtmf import generate_sequence
from gateway.dsp.tones import ToneGenerator, ToneSpec
from hal.base import FxsPort


def _require(name: str) -> int:
    pin = env_pin(name)
    if pin is None:
        pytest.skip(f"{name} is not set")
    return pin


class JigPhoneSide(PhoneSide):
    """The jig: a relay that loops the line (off-hook), a ring detector, a polarity
    detector and a sound card coupled to the line, all on the board's own GPIO/ALSA."""

    timing_tolerance_s = 0.012  # relay and debounce jitter
    level_tolerance_db = 3.0  # codec and hybrid gains

    def __init__(self, pin_factory: Any) -> None:
        from gpiozero import DigitalInputDevice, DigitalOutputDevice

        from hal.audio.alsa import AlsaAudio

        self._hook = DigitalOutputDevice(
            _require("BRANCHLINE_JIG_HOOK_PIN"), initial_value=False, pin_factory=pin_factory
        )
        self._ring = DigitalInputDevice(
            _require("BRANCHLINE_JIG_RING_PIN"), pull_up=True, pin_factory=pin_factory
        )
        pol = env_pin("BRANCHLINE_JIG_POLARITY_PIN")
        self._pol = (
            DigitalInputDevice(pol, pull_up=True, pin_factory=pin_factory)
            if pol is not None
            else None
        )
        self._ring_edges: deque[float] = deque(maxlen=200)
        self._ring.when_activated = lambda: self._ring_edges.append(time.monotonic())
        # paced by its own card (reads as frames come), so no drift compensation
        self._audio = AlsaAudio(os.environ.get("BRANCHLINE_JIG_AUDIO", "default"), drift=False)
        self._mouth: Callable[[], bytes] | None = None
        self._ear: deque[bytes] = deque(maxlen=250)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._audio_loop, daemon=True)
        self._thread.start()

    def _audio_loop(self) -> None:
        while not self._stop.is_set():
            frame = self._audio.read_frame()
            if frame is None:
                time.sleep(0.002)
                continue
            self._ear.append(frame)
            self._audio.write_frame(self._mouth() if self._mouth else SILENCE_FRAME)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)
        self._audio.close()
        for dev in (self._hook, self._ring, self._pol):
            if dev is not None:
                dev.close()

    def off_hook(self) -> None:
        self._hook.on()

    def on_hook(self) -> None:
        self._hook.off()

    def dial_pulse(self, digits: str) -> None:
        def run() -> None:
            for i, d in enumerate(digits):
                if i:
                    time.sleep(PULSE_INTERDIGIT_S - PULSE_MAKE_S)
                for _ in range(10 if d == "0" else int(d)):
                    self._hook.off()
                    time.sleep(PULSE_BREAK_S)
                    self._hook.on()
                    time.sleep(PULSE_MAKE_S)

        threading.Thread(target=run, daemon=True).start()

    def flash(self, duration_ms: float) -> None:
        def run() -> None:
            self._hook.off()
            time.sleep(duration_ms / 1000.0)
            self._hook.on()

        threading.Thread(target=run, daemon=True).start()

    def dial_dtmf(self, digits: str) -> None:
        pcm = generate_sequence(digits)
        pos = 0

        def next_frame() -> bytes:
            nonlocal pos
            frame = pcm[pos : pos + 320].ljust(320, b"\0")
            pos += 320
            return frame

        self._mouth = next_frame

    def is_ringing(self) -> bool:
        now = time.monotonic()
        return any(now - t < 0.15 for t in self._ring_edges)

    def ring_hz(self) -> float | None:
        now = time.monotonic()
        recent = [t for t in self._ring_edges if now - t < 0.5]
        if len(recent) < 3:
            return None
        return (len(recent) - 1) / (recent[-1] - recent[0])

    def polarity_reversed(self) -> bool:
        if self._pol is None:
            pytest.skip("BRANCHLINE_JIG_POLARITY_PIN is not set")
        return bool(self._pol.is_active)

    def speak_tone(self, freq_hz: float, level_dbfs: float) -> None:
        self._mouth = ToneGenerator(ToneSpec((freq_hz,), level_dbfs=level_dbfs)).next_frame

    def stop_speaking(self) -> None:
        self._mouth = None

    def heard(self, seconds: float) -> bytes:
        frames = list(self._ear)
        return b"".join(frames[-round(seconds * 1000 / FRAME_MS) :])


class TestAg1171Board(FxsContract):
    """The FXS contract on the AG1171 port described by BRANCHLINE_* variables."""

    expected_ring_hz = float(os.environ.get("BRANCHLINE_RING_HZ", "20"))

    @pytest.fixture(autouse=True)
    def _factory(self) -> Any:
        from hal.gpio import pin_factory

        self.pin_factory = pin_factory(os.environ.get("BRANCHLINE_PIN_FACTORY") or None)
        self._jigs: list[JigPhoneSide] = []
        yield
        for jig in self._jigs:
            jig.close()

    def make_port(self) -> FxsPort:
        from hal.audio.alsa import AlsaAudio
        from hal.slic.ag1171 import Ag1171Fxs

        return Ag1171Fxs(
            "board",
            shk_pin=_require("BRANCHLINE_SHK_PIN"),
            rm_pin=_require("BRANCHLINE_RM_PIN"),
            fr_pin=_require("BRANCHLINE_FR_PIN"),
            audio=AlsaAudio(os.environ.get("BRANCHLINE_AUDIO", "default"), drift=False),
            pin_factory=self.pin_factory,
            ring_hz=self.expected_ring_hz,
        )

    def make_phone(self, port: FxsPort) -> PhoneSide:
        jig = JigPhoneSide(self.pin_factory)
        self._jigs.append(jig)
        return jig

    def pump(
        self, port: FxsPort, seconds: float, ear: Callable[[], bytes] | None = None
    ) -> list[bytes]:
        """Real time: read frames as the codec delivers them, answer each with one."""
        frames: list[bytes] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            frame = port.read_frame()
            if frame is None:
                time.sleep(0.002)
                continue
            frames.append(frame)
            port.write_frame(ear() if ear is not None else SILENCE_FRAME)
        return frames
