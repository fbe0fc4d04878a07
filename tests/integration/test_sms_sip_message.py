"""A queued SMS reaches a SIP MESSAGE endpoint through a real Kamailio, text intact.

Path: SmsQueue -> SmsDelivery -> SipMessageSender -> UserAgent (over a real UDP socket)
-> Kamailio (location lookup) -> sipp UAS answering 200 (tests/data/sipp/uas_message.xml).
The endpoint "bob" is registered at Kamailio by the same agent, with a Contact that points
at sipp, so Kamailio has to look it up and relay. The text is a 3-part SMS's worth (over
160 GSM-7 characters, with non-ASCII ones): it must arrive whole and byte for byte.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.runtime.sms_delivery import SipMessageSender, SmsDelivery
from gateway.sip.events import (
    MessageDelivered,
    MessageFailed,
    MessageReceived,
    RegistrationStateChanged,
)
from gateway.sip.registration import AccountSettings
from gateway.sip.ua import UserAgent
from gateway.store.sms_queue import Delivery, Sms, SmsQueue

from .conftest import require_binary
from .peers.kamailio import KamailioTrunk
from .peers.ports import free_port, release
from .peers.sipp import Sipp, sipp_binary

TEXT = ("Grüezi! Dies ist eine lange SMS in drei Teilen, damit die Zustellung als SIP "
        "MESSAGE zeigt, dass nichts abgeschnitten wird: äöü ÄÖÜ € ß. " * 3).strip()
INSTANCE = "urn:uuid:00000000-0000-4000-8000-00000000500a"


class UdpAgent(asyncio.DatagramProtocol):
    """The smallest runtime: a UDP socket, the agent's timer, and its events."""

    def __init__(self, ua: UserAgent, on_event: Callable[[object], None]) -> None:
        self.ua = ua
        self.on_event = on_event
        self.transport: asyncio.DatagramTransport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.ua.receive_datagram(data, addr, self.loop.time())
        self.pump()

    def pump(self) -> None:
        while (ev := self.ua.next_event()) is not None:
            self.on_event(ev)
        assert self.transport is not None
        for out in self.ua.messages_out():
            self.transport.sendto(out.data, out.dest)
        if self.timer is not None:
            self.timer.cancel()
        deadline = self.ua.get_timer()
        if deadline is not None:
            self.timer = self.loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self.ua.handle_timer(self.loop.time())
        self.pump()


