"""`branchline line-test LINE` for an exchange line (FXO): the installer's check that the
pair from the exchange is alive and the DAA hears and speaks on it, on the running daemon.

The line's state machine stays idle (it is offered no audio and sends none) while a
:class:`FxoTap` stands between the line port and the hal port: the test works the hook
relay itself, keeps what the line carries and chooses what is sent. Checks, in order, each
PASS or FAIL with a figure:

1. **loop current**: the seize draws loop current within `LOOP_WAIT_S` (the DAA's loop
   input; a board without one reports "not sensed" and passes: the dial tone check then
   says whether the line is alive);
2. **dial tone**: the country's dial tone frequencies present, each at least
   `DIAL_TONE_MIN_DBM0`, measured over 0.8 s;
3. **DTMF**: digits sent down the line as DTMF; on the simulated exchange its own decoder
   must have heard exactly them; on every line the dial tone must stop after the first
   (an exchange stops it once a digit arrives). On hardware a single digit is sent, so no
   call is ever placed;
4. **release**: the hook relay opens and the loop current goes within `LOOP_WAIT_S`.

The line must be idle (no call, not ringing, not resting after a call).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from gateway.dsp import FRAME_MS, SILENCE_FRAME
from gateway.dsp.tones import DBM0_TO_DBFS

if TYPE_CHECKING:
    from gateway.runtime.app import Gateway
    from gateway.runtime.fxo_port import FxoLinePort

LOOP_WAIT_S = 0.5
DIAL_TONE_MIN_DBM0 = -30.0
"""Weaker dial tone than this (each component) fails: a long or faulty pair, a bad DAA."""
SIM_DIGITS = "1590"
HARDWARE_DIGITS = "1"
FRAMES_KEPT = 500


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    figure: str
    detail: str = ""


class FxoTap:
    """Stands in for the hal port while the line is under test: what the exchange sends is
    kept for the test (the line hears silence), what goes down the line is the test's
    (`output`), and the line's own hook commands are ignored."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.output: Callable[[], bytes] | None = None
        self.captured: deque[bytes] = deque(maxlen=FRAMES_KEPT)
        self.frames_written = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def read_frame(self) -> bytes | None:
        frame = self.real.read_frame()
        self.captured.append(frame or SILENCE_FRAME)
        return SILENCE_FRAME

    def write_frame(self, frame: bytes) -> None:
        self.real.write_frame(self.output() if self.output is not None else SILENCE_FRAME)
        self.frames_written += 1

    def set_off_hook(self, off: bool) -> None:
        """The line machine's relay commands: not while under test."""


