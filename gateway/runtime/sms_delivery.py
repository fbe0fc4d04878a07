"""Delivering stored SMS: HTTP webhook POSTs and SIP MESSAGEs, driven by the SMS queue.

Thin asyncio adapters over `gateway.store.sms_queue.SmsQueue`: the queue decides what is
due and when to retry; this module only performs one attempt per delivery and reports the
outcome back (`mark_delivered` / `mark_failed`).

- Webhook (``http://`` and ``https://`` destinations): one POST of a JSON object
  ``{id, from, to, text, received_at, imei, parts, complete}`` over asyncio streams (TLS with the
  default SSL context, so certificates are verified), ``Connection: close``. A 2xx answer
  is delivered; any other status, a refused connection, a TLS failure or the timeout is a
  failure to retry. ``id`` is the queue's message id, so a receiver can drop the duplicate
  a lost answer may cause (delivery is at least once).
- SIP (``sip:`` and ``sips:`` destinations): `SipMessageSender` sends a MESSAGE through
  the daemon's `UserAgent` (``From: sip:<originator>@<domain>``, the text as
  ``text/plain;charset=UTF-8``) and waits for `MessageDelivered` / `MessageFailed`, which
  the runtime forwards to `on_event` from its SIP event loop. RFC 3428 section 6 wants
  MESSAGEs over 1300 bytes on a congestion-controlled transport: a long UCS-2 SMS can pass
  that, so `resolve` should hand TCP targets for endpoints beyond the LAN.

`SmsDelivery.run()` is the loop: take what is due, attempt each, sleep until the next
deadline or until `wake()` (a new SMS was stored, a modem's call ended). The queue works
in a worker thread so that its fsyncs never stall the event loop's 20 ms audio tick.
Other destination schemes (``gsm:<group>`` for outbound SMS) are attempted by the
senders the runtime plugs in (`senders`).

A MESSAGE addressed to the gateway is an SMS to send: `take_sip_message` turns the
`MessageReceived` event into an outbound `Sms` (the Request-URI's user is the number),
stores it and returns the status to answer it with: 202 once stored, a 4xx when it cannot
be an SMS, 500 when it could not be stored (the sender keeps it and retries).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate
from urllib.parse import quote, unquote, urlsplit

from gateway.modem.sms_reassembly import AssembledSms
from gateway.sip.errors import SipError
from gateway.sip.events import MessageDelivered, MessageFailed, MessageReceived, UaEvent
from gateway.sip.target import Target
from gateway.sip.ua import UserAgent
from gateway.sip.uri import SipUri
from gateway.store.sms_queue import Delivery, Sms, SmsQueue

log = logging.getLogger(__name__)

Address = tuple[str, int]
WEBHOOK_TIMEOUT = 10.0
SIP_TIMEOUT = 40.0  # longer than Timer F: the agent reports first
#: Longest text taken from a SIP MESSAGE: ten concatenated GSM-7 parts.
MAX_SMS_CHARS = 1530
_NUMBER_CHARS = frozenset("+0123456789")


@dataclass(frozen=True)
class Outcome:
    """One attempt's result: `delivered`, and what to log / store as the failure reason."""

    delivered: bool
    reason: str


def sms_from_assembled(assembled: AssembledSms, *, imei: str, recipient: str,
                       now: float) -> Sms:
    """The queue's record of an SMS the reassembler put together (or gave up waiting for).

    `received_at` is the SMSC time stamp of the message when it has one, else `now`;
    an incomplete message keeps ``complete: 0`` and the missing part numbers in `extra`.
    """
    extra: list[tuple[str, str | int]] = [("complete", int(assembled.complete))]
    if assembled.reference is not None:
        extra.append(("reference", assembled.reference))
    if assembled.missing:
        extra.append(("missing", ",".join(str(n) for n in assembled.missing)))
    stamp = assembled.timestamp.timestamp() if assembled.timestamp is not None else now
    return Sms(originator=assembled.originator, text=assembled.text, received_at=stamp,
               imei=imei, recipient=recipient, parts=assembled.total, extra=tuple(extra))


