"""The call-record store and its writer: schema, WAL, retention, queries, export, outbox,
the kill -9 journal."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.runtime import call_end
from gateway.runtime.call_records import outcome_for
from gateway.store.call_writer import CallRecorder
from gateway.store.calls import (
    CSV_FIELDS,
    SCHEMA_VERSION,
    CallRecord,
    CallStore,
    csv_row,
    parse_time,
)

T0 = datetime(2026, 11, 30, tzinfo=UTC).timestamp()


def rec(n: int, *, start: float = T0, outcome: str = "answered", port_a: str = "line1",
        port_b: str = "main", answer: float | None = 1.0) -> CallRecord:
    return CallRecord(
        uuid=f"uuid-{n}", call_id=f"call-{n}", direction="out", port_a=port_a,
        port_a_kind="fxs", port_b=port_b, port_b_kind="trunk", start=start + n,
        end=start + n + 30.0, answer=None if answer is None else start + n + answer,
        outcome=outcome, cause="remote-bye", reason="remote BYE", sip_status=None,
        route="trunk:main", target="sip:100@pbx", codec="PCMA",
        attempts=({"target": "trunk:main", "result": "placed", "status": None},),
        rtp_loss_pct=0.5, jitter_ms=3.2, mos=4.3, r_factor=90.0)


def test_schema_version_and_wal(tmp_path: Path) -> None:
    store = CallStore(tmp_path / "calls.db")
    store.close()
    db = sqlite3.connect(tmp_path / "calls.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"calls", "outbox"} <= tables
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(sqlite3.DatabaseError, match="newer"):
        CallStore(tmp_path / "calls.db")


def test_synchronous_full(tmp_path: Path) -> None:
    store = CallStore(tmp_path / "calls.db")
    assert store._conn().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()


def test_record_round_trip_and_json(tmp_path: Path) -> None:
    store = CallStore(tmp_path / "calls.db")
    r = rec(1)
    assert store.record(r)
    assert not store.record(r)  # same uuid: stored once
    (back,) = store.query()
    assert back == r
    d = json.loads(r.to_json())
    assert d["start"] == "2026-11-30T00:00:01.000Z"
    assert d["talk_seconds"] == 29.0 and d["ring_seconds"] == 1.0
    assert d["outcome"] == "answered" and d["mos"] == 4.3
    assert d["attempts"] == [{"target": "trunk:main", "result": "placed", "status": None}]


def test_outcome_checked() -> None:
    with pytest.raises(ValueError, match="outcome"):
        rec(1, outcome="hung-up")


def test_outbox_in_same_transaction(tmp_path: Path) -> None:
    store = CallStore(tmp_path / "calls.db", push=True)
    store.record_many([rec(1), rec(2)])
    assert store.outbox_depth() == 2
    rows = store.outbox_next(T0 + 1000, 10)
    assert [(u, a) for _, u, _, a in rows] == [("uuid-1", 0), ("uuid-2", 0)]
    assert json.loads(rows[0][2])["uuid"] == "uuid-1"
    store.outbox_retry(rows[0][0], "503", T0 + 5000)
    assert [u for _, u, _, _ in store.outbox_next(T0 + 1000, 10)] == ["uuid-2"]
    assert store.outbox_next(T0 + 5000, 10)[0][3] == 1
    store.outbox_done(rows[1][0])
    assert store.outbox_depth() == 1
    store.record(rec(3))
    store.record(rec(4))
    assert store.outbox_drop_oldest(2) == 2
    assert [u for _, u, _, _ in store.outbox_next(T0 + 9999, 10)] == ["uuid-4"]
    # A failing insert rolls back the outbox row too: nothing half stored.
    bad = rec(5)
    object.__setattr__(bad, "start", "not a number")  # type: ignore[misc]
    with pytest.raises(Exception):  # noqa: B017  sqlite or json, either way rolled back
        store.record_many([rec(6), bad])
    assert store.outbox_depth() == 1 and store.count() == 4


def test_no_outbox_without_push(tmp_path: Path) -> None:
    store = CallStore(tmp_path / "calls.db")
    store.record(rec(1))
    assert store.outbox_depth() == 0


def test_retention_by_age(tmp_path: Path) -> None:
    store = CallStore(tmp_path / "calls.db", max_age_days=90)
    old = [rec(i, start=T0 - 100 * 86400) for i in range(3)]
    new = [rec(10 + i) for i in range(2)]
    store.record_many(old + new)
    assert store.prune(T0 + 3600) == 3
    assert [r.uuid for r in store.query()] == ["uuid-10", "uuid-11"]


def test_retention_by_rows(tmp_path: Path) -> None:
    store = CallStore(tmp_path / "calls.db", max_rows=100)
    store.record_many([rec(i) for i in range(130)])
    assert store.prune(T0 + 3600) == 30
    kept = store.query(limit=None)
    assert len(kept) == 100 and kept[0].uuid == "uuid-30"


def test_query_filters(tmp_path: Path) -> None:
    store = CallStore(tmp_path / "calls.db")
    store.record_many([
        rec(1, port_a="line1"), rec(2, port_a="line2", outcome="busy", answer=None),
        rec(3, port_a="line1", outcome="busy", answer=None), rec(4, port_a="sip",
                                                                 port_b="line2")])
    assert [r.uuid for r in store.query(line="line2")] == ["uuid-2", "uuid-4"]
    assert [r.uuid for r in store.query(outcome="busy")] == ["uuid-2", "uuid-3"]
    assert [r.uuid for r in store.query(since=T0 + 2, until=T0 + 4)] == ["uuid-2", "uuid-3"]
    assert [r.uuid for r in store.query(limit=2)] == ["uuid-3", "uuid-4"]  # newest two
    assert [r.uuid for r in store.query(line="line1", outcome="busy")] == ["uuid-3"]
    with pytest.raises(ValueError, match="outcome"):
        store.query(outcome="nope")


def test_parse_time() -> None:
    assert parse_time("-1h", 10_000.0) == 6400.0
    assert parse_time("-2d", 200_000.0) == 200_000.0 - 172_800
    assert parse_time("2026-11-30T00:00:00Z", 0) == T0
    assert parse_time("2026-11-30T00:00", 0) == T0  # naive is UTC
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("yesterday", 0)


def test_csv_export() -> None:
    d = rec(1).to_dict()
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(CSV_FIELDS)
    w.writerow(csv_row(d))
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert rows[0]["port_a"] == "line1" and rows[0]["outcome"] == "answered"
    assert rows[0]["attempts"] == "trunk:main placed"
    assert rows[0]["end"] == "2026-11-30T00:00:31.000Z"
    assert rows[0]["sip_status"] == ""


def test_outcomes_from_causes() -> None:
    assert outcome_for(call_end.local_hangup(), True) == "answered"
    assert outcome_for(call_end.shutdown(), True) == "answered"
    assert outcome_for(call_end.rejected(486), False) == "busy"
    assert outcome_for(call_end.rejected(480), False) == "no-answer"
    assert outcome_for(call_end.rejected(404), False) == "rejected"
    assert outcome_for(call_end.rejected(503), False) == "failed"
    assert outcome_for(call_end.local_cancel(), False) == "cancelled"
    assert outcome_for(call_end.from_ua("cancelled", 487, "in"), False) == "cancelled"
    assert outcome_for(call_end.from_ua("timeout", None, "out"), False) == "failed"
    assert outcome_for(call_end.shutdown(), False) == "cancelled"
    assert outcome_for(call_end.media_timeout(), False) == "failed"


def test_recorder_commits_and_empties_journal(tmp_path: Path) -> None:
    store = CallStore(tmp_path / "calls.db")
    recorder = CallRecorder(store, tmp_path / "calls.journal")
    recorder.start()
    for i in range(20):
        recorder.submit(rec(i))
    assert recorder.flush(10)
    assert store.count() == 20
    assert (tmp_path / "calls.journal").stat().st_size == 0
    recorder.close()


def test_recorder_replays_journal(tmp_path: Path) -> None:
    journal = tmp_path / "calls.journal"
    store = CallStore(tmp_path / "calls.db")
    store.record(rec(1))  # committed just before the crash, still in the journal
    journal.write_bytes(b"".join(r.to_json().encode() + b"\n" for r in (rec(1), rec(2)))
                        + b'{"torn')
    recorder = CallRecorder(store, journal)
    recorder.start()
    assert recorder.replayed == 1
    assert [r.uuid for r in store.query()] == ["uuid-1", "uuid-2"]
    assert journal.stat().st_size == 0
    recorder.close()


def test_recorder_retention_at_start(tmp_path: Path) -> None:
    store = CallStore(tmp_path / "calls.db", max_rows=100)
    store.record_many([rec(i) for i in range(150)])
    recorder = CallRecorder(store, tmp_path / "j", wallclock=lambda: T0 + 3600)
    recorder.start()
    assert store.count() == 100 and recorder.pruned == 50
    recorder.close()


_CHILD = """
import sys, time
sys.path.insert(0, {root!r})
from tests.unit.test_call_store import rec
from gateway.store.calls import CallStore
from gateway.store.call_writer import CallRecorder
import gateway.store.calls as calls

