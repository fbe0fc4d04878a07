"""Call records (issue 9, lane R): one record per call for every way a call ends, read back
through the control socket and `branchline calls`, and none lost to kill -9.

The real daemon with simulated handsets; sipp plays the trunks (answering with RTP echo,
answering with no RTP, busy, 503) and calls in. Each ending path must give exactly one
record with the right outcome, cause, ports and times:

| call | outcome | cause |
|---|---|---|
| line 1 -> trunk, answered, the handset hangs up | answered | local-hangup |
| line 1 -> busy trunk | busy | rejected 486 |
| sipp calls line 1 and gives up (CANCEL) | cancelled | remote-cancel 487 |
| line 1 dials a number no route takes | failed | no-route 404 |
| line 1 -> [trunk:first (503), trunk:pbx] | answered, route trunk:pbx | local-hangup |
| line 1 -> trunk that sends no RTP | answered | media-timeout |
| line 1 -> line 2, one record with both ports | answered | local-hangup |
| the daemon stops mid-call | answered | shutdown |
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.store.call_writer import CallRecorder
from gateway.store.calls import CallStore

from .conftest import require_binary
from .gateway_proc import GatewayProcess
from .peers.ports import free_port
from .peers.sipp import Sipp, sipp_binary

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def config(tmp: Path, sip_port: int, trunks: dict[str, int], *, line1: str = "") -> str:
    trunk_text = "".join(f"""
  - name: {name}
    registrar: 127.0.0.1:{port}
    expires: 60
    keepalive: none
    failover_timeout: 1.5""" for name, port in trunks.items())
    return f"""
gateway:
  name: records-gw
  country: US
  state_dir: {tmp / 'state'}
sip:
  listen: 127.0.0.1:{sip_port}
  rtp_ports: 35000-35999
  codecs: [PCMU]
  media_timeout: 2
trunks:{trunk_text}
lines:
  - name: "1"
    backend: sim
    number: "101"
{line1}  - name: "2"
    backend: sim
    number: "102"
dialplan:
  digit_map: "(1xx|[2-9]xx)"
  routes:
    - pattern: "1\\\\d\\\\d"
      to: local
    - pattern: "9\\\\d\\\\d"
      to: [trunk:first, trunk:pbx]
    - pattern: "8\\\\d\\\\d"
      to: trunk:silent
    - pattern: "7\\\\d\\\\d"
      to: trunk:busy
    - pattern: "3\\\\d\\\\d"
      to: trunk:pbx
