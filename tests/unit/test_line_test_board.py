"""`line-test` as it runs on a board: no virtual phone to measure at, so the audio checks
read what comes back through the SLIC's hybrid. Played here on the sim backend with its
simulated hybrid (20 ms, 6 dB ERL) and the phone hidden from the test; and the CLI's
report and exit code."""

from __future__ import annotations

import argparse
import asyncio
import io
from types import SimpleNamespace
from typing import Any

import pytest

from gateway import cli_line_test
from gateway.dsp import SILENCE_FRAME
from gateway.dsp.tones import get_profile
from gateway.runtime.line_test import LineTest, LineTestError
from hal.sim.fxs import SimFxs


class _Line:
    state = SimpleNamespace(value="idle")

    def hook(self, offhook: bool, now: float) -> None:
        self.last_hook = offhook


async def _run_board_test(options: dict[str, Any], answer: bool) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    port = SimFxs("b1", {"echo_delay_ms": 20, **options})
    phone = port.phone
    gw = SimpleNamespace(loop=loop, line_tests={}, _pump=lambda: None)
    lp = SimpleNamespace(name="b1", port=port, line=_Line(), profile=get_profile("US"),
                         config=SimpleNamespace(backend="ag1171"), call_id=None,
                         callerid_method="bellcore", simulated_phone=None)
    test = LineTest(gw, lp, answer_s=4.0)  # type: ignore[arg-type]
    port.start(lambda off, t: loop.call_soon_threadsafe(test.hook, off, t))
    stop = False

    async def tick() -> None:  # the daemon's 20 ms tick, through whatever lp.port is now
        while not stop:
            lp.port.read_frame()
            lp.port.write_frame(SILENCE_FRAME)
            await asyncio.sleep(0.02)

    async def installer_lifts() -> None:  # hears the bell, lifts half a second later
        while not phone.is_ringing():
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)
        phone.off_hook()

    ticker = loop.create_task(tick())
    lifter = loop.create_task(installer_lifts()) if answer else None
    try:
        report = await test.run()
    finally:
        stop = True
        await ticker
        if lifter is not None:
            lifter.cancel()
        port.close()
    return report


def test_board_path_measures_through_the_hybrid() -> None:
    report = asyncio.run(_run_board_test({}, answer=True))
    checks = {c["name"]: c for c in report["checks"]}
    assert report["simulated"] is False
    assert all(c["ok"] for c in report["checks"]), report
    assert checks["ring"]["figure"] == "20 Hz applied (no ring sensing on this board); " \
        "answered while ringing"
    assert "as sent to the codec" in checks["caller ID"]["figure"]
    assert checks["dial tone"]["figure"].endswith("(hybrid echo)")
    assert checks["DTMF"]["figure"] == "out 1590# -> 1590#"
    back = float(checks["audio level"]["figure"].split("dBm0, ")[1].split(" dBm0")[0])
    assert -25.0 < back < -15.0  # -10 dBm0 less the simulated hybrid's return loss


def test_board_path_without_answer_fails_ring_and_hook() -> None:
    report = asyncio.run(_run_board_test({}, answer=False))
    checks = {c["name"]: c for c in report["checks"]}
    assert report["passed"] is False
    assert not checks["ring"]["ok"] and "nobody answered" in checks["ring"]["figure"]
    assert checks["hook"]["figure"] == "no off-hook within 4.0 s"


def test_busy_line_is_refused() -> None:
    async def go() -> None:
        port = SimFxs("b2", {})
        line = _Line()
        line.state = SimpleNamespace(value="connected")  # type: ignore[misc]
        gw = SimpleNamespace(loop=asyncio.get_running_loop(), line_tests={},
                             _pump=lambda: None)
        lp = SimpleNamespace(name="b2", port=port, line=line, profile=get_profile("US"),
                             config=SimpleNamespace(backend="sim"), call_id="c1",
                             callerid_method="bellcore", simulated_phone=port.phone)
        with pytest.raises(LineTestError, match="not idle"):
            await LineTest(gw, lp).run()  # type: ignore[arg-type]
        port.close()

    asyncio.run(go())


class _Client:
    def __init__(self, result: dict[str, Any]) -> None:
        self.result = result
        self.asked: list[tuple[str, dict[str, Any]]] = []

    def request(self, cmd: str, **args: Any) -> Any:
        self.asked.append((cmd, args))
        return self.result


def test_cli_report_and_exit_code() -> None:
    args = argparse.Namespace(line="1", answer_timeout=7.0, no_answer=True)
    good = {"line": "1", "backend": "sim", "simulated": True, "passed": True,
            "checks": [{"name": "ring", "ok": True, "figure": "20 Hz"},
                       {"name": "hook", "ok": True, "figure": "off-hook 2.50 s"}]}
    out = io.StringIO()
    client = _Client(good)
    assert cli_line_test.run(args, client, out, as_json=False) == 0
    assert client.asked == [("line-test", {"line": "1", "answer_s": 7.0, "answer": False})]
    assert out.getvalue().splitlines() == [
        "line 1 (sim, simulated phone)", "  ring   PASS  20 Hz",
        "  hook   PASS  off-hook 2.50 s", "PASS: every check passed"]
    bad = {**good, "passed": False, "checks": [{"name": "hook", "ok": False,
                                                 "figure": "no off-hook within 7.0 s"}]}
    out = io.StringIO()
    assert cli_line_test.run(args, _Client(bad), out, as_json=False) == 1
    assert out.getvalue().rstrip().endswith("FAIL: hook")
    assert cli_line_test.timeout(args) == 47.0
    board = {**good, "audio": {"device": "hw:1", "underruns": 0, "overruns": 1,
                               "playback_latency_ms": 40.0, "capture_latency_ms": 50.0,
                               "card_ppm": -12.34}}
    out = io.StringIO()
    cli_line_test.run(args, _Client(board), out, as_json=False)
    assert "  sound card hw:1: 0 underrun(s), 1 overrun(s), latency 40.0/50.0 ms out/in, " \
        "clock -12.3 ppm" in out.getvalue()
