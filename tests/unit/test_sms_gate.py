"""The SMS delivery gate follows the modem's GSM port as events, not by polling.

- GsmMachine tells `on_state` the moment its line leaves idle (a RING, a dial) and when it
  is idle again (gateway/runtime/gsm_port.py; app.py hands that to SmsService.call_state);
- an SMS that is stored in the very event-loop turn a call starts is held until the call
  ends (with a 0.25 s poll of the call state the delivery loop got to it first);
- an outgoing SMS to ``gsm:<group>`` is sent by the modem the group's strategy picks, the
  same chooser as calls, skipping modems that are down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.config.loader import load_config_text
from gateway.lines import events as lev
from gateway.lines.gsm import GsmLine
from gateway.modem.at import CommandDone, Unsolicited
from gateway.modem.profiles import profile
from gateway.runtime.gsm_port import GsmMachine
from gateway.runtime.sms_service import SmsService
from gateway.store.sms_queue import SmsQueue
from hal.modem.serial_port import SerialAtPort
from hal.sim.modem import ModemEmulator

CONFIG = """
gateway:
  name: t
  state_dir: {state}
sip:
  listen: 127.0.0.1:5060
modems:
  - name: emu
    profile: sim
    port: {port}
    number: "+41790000000"
    sms:
      webhook: http://127.0.0.1:9/sms
"""


async def _wait(what: str, cond: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class PtyDriver:
    """The ModemDriver surface the SMS service uses, over a real SerialAtPort."""

    def __init__(self, name: str, config: Any, imei: str, path: str) -> None:
        self.name = name
        self.config = config
        self.imei: str | None = imei
        self.port = SerialAtPort(path)
        self.subscribers: list[Callable[[Unsolicited], None]] = []
        self.up = False

    def start(self) -> None:
        self.port.start(self._event)
        self.up = True

    def _event(self, ev: object) -> None:
        if isinstance(ev, Unsolicited):
            for fn in list(self.subscribers):
                fn(ev)

    async def command(self, line: str, *, timeout: float = 5.0,
                      body: bytes | None = None) -> CommandDone:
        return await self.port.command(line, timeout, body=body)

    def subscribe(self, fn: Callable[[Unsolicited], None]) -> Callable[[], None]:
        self.subscribers.append(fn)
        return lambda: self.subscribers.remove(fn)


# --- GsmMachine.on_state --------------------------------------------------------------


def _machine() -> tuple[GsmMachine, list[lev.LineState]]:
    seen: list[lev.LineState] = []
    line = GsmLine("gsm1", profile=profile("quectel-ec25"), audio="serial-pcm")
    machine = GsmMachine(line, lambda s: None)
    machine.on_state = seen.append
    return machine, seen


def test_on_state_hears_a_ring_and_the_call_ending() -> None:
    machine, seen = _machine()
    machine.line.handle(Unsolicited("RING", ""), 1.0)
    machine.drain()  # what GsmPort's URC path does in the same turn (wake -> _gsm_wake)
    assert seen == [lev.LineState.RINGING]
    machine.line.handle(Unsolicited("NO CARRIER", ""), 2.0)
    machine.drain()
    assert seen[-1] is lev.LineState.IDLE


def test_on_state_hears_a_dial_before_the_runtime_looks() -> None:
    machine, seen = _machine()
    assert machine.place("c1", "+41791234567", 1.0) is lev.IncomingResult.ACCEPTED
    assert seen == [lev.LineState.CALLING]  # no drain()/actions() by the runtime yet


# --- the gate, same turn ----------------------------------------------------------------


@pytest.fixture
def emu() -> Any:
    with ModemEmulator("ec25", imei="861234567890123") as e:
        yield e


def test_sms_stored_as_the_call_starts_is_held_until_the_call_ends(
        emu: ModemEmulator, tmp_path: Path) -> None:
    config = load_config_text(CONFIG.format(state=tmp_path, port=emu.at_path))

    async def main() -> None:
        driver = PtyDriver("emu", config.modems[0], emu.imei, emu.at_path)
        driver.start()
        queue = SmsQueue(tmp_path / "sms.db", retry_base=0.1, retry_max=0.5)
        busy = {"emu": False}
        service = SmsService(config, {"emu": driver}, loop=asyncio.get_running_loop(),
                             in_call=lambda name: busy[name], queue=queue)
        await service.start()
        try:
            receiver = service.receivers["emu"]
            delivery = service.delivery
            assert delivery is not None
            service.call_state("emu", False)  # the port is idle (as app.py reports at start)
            await _wait("setup", lambda: receiver._ready)
            woken = delivery.wake
            rang: list[bool] = []

            def wake_and_ring() -> None:
                # The SMS is stored and the delivery loop woken; in this same turn the
                # modem's port leaves idle (a RING) and the runtime reports it.
                if receiver.stored == 0 and not rang:
                    rang.append(True)
                    busy["emu"] = True
                    service.call_state("emu", True)
                woken()

            delivery.wake = wake_and_ring  # type: ignore[method-assign]
            emu.deliver_sms("+41793333333", "right as the call starts")
            await _wait("stored", lambda: receiver.stored == 1)
            await asyncio.sleep(0.6)  # more than two of the old 0.25 s polls
            assert delivery.attempts == 0, "delivered during the call"
            assert queue.gate_closed(emu.imei)
            busy["emu"] = False
            service.call_state("emu", False)
            assert not queue.gate_closed(emu.imei)
            await _wait("attempted after the call", lambda: delivery.attempts >= 1)
        finally:
            await service.close()
            driver.port.close()

    asyncio.run(main())


# --- outgoing SMS to gsm:<group> --------------------------------------------------------

GROUP_CONFIG = """
gateway:
  name: t
  state_dir: {state}