@pytest.mark.parametrize("auth", ["open", "407", "407-qop"])
def test_queued_sms_is_delivered_as_sip_message_via_kamailio(
        kamailio_factory: Callable[..., KamailioTrunk], tmp_path: Path, auth: str) -> None:
    """With "407" Kamailio challenges the MESSAGE; the account's credentials answer it."""
    require_binary("sipp", sipp_binary())
    kamailio_trunk = kamailio_factory(auth_message=auth != "open", qop=auth == "407-qop")
    assert len(TEXT) > 2 * 153  # three concatenated GSM-7 parts
    ua_port, sipp_port, media_port = free_port(), free_port(), free_port()
    sipp = Sipp("uas_message.xml", sip_port=sipp_port, media_port=media_port, tmpdir=tmp_path,
                rtp_echo=False, timeout_s=20)
    trunk = ("127.0.0.1", kamailio_trunk.port)
    target = f"sip:bob@127.0.0.1:{kamailio_trunk.port}"
    try:
        sipp.start()

        async def scenario() -> tuple[int, bool, list[object]]:
            loop = asyncio.get_running_loop()
            ua = UserAgent(local_host="127.0.0.1", local_port=ua_port, instance_id=INSTANCE)
            seen: list[object] = []
            registered = asyncio.Event()
            sender: SipMessageSender | None = None

            def on_event(ev: object) -> None:
                seen.append(ev)
                if isinstance(ev, RegistrationStateChanged) and ev.registered:
                    registered.set()
                if sender is not None and isinstance(ev, MessageDelivered | MessageFailed):
                    sender.on_event(ev)

            agent = UdpAgent(ua, on_event)
            transport, _ = await loop.create_datagram_endpoint(
                lambda: agent, local_addr=("127.0.0.1", ua_port))
            try:
                ua.add_account("bob", AccountSettings(
                    aor="sip:bob@127.0.0.1", registrar_host="127.0.0.1",
                    registrar_port=kamailio_trunk.port, username="bob",
                    password="bob-secret", contact=f"sip:bob@127.0.0.1:{sipp_port}",
                    expires=300), loop.time())
                agent.pump()
                await asyncio.wait_for(registered.wait(), 10)
                sender = SipMessageSender(ua, agent.pump, domain="branch.example",
                                          clock=loop.time, resolve=lambda _uri: trunk,
                                          account_id="bob")
                with SmsQueue(tmp_path / "sms.db", retry_base=0.2, retry_max=1.0) as queue:
                    delivery = SmsDelivery(queue, sip=sender)
                    message_id = await delivery.store(
                        Sms(originator="+41791234567", text=TEXT, received_at=1.7e9,
                            imei="358000000000001", recipient="+41790000000", parts=3),
                        [target])
                    task = asyncio.create_task(delivery.run())
                    for _ in range(200):
                        if delivery.delivered:
                            break
                        await asyncio.sleep(0.05)
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    stored = queue.get(message_id)
                    done = stored is not None and stored.delivered
                return message_id, done, seen
            finally:
                transport.close()

        message_id, delivered, seen = asyncio.run(scenario())
        assert sipp.wait(10) == 0, sipp.report()
        assert delivered, (seen, sipp.report())
        (msg,) = sipp.received("MESSAGE")
        head, _, body = msg.partition("\n\n")
        assert re.search(r"^From: <sip:\+41791234567@branch\.example>", head, re.M), head
        assert re.search(rf"^MESSAGE {re.escape(f'sip:bob@127.0.0.1:{sipp_port}')}", head), head
        assert "Content-Type: text/plain;charset=UTF-8" in head
        assert body.rstrip("\n") == TEXT
        relayed = [e for e in kamailio_trunk.events("request") if e.method == "MESSAGE"]
        challenged = [e for e in kamailio_trunk.events("reply")
                      if e.method == "MESSAGE" and e.code == 407]
        if auth == "open":
            assert len(relayed) == 1 and not challenged
        else:  # challenged once, answered once: the second MESSAGE carries bob's digest
            assert len(relayed) == 2 and len(challenged) == 1
            assert relayed[1].fields.get("au") == "bob"
        assert "Proxy-Authorization" not in head  # Kamailio consumed the credentials
    finally:
        sipp.stop()
        release(ua_port, sipp_port, media_port)


def test_sip_endpoint_down_then_up_sms_delivered_after_retries(
        kamailio_trunk: KamailioTrunk, tmp_path: Path) -> None:
    """Nobody registered as bob: Kamailio answers 404 and the queue retries with backoff;
    bob registers (contact: sipp) and the next attempt delivers the SMS, once."""
    require_binary("sipp", sipp_binary())
    ua_port, sipp_port, media_port = free_port(), free_port(), free_port()
    sipp = Sipp("uas_message.xml", sip_port=sipp_port, media_port=media_port, tmpdir=tmp_path,
                rtp_echo=False, timeout_s=20)
    trunk = ("127.0.0.1", kamailio_trunk.port)
    target = f"sip:bob@127.0.0.1:{kamailio_trunk.port}"
    try:
        sipp.start()

        async def scenario() -> tuple[int, int, list[object]]:
            loop = asyncio.get_running_loop()
            ua = UserAgent(local_host="127.0.0.1", local_port=ua_port, instance_id=INSTANCE)
            seen: list[object] = []
            registered = asyncio.Event()
            sender = SipMessageSender(ua, lambda: agent.pump(), domain="branch.example",
                                      clock=loop.time, resolve=lambda _uri: trunk)

            def on_event(ev: object) -> None:
                seen.append(ev)
                if isinstance(ev, RegistrationStateChanged) and ev.registered:
                    registered.set()
                if isinstance(ev, MessageDelivered | MessageFailed):
                    sender.on_event(ev)

            agent = UdpAgent(ua, on_event)
            transport, _ = await loop.create_datagram_endpoint(
                lambda: agent, local_addr=("127.0.0.1", ua_port))
            try:
                with SmsQueue(tmp_path / "sms.db", retry_base=0.2, retry_max=0.4) as queue:
                    delivery = SmsDelivery(queue, sip=sender)
                    await delivery.store(Sms(originator="+41791234567", text="wieder da",
                                             received_at=1.7e9), [target])
                    task = asyncio.create_task(delivery.run())
                    for _ in range(300):
                        if delivery.attempts >= 3:
                            break
                        await asyncio.sleep(0.05)
                    failed_attempts = delivery.attempts
                    assert delivery.delivered == 0
                    ua.add_account("bob", AccountSettings(
                        aor="sip:bob@127.0.0.1", registrar_host="127.0.0.1",
                        registrar_port=kamailio_trunk.port, username="bob",
                        password="bob-secret", contact=f"sip:bob@127.0.0.1:{sipp_port}",
                        expires=300), loop.time())
                    agent.pump()
                    await asyncio.wait_for(registered.wait(), 10)
                    for _ in range(300):
                        if delivery.delivered:
                            break
                        await asyncio.sleep(0.05)
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    return failed_attempts, delivery.delivered, seen
            finally:
                transport.close()

        failed_attempts, delivered, seen = asyncio.run(scenario())
        assert delivered == 1, seen
        assert sipp.wait(10) == 0, sipp.report()
        assert [m.partition("\n\n")[2].rstrip("\n") for m in sipp.received("MESSAGE")] == \
            ["wieder da"]
        refusals = [e for e in kamailio_trunk.events("reply")
                    if e.method == "MESSAGE" and e.code == 404]
        assert len(refusals) >= failed_attempts >= 3
        assert [e for e in seen if isinstance(e, MessageFailed)][0].status == 404
    finally:
        sipp.stop()
        release(ua_port, sipp_port, media_port)


