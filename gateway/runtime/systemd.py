"""The systemd notify protocol: READY, STATUS, WATCHDOG, RELOADING and STOPPING.

systemd (``Type=notify``) hands the daemon a datagram socket in ``NOTIFY_SOCKET`` and, with
``WatchdogSec=``, the watchdog period in ``WATCHDOG_USEC``. The daemon tells it when it is
ready, what it is doing in one line, and that its event loop still turns.

The watchdog ping is scheduled on the event loop itself (``loop.call_later``), never from a
thread: a loop that is stuck in a blocking call, spinning, or stopped (SIGSTOP) stops
pinging, and systemd restarts the service. That is the point of the watchdog here.

Without ``NOTIFY_SOCKET`` (a foreground run, the tests' daemons) every call is a no-op.
systemd-python's ``systemd.daemon.notify`` is used when it imports and the socket is the
process's own; otherwise a plain ``AF_UNIX`` datagram goes to the path (``@name`` is an
abstract socket, as systemd writes it).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("branchline.systemd")

#: STATUS= is sent at most this often (s); a change inside the window goes out at its end.
STATUS_INTERVAL = 1.0


def _import_sd_notify() -> Callable[[str], Any] | None:
    try:  # by name: the repository's own systemd/ folder would shadow it for mypy
        daemon = importlib.import_module("systemd.daemon")
    except ImportError:
        return None
    notify: Callable[[str], Any] = daemon.notify
    return notify


class Notifier:
    """Sends notify messages to the service manager; a no-op when there is none."""

    def __init__(self, env: Mapping[str, str] | None = None,
                 use_library: bool = True) -> None:
        env = os.environ if env is None else env
        self.socket_path: str | None = env.get("NOTIFY_SOCKET") or None
        self.watchdog_usec = self._watchdog_usec(env)
        # systemd-python reads NOTIFY_SOCKET from the process environment itself, so it is
        # only used when that is the socket we were given.
        self._library = (_import_sd_notify()
                         if use_library and self.socket_path is not None
                         and os.environ.get("NOTIFY_SOCKET") == self.socket_path else None)
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._status_timer: asyncio.TimerHandle | None = None
        self._summary: Callable[[], str] | None = None
        self._last_status: str | None = None
        self._last_status_at = float("-inf")
        self.sent: int = 0  # messages sent, for status and tests
        self.errors: int = 0

    @staticmethod
    def _watchdog_usec(env: Mapping[str, str]) -> int | None:
        """The watchdog period, when it is meant for this process (WATCHDOG_PID matches)."""
        raw = env.get("WATCHDOG_USEC")
        if not raw:
            return None
        pid = env.get("WATCHDOG_PID")
        if pid and pid != str(os.getpid()):
            return None
        try:
            usec = int(raw)
        except ValueError:
            return None
        return usec if usec > 0 else None

    @property
    def enabled(self) -> bool:
        return self.socket_path is not None

    # -- sending ---------------------------------------------------------------------------

    def notify(self, message: str) -> bool:
        """Send one message (``KEY=value`` lines); False when not sent."""
        if self.socket_path is None:
            return False
        try:
            if self._library is not None:
                ok = bool(self._library(message))
            else:
                self._send(message.encode())
                ok = True
        except OSError as exc:
            ok = False
            if self.errors == 0:
                log.warning("systemd notify to %s failed: %s", self.socket_path, exc)
        if ok:
            self.sent += 1
        else:
            self.errors += 1
        return ok

    def _send(self, data: bytes) -> None:
        assert self.socket_path is not None
        path = self.socket_path
        address = "\0" + path[1:] if path.startswith("@") else path
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.sendto(data, address)

    def ready(self, status: str | None = None) -> bool:
        """READY=1: start-up (or a reload) is done."""
        message = "READY=1"
        if status is not None:
            message += f"\nSTATUS={_one_line(status)}"
            self._last_status = _one_line(status)
        return self.notify(message)

    def reloading(self) -> bool:
        """RELOADING=1 with the monotonic time systemd needs to match the READY=1 after it."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        """STOPPING=1, and no more pings (the manager then allows TimeoutStopSec)."""
        self._cancel_timers()
        return self.notify("STOPPING=1")

    def status(self, line: str) -> bool:
        """STATUS=<line>, sent now if it changed and the last one is a second old."""
        line = _one_line(line)
        if line == self._last_status:
            return False
        now = time.monotonic()
        if now - self._last_status_at < STATUS_INTERVAL:
            return False  # the next poll (start(summary=...)) sends it
        self._last_status, self._last_status_at = line, now
        return self.notify(f"STATUS={line}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    # -- on the event loop -----------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop,
              summary: Callable[[], str] | None = None) -> None:
        """Ping the watchdog from `loop` every WATCHDOG_USEC/2 and keep STATUS= current."""
        if self.socket_path is None:
            return
        self._loop, self._summary = loop, summary
        if self.watchdog_usec is not None:
            self._ping()
        if summary is not None:
            self._poll_status()

    def stop(self) -> None:
        self._cancel_timers()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _ping(self) -> None:
        assert self._loop is not None and self.watchdog_usec is not None
        self.watchdog()
        self._watchdog = self._loop.call_later(self.watchdog_usec / 2e6, self._ping)

    def _poll_status(self) -> None:
        assert self._loop is not None
        if self._summary is not None:
            try:
                self.status(self._summary())
            except Exception:  # a summary bug must not stop the watchdog or the loop
                log.exception("systemd status summary failed")
        self._status_timer = self._loop.call_later(STATUS_INTERVAL, self._poll_status)

    def _cancel_timers(self) -> None:
        for handle in (self._watchdog, self._status_timer):
            if handle is not None:
                handle.cancel()
        self._watchdog = self._status_timer = None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def gateway_summary(gw: Any) -> str:
    """The one-line STATUS: lines (in call), trunks up/down, phones, active calls."""
    lines = getattr(gw, "lines", {})
    busy = sum(1 for lp in lines.values() if getattr(lp, "call_id", None))
    parts = [f"lines {len(lines)} ({busy} in call)"]
    health = getattr(gw, "trunk_health", None)
    trunks: dict[str, Any] = getattr(gw, "trunks", {})
    if trunks:
        states = health.states() if health is not None else {}
        regs = getattr(gw, "registrations", {})
        down: list[str] = []
        for name in trunks:
            state = states.get(name)
            value = getattr(state, "value", None)
            if value is not None:
                if value != "up":
                    down.append(name)
                continue
            accounts = [r for r in regs.values() if getattr(r, "trunk", None) == name]
            if accounts and not any(getattr(r, "registered", False) for r in accounts):
                down.append(name)
        up = len(trunks) - len(down)
        text = f"trunks {up} up, {len(down)} down"
        if down:
            text += " (" + ", ".join(sorted(down)) + ")"
        parts.append(text)
    parts.append(f"calls {len(getattr(gw, 'calls', {}))}")
    return "; ".join(parts)


__all__ = ["Notifier", "gateway_summary", "STATUS_INTERVAL"]
