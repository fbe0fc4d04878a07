"""Call records: one row per finished call, in SQLite (WAL, FULL sync) under `state_dir`.

Why it looks like this:

- **Durable on a power cut.** WAL with ``synchronous=FULL`` syncs the WAL at every commit,
  so a committed record survives losing power (``NORMAL`` may lose the last commits).
- **Never stalls the 20 ms audio tick.** An fsync on an SD card takes milliseconds to tens of
  milliseconds, so commits happen in a writer thread (`CallRecorder`), which batches what
  queued up meanwhile into one transaction (group commit).
- **Nothing finished is lost on kill -9.** Before a record is queued for the thread, it is
  appended to a journal file with one ``write()`` (a few microseconds, no fsync): once that
  returned, the kernel has it, and a killed process cannot take it back. At the next start
  the journal is replayed into the database (``INSERT OR IGNORE`` on the record's uuid, so
  a record committed just before the kill is not stored twice) and truncated. The journal
  is emptied whenever everything in it is committed.
- **The push outbox commits with the record.** When a push endpoint is configured, `record`
  inserts an outbox row in the same transaction (gateway/runtime/push.py drains it), so a
  record is pushed if and only if it was stored.
- **Bounded.** Retention deletes records older than ``max_age_days`` and the oldest beyond
  ``max_rows`` (at start and hourly, in the writer thread), so the SD card never fills.
  The outbox is bounded by the push lane (`outbox_drop_oldest`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "OUTCOMES",
    "SCHEMA_VERSION",
    "CallRecord",
    "CallStore",
    "iso_utc",
    "parse_time",
]

SCHEMA_VERSION = 1
DEFAULT_MAX_AGE_DAYS = 90
DEFAULT_MAX_ROWS = 100_000

#: Every outcome a record can have (metrics count calls by these).
OUTCOMES = ("answered", "busy", "no-answer", "failed", "cancelled", "rejected")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    uuid TEXT PRIMARY KEY,
    call_id TEXT NOT NULL,
    start_ts REAL NOT NULL,
    end_ts REAL NOT NULL,
    port_a TEXT NOT NULL,
    port_b TEXT NOT NULL,
    outcome TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_start ON calls(start_ts);
CREATE INDEX IF NOT EXISTS calls_end ON calls(end_ts);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    record_uuid TEXT NOT NULL,
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(next_at, id);
"""


def iso_utc(ts: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC with milliseconds ("2026-12-06T22:10:03.125Z")."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def parse_time(text: str, now: float) -> float:
    """An ISO 8601 time (naive means UTC) or a relative one ("-1h", "-30m", "-2d", "-90s")
    as epoch seconds; ValueError names what was expected."""
    t = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    if t.startswith("-") and t[-1:] in units:
        try:
            return now - float(t[1:-1]) * units[t[-1]]
        except ValueError:
            pass
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"time {text!r}: expected ISO 8601 (2026-12-06T10:00Z) or "
                         "a relative time such as -1h, -30m, -7d") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