def webhook_payload(delivery: Delivery) -> dict[str, object]:
    """The JSON object a webhook receives for one SMS (``complete`` false: parts missing)."""
    sms = delivery.sms
    received = datetime.fromtimestamp(sms.received_at, UTC).isoformat().replace("+00:00", "Z")
    return {"id": delivery.message_id, "from": sms.originator, "to": sms.recipient,
            "text": sms.text, "received_at": received, "imei": sms.imei, "parts": sms.parts,
            "complete": dict(sms.extra).get("complete", 1) != 0}


async def post_webhook(url: str, payload: dict[str, object], *,
                       timeout: float = WEBHOOK_TIMEOUT,
                       ssl_context: ssl.SSLContext | None = None) -> Outcome:
    """POST `payload` as JSON to `url`; delivered on a 2xx status, never raises."""
    try:
        async with asyncio.timeout(timeout):  # 3.11's wait_for can drop a racing cancel
            return await _post(url, payload, ssl_context)
    except TimeoutError:
        return Outcome(False, f"no answer within {timeout:g} s")
    except (OSError, ssl.SSLError, ValueError, asyncio.IncompleteReadError) as exc:
        return Outcome(False, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


async def _post(url: str, payload: dict[str, object],
                ssl_context: ssl.SSLContext | None) -> Outcome:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"webhook url {url!r}: expected http:// or https:// with a host")
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    context = (ssl_context or ssl.create_default_context()) if secure else None
    reader, writer = await asyncio.open_connection(
        parts.hostname, port, ssl=context, server_hostname=parts.hostname if secure else None)
    try:
        body = json.dumps(payload, ensure_ascii=False).encode()
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.netloc.rsplit("@", 1)[-1]
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
                "Content-Type: application/json; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n"
                "User-Agent: Branchline-SMS\r\n\r\n")
        writer.write(head.encode("ascii") + body)
        await writer.drain()
        status_line = await reader.readuntil(b"\r\n")
        fields = status_line.decode("latin-1").split(" ", 2)
        if len(fields) < 2 or not fields[0].startswith("HTTP/") or not fields[1].isdigit():
            return Outcome(False, f"not an HTTP answer: {status_line[:80]!r}")
        status = int(fields[1])
        reason = f"HTTP {status} {fields[2].strip() if len(fields) > 2 else ''}".strip()
        return Outcome(200 <= status < 300, reason)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass


