"""The call push (gateway/runtime/push.py) against a real local HTTP server on 127.0.0.1.

The outbox is a small SQLite stand-in with the call-record store's outbox API; the clock
is injected, so the backoff schedule is read off the `next_at` the pusher stores instead of
being waited for.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sqlite3
import ssl
import subprocess
import threading
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gateway.runtime.push import (
    BACKOFF_MAX,
    Answer,
    Pusher,
    backoff,
    parse_retry_after,
    post_json,
    public_url,
    pusher_from_config,
    verdict,
)
from tests.integration.push_receiver import Receiver

TOKEN = "s3cr3t-t0ken-value"


class Outbox:
    """Stand-in for gateway.store.calls.CallStore's outbox (same method names and rows)."""

    def __init__(self) -> None:
        self.db = sqlite3.connect(":memory:", check_same_thread=False)
        self.db.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY, uuid TEXT, body TEXT,"
                        " attempts INTEGER DEFAULT 0, next_at REAL, error TEXT)")
        self.lock = threading.Lock()
        self.retries: list[tuple[str, float, str]] = []  # (uuid, next_at, error)

    def add(self, uuid: str, body: dict[str, Any] | None = None, at: float = 0.0) -> None:
        with self.lock:
            self.db.execute("INSERT INTO outbox (uuid, body, next_at) VALUES (?, ?, ?)",
                            (uuid, json.dumps(body or {"uuid": uuid}), at))

    def outbox_next(self, now: float, limit: int) -> list[tuple[int, str, str, int]]:
        with self.lock:
            return list(self.db.execute(
                "SELECT id, uuid, body, attempts FROM outbox WHERE next_at <= ?"
                " ORDER BY next_at, id LIMIT ?", (now, limit)))

    def outbox_done(self, id: int) -> None:
        with self.lock:
            self.db.execute("DELETE FROM outbox WHERE id = ?", (id,))

    def outbox_retry(self, id: int, error: str, next_at: float) -> None:
        with self.lock:
            self.db.execute("UPDATE outbox SET attempts = attempts + 1, error = ?, next_at = ?"
                            " WHERE id = ?", (error, next_at, id))
            uuid = self.db.execute("SELECT uuid FROM outbox WHERE id = ?", (id,)).fetchone()[0]
        self.retries.append((uuid, next_at, error))

    def outbox_next_at(self) -> float | None:
        with self.lock:
            return self.db.execute("SELECT MIN(next_at) FROM outbox").fetchone()[0]  # type: ignore[no-any-return]

    def outbox_depth(self) -> int:
        with self.lock:
            return int(self.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def outbox_drop_oldest(self, n: int) -> None:
        with self.lock:
            self.db.execute("DELETE FROM outbox WHERE id IN"
                            " (SELECT id FROM outbox ORDER BY id LIMIT ?)", (n,))

    def uuids(self) -> list[str]:
        with self.lock:
            return [r[0] for r in self.db.execute("SELECT uuid FROM outbox ORDER BY id")]


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def receiver() -> Any:
    r = Receiver().start()
    yield r
    r.stop()


def pusher(store: Any, url: str, clock: Clock, **kw: Any) -> Pusher:
    kw.setdefault("rand", lambda: 0.5)  # no jitter: the exact steps
    kw.setdefault("timeout", 2.0)
    return Pusher(store, url, clock=clock, **kw)


async def drain(p: Pusher, clock: Clock, rounds: int = 50) -> None:
    """Run the loop's steps, jumping the clock to the end of each backoff pause."""
    try:
        for _ in range(rounds):
            await p.run_once()
            if p.paused_until is not None and p.paused_until > clock.t:
                break
            if p.depth == 0 and not p.store.outbox_next(clock.t, 1):
                break
    finally:
        await p.stop()


def test_delivers_json_with_headers(receiver: Receiver, caplog: Any) -> None:
    store, clock = Outbox(), Clock()
    record = {"uuid": "7f1c-0001", "outcome": "answered", "ports": {"a": "line1", "b": "line2"}}
    store.add("7f1c-0001", record)
    p = pusher(store, receiver.url.replace("http://", f"http://admin:{TOKEN}@"), clock,
               token=TOKEN)
    caplog.set_level(logging.DEBUG, "gateway.runtime.push")
    asyncio.run(drain(p, clock))
    [req] = receiver.requests
    assert req.path == "/hooks/calls"
    assert req.json() == record
    assert req.headers["content-type"] == "application/json"
    assert req.headers["idempotency-key"] == "7f1c-0001"
    assert req.headers["authorization"] == f"Bearer {TOKEN}"
    assert req.headers["user-agent"].startswith("Branchline")
    assert store.uuids() == []
    status = p.status()
    assert status["delivered"] == 1 and status["queue"] == 0
    assert status["last_success_at"] is not None and status["last_error"] is None
    assert TOKEN not in json.dumps(status) and TOKEN not in repr(p)
    assert status["url"] == f"http://127.0.0.1:{receiver.port}/hooks/calls"
    assert TOKEN not in caplog.text


def test_no_token_no_authorization(receiver: Receiver) -> None:
    store, clock = Outbox(), Clock()
    store.add("u1")
    asyncio.run(drain(pusher(store, receiver.url, clock), clock))
    assert "authorization" not in receiver.requests[0].headers


def test_backoff_schedule_doubles_to_ten_minutes(receiver: Receiver) -> None:
    receiver.default = 503
    store, clock = Outbox(), Clock()
    store.add("u1")
    p = pusher(store, receiver.url, clock)

    async def go() -> list[float]:
        delays = []
        try:
            for _ in range(13):
                before = clock.t
                await p.run_once()
                assert p.paused_until is not None
                delays.append(round(store.retries[-1][1] - before, 3))
                # A wake while paused posts nothing.
                await p.run_once()
                clock.t = p.paused_until
        finally:
            await p.stop()
        return delays

    delays = asyncio.run(go())
    assert delays == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600, 600]
    assert len(receiver.requests) == 13  # one per step, none while paused
    assert {r.key for r in receiver.requests} == {"u1"}
    assert store.uuids() == ["u1"] and store.retries[-1][2] == "HTTP 503 Service Unavailable"
    assert p.status()["last_error"] == "HTTP 503 Service Unavailable"


