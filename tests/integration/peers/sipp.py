"""sipp (Debian package sip-tester, 3.6) as a scripted SIP peer for integration tests.

One `Sipp` object is one sipp process on 127.0.0.1 running a built-in scenario (`-sn uac`,
`-sn uas`) or an XML file from tests/data/sipp/. It runs in the background; `wait()`
returns its exit code (0: every call succeeded, 1: a call failed, 97: the scenario stopped
itself with `int_cmd`, 99: no call processed) and every message it sent or received is in
`messages()` (`-trace_msg`), its errors in `errors()` (`-trace_err`).

Findings for sipp 3.6.1 here:
- `-rtp_echo` sends every RTP packet it gets on the media port (`-mp`) back to where it
  came from, so the handset hears its own tone: audio both ways without a codec in sipp.
- `-aa` answers INFO, NOTIFY, OPTIONS and UPDATE that the scenario did not expect, so the
  gateway's keep-alive probes do not abort a call.
- In UAS mode every new Call-ID (a REGISTER too) starts the scenario from the top, so the
  auth scenario answers REGISTER on a branch of its own.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

__all__ = ["Sipp", "SippError", "sipp_binary", "SCENARIO_DIR"]

SCENARIO_DIR = Path(__file__).resolve().parents[2] / "data" / "sipp"


class SippError(RuntimeError):
    """sipp failed to start or did not finish in time."""


def sipp_binary() -> str | None:
    """Path of the sipp executable, or None when it is not installed."""
    return shutil.which("sipp")


class Sipp:
    """A sipp process on 127.0.0.1 with its own SIP and media ports and trace files."""

    def __init__(
        self,
        scenario: str,
        *,
        sip_port: int,
        media_port: int,
        tmpdir: Path,
        remote: str | None = None,
        service: str | None = None,
        auth: tuple[str, str] | None = None,
        rtp_echo: bool = True,
        calls: int | None = 1,
        pause_ms: int | None = None,
        timeout_s: float = 25.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        if remote is not None and not remote.startswith("127.0.0.1:"):
            raise ValueError(f"sipp remote must be on 127.0.0.1 (loopback only), got {remote!r}")
        self.scenario = scenario
        self.sip_port = sip_port
        self.media_port = media_port
        self.remote = remote
        self.service = service
        self.auth = auth
        self.rtp_echo = rtp_echo
        self.calls = calls
        self.pause_ms = pause_ms
        self.timeout_s = timeout_s
        self.extra_args = tuple(extra_args)
        name = Path(scenario).stem
        self.dir = tmpdir / f"sipp-{name}-{sip_port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.message_file = self.dir / "messages.log"
        self.error_file = self.dir / "errors.log"
        self.log_file = self.dir / "sipp.out"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def argv(self) -> list[str]:
        """The sipp command line (shown in failures)."""
        binary = sipp_binary()
        if binary is None:
            raise SippError("sipp is not installed (package sip-tester)")
        if self.scenario in ("uac", "uas"):
            scenario_args = ["-sn", self.scenario]
        else:
            path = Path(self.scenario)
            if not path.is_absolute():
                path = SCENARIO_DIR / path
            if not path.is_file():
                raise SippError(f"no sipp scenario {path}")
            scenario_args = ["-sf", str(path)]
        args = [
            binary, *scenario_args,
            "-i", "127.0.0.1", "-p", str(self.sip_port),
            "-mi", "127.0.0.1", "-mp", str(self.media_port),
            "-t", "u1", "-nostdin", "-aa",
            "-trace_msg", "-message_file", str(self.message_file),
            "-trace_err", "-error_file", str(self.error_file),
            "-timeout", f"{int(self.timeout_s)}s", "-timeout_error",
            "-max_recv_loops", "100",
        ]
        if self.calls is not None:
            args += ["-m", str(self.calls), "-l", "1"]
        if self.rtp_echo:
            args.append("-rtp_echo")
        if self.service is not None:
            args += ["-s", self.service]
        if self.auth is not None:
            args += ["-au", self.auth[0], "-ap", self.auth[1]]
        if self.pause_ms is not None:
            args += ["-d", str(self.pause_ms)]
        args += list(self.extra_args)
        if self.remote is not None:
            args.append(self.remote)
        return args

    def start(self) -> Sipp:
        """Start sipp in the background; a UAS is listening once this returns."""
        self._log = open(self.log_file, "ab")
        self._proc = subprocess.Popen(
            self.argv(), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=self.dir,
        )
        time.sleep(0.3)  # sipp binds its sockets during start-up; a UAS must be ready
        if self._proc.poll() is not None:
            raise SippError(f"sipp exited at once ({self._proc.returncode}):\n{self.output()}")
        return self

    @property
    def running(self) -> bool:
        """The process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for sipp to finish and return its exit code (SippError on timeout)."""
        if self._proc is None:
            raise SippError("sipp was not started")
        try:
            code = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise SippError(f"sipp still running after {timeout} s:\n{self.report()}") from None
        self._close_log()
        return code

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM (then SIGKILL) if still running; returns the exit code."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._close_log()
        return self._proc.returncode

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    @staticmethod
    def _read(path: Path) -> str:
        try:
            return path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def output(self) -> str:
        """What sipp printed (its final statistics screen)."""
        return self._read(self.log_file)

    def messages(self) -> str:
        """Every SIP message sipp sent or received (-trace_msg)."""
        return self._read(self.message_file)

    def errors(self) -> str:
        """sipp's error log (-trace_err): unexpected messages, aborted calls."""
        return self._read(self.error_file)

    def _trace(self, direction: str) -> list[str]:
        """Messages from -trace_msg whose header line says `direction` (received/sent)."""
        found = []
        for block in self.messages().split("-" * 47 + " ")[1:]:
            lines = block.split("\n")
            if len(lines) < 3 or f"message {direction}" not in lines[1]:
                continue
            found.append("\n".join(lines[2:]).lstrip("\n"))
        return found

    def received(self, start_line: str) -> list[str]:
        """Messages sipp received whose first line starts with `start_line`."""
        return [m for m in self._trace("received") if m.startswith(start_line)]

    def sent(self, start_line: str) -> list[str]:
        """Messages sipp sent whose first line starts with `start_line`."""
        return [m for m in self._trace("sent") if m.startswith(start_line)]

    def report(self) -> str:
        """Command line, errors and the message trace tail, for assertion messages."""
        return (f"argv: {' '.join(self.argv())}\n--- errors ---\n{self.errors()[-3000:]}\n"
                f"--- messages (tail) ---\n{self.messages()[-5000:]}\n"
                f"--- output (tail) ---\n{self.output()[-1500:]}")