class SmsRefused(ValueError):
    """A MESSAGE that cannot become an SMS; `status` is the SIP answer that says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def message_to_sms(event: MessageReceived, now: float) -> Sms:
    """The outbound SMS a MESSAGE asks for: to the Request-URI's number, from its sender.

    Raises `SmsRefused` with 415 (not text/plain), 400 (undecodable or empty text),
    484 (no phone number in the Request-URI) or 413 (longer than `MAX_SMS_CHARS`).
    """
    media, _, params = event.content_type.partition(";")
    if media.strip().lower() != "text/plain":
        raise SmsRefused(415, f"an SMS is text/plain, not {media.strip() or 'nothing'}")
    charset = "utf-8"
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"')
    try:
        text = event.body.decode(charset)
    except (LookupError, UnicodeDecodeError) as exc:
        raise SmsRefused(400, f"text is not {charset}: {exc}") from None
    if not text:
        raise SmsRefused(400, "empty text")
    if len(text) > MAX_SMS_CHARS:
        raise SmsRefused(413, f"text longer than {MAX_SMS_CHARS} characters")
    try:
        number = unquote(SipUri.parse(event.request_uri).user or "")
        originator = SipUri.parse(event.from_uri).user or event.from_uri
    except SipError:
        raise SmsRefused(400, "unreadable URI") from None
    number = number.split(";", 1)[0].replace("-", "").replace(" ", "")
    if len(number.lstrip("+")) < 3 or not set(number) <= _NUMBER_CHARS \
            or "+" in number[1:]:
        raise SmsRefused(484, "the Request-URI names no phone number")
    return Sms(originator=unquote(originator), text=text, received_at=now, recipient=number,
               direction="out", extra=(("sip_from", event.from_uri),))


def sip_user(originator: str) -> str:
    """The originator as a SIP user part: +41..., or an escaped alphanumeric sender."""
    return quote(originator, safe="+-_.!~*'()&=$,;?/") or "unknown"


def default_sip_dest(uri: str) -> Address:
    """Where to send a MESSAGE for `uri` when the runtime gives no resolver: its host:port."""
    parsed = SipUri.parse(uri)
    return parsed.host_port(5061 if parsed.scheme == "sips" else 5060)


class SipMessageSender:
    """One attempt = one MESSAGE through the daemon's agent; the outcome comes back as events.

    `pump` is the runtime's "send what the agent queued and re-arm its timer" call; the
    runtime must pass `MessageDelivered` / `MessageFailed` events to `on_event`.
    """

    def __init__(self, ua: UserAgent, pump: Callable[[], None], *, domain: str,
                 clock: Callable[[], float],
                 resolve: Callable[[str], Address | Sequence[Target]] = default_sip_dest,
                 account_id: str | None = None, timeout: float = SIP_TIMEOUT) -> None:
        self.ua = ua
        self.pump = pump
        self.domain = domain
        self.clock = clock
        self.resolve = resolve
        self.account_id = account_id
        self.timeout = timeout
        self._waiting: dict[str, asyncio.Future[Outcome]] = {}

    async def deliver(self, delivery: Delivery) -> Outcome:
        """Send `delivery.sms` as a MESSAGE to `delivery.dest` and wait for the answer."""
        sms = delivery.sms
        try:
            dest = self.resolve(delivery.dest)
        except Exception as exc:  # a bad URI or no address yet: retry later
            return Outcome(False, f"no address for {delivery.dest}: {exc}")
        extra = [("Date", formatdate(sms.received_at, usegmt=True))]
        handle = self.ua.send_message(
            target_uri=delivery.dest, body=sms.text.encode(), dest=dest, now=self.clock(),
            from_uri=f"sip:{sip_user(sms.originator)}@{self.domain}",
            account_id=self.account_id, extra=extra)
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting[handle] = future
        self.pump()  # sends it, and may already deliver a synchronous failure
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except TimeoutError:
            return Outcome(False, "no outcome from the SIP agent")
        finally:
            self._waiting.pop(handle, None)

    def on_event(self, event: UaEvent) -> bool:
        """Resolve the attempt an outcome event belongs to; True when it was ours."""
        if not isinstance(event, MessageDelivered | MessageFailed):
            return False
        future = self._waiting.get(event.handle)
        if future is None:
            return False
        if not future.done():
            if isinstance(event, MessageDelivered):
                future.set_result(Outcome(True, f"SIP {event.status}"))
            else:
                future.set_result(Outcome(False, f"SIP {event.reason}"))
        return True


Deliver = Callable[[Delivery], Awaitable[Outcome]]


class SmsDelivery:
    """Runs the queue: attempts due deliveries, marks outcomes, sleeps until the next one.

    `sip` may be None (no SIP destination configured: such deliveries fail and are retried,
    never dropped). `clock` is wall-clock seconds, the queue's time base.
    """

    def __init__(self, queue: SmsQueue, *, sip: SipMessageSender | None = None,
                 senders: Mapping[str, Deliver] | None = None,
                 webhook_timeout: float = WEBHOOK_TIMEOUT,
                 clock: Callable[[], float] = time.time,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.queue = queue
        self.sip = sip
        self.senders = dict(senders or {})
        self.webhook_timeout = webhook_timeout
        self.clock = clock
        self.ssl_context = ssl_context
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.attempts = 0  # attempts started
        self.delivered = 0  # deliveries marked delivered in the queue

    def wake(self) -> None:
        """Look at the queue now (an SMS was stored, a gate opened)."""
        self._wake.set()

    async def store(self, sms: Sms, destinations: Sequence[str]) -> int:
        """Store an SMS (committed and synced when this returns) and wake the loop."""
        message_id = await asyncio.to_thread(self.queue.store, sms, list(destinations),
                                             self.clock())
        self.wake()
        return message_id

    async def attempt(self, delivery: Delivery) -> Outcome:
        """One attempt for one delivery, by the destination's scheme."""
        scheme = delivery.dest.split(":", 1)[0].lower()
        if scheme in ("http", "https"):
            return await post_webhook(delivery.dest, webhook_payload(delivery),
                                      timeout=self.webhook_timeout,
                                      ssl_context=self.ssl_context)
        if scheme in ("sip", "sips"):
            if self.sip is None:
                return Outcome(False, "no SIP agent to send MESSAGE with")
            return await self.sip.deliver(delivery)
        sender = self.senders.get(scheme)
        if sender is not None:
            return await sender(delivery)
        return Outcome(False, f"no delivery method for {scheme!r} destinations")

    async def take_sip_message(self, event: MessageReceived,
                               destinations: Sequence[str]) -> int:
        """Store the SMS a MESSAGE asks for; returns the status to answer the MESSAGE with."""
        try:
            sms = message_to_sms(event, self.clock())
        except SmsRefused as refused:
            log.info("MESSAGE %s refused: %s %s", event.handle, refused.status, refused.reason)
            return refused.status
        try:
            message_id = await self.store(sms, destinations)
        except Exception:
            log.exception("MESSAGE %s: could not store the SMS", event.handle)
            return 500
        log.info("MESSAGE %s stored as sms %s to %s", event.handle, message_id, sms.recipient)
        return 202

    async def _one(self, delivery: Delivery) -> None:
        self.attempts += 1
        try:
            outcome = await self.attempt(delivery)
        except Exception as exc:  # one bad attempt must not stop the others
            log.exception("sms %s to %s: attempt failed", delivery.message_id, delivery.dest)
            outcome = Outcome(False, f"internal error: {type(exc).__name__}")
        now = self.clock()
        if outcome.delivered:
            await asyncio.to_thread(self.queue.mark_delivered, delivery.message_id,
                                    delivery.dest, now)
            self.delivered += 1  # counted once the file says so
            log.info("sms %s delivered to %s (%s)", delivery.message_id, delivery.dest,
                     outcome.reason)
        else:
            nxt = await asyncio.to_thread(self.queue.mark_failed, delivery.message_id,
                                          delivery.dest, now, outcome.reason)
            log.warning("sms %s to %s failed (%s); retry in %.0f s", delivery.message_id,
                        delivery.dest, outcome.reason, max(0.0, nxt - now))
        self.wake()

    async def run_once(self) -> float | None:
        """Start every due attempt; returns the queue's next deadline (None: nothing)."""
        for delivery in await asyncio.to_thread(self.queue.due, self.clock()):
            task = asyncio.create_task(self._one(delivery))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await asyncio.to_thread(self.queue.next_deadline)

    async def run(self) -> None:
        """Deliver forever (cancel the task to stop; in-flight attempts are cancelled too)."""
        try:
            while True:
                self._wake.clear()
                deadline = await self.run_once()
                wait = None if deadline is None else max(0.0, deadline - self.clock())
                try:  # asyncio.timeout: 3.11's wait_for can swallow a racing cancel
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                except TimeoutError:
                    pass
        finally:
            for task in list(self._tasks):
                task.cancel()


__all__ = ["MAX_SMS_CHARS", "Outcome", "SipMessageSender", "SmsDelivery", "SmsRefused",
           "default_sip_dest", "message_to_sms", "post_webhook", "sip_user", "sms_from_assembled",
           "webhook_payload"]