def test_backoff_jitter_bounds() -> None:
    assert backoff(1, lambda: 0.0) == pytest.approx(0.8)
    assert backoff(1, lambda: 1.0) == pytest.approx(1.2)
    assert backoff(4, lambda: 0.0) == pytest.approx(6.4)
    assert backoff(20, lambda: 1.0) == BACKOFF_MAX  # never past 10 min
    assert backoff(20, lambda: 0.0) == pytest.approx(480.0)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_4xx_is_dropped_and_counted(receiver: Receiver, status: int, caplog: Any) -> None:
    receiver.answers = [(status, {})]
    store, clock = Outbox(), Clock()
    store.add("bad")
    store.add("good")
    p = pusher(store, receiver.url, clock)
    caplog.set_level(logging.WARNING, "gateway.runtime.push")
    asyncio.run(drain(p, clock))
    assert [r.key for r in receiver.requests] == ["bad", "good"]  # never retried
    assert store.uuids() == [] and store.retries == []
    assert p.dropped == 1 and p.delivered == 1
    assert f"HTTP {status}" in caplog.text and "bad" in caplog.text
    assert p.status()["last_error"].startswith(f"HTTP {status}")


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_retryable_status_is_retried_then_delivered(receiver: Receiver, status: int) -> None:
    receiver.answers = [(status, {})]
    store, clock = Outbox(), Clock()
    store.add("u1")
    p = pusher(store, receiver.url, clock)

    async def go() -> None:
        try:
            assert await p.run_once() == 0.0
            assert store.uuids() == ["u1"] and p.paused_until == clock.t + 1.0
            clock.t += 1.0
            await p.run_once()
        finally:
            await p.stop()

    asyncio.run(go())
    assert [r.status for r in receiver.requests] == [status, 200]
    assert receiver.accepted() == {"u1": 1}
    assert store.uuids() == [] and p.failures == 0 and p.paused_until is None


