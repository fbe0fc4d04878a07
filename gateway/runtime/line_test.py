"""`branchline line-test LINE`: an installer's check of one idle FXS line, on the running daemon.

The line is taken off its state machine for the test: a :class:`TapPort` stands between the
line port and the hal port, so the line keeps seeing an idle on-hook handset (no dial tone,
no digits dialled, no call placed) while the test drives the port itself, and hook edges
go to the test (``Gateway.line_tests``). Afterwards the port goes back and the line is told
the hook state it missed.

Checks, in order, each PASS or FAIL with a figure:

1. **caller ID**: an FSK (or DTMF) caller ID in the line's method is sent on-hook and
   decoded by our own decoder;
2. **ring**: the country's first ring burst at the configured ring frequency;
3. **hook**: off-hook seen within ``answer_s`` (the installer lifts the handset; a
   simulated phone is told to answer in the first silent interval);
4. **dial tone**: the country's dial tone, frequencies and level in dBm0;
5. **DTMF**: digits played to the handset and detected, and (simulated phone) digits keyed
   on the handset and detected by the gateway;
6. **audio level**: a 1004 Hz test tone at -10 dBm0 each way.

Where it is measured: on a simulated line, at the virtual phone, i.e. after the driver,
as a handset would hear it and send it. On hardware there is no probe on the far side of
the SLIC: the audio checks measure what comes back through the SLIC's 2-wire hybrid
(echo) while the handset is off-hook, which proves the codec path both ways, and the
ring check passes when the handset is answered while it rings.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from gateway.dsp import FRAME_MS, SILENCE_FRAME
from gateway.dsp.tones import DBM0_TO_DBFS, ToneGenerator, ToneSpec, dbm0_to_dbfs
from hal.base import FxsPort, HookCallback

if TYPE_CHECKING:
    from gateway.runtime.app import Gateway
    from gateway.runtime.ports import LinePort

log = logging.getLogger(__name__)

TEST_NUMBER = "5550123"
TEST_NAME = "LINE TEST"
DTMF_OUT = "1590#"
DTMF_IN = "2468*"
TEST_TONE_HZ = 1004.0
TEST_TONE_DBM0 = -10.0
FRAMES_KEPT = 1500  # 30 s of audio each way


class LineTestError(Exception):
    """The line cannot be tested now (busy, unknown, or already under test)."""


@dataclass(frozen=True)
class Check:
    """One check's outcome; ``figure`` is what was measured, for the report."""

    name: str
    ok: bool
    figure: str
    detail: str = ""


class TapPort(FxsPort):
    """Stands in for the hal port while a line is under test: the line's earpiece frames are
    replaced by the test's (``output``), mouthpiece frames are kept for the test, and the
    line sees the handset on-hook and its bell and polarity changes go nowhere."""

    def __init__(self, real: FxsPort) -> None:
        self.real = real
        self.name = real.name
        self.output: Callable[[], bytes] | None = None
        self.captured: deque[bytes] = deque(maxlen=FRAMES_KEPT)
        self.played: deque[bytes] = deque(maxlen=FRAMES_KEPT)
        self.frames_written = 0
        """Earpiece frames written so far: the test's clock for audio (a busy loop that
        runs a tick late still plays every frame)."""

    def start(self, on_hook_change: HookCallback) -> None:
        """Never called: the real port was started by the runtime."""

    def is_off_hook(self) -> bool:
        return False  # the line's state machine stays idle while the test runs

    def set_ringing(self, on: bool) -> None:
        """The line's own bell is held off during the test."""

    def set_polarity(self, reversed: bool) -> None:
        """Likewise its polarity."""

    def read_frame(self) -> bytes | None:
        frame = self.real.read_frame()
        if frame is not None:
            self.captured.append(frame)
        return frame

    def write_frame(self, frame: bytes) -> None:
        out = self.output() if self.output is not None else SILENCE_FRAME
        self.played.append(out)
        self.frames_written += 1
        self.real.write_frame(out)

    def close(self) -> None:
        self.real.close()