sip:
  listen: 127.0.0.1:5060
gsm_groups:
  - {{name: mobile, strategy: round-robin}}
modems:
  - name: a
    profile: sim
    port: {a}
    group: mobile
  - name: b
    profile: sim
    port: {b}
    group: mobile
"""


def test_sms_to_a_group_follows_its_strategy_and_skips_a_modem_that_is_down(
        tmp_path: Path) -> None:
    with ModemEmulator("ec25", imei="861234567890001") as ea, \
            ModemEmulator("ec25", imei="861234567890002") as eb:
        config = load_config_text(GROUP_CONFIG.format(state=tmp_path, a=ea.at_path,
                                                      b=eb.at_path))

        async def main() -> None:
            da = PtyDriver("a", config.modems[0], ea.imei, ea.at_path)
            db = PtyDriver("b", config.modems[1], eb.imei, eb.at_path)
            da.start()
            db.start()
            queue = SmsQueue(tmp_path / "sms.db", retry_base=0.1, retry_max=0.5)
            service = SmsService(config, {"a": da, "b": db},
                                 loop=asyncio.get_running_loop(), queue=queue)
            await service.start()

            async def send(text: str) -> None:
                mid = await service.send("mobile", "+41795555555", text)
                await _wait(text, lambda: (s := queue.get(mid)) is not None and s.delivered)

            try:
                # Round-robin: a, then b, then a again (first-up would send all three by a).
                for text in ("one", "two", "three"):
                    await send(text)
                assert [t for _, t in ea.far_end_texts()] == ["one", "three"]
                assert [t for _, t in eb.far_end_texts()] == ["two"]
                # a is down: its turn is skipped, b sends both.
                da.up = False
                for text in ("four", "five"):
                    await send(text)
                assert [t for _, t in ea.far_end_texts()] == ["one", "three"]
                assert [t for _, t in eb.far_end_texts()] == ["two", "four", "five"]
            finally:
                await service.close()
                da.port.close()
                db.port.close()

        asyncio.run(main())