def test_retry_after_seconds_and_date(receiver: Receiver) -> None:
    clock = Clock()
    receiver.answers = [(503, {"Retry-After": "30"}),
                        (429, {"Retry-After": formatdate(clock.t + 120, usegmt=True)})]
    store = Outbox()
    store.add("u1")
    p = pusher(store, receiver.url, clock)

    async def go() -> list[float]:
        waits = []
        try:
            for _ in range(2):
                before = clock.t
                await p.run_once()
                waits.append(store.retries[-1][1] - before)
                clock.t = p.paused_until or clock.t
            await p.run_once()
        finally:
            await p.stop()
        return waits

    waits = asyncio.run(go())
    assert waits[0] == 30.0  # not the 1 s of the first backoff step
    assert waits[1] == pytest.approx(120 - 30, abs=1.0)  # the date, seen 30 s later
    assert receiver.accepted() == {"u1": 1}


def test_parse_retry_after() -> None:
    assert parse_retry_after("5", 0.0) == 5.0
    assert parse_retry_after("999999", 0.0) == 3600.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412480.0 - 60) == 60.0
    assert parse_retry_after("soon", 0.0) is None


def test_verdicts() -> None:
    assert verdict(Answer(204, "")) == "done"
    assert verdict(Answer(None, "refused")) == "retry"
    assert verdict(Answer(301, "")) == "drop"


def test_endpoint_down_then_up(caplog: Any) -> None:
    caplog.set_level(logging.INFO, "gateway.runtime.push")
    receiver = Receiver()  # its port, with nobody listening yet: connection refused
    store, clock = Outbox(), Clock()
    for n in range(3):
        store.add(f"u{n}")
    p = pusher(store, receiver.url, clock)

    async def go() -> None:
        try:
            await p.run_once()
            assert p.status()["last_error"].startswith("ConnectionRefusedError")
            await p.run_once()  # paused: the other two are not tried against a dead endpoint
            assert store.retries == [("u0", clock.t + 1.0, store.retries[0][2])]
            clock.t += 1.0
            await p.run_once()  # still down: the step doubles
            assert p.paused_until == clock.t + 2.0
            receiver.start()
            clock.t += 2.0
            for _ in range(3):
                await p.run_once()
        finally:
            await p.stop()

    try:
        asyncio.run(go())
    finally:
        receiver.stop()
    assert receiver.accepted() == {"u0": 1, "u1": 1, "u2": 1}
    assert store.uuids() == [] and p.delivered == 3
    assert f"127.0.0.1:{receiver.port}/hooks/calls answers again after 2 failed" in caplog.text


def test_timeout_is_retried() -> None:
    with socket.socket() as silent:  # accepts, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        answer = asyncio.run(post_json(url, b"{}", [], timeout=0.3))
    assert answer.status is None and answer.reason == "no answer within 0.3 s"
    assert verdict(answer) == "retry"


def test_max_queue_drops_oldest(receiver: Receiver, caplog: Any) -> None:
    store, clock = Outbox(), Clock()
    for n in range(5):
        store.add(f"u{n}")
    p = pusher(store, receiver.url, clock, max_queue=3)
    caplog.set_level(logging.WARNING, "gateway.runtime.push")
    asyncio.run(drain(p, clock))
    assert sorted(receiver.accepted()) == ["u2", "u3", "u4"]
    assert p.overflowed == 2 and p.status()["overflowed"] == 2
    assert "2 oldest dropped" in caplog.text


@pytest.mark.timeout(30)
def test_wake_posts_a_new_record_at_once(receiver: Receiver) -> None:
    """The real run() loop: idle (polling every 5 s), woken by a record being added."""
    store = Outbox()
    p = Pusher(store, receiver.url, timeout=2.0)

    async def go() -> bool:
        p.start()
        await asyncio.sleep(0.2)  # idle now, nothing queued
        store.add("late", at=0.0)
        p.wake()
        ok = await asyncio.to_thread(receiver.wait_for, 1, 2.5)  # well inside the 5 s poll
        await p.stop()
        return ok

    assert asyncio.run(go())
    assert receiver.accepted() == {"late": 1}


