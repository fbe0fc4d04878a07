"""The daemon's SMS service against the modem emulator over a real pty.

The modem side here is a thin stand-in for ModemDriver (the real SerialAtPort and AtEngine
talking to hal.sim's emulator; only probing/supervision are left out), so these tests check
what the SMS service itself does: read on +CMTI, join parts that came out of order, store,
and only then delete from the SIM; read what was left on the SIM at start; keep it on the SIM
when storing fails; hold deliveries during a call; send through AT+CMGS; USSD.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from gateway.config.loader import load_config_text
from gateway.config.modems import ModemConfig
from gateway.modem.at import CommandDone, Unsolicited
from gateway.runtime.sms_service import SmsService
from gateway.store.sms_queue import Sms, SmsQueue
from hal.base import ModemEvent
from hal.modem.serial_port import SerialAtPort
from hal.sim.modem import ModemEmulator

LONG = ("Dies ist eine lange Nachricht, die in drei Teilen ankommt, und zwar in falscher "
        "Reihenfolge; der Empfaenger soll sie trotzdem am Stueck lesen. ") * 3
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


class PtyDriver:
    """The ModemDriver surface the SMS service uses, over a real SerialAtPort."""

    def __init__(self, config: ModemConfig, imei: str) -> None:
        self.name = config.name
        self.config = config
        self.imei: str | None = imei
        self.port = SerialAtPort(config.port or "")
        self.subscribers: list[Callable[[Unsolicited], None]] = []
        self.up = False

    def start(self) -> None:
        self.port.start(self._event)
        self.up = True

    def _event(self, ev: ModemEvent) -> None:
        if isinstance(ev, Unsolicited):
            for fn in list(self.subscribers):
                fn(ev)

    async def command(self, line: str, *, timeout: float = 5.0,
                      body: bytes | None = None) -> CommandDone:
        return await self.port.command(line, timeout, body=body)

    def subscribe(self, fn: Callable[[Unsolicited], None]) -> Callable[[], None]:
        self.subscribers.append(fn)
        return lambda: self.subscribers.remove(fn)


class RecordingQueue(SmsQueue):
    """Notes how many AT+CMGD the modem had received when each store() committed."""

    emulator: ModemEmulator | None = None
    fail = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deletes_at_commit: list[int] = []

    def store(self, sms: Sms, destinations: Iterable[str], now: float) -> int:
        if self.fail:
            raise OSError("disk full")
        message_id = super().store(sms, destinations, now)
        assert self.emulator is not None
        self.deletes_at_commit.append(bytes(self.emulator.at_log).count(b"AT+CMGD"))
        return message_id


async def _wait(what: str, cond: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def _run(emu: ModemEmulator, tmp_path: Path,
         body: Callable[[SmsService, PtyDriver, RecordingQueue], Awaitable[None]], *,
         in_call: Callable[[str], bool] | None = None, fail_store: bool = False) -> None:
    config = load_config_text(CONFIG.format(state=tmp_path, port=emu.at_path))

    async def main() -> None:
        driver = PtyDriver(config.modems[0], emu.imei)
        driver.start()
        queue = RecordingQueue(tmp_path / "sms.db", retry_base=0.1, retry_max=0.5)
        queue.emulator = emu
        queue.fail = fail_store
        service = SmsService(config, {"emu": driver}, loop=asyncio.get_running_loop(),
                             in_call=in_call, queue=queue)
        await service.start()
        try:
            await body(service, driver, queue)
        finally:
            await service.close()
            driver.port.close()

    asyncio.run(main())


def _commands(emu: ModemEmulator) -> list[str]:
    lines = re.split(r"[\r\n\x1a]+", bytes(emu.at_log).decode("latin-1"))
    return [ln.strip() for ln in lines if ln.strip().upper().startswith("AT")]


@pytest.fixture
def emu() -> Any:
    with ModemEmulator("ec25", imei="861234567890123") as e:
        yield e


def test_three_parts_out_of_order_are_stored_whole_then_deleted_from_the_sim(
        emu: ModemEmulator, tmp_path: Path) -> None:
    async def body(service: SmsService, driver: PtyDriver, queue: RecordingQueue) -> None:
        receiver = service.receivers["emu"]
        await _wait("setup", lambda: receiver._ready)
        slots = emu.deliver_sms("+41791234567", LONG, order=[2, 0, 1])
        assert len(slots) == 3
        await _wait("SIM emptied", lambda: receiver.deleted == 3)
        (mid,) = queue.message_ids()
        stored = queue.get(mid)
        assert stored is not None
        assert stored.sms.text == LONG
        assert stored.sms.parts == 3 and stored.sms.originator == "+41791234567"
        assert stored.sms.imei == emu.imei and stored.sms.recipient == "+41790000000"
        # Stored before any AT+CMGD reached the modem; then every slot was deleted.
        assert queue.deletes_at_commit == [0]
        assert emu.core.stores["SM"] == {}
        cmds = _commands(emu)
        reads = [i for i, c in enumerate(cmds) if c.startswith("AT+CMGR=")]
        deletes = [i for i, c in enumerate(cmds) if c.startswith("AT+CMGD=")]
        assert len(reads) == 3 and len(deletes) == 3 and max(reads) < min(deletes)
        assert sorted(int(cmds[i].split("=")[1]) for i in deletes) == sorted(slots)

    _run(emu, tmp_path, body)


def test_sms_left_on_the_sim_is_read_at_start(emu: ModemEmulator, tmp_path: Path) -> None:
    emu.deliver_sms("+41791111111", "left over")  # +CNMI off: stored, nobody told
    assert len(emu.core.stores["SM"]) == 1

    async def body(service: SmsService, driver: PtyDriver, queue: RecordingQueue) -> None:
        receiver = service.receivers["emu"]
        await _wait("deleted", lambda: receiver.deleted == 1)
        (mid,) = queue.message_ids()
        got = queue.get(mid)
        assert got is not None and got.sms.text == "left over"
        assert emu.core.stores["SM"] == {}
        assert any(c.startswith("AT+CMGL=4") for c in _commands(emu))

    _run(emu, tmp_path, body)


def test_an_sms_that_could_not_be_stored_stays_on_the_sim(emu: ModemEmulator,
                                                           tmp_path: Path) -> None:
    async def body(service: SmsService, driver: PtyDriver, queue: RecordingQueue) -> None:
        receiver = service.receivers["emu"]
        await _wait("setup", lambda: receiver._ready)
        emu.deliver_sms("+41792222222", "keep me")
        await _wait("read", lambda: any(c.startswith("AT+CMGR") for c in _commands(emu)))
        await asyncio.sleep(0.5)
        assert receiver.deleted == 0
        assert not any(c.startswith("AT+CMGD") for c in _commands(emu))
        assert len(emu.core.stores["SM"]) == 1

    _run(emu, tmp_path, body, fail_store=True)


def test_gate_holds_deliveries_while_the_modem_has_a_call(emu: ModemEmulator,
                                                          tmp_path: Path) -> None:
    busy = {"emu": True}

    async def body(service: SmsService, driver: PtyDriver, queue: RecordingQueue) -> None:
        receiver = service.receivers["emu"]
        await _wait("gate closed", lambda: queue.gate_closed(emu.imei))
        emu.deliver_sms("+41793333333", "during the call")
        await _wait("stored", lambda: receiver.stored == 1)
        await asyncio.sleep(0.3)
        assert service.delivery is not None and service.delivery.attempts == 0
        busy["emu"] = False
        await _wait("gate open", lambda: not queue.gate_closed(emu.imei))
        await _wait("attempted", lambda: service.delivery is not None
                    and service.delivery.attempts >= 1)

    _run(emu, tmp_path, body, in_call=lambda name: busy[name])


def test_send_writes_each_part_with_cmgs(emu: ModemEmulator, tmp_path: Path) -> None:
    async def body(service: SmsService, driver: PtyDriver, queue: RecordingQueue) -> None:
        mid = await service.send("emu", "+41795555555", LONG)
        await _wait("sent", lambda: (s := queue.get(mid)) is not None and s.delivered)
        assert emu.far_end_texts() == [("+41795555555", LONG)]
        assert bytes(emu.at_log).count(b"AT+CMGS=") == 3

    _run(emu, tmp_path, body)


def test_ussd_answer(emu: ModemEmulator, tmp_path: Path) -> None:
    emu.set_ussd_reply("*100#", "Guthaben: 12.50 CHF")

    async def body(service: SmsService, driver: PtyDriver, queue: RecordingQueue) -> None:
        got = await service.ussd("emu", "*100#", timeout=5)
        assert got["text"] == "Guthaben: 12.50 CHF" and got["status"] == 0

    _run(emu, tmp_path, body)


def test_sms_handed_over_as_cmt_is_stored(emu: ModemEmulator, tmp_path: Path) -> None:
    async def body(service: SmsService, driver: PtyDriver, queue: RecordingQueue) -> None:
        receiver = service.receivers["emu"]
        await _wait("setup", lambda: receiver._ready)
        emu.core.cnmi = (2, 2, 0, 0, 0)  # as if the module routed SMS straight to us
        emu.deliver_sms("+41794444444", "straight through")
        await _wait("stored", lambda: receiver.stored == 1)
        (mid,) = queue.message_ids()
        got = queue.get(mid)
        assert got is not None and got.sms.text == "straight through"
        assert not any(c.startswith(("AT+CMGR", "AT+CMGD")) for c in _commands(emu))

    _run(emu, tmp_path, body)


def test_a_part_that_never_comes_is_stored_incomplete_after_the_timeout(
        emu: ModemEmulator, tmp_path: Path) -> None:
    from gateway.modem.sms import encode_deliver_parts
    from hal.sim.modem_sms import StoredSms

    parts = encode_deliver_parts("+41796666666", LONG, _stamp(), reference=77,
                                 smsc=emu.core.smsc)
    assert len(parts) == 3

    async def body(service: SmsService, driver: PtyDriver, queue: RecordingQueue) -> None:
        receiver = service.receivers["emu"]
        receiver.reassembler.timeout = 0.5
        await _wait("setup", lambda: receiver._ready)
        for slot, n in ((4, 0), (7, 2)):  # part 2 of 3 is lost in the network
            emu._do(lambda s=slot, p=parts[n]: (  # type: ignore[misc]
                emu.core.stores["SM"].__setitem__(s, StoredSms(0, p.hex, p.length)),
                emu.core.emit(f'+CMTI: "SM",{s}')))
        await _wait("stored incomplete", lambda: receiver.stored == 1, 5)
        (mid,) = queue.message_ids()
        got = queue.get(mid)
        assert got is not None
        assert dict(got.sms.extra)["complete"] == 0 and dict(got.sms.extra)["missing"] == "2"
        assert "[part 2 of 3 missing]" in got.sms.text
        await _wait("both slots freed", lambda: emu.core.stores["SM"] == {}, 5)

    _run(emu, tmp_path, body)


def _stamp() -> Any:
    import datetime as dt

    return dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


def test_a_repeated_part_of_a_stored_sms_is_freed_from_the_sim(emu: ModemEmulator,
                                                                tmp_path: Path) -> None:
    from gateway.modem.sms import encode_deliver_parts
    from hal.sim.modem_sms import StoredSms

    parts = encode_deliver_parts("+41797777777", LONG, _stamp(), reference=9,
                                 smsc=emu.core.smsc)

    async def body(service: SmsService, driver: PtyDriver, queue: RecordingQueue) -> None:
        receiver = service.receivers["emu"]
        await _wait("setup", lambda: receiver._ready)
        for slot, n in ((1, 0), (2, 1), (3, 2), (4, 1)):  # the network sends part 2 twice
            emu._do(lambda s=slot, p=parts[n]: (  # type: ignore[misc]
                emu.core.stores["SM"].__setitem__(s, StoredSms(0, p.hex, p.length)),
                emu.core.emit(f'+CMTI: "SM",{s}')))
        await _wait("all four slots freed", lambda: emu.core.stores["SM"] == {}, 5)
        assert receiver.stored == 1
        (mid,) = queue.message_ids()
        got = queue.get(mid)
        assert got is not None and got.sms.text == LONG

    _run(emu, tmp_path, body)
