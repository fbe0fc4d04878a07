"""SMS delivery to an HTTP webhook through the persistent queue (a real HTTP server on loopback).

The main scenario: the webhook is down (connection refused), the daemon restarts (a new
queue object on the same file), the webhook comes back, and the SMS arrives once, whole.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gateway.modem.sms_reassembly import AssembledSms
from gateway.runtime.sms_delivery import (
    Outcome,
    SmsDelivery,
    SmsRefused,
    message_to_sms,
    post_webhook,
    sip_user,
    sms_from_assembled,
    webhook_payload,
)
from gateway.sip.events import MessageReceived
from gateway.store.sms_queue import Delivery, Sms, SmsQueue

TEXT = "Ihr Code: 4711 — gültig 5 Minuten 😀"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Hook:
    """A tiny webhook receiver: answers `statuses` in turn (then 200), records bodies."""

    def __init__(self, port: int, statuses: list[int]) -> None:
        self.bodies: list[dict[str, object]] = []
        self.paths: list[str] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                length = int(self.headers.get("Content-Length") or 0)
                hook.bodies.append(json.loads(self.rfile.read(length)))
                hook.paths.append(self.path)
                status = statuses.pop(0) if statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hooks() -> Iterator[list[Hook]]:
    started: list[Hook] = []
    yield started
    for hook in started:
        hook.stop()


async def run_until(delivery: SmsDelivery, done: object, timeout: float = 5.0) -> None:
    task = asyncio.create_task(delivery.run())
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not done() and loop.time() < end:  # type: ignore[operator]
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_webhook_down_restart_then_delivered_once(tmp_path: Path, hooks: list[Hook]) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/sms?site=zrh"
    path = tmp_path / "sms.db"
    sms = Sms(
        originator="+41791234567",
        text=TEXT,
        received_at=1_700_000_000.0,
        imei="358000000000001",
        recipient="+41790000000",
        parts=3,
    )

    async def first_run() -> int:
        queue = SmsQueue(path, retry_base=0.05, retry_max=0.2)
        delivery = SmsDelivery(queue)
        message_id = await delivery.store(sms, [url])
        await run_until(delivery, lambda: delivery.attempts >= 3)
        assert delivery.delivered == 0 and delivery.attempts >= 3
        stored = queue.get(message_id)
        assert stored is not None and not stored.delivered
        assert (
            "refused" in stored.deliveries[0].last_error.lower()
            or "connect" in stored.deliveries[0].last_error.lower()
        )
        return message_id  # the daemon "dies" here: the queue is never closed

    message_id = asyncio.run(first_run())
    hooks.append(Hook(port, [503]))  # back, but the first answer is a 503

    async def second_run() -> None:
        with SmsQueue(path, retry_base=0.05, retry_max=0.2) as queue:
            delivery = SmsDelivery(queue)
            await run_until(delivery, lambda: delivery.delivered == 1)
            assert delivery.delivered == 1
            stored = queue.get(message_id)
            assert stored is not None and stored.delivered
            assert queue.due(10**10) == []

    asyncio.run(second_run())
    hook = hooks[0]
    assert len(hook.bodies) == 2  # the 503 was retried, the 200 ended it
    assert hook.paths == ["/sms?site=zrh"] * 2
    assert hook.bodies[-1] == {
        "id": message_id,
        "from": "+41791234567",
        "to": "+41790000000",
        "text": TEXT,
        "received_at": "2023-11-14T22:13:20Z",
        "imei": "358000000000001",
        "parts": 3,
        "complete": True,
    }


def test_webhook_timeout_and_garbage_are_failures() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    port = silent.getsockname()[1]
    delivery = Delivery(1, "x", 0, Sms(originator="a", text="b", received_at=0.0))
    try:
        outcome = asyncio.run(
            post_webhook(f"http://127.0.0.1:{port}/", webhook_payload(delivery), timeout=0.2)
        )
        assert not outcome.delivered and "0.2 s" in outcome.reason
    finally:
        silent.close()
    outcome = asyncio.run(post_webhook("ftp://127.0.0.1/", {}, timeout=0.2))
    assert not outcome.delivered and "http://" in outcome.reason


def test_unknown_destination_scheme_is_retried_not_dropped(tmp_path: Path) -> None:
    async def go() -> None:
        with SmsQueue(tmp_path / "sms.db", retry_base=10.0, retry_max=10.0) as queue:
            delivery = SmsDelivery(queue, clock=lambda: 100.0)
            mid = await delivery.store(
                Sms(originator="a", text="b", received_at=0.0),
                ["sip:sms@127.0.0.1", "mailto:x@example.org"],
            )
            await delivery.run_once()
            for _ in range(500):
                if delivery.attempts == 2 and not delivery._tasks:
                    break
                await asyncio.sleep(0.01)
            stored = queue.get(mid)
            assert stored is not None
            reasons = {d.dest: (d.state, d.last_error) for d in stored.deliveries}
            assert reasons["sip:sms@127.0.0.1"] == ("pending", "no SIP agent to send MESSAGE with")
            assert reasons["mailto:x@example.org"][0] == "pending"
            assert queue.next_deadline() == 110.0

    asyncio.run(go())
    assert sip_user("+41791234567") == "+41791234567"
    assert sip_user("My Bank") == "My%20Bank"


def test_sms_during_a_call_waits_for_the_gate_then_goes(tmp_path: Path,
                                                         hooks: list[Hook]) -> None:
    port = free_port()
    hooks.append(Hook(port, []))
    imei = "358000000000001"

    async def go() -> None:
        with SmsQueue(tmp_path / "sms.db", retry_base=0.05, retry_max=0.2) as queue:
            delivery = SmsDelivery(queue)
            queue.close_gate(imei)  # a call is up on that modem
            task = asyncio.create_task(delivery.run())
            await delivery.store(Sms(originator="+4179", text="during the call",
                                     received_at=0.0, imei=imei),
                                 [f"http://127.0.0.1:{port}/"])
            await asyncio.sleep(0.3)
            assert delivery.attempts == 0 and hooks[0].bodies == []
            queue.open_gate(imei)  # the call ended
            delivery.wake()
            for _ in range(500):
                if delivery.delivered:
                    break
                await asyncio.sleep(0.02)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert delivery.delivered == 1

    asyncio.run(go())
    assert [b["text"] for b in hooks[0].bodies] == ["during the call"]


class TlsHook(Hook):
    def __init__(self, port: int, cert: Path, key: Path) -> None:
        super().__init__(port, [])
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)


def test_https_webhook_checks_the_certificate(tmp_path: Path, hooks: list[Hook]) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is needed to make a test certificate (apt-get install openssl)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=30)
    port = free_port()
    hooks.append(TlsHook(port, cert, key))
    url = f"https://127.0.0.1:{port}/hook"
    payload = {"text": "über TLS"}
    refused = asyncio.run(post_webhook(url, payload, timeout=5.0))
    assert not refused.delivered and "CERTIFICATE_VERIFY_FAILED" in refused.reason
    trusting = ssl.create_default_context(cafile=str(cert))
    ok = asyncio.run(post_webhook(url, payload, timeout=5.0, ssl_context=trusting))
    assert ok.delivered and ok.reason == "HTTP 200 OK"
    assert hooks[0].bodies == [payload]


def message(uri: str = "sip:+41791112233@gw.example", body: bytes = "Grüezi".encode(),
            content_type: str = "text/plain;charset=UTF-8") -> MessageReceived:
    return MessageReceived("msg-1", "sip:alice@gw.example", "sip:x@gw.example", uri,
                           content_type, body, ("127.0.0.1", 5070))


def test_message_to_sms_takes_the_number_and_refuses_what_is_not_an_sms() -> None:
    sms = message_to_sms(message(), 50.0)
    assert (sms.recipient, sms.originator, sms.text, sms.direction, sms.received_at) == \
        ("+41791112233", "alice", "Grüezi", "out", 50.0)
    latin = message_to_sms(message(body="Grüezi".encode("latin-1"),
                                   content_type='text/plain; charset="ISO-8859-1"'), 0.0)
    assert latin.text == "Grüezi"
    assert message_to_sms(message("sip:079-111-22-33@gw.example"), 0.0).recipient == \
        "0791112233"
    for bad, status in [(message(content_type="application/sdp"), 415),
                        (message(body=b"\xff\xfe"), 400),
                        (message(body=b""), 400),
                        (message(uri="sip:alice@gw.example"), 484),
                        (message(uri="sip:gw.example"), 484),
                        (message(body=b"x" * 1531), 413)]:
        with pytest.raises(SmsRefused) as refused:
            message_to_sms(bad, 0.0)
        assert refused.value.status == status


def test_sip_message_becomes_an_outbound_sms_sent_by_the_gsm_sender(tmp_path: Path) -> None:
    sent: list[Delivery] = []

    async def modem(delivery: Delivery) -> Outcome:
        sent.append(delivery)
        return Outcome(True, "+CMGS: 17")

    async def go() -> tuple[int, int]:
        with SmsQueue(tmp_path / "sms.db") as queue:
            delivery = SmsDelivery(queue, senders={"gsm": modem}, clock=lambda: 10.0)
            status = await delivery.take_sip_message(message(), ["gsm:mobiles"])
            refused = await delivery.take_sip_message(message(content_type="image/png"),
                                                      ["gsm:mobiles"])
            await delivery.run_once()
            for _ in range(500):
                if delivery.delivered:
                    break
                await asyncio.sleep(0.01)
            assert queue.stats()["delivered"] == 1 and queue.stats()["messages"] == 1
            return status, refused

    assert asyncio.run(go()) == (202, 415)
    (d,) = sent
    assert d.dest == "gsm:mobiles" and d.sms.recipient == "+41791112233"
    assert d.sms.text == "Grüezi" and d.sms.direction == "out"


def test_assembled_sms_keeps_its_time_stamp_parts_and_what_is_missing() -> None:
    import datetime as dt

    stamp = dt.datetime(2026, 12, 6, 20, 15, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    whole = sms_from_assembled(AssembledSms("+41791234567", "abc", stamp, True, 42, 3),
                               imei="358000000000001", recipient="+41790000000", now=5.0)
    assert whole.received_at == stamp.timestamp() and whole.parts == 3
    assert dict(whole.extra) == {"complete": 1, "reference": 42}
    partial = sms_from_assembled(
        AssembledSms("+4179", "a[...]c", None, False, 7, 3, (2,)), imei="1", recipient="",
        now=5.0)
    assert partial.received_at == 5.0
    assert dict(partial.extra) == {"complete": 0, "reference": 7, "missing": "2"}
    payload = webhook_payload(Delivery(9, "http://x/", 0, partial))
    assert payload["complete"] is False and payload["parts"] == 3
    assert payload["received_at"] == "1970-01-01T00:00:05Z"