def test_loop_survives_a_failing_store(receiver: Receiver) -> None:
    class Broken(Outbox):
        def outbox_depth(self) -> int:
            raise sqlite3.OperationalError("disk I/O error")

    p = Pusher(Broken(), receiver.url)

    async def go() -> None:
        p.start()
        await asyncio.sleep(0.2)
        assert p._task is not None and not p._task.done()
        await p.stop()

    asyncio.run(go())
    assert p.status()["last_error"] == "internal error: OperationalError"


def test_public_url_hides_credentials() -> None:
    assert public_url("https://u:pw@crm.example.net:8443/h?key=abc") == \
        "https://crm.example.net:8443/h?…"


def test_pusher_from_config() -> None:
    class Settings:
        url = "http://127.0.0.1:9/x"
        token = TOKEN
        timeout = 3.0
        max_queue = 7

    class Cfg:
        push = Settings()

    p = pusher_from_config(Cfg(), Outbox())
    assert p is not None and p.max_queue == 7 and p.timeout == 3.0
    assert pusher_from_config(object(), Outbox()) is None
    assert pusher_from_config(Cfg(), None) is None


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@pytest.fixture
def https_server(tmp_path: Path) -> Any:
    """A TLS http.server with a self-signed certificate for 127.0.0.1: (url, cert, bodies)."""
    cert, key = _self_signed(tmp_path)
    got: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            got.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(201)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}/", cert, got
    server.shutdown()
    server.server_close()


def test_https_verifies_the_certificate(https_server: Any) -> None:
    url, cert, got = https_server
    refused = asyncio.run(post_json(url, b"{}", [], timeout=3.0))  # system CAs only
    trusting = ssl.create_default_context(cafile=str(cert))
    ok = asyncio.run(post_json(url, b'{"a": 1}', [], timeout=3.0, ssl_context=trusting))
    assert refused.status is None and "CERTIFICATE_VERIFY_FAILED" in refused.reason
    assert verdict(refused) == "retry"
    assert ok.status == 201 and got == [b'{"a": 1}']


def test_pusher_over_https_refuses_an_unknown_certificate(https_server: Any) -> None:
    """The daemon's path (no context given): the system CA store, so a self-signed
    endpoint is a retried failure, never a silent delivery."""
    url, _, got = https_server
    store, clock = Outbox(), Clock()
    store.add("u1")
    p = pusher(store, url, clock)

    async def go() -> None:
        try:
            await p.run_once()
        finally:
            await p.stop()

    asyncio.run(go())
    assert got == [] and store.uuids() == ["u1"]
    assert "CERTIFICATE_VERIFY_FAILED" in str(p.status()["last_error"])
    assert isinstance(p.ssl_context, ssl.SSLContext)
    assert p.ssl_context.verify_mode == ssl.CERT_REQUIRED and p.ssl_context.check_hostname


def test_status_text_shows_push() -> None:
    from gateway.cli import format_push

    p = Pusher(Outbox(), f"https://u:{TOKEN}@crm.example.net/h", token=TOKEN)
    p.depth, p.delivered, p.dropped = 12, 40, 1
    p.last_error, p.last_error_at = "HTTP 503 Service Unavailable", 1_800_000_000.0
    text = "\n".join(format_push({"push": p.status()}))
    assert "Push" in text and "https://crm.example.net/h" in text
    assert "12" in text and "40" in text
    assert "HTTP 503 Service Unavailable (2027-01-15T08:00:00Z)" in text
    assert TOKEN not in text
    assert format_push({"push": None}) == []


