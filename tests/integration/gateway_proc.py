"""Run the real `branchline run` daemon as a subprocess and drive it over its control socket.

The integration tests talk to the gateway exactly as an admin would: a YAML file, the
daemon process, and the control socket the CLI uses.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gateway.runtime.control import ControlClient, ControlError


class GatewayProcess:
    """One `branchline run --config FILE` child process with its own state and socket."""

    def __init__(self, tmpdir: Path, config_text: str | None, name: str = "gw",
                 prefix: Sequence[str] = ()) -> None:
        self.dir = tmpdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.control_path = str(self.dir / "control.sock")
        self.config_path = self.dir / "branchline.yaml"
        if config_text is not None:
            self.config_path.write_text(config_text)
        self.use_default = config_text is None
        self.log_path = self.dir / "branchline.log"
        # Put before the command line, e.g. `ip netns exec <ns>` (tests/integration/netns.py):
        # the control socket is a path, so status and phone commands work from the host.
        self.prefix = list(prefix)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def start(self, timeout: float = 15.0) -> None:
        self._log = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        config = [] if self.use_default else ["--config", str(self.config_path)]
        self._proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "gateway.cli", "run", *config,
             "--control", self.control_path, "--log-level", "debug"],
            stdout=self._log, stderr=subprocess.STDOUT, env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"branchline exited with {self._proc.returncode}:\n{self.log_text()}")
            try:
                self.request("status")
                return
            except ControlError:
                time.sleep(0.1)
        raise RuntimeError(f"branchline did not answer on {self.control_path}:\n{self.log_text()}")

    @property
    def pid(self) -> int | None:
        """The daemon's process id (for /proc), or None before start()."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM and wait; returns the exit code."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return self._proc.returncode

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def request(self, cmd: str, **args: Any) -> Any:
        return ControlClient(self.control_path, timeout=15.0).request(cmd, **args)

    def phone(self, line: str, action: str, **args: Any) -> Any:
        return self.request("phone", line=line, action=action, **args)

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("status")
        return result

    def line(self, name: str) -> dict[str, Any]:
        for entry in self.status()["lines"]:
            if entry["name"] == name:
                return dict(entry)
        raise KeyError(name)

    def registered(self, account: str) -> bool:
        for reg in self.status()["registrations"]:
            if reg["account"] == account:
                return bool(reg["registered"])
        raise KeyError(account)

    def wait_until(self, what: str, predicate: Callable[[], bool], timeout: float = 10.0,
                   interval: float = 0.1) -> float:
        """Poll `predicate`; returns the seconds it took, or raises with the daemon log tail."""
        start = time.monotonic()
        while True:
            if predicate():
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what}\n"
                    f"status: {self.status() if self.running else 'daemon not running'}\n"
                    f"log tail:\n{self.log_text()[-4000:]}"
                )
            time.sleep(interval)

    def wait_dial_tone(self, line: str, timeout: float = 5.0) -> None:
        """The line plays dial tone and the handset's earpiece carries it (350 + 440 Hz, US).

        Checked on the earpiece's frequencies and the line's tone, not only on the simulated
        phone's label: after a flash that label sometimes stays "tone" for seconds over a
        clean 350 + 440 Hz (recorded: -16.1 dBFS, nothing else in the spectrum), a defect of
        the test phone's classifier, not of the gateway (noted on issue 12)."""
        def ok() -> bool:
            report = self.phone(line, "hears")
            return (self.line(line)["tone"] == "dial" and report.get("what") in ("dial", "tone")
                    and {350.0, 440.0} <= set(report.get("frequencies") or ()))
        self.wait_until(f"line {line}: dial tone in the earpiece", ok, timeout=timeout)

    def wait_hears(self, line: str, what: str, timeout: float = 10.0) -> dict[str, Any]:
        seen: list[Any] = []
        last: list[Any] = [None]

        def check() -> bool:
            report = self.phone(line, "hears")
            seen.append(report.get("what"))
            last[0] = report
            return bool(report.get("what") == what)

        try:
            self.wait_until(f"line {line} to hear {what}", check, timeout, interval=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nheard: {seen[-10:]}\nlast report: {last[0]}") from None
        result: dict[str, Any] = self.phone(line, "hears")
        return result