class FxoLineTest:
    """One run of the checks on one exchange line; :meth:`run` returns the report."""

    def __init__(self, gw: Gateway, fp: FxoLinePort, digits: str | None = None) -> None:
        self.gw, self.fp = gw, fp
        self.real = fp.port
        self.tap = FxoTap(self.real)
        self.exchange = fp.exchange
        self.digits = digits or (SIM_DIGITS if self.exchange is not None else HARDWARE_DIGITS)
        self.checks: list[Check] = []
        self._had_loop = False

    async def _frames(self, seconds: float) -> None:
        """Wait until `seconds` of frames went down the line (or 3 x that passed)."""
        need = self.tap.frames_written + round(seconds * 1000 / FRAME_MS)
        deadline = self.gw.loop.time() + 3 * seconds + 1.0
        while self.tap.frames_written < need and self.gw.loop.time() < deadline:
            await asyncio.sleep(FRAME_MS / 1000)

    def _recent(self, seconds: float) -> bytes:
        frames = list(self.tap.captured)
        n = min(len(frames), round(seconds * 1000 / FRAME_MS))
        return b"".join(frames[len(frames) - n:])

    async def _loop_within(self, want: bool) -> float | None:
        """Seconds until the line's loop current input reads `want` (None: it did not)."""
        start = self.gw.loop.time()
        while self.gw.loop.time() - start <= LOOP_WAIT_S:
            if self.fp.line.loop is want:
                return self.gw.loop.time() - start
            await asyncio.sleep(FRAME_MS / 1000)
        return None

    async def run(self) -> dict[str, Any]:
        from gateway.lines.fxo import FxoState
        from gateway.runtime.line_test import LineTestError

        fp, gw = self.fp, self.gw
        tests: dict[str, Any] = gw.line_tests
        if fp.name in tests:
            raise LineTestError(f"line {fp.name} is already under test")
        if fp.call_id is not None or fp.line.fxo_state is not FxoState.IDLE \
                or self.real.is_off_hook():
            raise LineTestError(f"line {fp.name} is not idle ({fp.line.fxo_state.value}): "
                                "wait for the call to end and retry")
        tests[fp.name] = self
        fp.port = self.tap  # type: ignore[assignment]
        try:
            await self._run_checks()
        finally:
            self.tap.output = None
            self.real.set_off_hook(False)
            await asyncio.sleep(0.1)
            fp.port = self.real
            del tests[fp.name]
            gw._pump()
        return {
            "line": fp.name,
            "kind": "fxo",
            "backend": getattr(fp.config, "backend", "?"),
            "simulated": self.exchange is not None,
            "where": "simulated exchange" if self.exchange is not None else "exchange line",
            "passed": all(c.ok for c in self.checks),
            "checks": [asdict(c) for c in self.checks],
        }

    async def _run_checks(self) -> None:
        self.real.set_off_hook(True)
        self.checks.append(await self.check_loop())
        dial = await self.check_dial_tone()
        self.checks.append(dial)
        if not dial.ok:
            self.checks.append(Check("DTMF", False, "not run: no dial tone to dial on"))
        else:
            self.checks.append(await self.check_dtmf())
        self.real.set_off_hook(False)
        self.checks.append(await self.check_release())

    async def check_loop(self) -> Check:
        if not self.real.senses_loop_current:
            return Check("loop current", True, "not sensed (no loop_pin)",
                         "the dial tone check says whether the line is alive")
        took = await self._loop_within(True)
        self._had_loop = took is not None
        if took is None:
            return Check("loop current", False, f"none within {LOOP_WAIT_S * 1000:.0f} ms of "
                         "the seize", "no line voltage: unplugged, cut, or the DAA's relay")
        return Check("loop current", True, f"present {took * 1000:.0f} ms after the seize")

    def _dial_levels(self, pcm: bytes) -> tuple[list[float], dict[float, float]]:
        from gateway.dsp.analysis import component_levels, frequencies_present

        freqs = list(self.fp.profile.dial.frequencies)
        present = frequencies_present(pcm, freqs, min_level_dbfs=-60.0)
        levels = component_levels(pcm, freqs)
        return [f for f in freqs if f in present], {
            f: levels[f] - DBM0_TO_DBFS for f in freqs}

    async def check_dial_tone(self) -> Check:
        from gateway.dsp.analysis import dominant_frequency

        await self._frames(1.0)
        pcm = self._recent(0.8)
        present, dbm0 = self._dial_levels(pcm)
        freqs = list(dbm0)
        figure = "+".join(f"{f:g}" for f in freqs) + " Hz at " + "/".join(
            f"{dbm0[f]:.1f}" for f in freqs) + " dBm0"
        ok = len(present) == len(freqs) and all(
            DIAL_TONE_MIN_DBM0 <= dbm0[f] <= 3.0 for f in freqs)
        if not present:
            from gateway.dsp.analysis import level_dbfs

            total = level_dbfs(pcm) - DBM0_TO_DBFS
            figure = ("none: silence" if total < -60.0 else
                      f"none: {total:.1f} dBm0 of sound, loudest {dominant_frequency(pcm):.0f} Hz")
        return Check("dial tone", ok, figure,
                     f"expected the {self.fp.profile.country} dial tone, each component "
                     f">= {DIAL_TONE_MIN_DBM0:g} dBm0")

    async def check_dtmf(self) -> Check:
        from gateway.dsp.dtmf import generate_sequence

        pcm = generate_sequence(self.digits, 100, 100, level_dbfs=-8.0)
        pos = 0

        def next_frame() -> bytes:
            nonlocal pos
            frame = pcm[pos:pos + len(SILENCE_FRAME)]
            pos += len(SILENCE_FRAME)
            return frame.ljust(len(SILENCE_FRAME), b"\0") if frame else SILENCE_FRAME

        self.tap.output = next_frame
        await self._frames(len(pcm) / 16000.0 + 0.4)
        self.tap.output = None
        present, dbm0 = self._dial_levels(self._recent(0.3))
        stopped = not present or all(v < DIAL_TONE_MIN_DBM0 - 10 for v in dbm0.values())
        parts = [f"sent {self.digits}"]
        ok = stopped
        if self.exchange is not None:
            heard = str(self.exchange.digits)
            parts.append(f"exchange heard {heard or '-'}")
            ok = ok and heard == self.digits
        parts.append("dial tone stopped" if stopped else "dial tone still on")
        return Check("DTMF", ok, ", ".join(parts),
                     "an exchange stops its dial tone at the first digit it decodes")

    async def check_release(self) -> Check:
        if not self.real.senses_loop_current or not self._had_loop:
            return Check("release", not self.real.is_off_hook(), "hook relay open"
                         + ("" if self.real.senses_loop_current else " (loop not sensed)"))
        took = await self._loop_within(False)
        if took is None:
            return Check("release", False, f"loop current still on {LOOP_WAIT_S * 1000:.0f} "
                         "ms after the release", "the hook relay did not open")
        return Check("release", True, f"loop current gone {took * 1000:.0f} ms after it")


def find_fxo_line(gw: Gateway, name: Any) -> FxoLinePort | None:
    """The exchange line called `name` (or with that number), if any."""
    lines: dict[str, FxoLinePort] = getattr(gw, "fxo_lines", {})
    fp = lines.get(str(name))
    return fp or next((x for x in lines.values() if x.number == str(name)), None)