@pytest.mark.timeout(30)
def test_start_push_hooks_the_recorder_once_across_reloads(receiver: Receiver) -> None:
    """start_push chains the recorder's own hook and, started again (a reload changed
    push:), replaces the earlier pusher's wake instead of piling them up."""
    from gateway.runtime.push import start_push

    class Settings:
        url = receiver.url
        token = None
        timeout = 2.0
        max_queue = 100

    class Cfg:
        push = Settings()

    class Recorder:
        def __init__(self) -> None:
            self.store = Outbox()
            self.seen: list[Any] = []
            self.on_committed = self.seen.append

    rec = Recorder()

    async def go() -> None:
        loop = asyncio.get_running_loop()
        first = start_push(Cfg(), rec, loop)
        assert first is not None
        await first.stop()
        second = start_push(Cfg(), rec, loop)
        assert second is not None
        assert rec.on_committed.before_push == rec.seen.append  # type: ignore[attr-defined]
        rec.store.add("c1")
        await asyncio.to_thread(rec.on_committed, ["batch"])  # from the writer thread
        assert await asyncio.to_thread(receiver.wait_for, 1, 3.0)
        await second.stop()

    asyncio.run(go())
    assert rec.seen == [["batch"]] and receiver.accepted() == {"c1": 1}


def test_with_the_real_call_store(tmp_path: Path, receiver: Receiver) -> None:
    """gateway.store.calls.CallStore's outbox: the record's JSON as stored goes out; a 503
    keeps the row with its next attempt, the 2xx after it removes it."""
    from gateway.store.calls import CallRecord, CallStore

    rec = CallRecord(uuid="0b6f5c1e-real", call_id="local-1", direction="local",
                     port_a="1", port_a_kind="fxs", port_b="2", port_b_kind="fxs",
                     start=1_800_000_000.0, end=1_800_000_010.0, outcome="cancelled",
                     cause="local-cancel", reason="local cancel")
    receiver.answers = [(503, {})]
    clock = Clock(1_800_000_020.0)
    with CallStore(tmp_path / "calls.db", push=True) as store:
        store.record(rec)
        p = pusher(store, receiver.url, clock)

        async def go() -> None:
            try:
                await p.run_once()
                assert store.outbox_depth() == 1
                assert store.outbox_next_at() == clock.t + 1.0
                clock.t += 1.0
                await p.run_once()
            finally:
                await p.stop()

        asyncio.run(go())
        assert store.outbox_depth() == 0
    assert [r.status for r in receiver.requests] == [503, 200]
    assert receiver.requests[-1].json() == rec.to_dict()
    assert receiver.requests[-1].key == "0b6f5c1e-real"


def test_wall_clock_set_back_does_not_stall_the_queue(receiver: Receiver) -> None:
    """A box without RTC boots with an old time and NTP steps it: retry times stored
    before the step lie far ahead, and are not waited for."""
    receiver.answers = [(503, {})]
    store, clock = Outbox(), Clock()
    store.add("u1")
    store.add("u2", at=clock.t + 86400.0)  # stored under a clock a day ahead
    p = pusher(store, receiver.url, clock)

    async def go() -> None:
        try:
            await p.run_once()  # u1 fails: paused 1 s
            clock.t -= 86400.0  # the clock is set back a day
            for _ in range(3):
                await p.run_once()
        finally:
            await p.stop()

    asyncio.run(go())
    assert receiver.accepted() == {"u1": 1, "u2": 1} and store.uuids() == []


def test_answered_but_not_marked_done_is_sent_again_with_the_same_key(
        receiver: Receiver) -> None:
    """At least once: the box dies between the endpoint's 2xx and the outbox update (here
    the update fails); the next pusher sends the record again under the same key."""
    class DiesOnDone(Outbox):
        def outbox_done(self, id: int) -> None:
            raise sqlite3.OperationalError("process killed")

    store, clock = DiesOnDone(), Clock()
    store.add("u1")

    async def first() -> None:
        p = pusher(store, receiver.url, clock)
        try:
            with pytest.raises(sqlite3.OperationalError):
                await p.run_once()
        finally:
            await p.stop()

    asyncio.run(first())
    assert store.uuids() == ["u1"]
    after_restart = Outbox()
    after_restart.db = store.db  # the same file, read by the restarted daemon
    asyncio.run(drain(pusher(after_restart, receiver.url, clock), clock))
    assert receiver.keys() == {"u1": 2}  # sent twice, one key: the receiver counts it once
    assert len(set(r.body for r in receiver.requests)) == 1
    assert after_restart.uuids() == []
