"""The persistent SMS queue: store, reopen, due, backoff, gates, prune, crash safety."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.store.sms_queue import (
    Pruned,
    QueueOverCap,
    Sms,
    SmsQueue,
    retry_delay,
)

SIP = "sip:sms@127.0.0.1:5070"
HOOK = "http://127.0.0.1:8080/sms"


def sms(text: str = "hello", *, imei: str = "358000000000001", parts: int = 1) -> Sms:
    return Sms(
        originator="+41791234567",
        text=text,
        received_at=1000.0,
        imei=imei,
        recipient="+41790000000",
        parts=parts,
        extra=(("ref", 42),),
    )


def test_store_returns_id_and_both_destinations_are_due(tmp_path: Path) -> None:
    with SmsQueue(tmp_path / "sms.db") as q:
        mid = q.store(sms(), [SIP, HOOK], now=10.0)
        due = q.due(10.0)
        assert sorted(d.dest for d in due) == sorted([SIP, HOOK])
        assert all(d.message_id == mid and d.sms == sms() and d.attempts == 0 for d in due)
        assert q.due(10.0) == []  # in flight: not handed out twice


def test_durability_pragmas(tmp_path: Path) -> None:
    with SmsQueue(tmp_path / "sms.db") as q:
        db = q._conn()
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_backoff_doubles_and_is_capped(tmp_path: Path) -> None:
    with SmsQueue(tmp_path / "sms.db", retry_base=2.0, retry_max=10.0) as q:
        mid = q.store(sms(), [HOOK], now=0.0)
        now = 0.0
        waits = []
        for _ in range(5):
            (d,) = q.due(now)
            nxt = q.mark_failed(mid, HOOK, now, "connection refused")
            waits.append(nxt - now)
            assert q.next_deadline() == nxt
            assert q.due(nxt - 0.01) == []
            now = nxt
        assert waits == [2.0, 4.0, 8.0, 10.0, 10.0]
        (d,) = q.due(now)
        assert d.attempts == 5
        stored = q.get(mid)
        assert stored is not None and stored.deliveries[0].last_error == "connection refused"
    assert [retry_delay(n, 1.0, 100.0) for n in range(4)] == [0.0, 1.0, 2.0, 4.0]


def test_delivered_is_not_due_again_and_other_destination_still_is(tmp_path: Path) -> None:
    with SmsQueue(tmp_path / "sms.db") as q:
        mid = q.store(sms(), [SIP, HOOK], now=0.0)
        q.due(0.0)
        q.mark_delivered(mid, SIP, 1.0)
        q.mark_failed(mid, HOOK, 1.0, "503")
        assert [d.dest for d in q.due(1000.0)] == [HOOK]  # the SIP one is done
        stored = q.get(mid)
        assert stored is not None and not stored.delivered
        states = {d.dest: d.state for d in stored.deliveries}
        assert states == {SIP: "delivered", HOOK: "pending"}
        q.mark_delivered(mid, HOOK, 2000.0)
        assert q.next_deadline() is None
        stored = q.get(mid)
        assert stored is not None and stored.delivered


def test_reopen_brings_pending_back_including_in_flight(tmp_path: Path) -> None:
    path = tmp_path / "sms.db"
    q = SmsQueue(path)
    mid = q.store(sms("survives"), [HOOK], now=5.0)
    assert len(q.due(5.0)) == 1  # in flight when the daemon stops
    q.close()
    q2 = SmsQueue(path)
    (d,) = q2.due(5.0)
    assert d.message_id == mid and d.sms.text == "survives" and d.sms.extra == (("ref", 42),)
    unsorted = Sms(originator="a", text="b", received_at=0.0,
                   extra=(("smsc", "+41794999000"), ("ref", 7)))
    other = q2.store(unsorted, [SIP], now=6.0)
    stored = q2.get(other)
    assert stored is not None and stored.sms == unsorted
    q2.close()


def test_crash_without_clean_shutdown_keeps_the_stored_sms(tmp_path: Path) -> None:
    """A process stores, prints the id, and dies with os._exit: no close, no checkpoint."""
    path = tmp_path / "sms.db"
    script = textwrap.dedent(f"""
        import os, sys
        from gateway.store.sms_queue import Sms, SmsQueue
        q = SmsQueue({str(path)!r})
        mid = q.store(Sms(originator="+4179", text="crash \\u00e9\\u20ac", received_at=1.0,
                          imei="358000000000009", parts=3), ["{HOOK}"], now=1.0)
        sys.stdout.write(str(mid)); sys.stdout.flush()
        os._exit(9)
    """)
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 9, proc.stderr
    assert (tmp_path / "sms.db-wal").exists()  # the commit lives in the WAL, not checkpointed
    with SmsQueue(path) as q:
        (d,) = q.due(2.0)
        assert d.message_id == int(proc.stdout)
        assert d.sms.text == "crash \u00e9\u20ac" and d.sms.parts == 3


def test_gate_holds_messages_of_that_modem_only(tmp_path: Path) -> None:
    with SmsQueue(tmp_path / "sms.db") as q:
        busy, idle = "358000000000001", "358000000000002"
        q.close_gate(busy)
        held = q.store(sms("during call", imei=busy), [SIP], now=0.0)
        other = q.store(sms("other modem", imei=idle), [SIP], now=0.0)
        assert [d.message_id for d in q.due(1.0)] == [other]
        assert q.next_deadline() is None  # nothing schedulable while the gate is shut
        q.open_gate(busy)
        assert q.next_deadline() == 0.0
        assert [d.message_id for d in q.due(1.0)] == [held]


def test_cap_prunes_oldest_delivered_never_undelivered(tmp_path: Path) -> None:
    with SmsQueue(tmp_path / "sms.db", cap=3) as q:
        a = q.store(sms("a"), [SIP], now=0.0)
        b = q.store(sms("b"), [SIP], now=0.0)
        c = q.store(sms("c"), [SIP], now=0.0)
        q.due(0.0)
        q.mark_delivered(b, SIP, 1.0)
        q.mark_delivered(c, SIP, 1.0)
        d = q.store(sms("d"), [SIP], now=2.0)
        assert q.message_ids() == [a, c, d]  # b: oldest delivered; a undelivered stays
        assert q.take_reports() == [Pruned((b,))]
        e = q.store(sms("e"), [SIP], now=3.0)
        assert q.message_ids() == [a, d, e]
        q.take_reports()
        f = q.store(sms("f"), [SIP], now=4.0)  # all undelivered: kept, and reported
        assert q.message_ids() == [a, d, e, f]
        assert q.take_reports() == [QueueOverCap(4, 3)]
        assert q.stats()["pending"] == 4


def test_outbound_sms_and_bad_input(tmp_path: Path) -> None:
    with SmsQueue(tmp_path / "sms.db") as q:
        out = Sms(
            originator="sip:alice@branch",
            text="hi",
            received_at=0.0,
            recipient="+41791112233",
            direction="out",
        )
        mid = q.store(out, ["gsm:mobiles"], now=0.0)
        (d,) = q.due(0.0)
        assert d.message_id == mid and d.sms.direction == "out" and d.dest == "gsm:mobiles"
        with pytest.raises(ValueError, match="direction"):
            q.store(
                Sms(originator="x", text="y", received_at=0.0, direction="sideways"), [SIP], now=0.0
            )
    with pytest.raises(ValueError, match="cap"):
        SmsQueue(tmp_path / "other.db", cap=0)
    q = SmsQueue(tmp_path / "closed.db")
    q.close()
    with pytest.raises(sqlite3.ProgrammingError):
        q.store(sms(), [SIP], now=0.0)
