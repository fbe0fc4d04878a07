"""`branchline line-test LINE`: the installer's check of one idle FXS line.

Kept beside `gateway.cli` so that module only wires the subcommand in. The daemon runs the
checks (gateway/runtime/line_test.py); this prints the report and exits 0 when every
check passed, 1 when one failed.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any, Protocol, TextIO


class _Client(Protocol):
    def request(self, cmd: str, **args: Any) -> Any: ...


EXTRA_TIMEOUT = 40.0
"""Seconds the checks take beyond waiting for the off-hook (caller ID, tones, DTMF)."""


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``line-test`` to the subcommands."""
    p = sub.add_parser(
        "line-test", parents=[common],
        help="test an idle line: FXS ring, hook, dial tone, DTMF, caller ID, audio level; "
        "FXO loop current, dial tone, DTMF out, release",
        description="Runs on the running daemon. Lift the handset when the phone rings "
        "(a simulated phone answers by itself) and keep it lifted until the report.",
    )
    p.add_argument("line", metavar="LINE", help="line name (or number) from the config")
    p.add_argument("--answer-timeout", metavar="SECONDS", type=float, default=10.0,
                   help="how long to ring for the off-hook (default 10, 1 to 120)")
    p.add_argument("--no-answer", action="store_true",
                   help="simulated lines: do not let the phone answer (the hook check fails)")


def timeout(args: argparse.Namespace) -> float:
    """How long the CLI waits for the report."""
    return float(args.answer_timeout) + EXTRA_TIMEOUT


def request(args: argparse.Namespace) -> dict[str, Any]:
    """The control request for the parsed command line."""
    return {"line": args.line, "answer_s": args.answer_timeout, "answer": not args.no_answer}


def format_report(result: Mapping[str, Any]) -> str:
    """The report as a table: one row per check, then the verdict."""
    checks = result.get("checks") or []
    width = max([len(str(c.get("name", ""))) for c in checks] + [5])
    where = result.get("where") or ("simulated phone" if result.get("simulated")
                                    else "hardware")
    lines = [f"line {result.get('line')} ({result.get('backend')}, {where})"]
    for c in checks:
        verdict = "PASS" if c.get("ok") else "FAIL"
        lines.append(f"  {str(c.get('name', '')).ljust(width)}  {verdict}  {c.get('figure', '')}")
    audio = result.get("audio")
    if isinstance(audio, Mapping):
        ppm = audio.get("card_ppm")
        lines.append(
            f"  sound card {audio.get('device')}: {audio.get('underruns')} underrun(s), "
            f"{audio.get('overruns')} overrun(s), latency {audio.get('playback_latency_ms')}"
            f"/{audio.get('capture_latency_ms')} ms out/in, clock "
            + ("not yet measured" if ppm is None else f"{ppm:+.1f} ppm"))
    failed = [str(c.get("name")) for c in checks if not c.get("ok")]
    lines.append("PASS: every check passed" if not failed and checks
                 else f"FAIL: {', '.join(failed) or 'no checks ran'}")
    return "\n".join(lines)


def run(args: argparse.Namespace, client: _Client, out: TextIO, *, as_json: bool) -> int:
    """Run the test on the daemon; 0 when every check passed, else 1."""
    result = client.request("line-test", **request(args))
    if not isinstance(result, Mapping):
        raise ValueError(f"unexpected line-test answer: {result!r}")
    if as_json:
        print(json.dumps(result, indent=2), file=out)
    else:
        print(format_report(result), file=out)
    return 0 if result.get("passed") else 1