"""


class Rig:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.sipps: list[Sipp] = []
        self.sip_port = free_port()
        self.caller_port = free_port()  # the "in" trunk: calls from sipp come from here

    def trunk(self, scenario: str, *, rtp_echo: bool = True) -> Sipp:
        peer = Sipp(scenario, sip_port=free_port(), media_port=free_port(), tmpdir=self.tmp,
                    rtp_echo=rtp_echo, calls=None, timeout_s=120).start()
        self.sipps.append(peer)
        return peer

    def caller(self, scenario: str, **kwargs: Any) -> Sipp:
        kwargs.setdefault("service", "101")
        peer = Sipp(scenario, sip_port=self.caller_port, media_port=free_port(),
                    tmpdir=self.tmp, remote=f"127.0.0.1:{self.sip_port}", **kwargs).start()
        self.sipps.append(peer)
        return peer

    def close(self) -> None:
        for peer in self.sipps:
            peer.stop()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    require_binary("sipp", sipp_binary())
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.close()


def records(gw: GatewayProcess, **args: Any) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = gw.request("calls", limit=1000, **args)["calls"]
    return result


def next_record(gw: GatewayProcess, seen: int) -> dict[str, Any]:
    """Exactly one more record than `seen`, and it is returned."""
    gw.wait_until(f"record {seen + 1}", lambda: len(records(gw)) > seen, timeout=10)
    time.sleep(0.3)  # a second record for the same call would show up by now
    recs = records(gw)
    assert len(recs) == seen + 1, json.dumps(recs[seen:], indent=1)
    return recs[-1]


def dial(gw: GatewayProcess, digits: str, line: str = "1") -> None:
    gw.phone(line, "offhook")
    gw.wait_hears(line, "dial")
    gw.phone(line, "dial", digits=digits)


def wait_state(gw: GatewayProcess, state: str, line: str = "1") -> None:
    gw.wait_until(f"line {line} {state}", lambda: gw.line(line)["state"] == state, timeout=10)


def hang_up(gw: GatewayProcess, line: str = "1") -> None:
    gw.phone(line, "onhook")
    wait_state(gw, "idle", line)


def ts(iso: str | None) -> float:
    assert iso is not None
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def assert_times(rec: dict[str, Any], *, answered: bool, before: float, after: float) -> None:
    start, end = ts(rec["start"]), ts(rec["end"])
    assert before - 1 <= start <= end <= after + 1, (rec["start"], rec["end"], before, after)
    if answered:
        answer = ts(rec["answer"])
        assert start <= answer <= end
        assert rec["talk_seconds"] == pytest.approx(end - answer, abs=0.01)
    else:
        assert rec["answer"] is None and rec["talk_seconds"] == 0


def test_every_way_a_call_ends_writes_one_record(rig: Rig) -> None:
    pbx = rig.trunk("uas")
    busy = rig.trunk("uas_busy.xml")
    silent = rig.trunk("uas", rtp_echo=False)
    first = rig.trunk("uas_unavailable.xml")
    gw = GatewayProcess(rig.tmp, config(rig.tmp, rig.sip_port, {
        "pbx": pbx.sip_port, "busy": busy.sip_port, "silent": silent.sip_port,
        "first": first.sip_port, "in": rig.caller_port}))
    gw.start()
    try:
        # 1. Answered, the handset hangs up; RTP echoed, so media figures and a MOS.
        t0 = time.time()
        dial(gw, "301")
        wait_state(gw, "connected")
        time.sleep(1.5)
        hang_up(gw)
        rec = next_record(gw, 0)
        assert (rec["outcome"], rec["cause"], rec["direction"]) == (
            "answered", "local-hangup", "out")
        assert (rec["port_a"], rec["port_a_kind"], rec["port_b"], rec["port_b_kind"]) == (
            "1", "fxs", "pbx", "trunk")
        assert rec["route"] == "trunk:pbx" and rec["codec"] == "PCMU"
        assert rec["packets_received"] > 20 and rec["mos"] is not None
        assert 1.0 <= rec["mos"] <= 4.5 and rec["rtp_loss_pct"] is not None
        assert rec["talk_seconds"] >= 1.0
        assert_times(rec, answered=True, before=t0, after=time.time())

        # 2. Busy.
        t0 = time.time()
        dial(gw, "701")
        gw.wait_hears("1", "busy")
        rec = next_record(gw, 1)
        assert (rec["outcome"], rec["cause"], rec["sip_status"]) == ("busy", "rejected", 486)
        assert rec["route"] == "trunk:busy" and rec["mos"] is None
        assert_times(rec, answered=False, before=t0, after=time.time())
        hang_up(gw)

        # 3. The caller gives up while line 1 rings.
        t0 = time.time()
        peer = rig.caller("uac_cancel.xml")
        assert peer.wait(15) == 0, peer.report()
        rec = next_record(gw, 2)
        assert (rec["outcome"], rec["cause"], rec["sip_status"], rec["direction"]) == (
            "cancelled", "remote-cancel", 487, "in")
        assert (rec["port_a_kind"], rec["port_b"]) == ("sip", "1")
        assert rec["ring_seconds"] >= 1.5  # it rang 2 s
        assert_times(rec, answered=False, before=t0, after=time.time())

        # 4. No route takes 2xx.
        dial(gw, "222")
        rec = next_record(gw, 3)
        assert (rec["outcome"], rec["cause"], rec["sip_status"], rec["port_a"]) == (
            "failed", "no-route", 404, "1")
        hang_up(gw)

        # 5. Failover: the first trunk answers 503, the second takes the call.
        dial(gw, "901")
        wait_state(gw, "connected")
        hang_up(gw)
        rec = next_record(gw, 4)  # one record for the call, not one per target
        assert (rec["outcome"], rec["route"], rec["port_b"]) == ("answered", "trunk:pbx", "pbx")
        assert rec["attempts"][0] == {"target": "trunk:first", "result": "rejected",
                                      "status": 503}
        assert rec["attempts"][-1]["target"] == "trunk:pbx"
        assert len(first.received("INVITE")) == 1

        # 6. Media timeout: answered, no RTP from the far end, ended after 2 s.
        dial(gw, "801")
        wait_state(gw, "connected")
        gw.wait_hears("1", "reorder", timeout=10)
        rec = next_record(gw, 5)
        assert (rec["outcome"], rec["cause"], rec["route"]) == (
            "answered", "media-timeout", "trunk:silent")
        assert 1.5 <= rec["talk_seconds"] < 5
        assert rec["mos"] is None  # no media flowed
        hang_up(gw)

        # 7. Line 1 calls line 2: two legs, one record with both ports.
        t0 = time.time()
        dial(gw, "102")
        gw.wait_until("line 2 ringing", lambda: gw.line("2")["ringing"])
        gw.phone("2", "offhook")
        wait_state(gw, "connected")
        time.sleep(0.5)
        hang_up(gw)
        rec = next_record(gw, 6)
        assert (rec["outcome"], rec["cause"], rec["direction"]) == (
            "answered", "local-hangup", "local")
        assert (rec["port_a"], rec["port_a_kind"], rec["port_b"], rec["port_b_kind"]) == (
            "1", "fxs", "2", "fxs")
        assert_times(rec, answered=True, before=t0, after=time.time())
        hang_up(gw, "2")

        # Filters and the CLI's exports, on the running daemon.
        assert [r["cause"] for r in records(gw, outcome="busy")] == ["rejected"]
        assert len(records(gw, line="2")) == 1
        assert len(records(gw, since="-1h")) == 7
        assert records(gw, until="2000-01-01T00:00Z") == []
        cli = [sys.executable, "-m", "gateway.cli", "calls", "--control", gw.control_path]
        out = subprocess.run([*cli, "--csv"], capture_output=True, text=True, check=True)
        rows = list(csv.DictReader(io.StringIO(out.stdout)))
        assert [r["outcome"] for r in rows] == [
            "answered", "busy", "cancelled", "failed", "answered", "answered", "answered"]
        assert rows[4]["attempts"].startswith("trunk:first rejected 503; trunk:pbx")
        out = subprocess.run([*cli, "--json", "--line", "2"], capture_output=True, text=True,
                             check=True)
        assert [r["port_b"] for r in json.loads(out.stdout)] == ["2"]
        out = subprocess.run([*cli, "--outcome", "busy"], capture_output=True, text=True,
                             check=True)
        assert "busy" in out.stdout and "rejected 486 Busy Here" in out.stdout

        status = gw.status()["call_records"]
        assert status["by_outcome"] == {"answered": 4, "busy": 1, "cancelled": 1,
                                        "failed": 1, "no-answer": 0, "rejected": 0}
        assert (status["committed"], status["pending"], status["last_error"]) == (7, 0, None)

        # 8. The daemon stops in the middle of a call.
        dial(gw, "302")
        wait_state(gw, "connected")
        assert gw.stop() == 0
        store = CallStore(rig.tmp / "state" / "calls.db")
        recs = store.query(limit=None)
        assert len(recs) == 8
        assert (recs[-1].outcome, recs[-1].cause, recs[-1].port_a) == (
            "answered", "shutdown", "1")
        assert len({r.uuid for r in recs}) == 8
        assert not (rig.tmp / "state" / "calls.journal").read_bytes()
    finally:
        gw.stop()


BURST = 50


def finished_call_ids(peer: Sipp) -> set[str]:
    """Call-IDs of the calls sipp saw finish: the gateway's BYE arrived."""
    done = set()
    for msg in peer.received("BYE "):
        m = re.search(r"^Call-ID:\s*(\S+)", msg, re.M | re.I)
        if m:
            done.add(m.group(1))
    return done


