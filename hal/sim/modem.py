"""An AT modem emulator on a pty: the far side of the wire for the real modem driver,
gammu, or any other AT software.

``python -m hal.sim.modem --dialect ec25`` prints the pty paths and runs until killed.
In tests, :class:`ModemEmulator` runs its I/O in a thread and offers the network's side
as methods: :meth:`~ModemEmulator.incoming_call`, :meth:`~ModemEmulator.remote_answer`,
:meth:`~ModemEmulator.deliver_sms`, :meth:`~ModemEmulator.signal_loss`,
:meth:`~ModemEmulator.unplug` / :meth:`~ModemEmulator.replug` and so on.

Voice for the EC25 serial-PCM profile (AT+QPCMV=1,0) and SIM7600's AT+CPCMREG=1 flows on
a second pty as the module sends it: raw 8 kHz 16-bit little-endian mono, 320 bytes
every 20 ms while a call is up. The far end plays WAV audio into it and records what the
host writes back.
"""

from __future__ import annotations

import argparse
import os
import select
import sys
import threading
import time
import tty
from collections import deque
from collections.abc import Callable
from pathlib import Path

from hal.sim.modem_at import Call, ModemCore
from hal.sim.modem_dialects import DIALECTS, get_dialect

FRAME_BYTES = 320
FRAME_S = 0.020


