"""SMS and USSD in the daemon: modems' received SMS into the queue, the queue out to SIP,
webhooks and modems, and USSD queries.

Receiving, per modem with an ``sms:`` section (`ModemSms`):

- the modem is put in PDU mode with new SMS stored on the SIM and announced by +CMTI
  (AT+CMGF=0, AT+CNMI=2,1,0,0,0), so an SMS lives on the SIM until we stored it;
- on +CMTI the PDU is read (AT+CMGR); an SMS handed over directly (+CMT) is taken as is;
- concatenated parts go through the `Reassembler` (parts in any order, a timeout emits what
  arrived); the SIM slots of every part are remembered with the message;
- the whole message is stored in the `SmsQueue` (committed and synced), and only THEN are its
  slots deleted from the SIM (AT+CMGD). A crash in between leaves it on the SIM, where the
  start-up read (AT+CMGL=4, every time the modem comes up) finds it again: stored twice at
  worst, never lost;
- while the modem has a call up, the queue's gate for it is closed, so an SMS that arrives
  during a call is stored at once and delivered after the call. The gate follows the call
  as events: `SmsService.call_state(name, busy)` is called by the runtime the moment the
  modem's GSM port leaves idle (ringing, dialling, active) and when it is idle again, so it
  is closed in the same event-loop turn as the call starts (`in_call(name)` is only asked
  at start and as a safety net when the receiver steps).

Sending: `SmsService.send` (``branchline sms send``) and a SIP MESSAGE addressed to the
gateway store an outbound SMS with the destination ``gsm:<modem or group>``; the delivery
loop hands it to `_send_gsm`, which writes one AT+CMGS per PDU part. A group's modem is
chosen by the same `GsmGroupRouter` as calls (its strategy, modems that are down skipped).

USSD: `SmsService.ussd` sends AT+CUSD=1,"code",15 and waits for the +CUSD reply.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from gateway.modem.at import CommandDone, Unsolicited
from gateway.modem.responses import ResponseError, parse_cmti, parse_cusd
from gateway.modem.sms import (
    AssembledSms,
    Reassembler,
    SmsDeliver,
    SmsError,
    decode_pdu,
    encode_submit_parts,
)
from gateway.routing.gsm_groups import GsmGroupRouter, ModemChosen, ModemState
from gateway.runtime.sms_delivery import Outcome, SipMessageSender, SmsDelivery, sms_from_assembled
from gateway.sip.events import MessageDelivered, MessageFailed, MessageReceived
from gateway.store.sms_queue import Delivery, Sms, SmsQueue
from hal.base import CommandError, HalError, ModemLost

if TYPE_CHECKING:
    from gateway.config.modems import ModemConfig
    from gateway.config.schema import Config
    from gateway.sip.ua import UserAgent

__all__ = ["ModemSms", "SmsService", "UssdError"]

log = logging.getLogger(__name__)

POLL = 0.25
"""Seconds between looks at whether a modem came up (the call gate is event-driven)."""
REASSEMBLY_TIMEOUT = 120.0
"""Seconds to wait for the missing parts of a concatenated SMS before storing what came."""
SEND_TIMEOUT = 60.0
"""Seconds an AT+CMGS may take (the network's answer can be slow)."""
USSD_TIMEOUT = 20.0
SETUP_COMMANDS = ("AT+CMGF=0", "AT+CNMI=2,1,0,0,0")


class Driver(Protocol):
    """What the SMS service needs of a modem (gateway.runtime.modem.ModemDriver)."""

    name: str
    config: ModemConfig
    imei: str | None

    @property
    def up(self) -> bool: ...

    async def command(self, line: str, *, timeout: float = 5.0,
                      body: bytes | None = None) -> CommandDone: ...

    def subscribe(self, fn: Callable[[Unsolicited], None]) -> Callable[[], None]: ...


class UssdError(Exception):
    """A USSD query that got no answer, or an error from the modem."""


def gate_key(driver: Driver) -> str:
    """The queue's gate (and Sms.imei) for a modem: its IMEI, or its name before it is known."""
    return driver.imei or driver.name


class ModemSms:
    """Received SMS of one modem: SIM -> reassembly -> queue -> SIM delete (see module doc)."""

    def __init__(self, driver: Driver, delivery: SmsDelivery, destinations: Sequence[str], *,
                 loop: asyncio.AbstractEventLoop,
                 in_call: Callable[[str], bool] | None = None,
                 reassembly_timeout: float = REASSEMBLY_TIMEOUT,
                 clock: Callable[[], float] = time.time) -> None:
        self.driver = driver
        self.delivery = delivery
        self.destinations = list(destinations)
        self.loop = loop
        self.in_call = in_call
        self.clock = clock
        self.reassembler = Reassembler(timeout=reassembly_timeout)
        self._slots: dict[tuple[str, int, int], list[int]] = {}
        self._work: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._ready = False  # set up and SIM read since the modem last came up
        self._gate_closed = False
        self._busy: bool | None = None  # the call state last reported by set_call
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.stored = 0  # messages stored in the queue
        self.deleted = 0  # SIM slots deleted

    def start(self) -> None:
        self._check_gate()
        self._unsubscribe = self.driver.subscribe(self._on_urc)
        self._task = self.loop.create_task(self._run(), name=f"sms {self.driver.name}")

    async def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        # Parts still waiting stay on the SIM: the next start reads and joins them again.

    # -- events ------------------------------------------------------------------------

    def _on_urc(self, urc: Unsolicited) -> None:
        if urc.name == "+CMTI":
            try:
                new = parse_cmti(f"{urc.name}: {urc.value}")
            except ResponseError as exc:
                log.warning("modem %s: unreadable %s (%s)", self.driver.name, urc, exc)
                return
            self._work.put_nowait(("read", new.index))
        elif urc.name == "+CMT" and urc.extra:
            self._work.put_nowait(("pdu", urc.extra[0]))

    async def _run(self) -> None:
        while True:
            try:  # asyncio.timeout: 3.11's wait_for can swallow a racing cancel
                async with asyncio.timeout(POLL):
                    kind, arg = await self._work.get()
            except TimeoutError:
                kind, arg = "poll", None
            try:
                await self._step(kind, arg)
            except (ModemLost, CommandError) as exc:
                log.warning("modem %s: SMS %s interrupted: %s", self.driver.name, kind, exc)
                self._ready = False  # read the SIM again once the modem answers
            except Exception:
                log.exception("modem %s: SMS %s failed", self.driver.name, kind)

    async def _step(self, kind: str, arg: Any) -> None:
        self._check_gate()
        if not self.driver.up:
            self._ready = False
            return
        if not self._ready:
            await self._setup()
            self._ready = True
        if kind == "read":
            await self._read(int(arg))
        elif kind == "pdu":
            await self._take_pdu(str(arg), None)
        elif kind == "timer":
            for whole in self.reassembler.handle_timer(self.loop.time()):
                await self._store(whole, self._slots.pop(_key(whole), []))
            self._arm_timer()

    def set_call(self, busy: bool) -> None:
        """The modem's GSM port left idle (`busy`) or is idle again: close or open the gate
        now, before the delivery loop next looks at the queue."""
        self._busy = busy
        self._set_gate(busy)

    def _check_gate(self) -> None:
        if self._busy is not None:
            return  # the runtime reports the call state as it changes
        self._set_gate(bool(self.in_call is not None and self.in_call(self.driver.name)))

    def _set_gate(self, closed: bool) -> None:
        if closed == self._gate_closed:
            return
        self._gate_closed = closed
        key = gate_key(self.driver)
        if closed:
            self.delivery.queue.close_gate(key)
            log.info("modem %s: call up, SMS held until it ends", self.driver.name)
        else:
            self.delivery.queue.open_gate(key)
            log.info("modem %s: call over, SMS delivery resumes", self.driver.name)
            self.delivery.wake()

    # -- reading -----------------------------------------------------------------------

    async def _setup(self) -> None:
        for line in SETUP_COMMANDS:
            await self.driver.command(line)
        done = await self.driver.command("AT+CMGL=4", timeout=30.0)
        lines = list(done.lines)
        left = 0
        for i, head in enumerate(lines):
            if not head.upper().startswith("+CMGL:") or i + 1 >= len(lines):
                continue
            fields = head.split(":", 1)[1].split(",")
            try:
                index, stat = int(fields[0]), int(fields[1])
            except (ValueError, IndexError):
                log.warning("modem %s: unreadable %r", self.driver.name, head)
                continue
            if stat in (0, 1):  # received, read or not; stored-to-send ones are not ours
                left += 1
                await self._take_pdu(lines[i + 1], index)
        if left:
            log.info("modem %s: %d SMS found on the SIM at start", self.driver.name, left)

    async def _read(self, index: int) -> None:
        done = await self.driver.command(f"AT+CMGR={index}", timeout=10.0)
        lines = [ln for ln in done.lines if ln.strip()]
        if len(lines) < 2 or not lines[0].upper().startswith("+CMGR:"):
            log.info("modem %s: SIM slot %d is empty", self.driver.name, index)
            return
        await self._take_pdu(lines[1], index)

    async def _take_pdu(self, pdu: str, index: int | None) -> None:
        slots = [] if index is None else [index]
        try:
            msg = decode_pdu(pdu.strip())
        except SmsError as exc:
            # Never lost: store what we have, raw, then free the slot.
            log.warning("modem %s: undecodable SMS PDU (%s); stored raw", self.driver.name, exc)
            raw = Sms(originator="unknown", text=f"[undecodable SMS PDU {pdu.strip()}]",
                      received_at=self.clock(), imei=gate_key(self.driver),
                      recipient=self.driver.config.number or "", extra=(("complete", 0),))
            await self._commit(raw, slots)
            return
        if not isinstance(msg, SmsDeliver):
            return  # an SMS-SUBMIT we or someone stored: not a received one
        emitted = self._add(msg, slots)
        for whole in emitted:
            await self._store(whole, self._slots.pop(_key(whole), []) if whole.reference
                              is not None else slots)
        c = msg.concat
        if c is not None and c.total > 1 and not emitted and \
                not self.reassembler.waiting(msg.originator, c.reference, c.total):
            # A repeat of a part whose message is already stored: free its slot too.
            for slot in self._slots.pop((msg.originator, c.reference, c.total), []):
                await self.driver.command(f"AT+CMGD={slot}")
                self.deleted += 1
        self._arm_timer()

    def _add(self, msg: SmsDeliver, slots: list[int]) -> list[AssembledSms]:
        c = msg.concat
        if c is not None and c.total > 1:
            self._slots.setdefault((msg.originator, c.reference, c.total), []).extend(slots)
        return self.reassembler.add(msg, self.loop.time())

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self.reassembler.get_timer()
        if when is not None:
            self._timer = self.loop.call_at(
                when, lambda: self._work.put_nowait(("timer", None)))

    async def _store(self, whole: AssembledSms, slots: list[int]) -> None:
        sms = sms_from_assembled(whole, imei=gate_key(self.driver),
                                 recipient=self.driver.config.number or "", now=self.clock())
        await self._commit(sms, slots)

    async def _commit(self, sms: Sms, slots: list[int]) -> None:
        # The order that makes "deleted from the SIM only once stored" true: store() returns
        # after the commit was synced; only then the AT+CMGD.
        message_id = await self.delivery.store(sms, self.destinations)
        self.stored += 1
        log.info("modem %s: SMS from %s stored as sms %d (%d part(s), complete=%s)",
                 self.driver.name, sms.originator, message_id, sms.parts,
                 dict(sms.extra).get("complete", 1))
        for slot in slots:
            await self.driver.command(f"AT+CMGD={slot}")
            self.deleted += 1


def _key(whole: AssembledSms) -> tuple[str, int, int]:
    return (whole.originator, whole.reference or 0, whole.total)


class SmsService:
    """The daemon's SMS side: one queue, its delivery loop, a `ModemSms` per receiving modem,
    outbound SMS through modems, SIP MESSAGE in and out, USSD."""

    def __init__(self, config: Config, drivers: Mapping[str, Driver], *,
                 loop: asyncio.AbstractEventLoop, ua: UserAgent | None = None,
                 pump: Callable[[], None] | None = None,
                 in_call: Callable[[str], bool] | None = None,
                 queue_path: Path | str | None = None,
                 queue: SmsQueue | None = None,
                 router: GsmGroupRouter | None = None) -> None:
        self.config = config
        self.drivers = drivers
        self.loop = loop
        self.ua = ua
        self.pump = pump or (lambda: None)
        self.in_call = in_call
        # The calls' chooser when the runtime passes it (one round-robin cursor for both).
        self.router = router or GsmGroupRouter(config.gsm_groups, config.modems)
        path = queue_path or next(
            (m.sms.queue for m in config.modems if m.sms is not None and m.sms.queue), None)
        self.queue_path = Path(path) if path else Path(config.gateway.state_dir) / "sms.db"
        self.queue: SmsQueue | None = queue
        self.delivery: SmsDelivery | None = None
        self.sip: SipMessageSender | None = None
        self.receivers: dict[str, ModemSms] = {}
        self._task: asyncio.Task[None] | None = None
        self._ussd_locks: dict[str, asyncio.Lock] = {}
        self._spawned: set[asyncio.Task[None]] = set()

    @property
    def wanted(self) -> bool:
        """True when some modem has an ``sms:`` section (then MESSAGEs to us are taken)."""
        return any(m.sms is not None for m in self.config.modems)

    async def start(self) -> None:
        if self.queue is None:
            self.queue_path.parent.mkdir(parents=True, exist_ok=True)
            self.queue = await asyncio.to_thread(SmsQueue, self.queue_path)
        if self.ua is not None:
            self.sip = SipMessageSender(self.ua, self.pump, domain=self.config.sip.public_host,
                                        clock=self.loop.time)
        self.delivery = SmsDelivery(self.queue, sip=self.sip, senders={"gsm": self._send_gsm})
        for mc in self.config.modems:
            driver = self.drivers.get(mc.name)
            if driver is None or mc.sms is None:
                continue
            dests = [d for d in (mc.sms.to_sip, mc.sms.webhook) if d]
            if not dests:
                continue
            receiver = ModemSms(driver, self.delivery, dests, loop=self.loop,
                                in_call=self.in_call)
            receiver.start()
            self.receivers[mc.name] = receiver
        if self.ua is not None and self.wanted:
            self.ua.accept_messages = True
        self._task = self.loop.create_task(self.delivery.run(), name="sms delivery")

    async def close(self) -> None:
        for receiver in self.receivers.values():
            await receiver.close()
        for task in [self._task, *self._spawned]:
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self.queue is not None:
            self.queue.close()

    def call_state(self, modem: str, busy: bool) -> None:
        """`modem`'s GSM port left idle (`busy`) or returned to idle: gate its SMS."""
        receiver = self.receivers.get(modem)
        if receiver is not None:
            receiver.set_call(busy)

    # -- SIP ---------------------------------------------------------------------------

    def on_sip_event(self, ev: object) -> bool:
        """Take the agent's MESSAGE events; True when `ev` was one (the caller skips it)."""
        if isinstance(ev, MessageDelivered | MessageFailed):
            if self.sip is not None:
                self.sip.on_event(ev)
            return True
        if isinstance(ev, MessageReceived):
            task = self.loop.create_task(self._take_message(ev))
            self._spawned.add(task)
            task.add_done_callback(self._spawned.discard)
            return True
        return False

    async def _take_message(self, ev: MessageReceived) -> None:
        modem = self.default_sender()
        if self.delivery is None or modem is None:
            status = 480
        else:
            status = await self.delivery.take_sip_message(ev, [f"gsm:{modem}"])
        if self.ua is not None:
            self.ua.answer_message(ev.handle, status, self.loop.time())
            self.pump()

    def default_sender(self) -> str | None:
        """The modem a MESSAGE to the gateway is sent through: the first with ``sms:``."""
        for m in self.config.modems:
            if m.sms is not None:
                return m.name
        return self.config.modems[0].name if self.config.modems else None

    # -- sending -----------------------------------------------------------------------

    async def send(self, modem: str, number: str, text: str) -> int:
        """Queue an outbound SMS through `modem` (a modem or GSM group name); its id."""
        if self.delivery is None:
            raise HalError("SMS service not started")
        if modem not in self.drivers and not any(g.name == modem
                                                  for g in self.config.gsm_groups):
            raise KeyError(f"no modem or GSM group named {modem!r}")
        driver = self.drivers.get(modem)
        origin = (driver.config.number if driver is not None else None) or modem
        sms = Sms(originator=origin, text=text, received_at=time.time(), recipient=number,
                  direction="out")
        return await self.delivery.store(sms, [f"gsm:{modem}"])

    def _pick(self, name: str, number: str) -> Driver | str:
        """The modem that sends to `number` through `name` (a modem, or a group chosen by
        its strategy like a call, modems that are down skipped), or why there is none."""
        driver = self.drivers.get(name)
        if driver is not None:
            return driver if driver.up else f"modem {name} is down"
        states = {n: ModemState(n, d.up) for n, d in self.drivers.items()}
        choice = self.router.choose(name, number, states, datetime.now())
        if isinstance(choice, ModemChosen):
            return self.drivers[choice.modem]
        return choice.reason

    async def _send_gsm(self, delivery: Delivery) -> Outcome:
        name = delivery.dest.split(":", 1)[1]
        sms = delivery.sms
        driver = self._pick(name, sms.recipient or "")
        if isinstance(driver, str):
            return Outcome(False, f"no modem for {delivery.dest}: {driver}")
        try:
            parts = encode_submit_parts(sms.recipient, sms.text, reference=random.randrange(256))
        except SmsError as exc:
            return Outcome(False, f"cannot encode: {exc}")
        refs: list[str] = []
        try:
            await driver.command("AT+CMGF=0")
            for part in parts:
                done = await driver.command(f"AT+CMGS={part.length}", timeout=SEND_TIMEOUT,
                                            body=part.hex.encode("ascii"))
                refs.extend(ln.split(":", 1)[1].strip() for ln in done.lines
                            if ln.upper().startswith("+CMGS:"))
        except (CommandError, ModemLost) as exc:
            return Outcome(False, f"modem {driver.name}: {exc}")
        return Outcome(True, f"sent by {driver.name} in {len(parts)} part(s), MR {','.join(refs)}")

    # -- USSD --------------------------------------------------------------------------

    async def ussd(self, modem: str, code: str, timeout: float = USSD_TIMEOUT) -> dict[str, Any]:
        """Send a USSD code and wait for the network's answer."""
        driver = self.drivers.get(modem)
        if driver is None:
            raise KeyError(f"no modem named {modem!r}")
        if not driver.up:
            raise UssdError(f"modem {modem} is not up")
        if not code or any(c not in "0123456789*#+" for c in code):
            raise UssdError(f"{code!r} is not a USSD code (digits, * and #)")
        lock = self._ussd_locks.setdefault(modem, asyncio.Lock())
        async with lock:
            answer: asyncio.Future[Unsolicited] = self.loop.create_future()

            def on_urc(urc: Unsolicited) -> None:
                if urc.name == "+CUSD" and not answer.done():
                    answer.set_result(urc)

            unsubscribe = driver.subscribe(on_urc)
            try:
                await driver.command('AT+CSCS="GSM"')
                done = await driver.command(f'AT+CUSD=1,"{code}",15', timeout=timeout)
                for line in done.lines:  # some modules answer inside the command
                    if line.upper().startswith("+CUSD:") and not answer.done():
                        answer.set_result(Unsolicited("+CUSD", line.split(":", 1)[1].strip()))
                urc = await asyncio.wait_for(answer, timeout)
            except TimeoutError:
                raise UssdError(f"no USSD answer within {timeout:g} s") from None
            except (CommandError, ModemLost) as exc:
                raise UssdError(f"modem {modem}: {exc}") from None
            finally:
                unsubscribe()
        try:
            reply = parse_cusd(f"+CUSD: {urc.value}")
        except ResponseError as exc:
            raise UssdError(f"unreadable answer {urc.value!r}: {exc}") from None
        text = reply.text
        if text and reply.dcs is not None and reply.dcs & 0xF0 == 0x40 and reply.dcs & 0x0C == 0x08:
            try:  # UCS-2 data coding: the modem shows it as hex
                text = bytes.fromhex(text).decode("utf-16-be")
            except ValueError:
                pass
        return {"modem": modem, "code": code, "status": reply.status, "text": text,
                "dcs": reply.dcs}

    def status(self) -> dict[str, Any]:
        stats = self.queue.stats() if self.queue is not None else {}
        return {"queue": str(self.queue_path), **stats,
                "receivers": {n: {"stored": r.stored, "deleted_from_sim": r.deleted}
                              for n, r in self.receivers.items()}}

