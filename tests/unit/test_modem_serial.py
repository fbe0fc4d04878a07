"""The serial AT adapter over a real pty, a TCP socket and loop://.

A scripted responder thread plays the modem on the pty's master side; the adapter opens the
slave by its path, as it would open /dev/ttyUSB2.
"""

from __future__ import annotations

import asyncio
import os
import select
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from gateway.modem.at import CommandDone, Unsolicited
from hal.base import CommandError, HalError, ModemEvent, ModemLost, PortLost
from hal.modem.serial_port import SerialAtPort

Script = Callable[[str], list[tuple[float, bytes]]]
"""A received line (or ``BODY:<text>`` for what came before Ctrl-Z) -> (delay, bytes) steps."""


class ScriptedModem(threading.Thread):
    """Answers lines written to the pty slave from the master side, after scripted delays."""

    def __init__(self, master: int, script: Script, read_after: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.master = master
        self.script = script
        self.read_after = read_after
        self.stop = threading.Event()
        self.heard: list[str] = []

    def run(self) -> None:
        buf = b""
        time.sleep(self.read_after)  # a modem that does not drain its input for a while
        while not self.stop.is_set():
            try:
                ready, _, _ = select.select([self.master], [], [], 0.02)
                if not ready:
                    continue
                data = os.read(self.master, 1024)
            except OSError:
                return
            if not data:
                return
            buf += data
            while True:
                cr, z = buf.find(b"\r"), buf.find(b"\x1a")
                ends = [i for i in (cr, z) if i >= 0]
                if not ends:
                    break
                end = min(ends)
                text = buf[:end].decode()
                line = f"BODY:{text}" if end == z else text
                buf = buf[end + 1 :]
                self.heard.append(line)
                for delay, reply in self.script(line):
                    time.sleep(delay)
                    try:
                        os.write(self.master, reply)
                    except OSError:
                        return


@pytest.fixture
def pty_modem() -> Iterator[Callable[[Script], tuple[str, ScriptedModem]]]:
    made: list[tuple[int, ScriptedModem]] = []

    def make(script: Script, read_after: float = 0.0) -> tuple[str, ScriptedModem]:
        master, slave = os.openpty()
        path = os.ttyname(slave)
        modem = ScriptedModem(master, script, read_after)
        modem.start()
        made.append((slave, modem))
        return path, modem

    yield make
    for slave, modem in made:
        modem.stop.set()
        modem.join(timeout=2)
        for fd in (slave, modem.master):
            try:
                os.close(fd)
            except OSError:
                pass


class Ticker:
    """A loop callback every 20 ms, standing in for the audio tick."""

    def __init__(self) -> None:
        self.count = 0
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._tick()

    def _tick(self) -> None:
        self.count += 1
        self._handle = asyncio.get_running_loop().call_later(0.02, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


def test_reply_and_a_urc_in_its_middle_over_a_pty(pty_modem: Callable[..., tuple[str, ScriptedModem]]) -> None:
    def script(line: str) -> list[tuple[float, bytes]]:
        if line == "AT+CSQ":
            return [(0.0, b"AT+CSQ\r\r\n+CSQ: 2"), (0.05, b"1,99\r\n\r\nRI"), (0.05, b"NG\r\n\r\nOK\r\n")]
        return [(0.0, b"\r\nERROR\r\n")]

    path, _ = pty_modem(script)

    async def main() -> tuple[CommandDone, list[ModemEvent], str | None]:
        events: list[ModemEvent] = []
        port = SerialAtPort(path)
        port.start(events.append)
        done = await port.command("AT+CSQ")
        with pytest.raises(CommandError) as failed:
            await port.command("AT+NOPE")
        port.close()
        return done, events, failed.value.final

    done, events, final = asyncio.run(asyncio.wait_for(main(), 10))
    assert done == CommandDone(1, "AT+CSQ", "OK", ("+CSQ: 21,99",))
    assert events == [Unsolicited("RING", "")]
    assert final == "ERROR"


def test_the_loop_keeps_running_while_the_modem_is_silent(
    pty_modem: Callable[..., tuple[str, ScriptedModem]],
) -> None:
    def script(line: str) -> list[tuple[float, bytes]]:
        if line == "AT+COPS?":  # the module thinks for a second before it answers
            return [(1.0, b'\r\n+COPS: 0,0,"Telekom.de",7\r\n\r\nOK\r\n')]
        return []  # AT+DEAD: never answered

    path, _ = pty_modem(script)

    async def main() -> tuple[CommandDone, int, bool, int]:
        port = SerialAtPort(path)
        port.start(lambda event: None)
        ticker = Ticker()
        ticker.start()
        done = await port.command("AT+COPS?", timeout=5.0)
        ticks_waiting = ticker.count
        with pytest.raises(CommandError) as timed_out:
            await port.command("AT+DEAD", timeout=0.5)
        ticks_total = ticker.count
        ticker.stop()
        port.close()
        return done, ticks_waiting, timed_out.value.timed_out, ticks_total

    done, ticks_waiting, timed_out, ticks_total = asyncio.run(asyncio.wait_for(main(), 10))
    assert done.lines == ('+COPS: 0,0,"Telekom.de",7',)
    # About 50 ticks fit in the silent second; a read that blocked the loop would allow ~1.
    assert ticks_waiting >= 15
    assert timed_out
    assert ticks_total - ticks_waiting >= 8  # about 25 in the 0.5 s timeout


def test_a_write_the_modem_does_not_drain_waits_without_blocking_the_loop(
    pty_modem: Callable[..., tuple[str, ScriptedModem]],
) -> None:
    # 256 KiB is far more than a pty buffers; the modem starts reading after 1 s.
    big = "AT+X=" + "7" * (256 * 1024)
    path, modem = pty_modem(lambda line: [(0.0, b"\r\nOK\r\n")], read_after=1.0)

    async def main() -> tuple[CommandDone, int]:
        port = SerialAtPort(path)
        port.start(lambda event: None)
        ticker = Ticker()
        ticker.start()
        try:
            done = await port.command(big, timeout=10.0)
        finally:
            ticker.stop()
            port.close()
        return done, ticker.count

    done, ticks = asyncio.run(asyncio.wait_for(main(), 15))
    assert done.final == "OK"
    assert modem.heard == [big]
    assert ticks >= 15  # about 50 in the second the modem did not read


def test_cmgs_body_goes_after_the_prompt(pty_modem: Callable[..., tuple[str, ScriptedModem]]) -> None:
    def script(line: str) -> list[tuple[float, bytes]]:
        if line.startswith("AT+CMGS="):
            return [(0.05, b"\r\n> ")]
        if line.startswith("BODY:"):
            return [(0.0, line[5:].encode() + b"\x1a\r\n\r\n+CMGS: 12\r\n\r\nOK\r\n")]
        return [(0.0, b"\r\nERROR\r\n")]

    path, modem = pty_modem(script)

    async def main() -> CommandDone:
        port = SerialAtPort(path)
        port.start(lambda event: None)
        try:
            return await port.command("AT+CMGS=18", 10.0, body=b"0011000B91947112")
        finally:
            port.close()

    done = asyncio.run(asyncio.wait_for(main(), 10))
    assert done.lines == ("+CMGS: 12",)
    assert modem.heard == ["AT+CMGS=18", "BODY:0011000B91947112"]


def test_end_of_file_on_the_pty_is_reported(pty_modem: Callable[..., tuple[str, ScriptedModem]]) -> None:
    path, modem = pty_modem(lambda line: [])

    async def main() -> tuple[list[ModemEvent], BaseException | None, str | None]:
        events: list[ModemEvent] = []
        lost = asyncio.Event()

        def on_event(event: ModemEvent) -> None:
            events.append(event)
            if isinstance(event, PortLost):
                lost.set()

        port = SerialAtPort(path)
        port.start(on_event)
        pending = asyncio.ensure_future(port.command("AT+CSQ", timeout=30.0))
        await asyncio.sleep(0.1)
        modem.stop.set()
        modem.join(timeout=2)
        os.close(modem.master)  # the USB device is gone
        await asyncio.wait_for(lost.wait(), 5.0)
        error = pending.exception()
        with pytest.raises(ModemLost):
            await port.command("AT")
        return events, error, port.lost

    events, error, reason = asyncio.run(asyncio.wait_for(main(), 10))
    assert events == [PortLost(path, "end of file")]
    assert isinstance(error, ModemLost)
    assert reason == "end of file"


def test_socket_url_works_like_a_port() -> None:
    async def main() -> CommandDone:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            line = await reader.readuntil(b"\r")
            assert line == b"AT+CGSN\r"
            writer.write(b"\r\n+CMTI: \"SM\",1\r\n867962041234567\r\n\r\nOK\r\n")
            await writer.drain()
            await reader.read()  # until the adapter closes
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        host, port_number = server.sockets[0].getsockname()[:2]
        events: list[ModemEvent] = []
        port = SerialAtPort(f"socket://{host}:{port_number}")
        port.start(events.append)
        done = await port.command("AT+CGSN")
        assert events == [Unsolicited("+CMTI", '"SM",1')]
        port.close()
        server.close()
        return done

    done = asyncio.run(asyncio.wait_for(main(), 10))
    assert done.lines == ("867962041234567",)


def test_a_port_without_a_descriptor_is_read_by_a_thread() -> None:
    # loop:// hands back what we write; the test writes the modem's side into it directly.
    async def main() -> tuple[list[ModemEvent], bool]:
        events: list[ModemEvent] = []
        got = asyncio.Event()
        port = SerialAtPort("loop://")
        port.start(lambda event: (events.append(event), got.set()))
        assert port._thread is not None and port._fd is None
        port._port.write(b"\r\nRING\r\n")
        await asyncio.wait_for(got.wait(), 5.0)
        with pytest.raises(CommandError) as timed_out:
            await port.command("AT", timeout=0.2)  # its echo comes back, never an OK
        port.close()
        return events, timed_out.value.timed_out

    events, timed_out = asyncio.run(asyncio.wait_for(main(), 10))
    assert events == [Unsolicited("RING", "")]
    assert timed_out


def test_opening_a_missing_port_says_which() -> None:
    async def main() -> None:
        SerialAtPort("/dev/does-not-exist-ttyUSB9").start(lambda event: None)

    with pytest.raises(HalError, match="does-not-exist-ttyUSB9"):
        asyncio.run(main())