class LineTest:
    """One run of the checks on one line; :meth:`run` returns the report."""

    def __init__(self, gw: Gateway, lp: LinePort, *, answer_s: float = 10.0,
                 answer: bool = True) -> None:
        self.gw = gw
        self.lp = lp
        self.answer_s = answer_s
        self.answer = answer
        self.real: FxsPort = lp.port
        self.tap = TapPort(self.real)
        self.phone: Any = lp.simulated_phone
        self.profile = lp.profile
        self.edges: list[tuple[bool, float]] = []
        self._edge = asyncio.Event()
        self.checks: list[Check] = []

    # -- plumbing ---------------------------------------------------------------------

    def hook(self, offhook: bool, t: float) -> None:
        """A hook edge of the line under test (the runtime diverts them here)."""
        self.edges.append((offhook, t))
        self._edge.set()

    async def _frames(self, seconds: float) -> None:
        """Wait until ``seconds`` of earpiece frames have gone out (or 3 x that passed)."""
        need = self.tap.frames_written + round(seconds * 1000 / FRAME_MS)
        deadline = self.gw.loop.time() + 3 * seconds + 1.0
        while self.tap.frames_written < need and self.gw.loop.time() < deadline:
            await asyncio.sleep(FRAME_MS / 1000)

    def _play(self, pcm: bytes) -> float:
        """Send ``pcm`` to the earpiece from the next tick; returns its length in s."""
        pos = 0

        def next_frame() -> bytes:
            nonlocal pos
            frame = pcm[pos : pos + len(SILENCE_FRAME)]
            pos += len(SILENCE_FRAME)
            return frame.ljust(len(SILENCE_FRAME), b"\0") if frame else SILENCE_FRAME

        self.tap.output = next_frame
        return len(pcm) / 16000.0

    def _recent(self, frames: deque[bytes], seconds: float) -> bytes:
        n = min(len(frames), round(seconds * 1000 / FRAME_MS))
        return b"".join(list(frames)[len(frames) - n :])

    def _heard(self, seconds: float) -> bytes:
        """The last ``seconds`` at the far side: the phone's earpiece, or (hardware) the
        hybrid's echo in the capture."""
        if self.phone is not None:
            return bytes(self.phone.heard(seconds))
        return self._recent(self.tap.captured, seconds)

    # -- the run ----------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        """Take the line over, run every check, give the line back; the report."""
        gw, lp = self.gw, self.lp
        tests: dict[str, LineTest] = gw.line_tests
        if lp.name in tests:
            raise LineTestError(f"line {lp.name} is already under test")
        if lp.call_id is not None or lp.line.state.value != "idle" or self.real.is_off_hook():
            raise LineTestError(
                f"line {lp.name} is not idle ({lp.line.state.value}, "
                f"{'off' if self.real.is_off_hook() else 'on'}-hook): hang up and retry")
        tests[lp.name] = self
        lp.port = self.tap
        try:
            await self._run_checks()
        finally:
            self.tap.output = None
            self.real.set_ringing(False)
            if self.phone is not None and self.answer:
                self.phone.stop_play()
                self.phone.on_hook()
            await asyncio.sleep(0.1)  # let the hang-up's edge arrive while still diverted
            lp.port = self.real
            del tests[lp.name]
            if self.real.is_off_hook():  # still lifted: the line takes it from here
                lp.line.hook(True, gw.loop.time())
            gw._pump()
        ok = all(c.ok for c in self.checks)
        codec = getattr(self.real, "codec", None)
        stats = getattr(codec, "stats", None)
        return {
            "line": lp.name,
            "backend": getattr(lp.config, "backend", "?"),
            "simulated": self.phone is not None,
            "passed": ok,
            "checks": [asdict(c) for c in self.checks],
            # the sound card's own counters (hal/audio/alsa.py), on hardware
            "audio": stats() if callable(stats) else None,
        }

    async def _run_checks(self) -> None:
        self.checks.append(await self.check_callerid())
        ring, hook = await self.check_ring_and_hook()
        self.checks += [ring, hook]
        if not hook.ok:
            why = "not run: the handset never went off-hook"
            for name in ("dial tone", "DTMF", "audio level"):
                self.checks.append(Check(name, False, why))
            return
        self.checks.append(await self.check_dial_tone())
        self.checks.append(await self.check_dtmf())
        self.checks.append(await self.check_level())

    # -- the checks -------------------------------------------------------------------

    async def check_callerid(self) -> Check:
        from gateway.dsp.callerid import CallerId, plan
        from gateway.dsp.callerid_rx import decode_dtmf, decode_fsk

        method = self.lp.callerid_method
        sequence = plan(method, CallerId(TEST_NUMBER, TEST_NAME), datetime.now())
        if sequence is None:
            return Check("caller ID", True, f"method {method!r}: none sent")
        if sequence.reversal:
            self.real.set_polarity(True)
        seconds = self._play(sequence.pcm)
        await self._frames(seconds + 0.2)
        self.tap.output = None
        self.real.set_polarity(False)
        if self.phone is not None:
            pcm, where = self._heard(seconds + 0.2), "at the handset"
        else:  # nothing listens on-hook on a board: check what went to the codec
            pcm, where = self._recent(self.tap.played, seconds + 0.2), "as sent to the codec"
        m = sequence.method
        got = decode_fsk(pcm, m.modem) if m.signal == "fsk" else decode_dtmf(pcm)
        if got is None:
            return Check("caller ID", False, f"{method}: nothing decoded {where}")
        ok = got.number == TEST_NUMBER and (m.signal == "dtmf" or m.format == "sdmf"
                                            or got.name == TEST_NAME)
        return Check("caller ID", ok, f"{method}: decoded {got.number} {got.name or ''}"
                     .rstrip() + f" {where}", f"sent {TEST_NUMBER} {TEST_NAME}")

    async def check_ring_and_hook(self) -> tuple[Check, Check]:
        loop = self.gw.loop
        cadence = tuple(self.profile.ring_cadence) or (2.0, 4.0)
        on_s = float(cadence[0])
        gap_s = float(cadence[1]) if len(cadence) > 1 else 4.0
        expected_hz = float(getattr(self.real, "ring_hz", 0.0) or 0.0)
        rings_before = len(self.phone.rings) if self.phone is not None else 0
        self._edge.clear()
        start = loop.time()
        if self.phone is not None and self.answer:
            # answer in the first silent interval, as a person would after one ring
            loop.call_later(on_s + min(0.5, gap_s / 2), self._sim_answer)
        seen_hz: float | None = None
        answered_at: float | None = None
        index = 0
        while answered_at is None and loop.time() - start < self.answer_s:
            ringing = index % 2 == 0
            self.real.set_ringing(ringing)
            step = float(cadence[index % len(cadence)])
            index += 1
            if ringing and self.phone is not None:
                await asyncio.sleep(min(0.2, step / 2))
                hz = self.phone.state().get("ring_hz")
                seen_hz = float(hz) if hz else seen_hz
                step -= min(0.2, step / 2)
            remaining = max(0.0, min(step, self.answer_s - (loop.time() - start)))
            try:
                await asyncio.wait_for(self._wait_off_hook(), remaining)
                answered_at = self._first_off_hook()
            except TimeoutError:
                pass
        self.real.set_ringing(False)
        ring = self._ring_check(expected_hz, seen_hz, on_s, rings_before, answered_at)
        if answered_at is None:
            hook = Check("hook", False, f"no off-hook within {self.answer_s:.1f} s")
        else:
            hook = Check("hook", True, f"off-hook {answered_at - start:.2f} s after ringing "
                         "began")
        return ring, hook

    def _sim_answer(self) -> None:
        if self.phone is not None and self.gw.line_tests.get(self.lp.name) is self:
            self.phone.off_hook()

    async def _wait_off_hook(self) -> None:
        while self._first_off_hook() is None:
            self._edge.clear()
            await self._edge.wait()

    def _first_off_hook(self) -> float | None:
        return next((t for off, t in self.edges if off), None)

    def _ring_check(self, expected_hz: float, seen_hz: float | None, on_s: float,
                    rings_before: int, answered_at: float | None) -> Check:
        if self.phone is None:
            figure = f"{expected_hz:g} Hz applied (no ring sensing on this board)"
            if answered_at is None:
                return Check("ring", False, figure + "; nobody answered it")
            return Check("ring", True, figure + "; answered while ringing")
        bursts = self.phone.rings[rings_before:]
        if not bursts or seen_hz is None:
            return Check("ring", False, "no ring voltage at the handset")
        start, end = bursts[0]
        length = (end if end is not None else self.phone.now) - start
        hz_ok = expected_hz <= 0 or abs(seen_hz - expected_hz) <= 0.1 * expected_hz
        # cadence tolerance: 10 % of the burst (0.1 s at least), as ring cadences are specified
        len_ok = (abs(length - on_s) <= max(0.1, 0.1 * on_s)
                  or (answered_at is not None and length < on_s))
        return Check("ring", hz_ok and len_ok,
                     f"{seen_hz:g} Hz, first burst {length:.2f} s (cadence on {on_s:g} s), "
                     f"{len(bursts)} burst(s)")

    async def check_dial_tone(self) -> Check:
        from gateway.dsp.analysis import component_levels, frequencies_present

        spec = self.profile.dial
        self.tap.output = ToneGenerator(spec).next_frame
        await self._frames(1.0)
        pcm = self._heard(0.6)
        self.tap.output = None
        freqs = list(spec.frequencies)
        present = frequencies_present(pcm, freqs, min_level_dbfs=-60.0)
        levels = component_levels(pcm, freqs)
        dbm0 = {f: levels[f] - DBM0_TO_DBFS for f in freqs}
        want = spec.level_dbfs - DBM0_TO_DBFS
        figure = "+".join(f"{f:g}" for f in freqs) + " Hz at " + "/".join(
            f"{dbm0[f]:.1f}" for f in freqs) + " dBm0"
        if self.phone is not None:
            ok = len(present) == len(freqs) and all(abs(dbm0[f] - want) <= 3.0 for f in freqs)
            return Check("dial tone", ok, figure, f"expected {want:.1f} dBm0 each")
        return Check("dial tone", len(present) == len(freqs), figure + " (hybrid echo)",
                     f"sent {want:.1f} dBm0 each")

    async def check_dtmf(self) -> Check:
        from gateway.dsp.dtmf import DtmfDetector, generate_sequence

        seconds = self._play(generate_sequence(DTMF_OUT, 100, 100, level_dbfs=-16.0))
        await self._frames(seconds + 0.3)
        self.tap.output = None
        heard = _detect(DtmfDetector(), self._heard(seconds + 0.3))
        parts = [f"out {DTMF_OUT} -> {heard or '-'}"]
        ok = heard == DTMF_OUT
        if self.phone is not None:
            mark = len(self.tap.captured)
            self.phone.dial(DTMF_IN, mode="dtmf")
            await self._frames(len(DTMF_IN) * 0.2 + 0.3)
            got = _detect(DtmfDetector(), b"".join(list(self.tap.captured)[mark:]))
            parts.append(f"in {DTMF_IN} -> {got or '-'}")
            ok = ok and got == DTMF_IN
        return Check("DTMF", ok, ", ".join(parts))

    async def check_level(self) -> Check:
        from gateway.dsp.analysis import component_levels

        spec = ToneSpec((TEST_TONE_HZ,), level_dbfs=dbm0_to_dbfs(TEST_TONE_DBM0))
        self.tap.output = ToneGenerator(spec).next_frame
        await self._frames(1.0)
        ear = component_levels(self._heard(0.6), [TEST_TONE_HZ])[TEST_TONE_HZ] - DBM0_TO_DBFS
        self.tap.output = None
        if self.phone is None:
            ok = ear > -55.0
            return Check("audio level", ok, f"{TEST_TONE_HZ:g} Hz sent at {TEST_TONE_DBM0:g} "
                         f"dBm0, {ear:.1f} dBm0 back through the hybrid")
        mark = len(self.tap.captured)
        self.phone.play_tone(TEST_TONE_HZ, dbm0_to_dbfs(TEST_TONE_DBM0))
        await self._frames(1.0)
        self.phone.stop_play()
        frames = list(self.tap.captured)[mark:]
        mouth_pcm = b"".join(frames[-30:])
        mouth = component_levels(mouth_pcm, [TEST_TONE_HZ])[TEST_TONE_HZ] - DBM0_TO_DBFS
        ok = abs(ear - TEST_TONE_DBM0) <= 1.0 and abs(mouth - TEST_TONE_DBM0) <= 1.0
        return Check("audio level", ok,
                     f"earpiece {ear:.1f} dBm0, mouthpiece {mouth:.1f} dBm0",
                     f"{TEST_TONE_HZ:g} Hz test tone at {TEST_TONE_DBM0:g} dBm0, +-1 dB")