store = CallStore({db!r})
slow = store.record_many
def record_many(recs, bodies=None):  # an SD card that takes 200 ms per commit
    time.sleep(0.2)
    return slow(recs, bodies)
store.record_many = record_many
recorder = CallRecorder(store, {journal!r})
recorder.start()
for i in range(300):
    recorder.submit(rec(i))
    print(i, flush=True)  # acknowledged: the call would now be forgotten
    time.sleep(0.005)
time.sleep(60)
"""


def test_kill_9_loses_no_acknowledged_record(tmp_path: Path) -> None:
    db, journal = tmp_path / "calls.db", tmp_path / "calls.journal"
    root = str(Path(__file__).resolve().parents[2])
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD.format(root=root, db=str(db), journal=str(journal))],
        stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    acked = -1
    deadline = time.monotonic() + 30
    while acked < 150 and time.monotonic() < deadline:
        acked = int(child.stdout.readline())
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    acked = max([acked, *(int(x) for x in child.stdout.read().split())])
    store = CallStore(db)
    before = store.count()
    assert 0 < before < acked + 1  # some committed, the kill caught others in flight
    recorder = CallRecorder(store, journal)
    recorder.start()
    uuids = {r.uuid for r in store.query(limit=None)}
    assert {f"uuid-{i}" for i in range(acked + 1)} <= uuids
    assert recorder.replayed == len(uuids) - before
    recorder.close()


class _FakeClient:
    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.requests: list[tuple[str, dict[str, Any]]] = []

    def request(self, cmd: str, **args: Any) -> Any:
        self.requests.append((cmd, args))
        return self.answer


def _run_cli(argv: list[str], client: _FakeClient) -> str:
    from gateway.cli import main

    out = io.StringIO()
    assert main(argv, client_factory=lambda path, timeout: client, stdout=out) == 0
    return out.getvalue()


def test_cli_calls_request_and_exports() -> None:
    recs = [rec(1).to_dict(), rec(2, outcome="busy", answer=None).to_dict()]
    client = _FakeClient({"calls": recs, "pending": 0})
    text = _run_cli(["calls", "--since", "-1h", "--line", "line1", "--outcome", "busy",
                     "--limit", "5", "--control", "/x"], client)
    assert client.requests == [("calls", {"since": "-1h", "line": "line1", "outcome": "busy",
                                          "limit": 5})]
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["START", "(UTC)", "FROM"]
    assert "answered" in lines[1] and "4.30" in lines[1] and "busy" in lines[2]
    rows = list(csv.DictReader(io.StringIO(_run_cli(["calls", "--csv", "--control", "/x"],
                                                    client))))
    assert [r["outcome"] for r in rows] == ["answered", "busy"]
    assert json.loads(_run_cli(["calls", "--json", "--control", "/x"], client)) == recs
    assert _run_cli(["calls", "--control", "/x"], _FakeClient({"calls": []})).strip() == \
        "no calls"