@dataclass(frozen=True)
class CallRecord:
    """One finished call, as stored, listed and pushed.

    `uuid` is the idempotency key of the push. Ports are the calling side (a) and the
    called side (b): an FXS line, a phone, a GSM port, a trunk, or "sip" for a SIP peer
    that is no configured trunk. `route` is the route target the call went out on
    ("trunk:main", "local", "gsm:mobile"), `target` the address or port it reached and
    `attempts` every target tried in order (failover). Times are wall-clock epoch seconds
    (`to_json` gives ISO 8601 UTC). `cause` is the stable CallEnd kind ("remote-bye",
    "local-cancel", "rejected", ...), `sip_status` its SIP code and `reason` the text the
    log showed. Media figures are None when no RTP flowed.
    """

    uuid: str
    call_id: str
    direction: str
    port_a: str
    port_a_kind: str
    port_b: str
    port_b_kind: str
    start: float
    end: float
    outcome: str
    cause: str
    reason: str
    answer: float | None = None
    sip_status: int | None = None
    remote: str = ""
    route: str | None = None
    target: str | None = None
    attempts: tuple[dict[str, Any], ...] = field(default=())
    codec: str | None = None
    rtp_loss_pct: float | None = None
    jitter_ms: float | None = None
    mos: float | None = None
    r_factor: float | None = None
    jb_delay_ms: float | None = None  # mean wait in the jitter buffer
    concealed_pct: float | None = None  # share of playout slots filled by concealment
    packets_received: int = 0
    packets_sent: int = 0

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"call record outcome {self.outcome!r}: expected one of "
                             f"{', '.join(OUTCOMES)}")
        object.__setattr__(self, "attempts", tuple(dict(a) for a in self.attempts))

    @property
    def ring_seconds(self) -> float:
        """From start to answer (or to the end when never answered)."""
        return round((self.answer if self.answer is not None else self.end) - self.start, 3)

    @property
    def talk_seconds(self) -> float:
        """From answer to end; 0 when never answered."""
        return round(self.end - self.answer, 3) if self.answer is not None else 0.0

    @property
    def total_seconds(self) -> float:
        return round(self.end - self.start, 3)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (times ISO 8601 UTC, durations in seconds)."""
        d = {name: getattr(self, name) for name in _FIELDS}  # asdict() deep-copies: 10x slower
        d["attempts"] = [dict(a) for a in self.attempts]
        for key in ("start", "answer", "end"):
            d[key] = iso_utc(d[key])
        d["ring_seconds"] = self.ring_seconds
        d["talk_seconds"] = self.talk_seconds
        d["total_seconds"] = self.total_seconds
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CallRecord:
        """Back from `to_dict` (ISO times read back as epoch seconds)."""
        known = {f for f in cls.__dataclass_fields__}
        args = {k: v for k, v in d.items() if k in known}
        for key in ("start", "answer", "end"):
            v = args.get(key)
            if isinstance(v, str):
                args[key] = parse_time(v, 0.0)
        args["attempts"] = tuple(args.get("attempts") or ())
        return cls(**args)

    @classmethod
    def from_json(cls, text: str) -> CallRecord:
        return cls.from_dict(json.loads(text))


_FIELDS = tuple(f.name for f in fields(CallRecord))

#: Columns of the CSV export, in order (attempts as "target result status; ...").
CSV_FIELDS = ("uuid", "call_id", "direction", "port_a", "port_a_kind", "port_b",
              "port_b_kind", "remote", "route", "target", "attempts", "start", "answer",
              "end", "ring_seconds", "talk_seconds", "total_seconds", "outcome", "cause",
              "sip_status", "reason", "codec", "rtp_loss_pct", "jitter_ms", "mos")


def csv_row(d: dict[str, Any]) -> list[str]:
    """One record's `to_dict` as CSV cells."""
    cells: list[str] = []
    for name in CSV_FIELDS:
        v = d.get(name)
        if name == "attempts":
            v = "; ".join(" ".join(str(x) for x in (a.get("target"), a.get("result"),
                                                     a.get("status")) if x is not None)
                          for a in (v or ()))
        cells.append("" if v is None else str(v))
    return cells


