"""Call audio as raw PCM on a serial port: the EC25's serial-PCM voice port (AT+QPCMV=1,0),
the SIM7600's audio port after AT+CPCMREG=1, or the emulator's PCM pty.

The module sends and expects 8 kHz 16-bit little-endian mono samples with no framing; we cut
them into 320-byte (20 ms) frames. Nothing blocks: `read_frame()` drains what the tty has
and `write_frame()` writes what fits now, keeping the rest. Both buffers are bounded (the
oldest audio is dropped and counted), so a stalled module or a slow tick costs a few frames,
never memory or latency that grows. A vanished port (EOF, EIO) ends the stream quietly:
`read_frame()` returns None and `lost` says why.
"""

from __future__ import annotations

import logging
import os
import termios
from typing import Any

import serial

from hal.base import AudioPort, HalError

__all__ = ["FRAME_BYTES", "PcmSerialAudio"]

log = logging.getLogger(__name__)

FRAME_BYTES = 320
MAX_BUFFERED_FRAMES = 10
"""200 ms each way at most; more than that is late audio nobody wants to hear."""
READ_SIZE = 4096


class PcmSerialAudio(AudioPort):
    """A full-duplex PCM frame stream on one serial device (see the module docstring)."""

    def __init__(self, path: str, *, baudrate: int = 115200,
                 max_frames: int = MAX_BUFFERED_FRAMES) -> None:
        self.path = path
        self._max = max_frames * FRAME_BYTES
        try:
            self._port: Any = serial.Serial(path, baudrate=baudrate, timeout=0, write_timeout=0)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise HalError(f"modem PCM port {path}: cannot open it ({exc})") from exc
        self._fd: int | None = self._port.fileno()
        assert self._fd is not None
        os.set_blocking(self._fd, False)
        _wait_for_one_byte(self._fd)
        self._rbuf = bytearray()
        self._wbuf = bytearray()
        self.lost: str | None = None
        self.counters = {"frames_in": 0, "frames_out": 0, "in_dropped": 0, "out_dropped": 0}

    def read_frame(self) -> bytes | None:
        """The oldest complete 20 ms frame the module sent, or None if none is ready."""
        self._drain_input()
        if len(self._rbuf) < FRAME_BYTES:
            return None
        frame = bytes(self._rbuf[:FRAME_BYTES])
        del self._rbuf[:FRAME_BYTES]
        self.counters["frames_in"] += 1
        return frame

    def write_frame(self, frame: bytes) -> None:
        """Queue one frame for the module and write as much as the tty takes now."""
        if len(frame) != FRAME_BYTES:
            raise ValueError(f"audio frame must be {FRAME_BYTES} bytes, got {len(frame)}")
        if self._fd is None:
            return
        self._wbuf += frame
        self.counters["frames_out"] += 1
        excess = len(self._wbuf) - self._max
        if excess > 0:
            # Drop whole frames' worth from the front, keeping sample alignment.
            excess = -(-excess // 2) * 2
            del self._wbuf[:excess]
            self.counters["out_dropped"] += excess
        self._flush()

    def clear(self) -> None:
        """Forget buffered audio both ways (a new call starts with none of the last one's)."""
        self._drain_input()
        self._rbuf.clear()
        self._wbuf.clear()

    def close(self) -> None:
        port, self._port = self._port, None
        self._fd = None
        if self.lost is None:
            self.lost = "closed"
        if port is not None:
            try:
                port.close()
            except Exception:  # noqa: BLE001 - a vanished device may fail to close; it is gone
                log.debug("PCM port %s: close failed", self.path, exc_info=True)

    # -- internals ----------------------------------------------------------------------

    def _drain_input(self) -> None:
        fd = self._fd
        while fd is not None:
            try:
                data = os.read(fd, READ_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._lose(f"read failed: {exc}")
                return
            if not data:
                self._lose("end of file")
                return
            self._rbuf += data
            if len(data) < READ_SIZE:
                break
        excess = len(self._rbuf) - self._max
        if excess > 0:
            excess = -(-excess // FRAME_BYTES) * FRAME_BYTES
            del self._rbuf[:excess]
            self.counters["in_dropped"] += excess

    def _flush(self) -> None:
        fd = self._fd
        while fd is not None and self._wbuf:
            try:
                n = os.write(fd, self._wbuf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._lose(f"write failed: {exc}")
                return
            del self._wbuf[:n]

    def _lose(self, reason: str) -> None:
        log.info("modem PCM port %s lost: %s", self.path, reason)
        self.close()
        self.lost = reason


def _wait_for_one_byte(fd: int) -> None:
    """VMIN=1: pyserial leaves a tty at VMIN=0, where a read with nothing waiting returns
    b"" exactly like end of file; with VMIN=1 and O_NONBLOCK it raises EAGAIN instead."""
    try:
        attrs = termios.tcgetattr(fd)
    except termios.error:
        return  # not a tty (a socket or pipe): b"" is a real end of file there
    attrs[6][termios.VMIN] = 1
    attrs[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
