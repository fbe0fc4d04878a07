"""The AT engine over a serial port, on the asyncio loop, never blocking it.

The port is opened with pyserial's ``serial_for_url``, so a device (``/dev/ttyUSB2``), a
pty path, ``socket://host:port`` and ``loop://`` all work. Reading never blocks the loop
that also carries the 20 ms audio tick:

- a port with a file descriptor (a tty, a pty, a socket) is watched with
  ``loop.add_reader`` and read with non-blocking ``os.read``; writes that do not go out at
  once wait for ``loop.add_writer``;
- a port without one (``loop://``, some URL handlers) is read by a small thread that hands
  the bytes to the loop with ``call_soon_threadsafe``.

Everything else is :class:`gateway.modem.at.AtEngine`: this adapter feeds it bytes and
``loop.time()``, writes what it returns, re-arms its timer and turns its events into
finished futures and ``on_event`` calls. End of file or an I/O error (a USB modem unplugged
or reset) closes the port and is reported once as :class:`hal.base.PortLost`.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import serial

from gateway.modem.at import (
    AtEngine,
    CommandDone,
    CommandFailed,
    CommandTimedOut,
    Unsolicited,
)
from hal.base import AtPort, CommandError, HalError, ModemEvent, ModemLost, PortLost

__all__ = ["SerialAtPort"]

log = logging.getLogger(__name__)

READ_SIZE = 4096
THREAD_POLL = 0.05
"""Seconds the reader thread (ports without a descriptor) waits per read, so it can stop."""


class SerialAtPort(AtPort):
    """An AT channel on one serial port (see the module docstring)."""

    def __init__(self, url: str, *, baudrate: int = 115200) -> None:
        self.url = url
        self.baudrate = baudrate
        self._engine = AtEngine()
        self._port: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd: int | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wbuf = bytearray()
        self._writer_armed = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._waiting: dict[int, asyncio.Future[CommandDone]] = {}
        self._on_event: Callable[[ModemEvent], None] | None = None
        self._gone: str | None = None  # why the port is unusable, once it is

    # -- AtPort -------------------------------------------------------------------------

    def start(self, on_event: Callable[[ModemEvent], None]) -> None:
        """Open the port and watch it; call from inside the running loop."""
        if self._loop is not None:
            raise HalError(f"modem port {self.url}: already started")
        loop = asyncio.get_running_loop()
        try:
            port = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=0)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise HalError(f"modem port {self.url}: cannot open it ({exc})") from exc
        self._loop, self._port, self._on_event = loop, port, on_event
        fd = _fileno(port)
        if fd is not None:
            os.set_blocking(fd, False)
            self._fd = fd
            loop.add_reader(fd, self._readable)
        else:
            port.timeout = THREAD_POLL
            self._thread = threading.Thread(
                target=self._read_thread, name=f"at-reader {self.url}", daemon=True
            )
            self._thread.start()

    async def command(
        self, line: str, timeout: float = 5.0, *, body: bytes | None = None
    ) -> CommandDone:
        """Send one AT command; its CommandDone, or CommandError / ModemLost."""
        loop = self._loop
        if loop is None:
            raise HalError(f"modem port {self.url}: command {line!r} before start()")
        if self._gone is not None:
            raise ModemLost(f"modem port {self.url}: {self._gone}")
        tag = self._engine.send(line, loop.time(), timeout=timeout, body=body)
        future: asyncio.Future[CommandDone] = loop.create_future()
        self._waiting[tag] = future
        self._pump()
        return await future

    def close(self) -> None:
        """Release the port; commands still out raise ModemLost. Idempotent."""
        if self._gone is None:
            self._gone = "closed"
        self._teardown()

    # -- state for the supervisor ------------------------------------------------------

    @property
    def lost(self) -> str | None:
        """Why the port is no longer usable (``closed``, end of file, an I/O error), or None."""
        return self._gone

    @property
    def counters(self) -> dict[str, int]:
        """The engine's counts of dropped and stray input, and of timeouts."""
        return self._engine.counters

    # -- I/O ----------------------------------------------------------------------------

    def _readable(self) -> None:
        fd = self._fd
        if fd is None:
            return
        try:
            data = os.read(fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lose(f"read failed: {exc}")
            return
        if not data:
            # Readable but empty: the other end hung up (a pty master closed, a USB
            # device gone, a socket closed).
            self._lose("end of file")
            return
        self._received(data)

    def _read_thread(self) -> None:
        port, loop = self._port, self._loop
        assert loop is not None
        while not self._stop.is_set():
            try:
                data = port.read(max(1, port.in_waiting))
            except Exception as exc:  # noqa: BLE001 - any driver failure means the port is gone
                if not self._stop.is_set():
                    _call_soon(loop, self._lose, f"read failed: {exc}")
                return
            if data and not _call_soon(loop, self._received, bytes(data)):
                return

    def _received(self, data: bytes) -> None:
        if self._gone is not None or self._loop is None:
            return
        self._engine.receive(data, self._loop.time())
        self._pump()

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            try:
                self._port.write(data)
            except Exception as exc:  # noqa: BLE001
                self._lose(f"write failed: {exc}")
            return
        self._wbuf += data
        self._flush()

    def _flush(self) -> None:
        fd, loop = self._fd, self._loop
        if fd is None or loop is None:
            return
        while self._wbuf:
            try:
                n = os.write(fd, self._wbuf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._lose(f"write failed: {exc}")
                return
            del self._wbuf[:n]
        if self._wbuf and not self._writer_armed:
            loop.add_writer(fd, self._flush)
            self._writer_armed = True
        elif not self._wbuf and self._writer_armed:
            loop.remove_writer(fd)
            self._writer_armed = False

    # -- engine plumbing ----------------------------------------------------------------

    def _pump(self) -> None:
        """Write what the engine wants written, deliver its events, re-arm its timer."""
        if self._gone is not None:
            return
        out = self._engine.bytes_to_send()
        if out:
            self._write(out)
        while (event := self._engine.next_event()) is not None:
            self._deliver(event)
        if self._gone is None:
            self._arm_timer()

    def _deliver(self, event: CommandDone | CommandFailed | CommandTimedOut | Unsolicited) -> None:
        if isinstance(event, Unsolicited):
            self._notify(event)
            return
        future = self._waiting.pop(event.tag, None)
        if future is None or future.done():
            return  # the caller stopped waiting (cancelled)
        if isinstance(event, CommandDone):
            future.set_result(event)
        else:
            future.set_exception(CommandError(event))

    def _notify(self, event: ModemEvent) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            log.exception("modem port %s: event handler failed on %r", self.url, event)

    def _arm_timer(self) -> None:
        loop = self._loop
        deadline = self._engine.get_timer()
        if deadline == self._timer_at or loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = loop.call_at(deadline, self._fire_timer, deadline)

    def _fire_timer(self, deadline: float) -> None:
        self._timer, self._timer_at = None, None
        if self._gone is not None or self._loop is None:
            return
        # The loop may run a handle a hair before its time; the engine sees the deadline.
        self._engine.handle_timer(max(self._loop.time(), deadline))
        self._pump()

    def _lose(self, reason: str) -> None:
        if self._gone is not None:
            return
        self._gone = reason
        log.warning("modem port %s lost: %s", self.url, reason)
        self._teardown()
        self._notify(PortLost(self.url, reason))

    def _teardown(self) -> None:
        self._stop.set()
        loop, fd = self._loop, self._fd
        if loop is not None and fd is not None and not loop.is_closed():
            loop.remove_reader(fd)
            if self._writer_armed:
                loop.remove_writer(fd)
        self._writer_armed = False
        self._fd = None
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, None
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except Exception:  # noqa: BLE001 - closing a vanished device may fail; it is gone
                log.debug("modem port %s: close failed", self.url, exc_info=True)
        # The reader thread (if any) sees _stop within THREAD_POLL and ends on its own; it
        # is not joined here, so closing never stalls the loop.
        self._thread = None
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(ModemLost(f"modem port {self.url}: {self._gone}"))


def _fileno(port: Any) -> int | None:
    try:
        fd = port.fileno()
    except (AttributeError, io.UnsupportedOperation, OSError, ValueError):
        return None
    return fd if isinstance(fd, int) and fd >= 0 else None


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> bool:
    """Hand work to the loop from the reader thread; False once the loop is closed."""
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:
        return False
    return True
