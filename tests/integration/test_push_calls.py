"""The call push end to end: the real daemon, simulated lines calling each other, and a
local HTTP receiver (tests/integration/push_receiver.py) that is down, then up.

What a deduplicating receiver keeps is checked against what the daemon stored
(state_dir/calls.db, read with sqlite3): every finished call's record arrives, each uuid is
accepted once, and the one request per record that a receiver answering 2xx needs is all
that is sent once the endpoint is up. Must-hold 5: a burst of 50 calls with `kill -9` of the
daemon in the middle loses no finished call.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .gateway_proc import GatewayProcess
from .peers.ports import free_port, release
from .push_receiver import Receiver

pytestmark = pytest.mark.slow

TOKEN = "push-token-never-logged-4711"
PAIRS = 4  # lines 1..8: 1 calls 2, 3 calls 4, ...


def config(tmp: Path, sip_port: int, url: str) -> str:
    lines = "".join(f'  - name: "{n}"\n    backend: sim\n    number: "{100 + n}"\n'
                    for n in range(1, 2 * PAIRS + 1))
    return f"""
gateway:
  name: push-gw
  country: US
  state_dir: {tmp / 'state'}
sip:
  listen: 127.0.0.1:{sip_port}
  rtp_ports: 31000-31999
trunks: []
lines:
{lines}dialplan:
  digit_map: "(1xx)"
  routes:
    - pattern: '1\\d\\d'
      to: local
push:
  url: {url}
  token: {TOKEN}
  timeout: 2.0
  max_queue: 1000
"""


def stored_uuids(gw: GatewayProcess) -> set[str]:
    db = sqlite3.connect(f"file:{gw.dir.parent / 'state' / 'calls.db'}?mode=ro", uri=True)
    try:
        return {row[0] for row in db.execute("SELECT uuid FROM calls")}
    finally:
        db.close()


def line_state(gw: GatewayProcess, line: str) -> dict[str, Any]:
    return dict(gw.phone(line, "state"))


def wait(what: str, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def one_call(gw: GatewayProcess, caller: str, callee: str, answer: bool) -> str:
    """Caller dials callee; answered (then both hang up) or cancelled while ringing.
    Returns the call's Call-ID once both lines are idle again: the call is finished."""
    gw.phone(caller, "offhook")
    wait("dial tone", lambda: line_state(gw, caller)["state"] == "dial-tone")
    gw.phone(caller, "dial", digits=str(100 + int(callee)))
    wait(f"line {callee} ringing", lambda: line_state(gw, callee)["ringing"])
    call = line_state(gw, caller)["call"]
    call_id = str(call["call_id"])
    if answer:
        gw.phone(callee, "offhook")
        wait("connected", lambda: line_state(gw, caller)["state"] == "connected")
        gw.phone(caller, "onhook")
        wait(f"line {callee} hears the end",
             lambda: line_state(gw, callee)["state"] != "connected")
        gw.phone(callee, "onhook")
    else:
        gw.phone(caller, "onhook")
    wait("both idle", lambda: line_state(gw, caller)["state"] == "idle"
         and line_state(gw, callee)["state"] == "idle" and not line_state(gw, callee)["ringing"])
    return call_id


class Burst:
    """PAIRS threads making calls until `total` are finished or the daemon goes away."""

    def __init__(self, gw: GatewayProcess, total: int) -> None:
        self.gw = gw
        self.total = total
        self.started = 0
        self.finished: list[str] = []  # Call-IDs of calls seen through to both lines idle
        self.lock = threading.Lock()
        self.errors: list[BaseException] = []

    def _take(self) -> int | None:
        with self.lock:
            if self.started >= self.total:
                return None
            self.started += 1
            return self.started

    def _pair(self, pair: int) -> None:
        caller, callee = str(2 * pair + 1), str(2 * pair + 2)
        while (n := self._take()) is not None:
            try:
                call_id = one_call(self.gw, caller, callee, answer=n % 2 == 0)
            except BaseException as exc:  # noqa: BLE001  the daemon was killed mid-call
                self.errors.append(exc)
                return
            with self.lock:
                self.finished.append(call_id)

    def run(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._pair, args=(p,), daemon=True)
                   for p in range(PAIRS)]
        for t in threads:
            t.start()
        return threads


def calls_in(bodies: dict[str, Any]) -> set[str]:
    return {str(b["call_id"]) for b in bodies.values()}


