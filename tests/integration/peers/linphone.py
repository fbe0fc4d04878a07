"""linphonec (Debian 12 package linphone-cli, liblinphone 5.1) as a scripted softphone.

Driven over its stdin, one command per line; its stdout is collected by a reader thread.

Findings for liblinphone 5.1 here:
- `[sip] sip_port` in the rc file is ignored: linphonec starts with *no* UDP listening
  point ("sip port = 0" from the `ports` command). Sending `ports sip <port>` after start
  creates the listening point. `start()` does that and waits until the port is bound.
- No sound card: `soundcard use files` switches to file I/O; `play <wav>` sends a WAV to
  the far end and `record <wav>` writes what it hears.
- `pause` / `resume` put the current call on hold (re-INVITE a=sendonly) and take it off.
- `-a` answers incoming calls automatically.
- Blocker: even with the listening point open, liblinphone logs "Linphone core global
  state is not on. Please check if the core is started." and answers every INVITE with
  503 Service unavailable; outgoing `call` fails the same way. linphonec 5.1 never calls
  linphone_core_start(), and no linphonec command starts the core. No rc setting tried
  (sip_port, bind_address, default_proxy=-1, file audio) changes that.
"""

from __future__ import annotations

import queue
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

__all__ = ["Linphone", "LinphoneError", "linphonec_binary"]


class LinphoneError(RuntimeError):
    """linphonec failed to start, to listen or to report what was expected."""


def linphonec_binary() -> str | None:
    """Path of linphonec, or None when linphone-cli is not installed."""
    return shutil.which("linphonec")


def _udp_bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


class Linphone:
    """One linphonec process on 127.0.0.1 with its own rc file and SIP/RTP ports."""

    def __init__(self, name: str, *, sip_port: int, rtp_port: int, tmpdir: Path,
                 auto_answer: bool = True) -> None:
        self.name = name
        self.sip_port = sip_port
        self.rtp_port = rtp_port
        self.dir = tmpdir / f"linphone-{name}-{sip_port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rc = self.dir / "linphonerc"
        self.log_path = self.dir / "linphone.log"
        self.auto_answer = auto_answer
        self._proc: subprocess.Popen[str] | None = None
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._queue: queue.Queue[str] = queue.Queue()

    def rc_text(self) -> str:
        """The rc file: loopback only, no proxy, a fixed RTP port."""
        return f"""[sip]
sip_port={self.sip_port}
sip_tcp_port=-1
sip_tls_port=-1
bind_address=127.0.0.1
default_proxy=-1
[net]
ipv6=0
[rtp]
audio_rtp_port={self.rtp_port}
audio_jitt_comp=60
"""

    def start(self, timeout: float = 10.0) -> Linphone:
        """Start linphonec, open its UDP listening point, switch audio to files."""
        binary = linphonec_binary()
        if binary is None:
            raise LinphoneError("linphonec is not installed (package linphone-cli)")
        self.rc.write_text(self.rc_text())
        args = [binary, "-c", str(self.rc), "-d", "5", "-l", str(self.log_path)]
        if self.auto_answer:
            args.append("-a")
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, cwd=self.dir)
        threading.Thread(target=self._reader, daemon=True).start()
        self.send("soundcard use files")
        self.send(f"ports sip {self.sip_port}")
        deadline = time.monotonic() + timeout
        while not _udp_bound(self.sip_port):
            if time.monotonic() > deadline or self._proc.poll() is not None:
                raise LinphoneError(f"linphonec did not listen on {self.sip_port}:\n{self.output()}")
            time.sleep(0.1)
        return self

    def _reader(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        out: IO[str] = self._proc.stdout
        for line in out:
            with self._lock:
                self._lines.append(line.rstrip("\n"))

    def send(self, command: str) -> None:
        """Type one command line into linphonec."""
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(command + "\n")
        self._proc.stdin.flush()

    def output(self) -> str:
        """Everything linphonec printed so far."""
        with self._lock:
            return "\n".join(self._lines)

    def wait_output(self, text: str, timeout: float = 10.0, since: int = 0) -> None:
        """Wait for `text` in the output after line `since` (see mark())."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if any(text in line for line in self._lines[since:]):
                    return
            if time.monotonic() > deadline:
                raise LinphoneError(f"linphonec never printed {text!r}:\n{self.output()[-3000:]}")
            time.sleep(0.1)

    def mark(self) -> int:
        """The number of output lines so far, for wait_output(since=...)."""
        with self._lock:
            return len(self._lines)

    def log_text(self) -> str:
        """liblinphone's debug log."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        """`quit`, then SIGTERM/SIGKILL if needed."""
        if self._proc is None or self._proc.poll() is not None:
            return
        try:
            self.send("quit")
            self._proc.wait(timeout)
        except (OSError, subprocess.TimeoutExpired):
            self._proc.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
