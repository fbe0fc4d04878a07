"""Push of finished calls: drains the call-record store's outbox into one HTTP endpoint.

Every finished call's record is committed to the store together with an outbox row (same
SQLite transaction, gateway/store/calls.py), so a record waiting here survives a power cut
or a `kill -9`. `Pusher.run()` takes the oldest due row, POSTs its JSON to `push.url` and
reports the outcome back to the store:

- 2xx: delivered (`outbox_done`);
- 408, 429, 5xx, a refused or reset connection, a TLS failure, the timeout: retried
  (`outbox_retry`) after an exponential backoff with jitter, 1 s doubling to 10 min, or
  later when the answer carries Retry-After. The backoff also pauses the whole pusher: a
  dead endpoint is knocked on once per backoff step, not once per queued record;
- any other status (400, 401, 404, 413...): dropped (`outbox_done`), logged with the status
  and counted: the same request would be refused again for ever.

Delivery is at least once: a POST answered but not yet marked done when the box dies is
sent again after the restart, with the same `Idempotency-Key` (the record's uuid), so the
receiver counts each call once.

One request is in flight at a time. The store is read and written in one worker thread, so
SQLite's fsyncs never stall the event loop's 20 ms tick; the loop itself only awaits
sockets, and a call's ending only calls `wake()` (an `asyncio.Event.set`).

HTTP is a small HTTP/1.1 client on asyncio streams rather than urllib in a thread: a
stalled endpoint then costs no thread, `stop()` cancels a request in progress at once
(a blocked urllib call could only be abandoned), and the answer's Retry-After is at hand.
It sends one POST with Content-Length and `Connection: close`, reads the status line and
the header block, and closes; the body is never needed. https verifies the certificate and
the host name with the system's CA store (`ssl.create_default_context()`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

USER_AGENT = "Branchline-push/1"
BACKOFF_FIRST = 1.0  # s: the first retry
BACKOFF_MAX = 600.0  # s: doubling stops at 10 min
RETRY_AFTER_MAX = 3600.0  # s: a Retry-After beyond this is taken as one hour
CLOCK_BACK = RETRY_AFTER_MAX + 60.0  # s: a due time further ahead means the clock went back
JITTER = 0.2  # each delay is drawn from +-20 % around its step (never past BACKOFF_MAX)
POLL = 5.0  # s: look at the outbox this often even without a wake (rows due after restart)
MAX_HEADER_BYTES = 64 * 1024
DEFAULT_TIMEOUT = 5.0
DEFAULT_MAX_QUEUE = 10000

T = TypeVar("T")
OutboxRow = tuple[int, str, str, int]  # (id, record uuid, JSON text, attempts so far)


class Outbox(Protocol):
    """What the pusher needs from the call-record store (gateway.store.calls.CallStore)."""

    def outbox_next(self, now: float, limit: int, /) -> Sequence[OutboxRow]: ...

    def outbox_done(self, row_id: int, /) -> None: ...

    def outbox_retry(self, row_id: int, error: str, next_at: float, /) -> None: ...

    def outbox_depth(self) -> int: ...

    def outbox_drop_oldest(self, n: int, /) -> Any: ...


@dataclass(frozen=True)
class Answer:
    """One POST's result: the HTTP status (None: no answer at all) and why."""

    status: int | None
    reason: str
    retry_after: float | None = None  # seconds, from a Retry-After header


def verdict(answer: Answer) -> str:
    """"done", "retry" or "drop" for one answer (see the module docstring)."""
    s = answer.status
    if s is None or s in (408, 429) or s >= 500:
        return "retry"
    if 200 <= s < 300:
        return "done"
    return "drop"  # 1xx/3xx as the final answer, or a 4xx the endpoint will repeat


def backoff(attempts: int, rand: Callable[[], float] = random.random) -> float:
    """The delay before retry number `attempts` (1: the first): 1, 2, 4 ... 600 s, +-20 %."""
    step = min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** max(0, attempts - 1))
    return min(BACKOFF_MAX, step * (1.0 - JITTER + 2.0 * JITTER * rand()))