def test_receiver_down_then_up_gets_every_call_once(tmp_path: Path) -> None:
    sip_port = free_port()
    receiver = Receiver()  # not started: connection refused
    gw = GatewayProcess(tmp_path, config(tmp_path, sip_port, receiver.url))
    gw.start()
    try:
        burst = Burst(gw, 8)
        for t in burst.run():
            t.join(120)
        assert not burst.errors, burst.errors
        assert len(burst.finished) == 8
        wait("all 8 records queued", lambda: (gw.status()["push"] or {}).get("queue") == 8,
             timeout=15)
        push = gw.status()["push"]
        assert push["delivered"] == 0 and "ConnectionRefused" in str(push["last_error"]), push
        assert push["url"] == receiver.url
        receiver.start()
        # The backoff after the failures so far is at most a few tens of seconds.
        assert receiver.wait_for(8, timeout=120), gw.status()["push"]
        time.sleep(1.0)  # nothing more should come
        push = gw.status()["push"]
    finally:
        assert gw.stop() == 0, gw.log_text()[-3000:]
        receiver.stop()
        release(sip_port)
    stored = stored_uuids(gw)
    assert len(stored) == 8
    assert set(receiver.accepted()) == stored
    assert all(n == 1 for n in receiver.accepted().values()), receiver.accepted()
    # Once up, one POST per record: no duplicate beyond the refused connections.
    assert len(receiver.requests) == 8 and receiver.keys() == receiver.accepted()
    assert calls_in(receiver.bodies()) == set(burst.finished)
    for r in receiver.requests:
        assert r.headers["authorization"] == f"Bearer {TOKEN}"
        assert r.headers["content-type"] == "application/json"
        assert r.json()["uuid"] == r.key
    assert push["delivered"] == 8 and push["queue"] == 0 and push["last_success_at"], push
    assert TOKEN not in gw.log_text()
    assert TOKEN not in str(push)


@pytest.mark.parametrize("endpoint", ["down", "up"])
def test_burst_of_50_with_kill_9_loses_no_finished_call(tmp_path: Path, endpoint: str) -> None:
    """Must-hold 5: 50 calls, the daemon SIGKILLed mid-burst and restarted; once the
    endpoint is up it has every finished call's record exactly once (by uuid).

    "down": the endpoint is refused until the burst is over (the queue must survive the
    kill). "up": records are being delivered when the kill lands (a POST answered but not
    yet marked done is sent again after the restart, with the same key)."""
    sip_port = free_port()
    receiver = Receiver()
    if endpoint == "up":
        receiver.start()
    gw = GatewayProcess(tmp_path, config(tmp_path, sip_port, receiver.url))
    gw.start()
    try:
        burst = Burst(gw, 50)
        threads = burst.run()
        wait("25 calls finished", lambda: len(burst.finished) >= 25, timeout=180)
        assert gw.pid is not None
        os.kill(gw.pid, signal.SIGKILL)  # calls in progress on every pair
        for t in threads:
            t.join(30)
        killed_at = len(burst.finished)
        gw.stop()
        gw.start()  # same state_dir: the journal is replayed, the outbox is still there
        rest = Burst(gw, 50 - burst.started)
        for t in rest.run():
            t.join(180)
        assert not rest.errors, rest.errors
        finished = set(burst.finished) | set(rest.finished)
        if endpoint == "down":
            assert not receiver.requests
            receiver.start()
        wait("every stored record accepted",
             lambda: set(receiver.accepted()) >= stored_uuids(gw) and bool(receiver.requests),
             timeout=120)
        time.sleep(1.0)
        push = gw.status()["push"]
    finally:
        gw.stop()
        receiver.stop()
        release(sip_port)
    stored = stored_uuids(gw)
    bodies = receiver.bodies()
    assert set(bodies) == stored  # each stored record pushed, nothing else
    assert calls_in(bodies) >= finished, sorted(finished - calls_in(bodies))
    assert len(calls_in(bodies)) == len(bodies)  # one record per call
    accepted = receiver.accepted()
    repeats = sum(n - 1 for n in accepted.values())
    # One POST in flight at a time: at most the one cut by the kill is answered twice.
    assert repeats <= (1 if endpoint == "up" else 0), accepted
    assert push["queue"] == 0, push
    print(f"\n[{endpoint}] kill -9 after {killed_at} finished calls ({burst.started} "
          f"started); {len(finished)} finished in all, {len(stored)} records stored and "
          f"pushed; {repeats} record(s) answered twice across the kill")