def _detect(detector: Any, pcm: bytes) -> str:
    size = len(SILENCE_FRAME)
    digits: list[str] = []
    for i in range(0, len(pcm) - size + 1, size):
        digits += detector.feed(pcm[i : i + size])
    return "".join(digits)


async def line_test(gw: Gateway, request: dict[str, Any]) -> dict[str, Any]:
    """The control command: ``{"cmd": "line-test", "line": NAME, "answer_s": 10,
    "answer": true}``."""
    from gateway.runtime.control_handlers import ControlCommandError, _line
    from gateway.runtime.line_test_fxo import FxoLineTest, find_fxo_line

    fp = find_fxo_line(gw, request.get("line"))
    if fp is not None:  # an exchange line: its own checks (gateway/runtime/line_test_fxo.py)
        digits = request.get("digits")
        if digits is not None and (not str(digits) or any(
                c not in "0123456789*#ABCD" for c in str(digits))):
            raise ControlCommandError(f"digits {digits!r}: expected 0-9, *, #, A-D")
        try:
            return await FxoLineTest(gw, fp, None if digits is None else str(digits)).run()
        except LineTestError as exc:
            raise ControlCommandError(str(exc)) from exc
    lp = _line(gw, request.get("line"))
    if getattr(lp, "kind", "fxs") != "fxs":
        raise ControlCommandError(f"line {lp.name} is not an FXS line")
    try:
        answer_s = float(request.get("answer_s", 10.0))
    except (TypeError, ValueError):
        raise ControlCommandError("answer_s: expected seconds") from None
    if not 1.0 <= answer_s <= 120.0:
        raise ControlCommandError(f"answer_s {answer_s:g}: expected 1 to 120 seconds")
    test = LineTest(gw, lp, answer_s=answer_s, answer=bool(request.get("answer", True)))
    try:
        return await test.run()
    except LineTestError as exc:
        raise ControlCommandError(str(exc)) from exc