def parse_retry_after(value: str, now: float) -> float | None:
    """Retry-After as seconds from `now` (delta-seconds or an HTTP-date); None if unreadable."""
    value = value.strip()
    if value.isdigit():
        return min(RETRY_AFTER_MAX, float(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(RETRY_AFTER_MAX, max(0.0, when.timestamp() - now))


def public_url(url: str) -> str:
    """The endpoint for logs and status: no user:password@, no query string values."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://{host}{parts.path or '/'}" + ("?…" if parts.query else "")


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def post_json(url: str, body: bytes, headers: Sequence[tuple[str, str]], *,
                    timeout: float, ssl_context: ssl.SSLContext | None = None,
                    now: float | None = None) -> Answer:
    """POST `body` to `url` with `headers`; never raises (a failure is an Answer, status None)."""
    try:
        # asyncio.timeout, not wait_for: on 3.11 wait_for drops a cancel (stop()) that
        # arrives as the POST completes, and the pusher's loop then never ends
        async with asyncio.timeout(timeout):
            return await _post(url, body, headers, ssl_context,
                               time.time() if now is None else now)
    except TimeoutError:
        return Answer(None, f"no answer within {timeout:g} s")
    except (OSError, ssl.SSLError, ValueError, asyncio.IncompleteReadError,
            asyncio.LimitOverrunError) as exc:
        text = str(exc)
        return Answer(None, f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


async def _post(url: str, body: bytes, headers: Sequence[tuple[str, str]],
                ssl_context: ssl.SSLContext | None, now: float) -> Answer:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"push url {public_url(url)!r}: expected http:// or https:// and a host")
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    context = (ssl_context or ssl.create_default_context()) if secure else None
    reader, writer = await asyncio.open_connection(
        parts.hostname, port, ssl=context, server_hostname=parts.hostname if secure else None,
        limit=MAX_HEADER_BYTES)
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.netloc.rsplit("@", 1)[-1]
        lines = [f"POST {path} HTTP/1.1", f"Host: {host}",
                 *(f"{k}: {v}" for k, v in headers),
                 f"Content-Length: {len(body)}", "Connection: close", "", ""]
        writer.write("\r\n".join(lines).encode("latin-1") + body)
        await writer.drain()
        while True:  # interim 1xx answers come first and are skipped
            status, reason, fields = await _read_head(reader)
            if not 100 <= status < 200:
                break
        retry_after = parse_retry_after(fields["retry-after"], now) \
            if "retry-after" in fields else None
        return Answer(status, f"HTTP {status} {reason}".strip(), retry_after)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, str, dict[str, str]]:
    """One status line and its header block (names lower-cased, the last one wins)."""
    line = await reader.readuntil(b"\r\n")
    words = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    if len(words) < 2 or not words[0].startswith("HTTP/1.") or not words[1].isdigit():
        raise ValueError(f"not an HTTP answer: {line[:80]!r}")
    fields: dict[str, str] = {}
    size = len(line)
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        size += len(line)
        if size > MAX_HEADER_BYTES:
            raise ValueError("answer header block too long")
        name, sep, value = line.decode("latin-1").partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    return int(words[1]), words[2].strip() if len(words) > 2 else "", fields


class Pusher:
    """Drains the outbox into `url`, one request at a time, until `stop()`.

    `clock` is wall-clock seconds (the outbox's `next_at` survives restarts); `sleep` and
    `rand` are there so that tests can follow the backoff schedule without waiting.
    """

    def __init__(self, store: Outbox, url: str, *, token: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, max_queue: int = DEFAULT_MAX_QUEUE,
                 clock: Callable[[], float] = time.time,
                 rand: Callable[[], float] = random.random,
                 ssl_context: ssl.SSLContext | None = None,
                 executor: ThreadPoolExecutor | None = None) -> None:
        self.store = store
        self.url = url
        self._token = token
        self.timeout = timeout
        self.max_queue = max_queue
        self.clock = clock
        self.rand = rand
        self.ssl_context = ssl_context
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix="push-store")
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self.failures = 0  # retryable failures in a row (the endpoint's backoff step)
        self.paused_until: float | None = None  # no request before this (backoff)
        self.depth = 0  # outbox rows, as last counted
        self.delivered = 0
        self.dropped = 0  # refused by the endpoint (4xx), never retried
        self.overflowed = 0  # dropped because the outbox passed max_queue
        self.attempts = 0  # POSTs made
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_success_at: float | None = None
        self.in_flight: str | None = None  # the uuid being posted

    def __repr__(self) -> str:  # never the token
        return f"Pusher({public_url(self.url)!r})"

    # ------------------------------------------------------------------ life cycle

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Run in the background (a task on the running loop)."""
        self._loop = loop = loop or asyncio.get_running_loop()
        self._task = loop.create_task(self.run(), name="push")

    async def stop(self) -> None:
        """Cancel the request in progress (its row stays queued) and release the thread."""
        task = self._task
        if task is not None:
            # cancel until it is done: a cancel can still be lost inside library code that
            # catches it while finishing, and stop() must never wait on a live loop
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=1.0)
            if not task.cancelled() and task.exception() is not None:
                log.error("push: loop ended with %r", task.exception())
            self._task = None
        if self._own_executor:
            self._executor.shutdown(wait=True)

    def wake(self, *_: object) -> None:
        """A record was added: look at the outbox now. Cheap, and safe from any thread (the
        call records' writer thread calls it once a batch is committed)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Deliver until cancelled; an unexpected error is logged and the loop goes on."""
        while True:
            self._wake.clear()
            try:
                wait = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("push: unexpected error")
                self._failed(f"internal error: {type(exc).__name__}")
                wait = POLL
            if wait > 0:
                # asyncio.timeout, not asyncio.wait_for: on Python 3.11 wait_for loses a
                # cancel that arrives as the wait completes (a wake racing stop()), and this
                # loop then ran on forever, stop() waiting for it (a unit test hung so).
                try:
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    async def run_once(self) -> float:
        """Trim the outbox, post the oldest due row if any; returns how long to wait next.

        0 means "at once" (there may be more rows due). While paused by the backoff a wake
        still trims the outbox but posts nothing.
        """
        now = self.clock()
        await self._trim()
        if self.paused_until is not None and self.paused_until - now > CLOCK_BACK:
            self.paused_until = now  # the wall clock was set back (NTP after boot): go on
        if self.paused_until is not None and now < self.paused_until:
            return min(POLL, self.paused_until - now)
        rows = await self._db(self.store.outbox_next, now, 1)
        if not rows:
            next_at = getattr(self.store, "outbox_next_at", None)
            found = await self._db(next_at) if next_at is not None else None
            if found is None:
                return POLL
            due = float(found)
            if due - now <= CLOCK_BACK:
                return min(POLL, max(0.01, due - now))
            # No retry is ever set this far ahead: the clock went back since it was set.
            rows = await self._db(self.store.outbox_next, due, 1)
            if not rows:
                return POLL
        row_id, uuid, text, attempts = rows[0]
        await self.deliver(row_id, uuid, text, attempts)
        return 0.0

    async def deliver(self, row_id: int, uuid: str, text: str, attempts: int) -> str:
        """One POST of one row, and its outcome stored; returns the verdict."""
        headers = [("Content-Type", "application/json"), ("Idempotency-Key", uuid),
                   ("User-Agent", USER_AGENT)]
        if self._token:
            headers.append(("Authorization", f"Bearer {self._token}"))
        if self.ssl_context is None and self.url.lower().startswith("https:"):
            # Once, and off the loop: reading the system's CA store takes milliseconds.
            self.ssl_context = await self._db(ssl.create_default_context)
        self.attempts += 1
        self.in_flight = uuid
        try:
            answer = await post_json(self.url, text.encode(), headers, timeout=self.timeout,
                                     ssl_context=self.ssl_context, now=self.clock())
        finally:
            self.in_flight = None
        now = self.clock()
        outcome = verdict(answer)
        if outcome == "done":
            await self._db(self.store.outbox_done, row_id)
            self.delivered += 1
            if self.failures:
                log.info("push: %s answers again after %d failed attempt(s)",
                         public_url(self.url), self.failures)
            self.failures = 0
            self.paused_until = None
            self.last_success_at = now
            self.depth = max(0, self.depth - 1)
            log.debug("push: call %s delivered (%s)", uuid, answer.reason)
        elif outcome == "drop":
            await self._db(self.store.outbox_done, row_id)
            self.dropped += 1
            self.depth = max(0, self.depth - 1)
            self._failed(answer.reason, now)
            log.warning("push: call %s dropped: %s refused it with %s (not retried)",
                        uuid, public_url(self.url), answer.reason)
        else:
            self.failures += 1
            delay = max(backoff(self.failures, self.rand), backoff(attempts + 1, self.rand))
            if answer.retry_after is not None:
                delay = max(delay, answer.retry_after)
            self.paused_until = now + delay
            await self._db(self.store.outbox_retry, row_id, answer.reason, now + delay)
            self._failed(answer.reason, now)
            log.warning("push: call %s to %s failed (%s); retry in %.0f s",
                        uuid, public_url(self.url), answer.reason, delay)
        return outcome

    async def _trim(self) -> None:
        """Keep at most max_queue rows: the oldest go first, counted and logged."""
        depth = await self._db(self.store.outbox_depth)
        if depth > self.max_queue:
            excess = depth - self.max_queue
            await self._db(self.store.outbox_drop_oldest, excess)
            self.overflowed += excess
            depth = self.max_queue
            log.warning("push: queue over %d records: the %d oldest dropped (%d in all)",
                        self.max_queue, excess, self.overflowed)
        self.depth = depth

    def _failed(self, reason: str, now: float | None = None) -> None:
        self.last_error = reason
        self.last_error_at = self.clock() if now is None else now

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one store call in the pusher's store thread (fsyncs stay off the loop)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """For `branchline status`: never the token, never credentials in the url."""
        now = self.clock()
        return {
            "url": public_url(self.url),
            "queue": self.depth,
            "max_queue": self.max_queue,
            "in_flight": self.in_flight is not None,
            "delivered": self.delivered,
            "dropped": self.dropped,
            "overflowed": self.overflowed,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "last_error_at": _iso(self.last_error_at),
            "last_success_at": _iso(self.last_success_at),
            "retry_in": round(self.paused_until - now, 1)
            if self.paused_until is not None and self.paused_until > now else None,
        }


def pusher_from_config(config: Any, store: Outbox | None) -> Pusher | None:
    """The pusher for `config.push` (None: push not configured, or no call-record store)."""
    settings = getattr(config, "push", None)
    if settings is None or store is None or not getattr(settings, "url", None):
        return None
    return Pusher(store, settings.url, token=getattr(settings, "token", None) or None,
                  timeout=float(getattr(settings, "timeout", DEFAULT_TIMEOUT)),
                  max_queue=int(getattr(settings, "max_queue", DEFAULT_MAX_QUEUE)))


def start_push(config: Any, recorder: Any, loop: asyncio.AbstractEventLoop) -> Pusher | None:
    """The daemon's pusher, running, woken by every commit of the call records' writer
    (`CallRecorder.on_committed`, kept chained); None without push or call records."""
    store = getattr(recorder, "store", None)
    pusher = pusher_from_config(config, store)
    if pusher is None:
        if getattr(config, "push", None) is not None:
            log.warning("push: configured, but there is no call-record store to drain")
        return None
    previous = getattr(recorder, "on_committed", None)
    # After a reload the hook is an earlier pusher's: chain what was there before it.
    previous = getattr(previous, "before_push", previous)

    def committed(batch: Any) -> None:
        if previous is not None:
            previous(batch)
        pusher.wake()

    committed.before_push = previous  # type: ignore[attr-defined]
    recorder.on_committed = committed
    pusher.start(loop)
    log.info("push: finished calls go to %s", public_url(pusher.url))
    return pusher


__all__ = ["Answer", "Outbox", "Pusher", "backoff", "parse_retry_after", "post_json",
           "public_url", "pusher_from_config", "start_push", "verdict"]