class CallStore:
    """The call records and the push outbox in one SQLite file.

    Thread safety: one connection guarded by a lock (the writer thread and the push lane's
    worker threads share it); `query` opens its own connection (WAL readers never wait).
    """

    def __init__(self, path: Path | str, *, max_age_days: int = DEFAULT_MAX_AGE_DAYS,
                 max_rows: int = DEFAULT_MAX_ROWS, push: bool = False) -> None:
        if max_age_days < 1 or max_rows < 1:
            raise ValueError(f"call records: max_age_days and max_rows must be >= 1, got "
                             f"{max_age_days} and {max_rows}")
        self.path = Path(path)
        self.max_age_days = max_age_days
        self.max_rows = max_rows
        self.push = push
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"{self.path}: WAL mode refused ({mode})")
            db.execute("PRAGMA synchronous=FULL")
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(
                    f"{self.path}: call records schema {version} is newer than this "
                    f"version reads ({SCHEMA_VERSION}); refusing to touch it")
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            db.close()
            raise
        self._db: sqlite3.Connection | None = db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> CallStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise sqlite3.ProgrammingError(f"call store {self.path} is closed")
        return self._db

    # -- writing -----------------------------------------------------------------------

    def record(self, rec: CallRecord) -> bool:
        """Store `rec` (and its outbox row when push is on) in one committed transaction.
        False when a record with its uuid was already stored (nothing is done twice)."""
        return self.record_many([rec]) == 1

    def record_many(self, recs: Sequence[CallRecord], bodies: Sequence[str] | None = None) -> int:
        """Store several records in one transaction (one fsync); how many were new.
        `bodies`: their `to_json()` when the caller already has it."""
        if not recs:
            return 0
        rows = list(zip(recs, bodies if bodies is not None else [r.to_json() for r in recs],
                        strict=True))
        added = 0
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                for r, body in rows:
                    cur = db.execute(
                        "INSERT OR IGNORE INTO calls (uuid, call_id, start_ts, end_ts, port_a,"
                        " port_b, outcome, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (r.uuid, r.call_id, r.start, r.end, r.port_a, r.port_b, r.outcome,
                         body))
                    if cur.rowcount != 1:
                        continue
                    added += 1
                    if self.push:
                        db.execute("INSERT INTO outbox (record_uuid, body, next_at, created_at)"
                                   " VALUES (?, ?, ?, ?)", (r.uuid, body, r.end, r.end))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return added

    def prune(self, now: float) -> int:
        """Retention: drop records older than max_age_days, then the oldest beyond
        max_rows. Returns how many were deleted."""
        cutoff = now - self.max_age_days * 86400.0
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                n = db.execute("DELETE FROM calls WHERE end_ts < ?", (cutoff,)).rowcount
                count = int(db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])
                if count > self.max_rows:
                    n += db.execute(
                        "DELETE FROM calls WHERE rowid IN (SELECT rowid FROM calls "
                        "ORDER BY end_ts, rowid LIMIT ?)", (count - self.max_rows,)).rowcount
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return n

    # -- reading -----------------------------------------------------------------------

    def count(self) -> int:
        with self._lock:
            return int(self._conn().execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    def query(self, since: float | None = None, until: float | None = None,
              line: str | None = None, outcome: str | None = None,
              limit: int | None = 100) -> list[CallRecord]:
        """Records that started in [since, until), on `line` (either port), with
        `outcome`: the newest `limit` of them, oldest first."""
        if outcome is not None and outcome not in OUTCOMES:
            raise ValueError(f"outcome {outcome!r}: expected one of {', '.join(OUTCOMES)}")
        where: list[str] = []
        args: list[Any] = []
        if since is not None:
            where.append("start_ts >= ?")
            args.append(since)
        if until is not None:
            where.append("start_ts < ?")
            args.append(until)
        if line:
            where.append("(port_a = ? OR port_b = ?)")
            args += [line, line]
        if outcome:
            where.append("outcome = ?")
            args.append(outcome)
        sql = "SELECT body FROM calls"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY start_ts DESC, rowid DESC"
        if limit is not None and limit > 0:
            sql += f" LIMIT {int(limit)}"
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            bodies = [row[0] for row in db.execute(sql, args)]
        finally:
            db.close()
        return [CallRecord.from_json(b) for b in reversed(bodies)]

    # -- the push outbox (gateway/runtime/push.py) --------------------------------------

    def outbox_next(self, now: float, limit: int = 10) -> list[tuple[int, str, str, int]]:
        """Due outbox rows, oldest first: (id, record_uuid, json_text, attempts)."""
        with self._lock:
            rows = self._conn().execute(
                "SELECT id, record_uuid, body, attempts FROM outbox WHERE next_at <= ? "
                "ORDER BY id LIMIT ?", (now, limit)).fetchall()
        return [(int(i), str(u), str(b), int(a)) for i, u, b, a in rows]

    def outbox_done(self, row_id: int) -> None:
        """The receiver took it (or refused it for good): forget the row."""
        with self._lock:
            self._conn().execute("DELETE FROM outbox WHERE id = ?", (row_id,))

    def outbox_retry(self, row_id: int, error: str, next_at: float) -> None:
        """One more failed attempt: try again at `next_at`, keep why."""
        with self._lock:
            self._conn().execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_at = ? "
                "WHERE id = ?", (error, next_at, row_id))

    def outbox_depth(self) -> int:
        with self._lock:
            return int(self._conn().execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def outbox_next_at(self) -> float | None:
        """When the earliest outbox row is due (None: empty)."""
        with self._lock:
            v = self._conn().execute("SELECT MIN(next_at) FROM outbox").fetchone()[0]
        return None if v is None else float(v)

    def outbox_drop_oldest(self, n: int) -> int:
        """Drop the `n` oldest outbox rows (the queue is over max_queue); how many went."""
        if n <= 0:
            return 0
        with self._lock:
            return int(self._conn().execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)",
                (n,)).rowcount)

    # -- the kill -9 journal ------------------------------------------------------------

    def replay_journal(self, journal: Path) -> int:
        """Store every record the journal holds (a crash left them there) and empty it;
        how many were new. Unreadable lines (a torn write on a power cut) are skipped."""
        if not journal.exists():
            return 0
        recs = []
        for line in journal.read_bytes().splitlines():
            try:
                recs.append(CallRecord.from_json(line.decode()))
            except (ValueError, TypeError, UnicodeDecodeError):
                continue
        added = self.record_many(recs)
        fd = os.open(journal, os.O_WRONLY | os.O_TRUNC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return added