def test_kill_9_during_a_burst_loses_no_finished_call(rig: Rig) -> None:
    gw = GatewayProcess(rig.tmp, config(rig.tmp, rig.sip_port, {
        "in": rig.caller_port, "pbx": free_port(), "busy": free_port(), "silent": free_port(),
        "first": free_port()},
                                        line1="    options: {auto_answer_ms: 30, auto_hangup_ms: 150}\n"))
    gw.start()
    try:
        # sipp calls line 1 50 times, one call at a time: the handset answers after 30 ms
        # and hangs up 150 ms later (the gateway's BYE ends each call for sipp).
        peer = rig.caller("uac_gsm_remote_bye.xml", calls=BURST, timeout_s=60,
                          extra_args=("-r", "10"))
        # Kill it while calls are still being made, as soon as 40 have finished.
        deadline = time.monotonic() + 60
        while len(finished_call_ids(peer)) < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gw.pid is not None
        os.kill(gw.pid, signal.SIGKILL)
        gw.stop()
        peer.stop()
        finished = finished_call_ids(peer)
        assert len(finished) >= 40, peer.report()
        journal = rig.tmp / "state" / "calls.journal"
        store = CallStore(rig.tmp / "state" / "calls.db")
        committed = {r.call_id for r in store.query(limit=None)}
        left = journal.read_bytes().count(b"\n")
        store.close()
        print(f"\nkill -9 after {len(finished)} finished calls: {len(committed)} committed, "
              f"{left} only in the journal")

        # The next start replays the journal; every finished call has its record, once.
        gw.start()
        recs = records(gw)
        ids = [r["call_id"] for r in recs]
        assert len(ids) == len(set(ids))
        assert finished <= set(ids), sorted(finished - set(ids))
        assert all(r["outcome"] == "answered" for r in recs if r["call_id"] in finished)
        if left:
            assert "recovered from" in gw.log_text()
    finally:
        gw.stop()


def test_recorder_replay_is_idempotent(tmp_path: Path) -> None:
    """A journal replayed twice (a crash during replay) stores each record once."""
    from tests.unit.test_call_store import rec

    journal = tmp_path / "j"
    journal.write_bytes(b"".join(rec(i).to_json().encode() + b"\n" for i in range(5)))
    store = CallStore(tmp_path / "c.db")
    store.replay_journal(journal)
    journal.write_bytes(b"".join(rec(i).to_json().encode() + b"\n" for i in range(5)))
    recorder = CallRecorder(store, journal)
    recorder.start()
    assert store.count() == 5 and recorder.replayed == 0
    recorder.close()