class _Pty:
    """One emulated USB serial function: the master we drive and the slave path clients open."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self.pending = bytearray()

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


class ModemEmulator:
    """A simulated GSM/LTE module: AT port (and PCM port) on ptys, driven by a thread.

    Every public method is thread-safe; network events take effect at once and their
    unsolicited result codes are written before the method returns.
    """

    def __init__(
        self,
        dialect: str = "ec25",
        *,
        imei: str = "867698041234567",
        pin: str | None = None,
        puk: str = "12345678",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dialect = get_dialect(dialect)
        self.core = ModemCore(self.dialect, imei=imei, pin=pin, puk=puk)
        self._clock = clock
        self._lock = threading.RLock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._thread: threading.Thread | None = None
        self._running = False
        self._at: _Pty | None = None
        self._pcm: _Pty | None = None
        self._spare: tuple[_Pty, _Pty | None] | None = None
        self._used_paths: set[str] = set()
        self._play: deque[bytes] = deque()
        self._heard = bytearray()
        self._pcm_next: float | None = None
        self.unplugged = False
        self.at_log = bytearray()
        """Every byte the host wrote to the AT port (for debugging a failing test)."""

    # ------------------------------------------------------------ life cycle
    @property
    def at_path(self) -> str:
        """The pty clients open as the modem's AT port."""
        if self._at is None:
            raise RuntimeError("modem emulator not started (or unplugged)")
        return self._at.path

    @property
    def pcm_path(self) -> str | None:
        """The raw PCM voice pty (EC25/SIM7600), None for modules without one."""
        return self._pcm.path if self._pcm is not None else None

    @property
    def imei(self) -> str:
        return self.core.imei

    def start(self) -> ModemEmulator:
        with self._lock:
            self._plug(self._new_ptys())
            self._running = True
        self._thread = threading.Thread(target=self._run, name="modem-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._running = False
            self._wake()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        with self._lock:
            for pty in (self._at, self._pcm, *(self._spare or ())):
                if pty is not None:
                    pty.close()
            self._at = self._pcm = None
            self._spare = None
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> ModemEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _new_ptys(self) -> tuple[_Pty, _Pty | None]:
        """Fresh ptys whose names no client has seen from this modem before."""
        held: list[_Pty] = []
        try:
            while True:
                at = _Pty()
                if at.path not in self._used_paths:
                    break
                held.append(at)
            pcm = _Pty() if self.dialect.pcm is not None else None
        finally:
            for pty in held:
                pty.close()
        return at, pcm

    def _plug(self, ptys: tuple[_Pty, _Pty | None]) -> None:
        self._at, self._pcm = ptys
        self._used_paths.add(self._at.path)
        self.unplugged = False
        self.core.power_on(self._clock())
        self.core.cfun = 1

    def unplug(self) -> None:
        """The module drops off USB: its ptys close (clients read EOF/EIO) and it loses
        all volatile state. A successor pty pair is reserved so re-plugging gets new names."""
        with self._lock:
            if self._at is None:
                return
            self._spare = self._new_ptys()
            for pty in (self._at, self._pcm):
                if pty is not None:
                    pty.close()
            self._at = self._pcm = None
            self.unplugged = True
            self.core.calls.clear()
            self._wake()

    def replug(self) -> str:
        """The module comes back (rebooted) under a new pty name; returns its AT path."""
        with self._lock:
            if self._at is not None:
                raise RuntimeError("replug: the modem is still plugged in")
            spare, self._spare = self._spare, None
            self._plug(spare or self._new_ptys())
            self._wake()
            return self.at_path

    # ------------------------------------------------------------ network events
    def _do(self, fn: Callable[[], object]) -> None:
        with self._lock:
            self.core._now = self._clock()
            fn()
            self._wake()

    def incoming_call(self, number: str) -> None:
        """Someone calls: RING (+CLIP when enabled) every 3 s until answered or cancelled.
        An empty `number` is a caller who withholds their number."""
        self._do(lambda: self.core.incoming_call(number))

    def cancel_incoming_call(self) -> None:
        """The caller gives up before the host answers (NO CARRIER)."""
        self._do(self.core.caller_gave_up)

    def remote_alerting(self) -> None:
        self._do(self.core.remote_alerting)

    def remote_answer(self) -> None:
        """The called party picks up the host's outgoing call."""
        self._do(self.core.remote_answer)

    def remote_reject(self, result: str = "BUSY") -> None:
        """The outgoing call fails with BUSY, NO ANSWER or NO CARRIER."""
        self._do(lambda: self.core.remote_reject(result))

    def remote_hangup(self) -> None:
        """The far end hangs up an active call (NO CARRIER)."""
        self._do(self.core.remote_hangup)

    def deliver_sms(self, sender: str, text: str, *, order: list[int] | None = None) -> list[int]:
        """An SMS arrives (parts in `order`); stored with +CMTI or sent as +CMT per +CNMI."""
        with self._lock:
            self.core._now = self._clock()
            slots = self.core.deliver_sms(sender, text, order=order)
            self._wake()
            return slots

    def far_end_dtmf(self, digits: str) -> None:
        """The far end keys `digits`: in-band tones on the PCM port (100 ms on, 100 ms off)
        and, when the host enabled them, +QTONEDET (EC25) or +DTMF (SIM800) URCs."""
        from gateway.dsp.dtmf import generate_sequence

        self.play_pcm(generate_sequence(digits))
        for digit in digits:
            self._do(lambda d=digit: self.core.far_end_dtmf(d))  # type: ignore[misc]

    def signal_loss(self) -> None:
        """Coverage lost: registration searching (+CREG URCs), CSQ 99."""
        self._do(lambda: self.core.set_network("searching", 99))

    def signal_return(self, rssi: int = 24) -> None:
        self._do(lambda: self.core.set_network("home", rssi))

    def set_signal(self, rssi: int) -> None:
        self._do(lambda: self.core.set_network(None, rssi))

    def set_ussd_reply(self, code: str, reply: str) -> None:
        with self._lock:
            self.core.ussd_replies[code] = reply

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self.core.calls)

    def far_end_texts(self) -> list[tuple[str, str]]:
        """(number, text) of each SMS the host sent through the modem."""
        with self._lock:
            return self.core.far_end_texts()

    @property
    def dtmf_sent(self) -> str:
        with self._lock:
            return "".join(self.core.dtmf_sent)

    # ------------------------------------------------------------ far-end audio
    def play_wav(self, path: str | Path) -> None:
        """Queue a WAV (resampled to 8 kHz mono) for the far end to say, in 20 ms frames."""
        from hal.audio.wav import read_wav_8k

        self.play_pcm(read_wav_8k(path))

    def play_pcm(self, pcm: bytes) -> None:
        with self._lock:
            pcm += bytes(-len(pcm) % FRAME_BYTES)
            for i in range(0, len(pcm), FRAME_BYTES):
                self._play.append(pcm[i:i + FRAME_BYTES])

    def heard(self) -> bytes:
        """Everything the host sent on the PCM port during calls (8 kHz S16LE)."""
        with self._lock:
            return bytes(self._heard)

    def clear_heard(self) -> None:
        with self._lock:
            self._heard.clear()

    # ------------------------------------------------------------ the I/O thread
    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._running:
                    return
                now = self._clock()
                timeout = self._timeout(now)
                rfds = [self._wake_r]
                wfds = []
                for pty in (self._at, self._pcm):
                    if pty is not None:
                        rfds.append(pty.master)
                        if pty.pending:
                            wfds.append(pty.master)
            try:
                readable, writable, _ = select.select(rfds, wfds, [], timeout)
            except (OSError, ValueError):
                continue  # a pty closed under us (unplug); go round with the new set
            with self._lock:
                self._service(readable, writable)

    def _timeout(self, now: float) -> float:
        deadlines = [t for t in (self.core.get_timer(), self._pcm_next) if t is not None]
        if not deadlines:
            return 1.0
        return max(0.0, min(deadlines) - now)

    def _service(self, readable: list[int], writable: list[int]) -> None:
        now = self._clock()
        if self._wake_r in readable:
            try:
                os.read(self._wake_r, 4096)
            except OSError:
                pass
        at, pcm = self._at, self._pcm
        if at is not None and at.master in readable:
            data = self._read(at)
            if data:
                self.at_log += data
                self.core.receive(data, now)
        if pcm is not None and pcm.master in readable:
            data = self._read(pcm)
            if data and self.core.serial_pcm_on():
                self._heard += data
        timer = self.core.get_timer()
        if timer is not None and now >= timer:
            self.core.handle_timer(now)
        self._pump_pcm(now)
        if at is not None and self.core.out:
            at.pending += self.core.out
            self.core.out.clear()
        elif at is None:
            self.core.out.clear()
        for pty in (at, pcm):
            if pty is not None and pty.pending:
                self._flush(pty)

    def _read(self, pty: _Pty) -> bytes:
        try:
            return os.read(pty.master, 4096)
        except (BlockingIOError, OSError):
            return b""  # EIO: no client has the slave open; nothing to read

    def _flush(self, pty: _Pty) -> None:
        try:
            n = os.write(pty.master, pty.pending)
            del pty.pending[:n]
        except (BlockingIOError, OSError):
            pass

    def _pump_pcm(self, now: float) -> None:
        """Send the far end's voice, one 20 ms frame per 20 ms, while voice flows."""
        if self._pcm is None or not self.core.serial_pcm_on():
            self._pcm_next = None
            return
        if self._pcm_next is None:
            self._pcm_next = now
        while now >= self._pcm_next:
            frame = self._play.popleft() if self._play else bytes(FRAME_BYTES)
            if len(self._pcm.pending) < 16 * FRAME_BYTES:  # nobody reading: drop, as USB does
                self._pcm.pending += frame
            self._pcm_next += FRAME_S


def main(argv: list[str] | None = None) -> int:
    """Run an emulated module until interrupted, printing its pty paths."""
    parser = argparse.ArgumentParser(
        prog="python -m hal.sim.modem",
        description="An emulated GSM/LTE module on a pty: point AT software at the AT port.",
    )
    parser.add_argument("--dialect", choices=sorted(DIALECTS), default="ec25")
    parser.add_argument("--imei", default="867698041234567")
    parser.add_argument("--pin", default=None, help="SIM PIN (the SIM starts locked)")
    args = parser.parse_args(argv)
    emu = ModemEmulator(args.dialect, imei=args.imei, pin=args.pin).start()
    print(f"AT port: {emu.at_path}", flush=True)
    if emu.pcm_path is not None:
        print(f"PCM port: {emu.pcm_path} (8 kHz S16LE mono, during calls)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