def test_sipp_sends_a_message_to_the_gateway_and_gets_202_once_stored(tmp_path: Path) -> None:
    """Our UAS side against a real client: the MESSAGE is stored as an outbound SMS to the
    number in its Request-URI before sipp hears 202."""
    require_binary("sipp", sipp_binary())
    ua_port, sipp_port, media_port = free_port(), free_port(), free_port()
    sipp = Sipp("uac_message.xml", sip_port=sipp_port, media_port=media_port, tmpdir=tmp_path,
                remote=f"127.0.0.1:{ua_port}", service="+41791112233", rtp_echo=False,
                timeout_s=15)
    try:
        async def scenario() -> list[object]:
            loop = asyncio.get_running_loop()
            ua = UserAgent(local_host="127.0.0.1", local_port=ua_port, instance_id=INSTANCE,
                           accept_messages=True)
            seen: list[object] = []
            queue = SmsQueue(tmp_path / "sms.db")
            delivery = SmsDelivery(queue)

            async def take(ev: MessageReceived) -> None:
                status = await delivery.take_sip_message(ev, ["gsm:mobiles"])
                assert queue.stats()["messages"] == 1  # stored before the answer goes out
                ua.answer_message(ev.handle, status, loop.time())
                agent.pump()

            tasks: list[asyncio.Task[None]] = []

            def on_event(ev: object) -> None:
                seen.append(ev)
                if isinstance(ev, MessageReceived):
                    tasks.append(asyncio.create_task(take(ev)))

            agent = UdpAgent(ua, on_event)
            transport, _ = await loop.create_datagram_endpoint(
                lambda: agent, local_addr=("127.0.0.1", ua_port))
            try:
                sipp.start()
                while sipp.running:
                    await asyncio.sleep(0.05)
                await asyncio.gather(*tasks)
                (d,) = queue.due(loop.time() + 1e10)
                seen.append(d)
            finally:
                transport.close()
                queue.close()
            return seen

        seen = asyncio.run(scenario())
        assert sipp.wait(5) == 0, sipp.report()
        received = [e for e in seen if isinstance(e, MessageReceived)]
        assert len(received) == 1 and received[0].request_uri.startswith("sip:+41791112233@")
        d = seen[-1]
        assert isinstance(d, Delivery) and d.dest == "gsm:mobiles"
        assert d.sms.recipient == "+41791112233" and d.sms.direction == "out"
        assert d.sms.text.rstrip("\r\n") == "Bitte zurückrufen, Grüsse aus der Filiale"
    finally:
        sipp.stop()
        release(ua_port, sipp_port, media_port)
