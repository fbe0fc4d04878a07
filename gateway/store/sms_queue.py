"""The persistent SMS queue: every SMS we accepted, and where it still has to go.

Why it exists: an SMS received by a modem must survive a restart, a WAN outage and a power
cut between the moment the modem driver deletes it from the SIM and the moment the SIP
MESSAGE endpoint or the webhook confirmed it. The same queue holds outbound SMS (from SIP
MESSAGE or `branchline sms send`) until a modem sent them.

The contract with the modem driver is an ordering: `store()` returns the message id only
after the transaction committed and was synced to disk, so the driver deletes the SMS from
the SIM (AT+CMGD) only once `store()` returned. A crash before that leaves the SMS on the
SIM (read again at the next start, stored twice at worst, never lost).

Durability choice: SQLite in WAL mode with ``synchronous=FULL``. In WAL mode ``NORMAL``
survives an application crash but may lose the last transactions on a power cut (the WAL
is not synced at each commit); ``FULL`` syncs the WAL on every commit, which is what "an
acknowledged SMS is never lost" needs. The price is one fsync per store and per delivery
state change, a few milliseconds on an SD card, for a handful of SMS a day.

Scheduling is pure: the caller passes `now` (wall-clock seconds, as stored timestamps are
read by people) and the queue never reads a clock. Each message has one delivery per
destination (a SIP URI, a webhook URL, or for outbound SMS a modem target such as
``gsm:<group>``); a failed delivery is retried with capped exponential backoff, forever:
an undelivered SMS is never dropped. `due(now)` hands out deliveries whose time has come
and marks them in flight (in memory: after a restart they come back by themselves), the
adapter answers with `mark_delivered` or `mark_failed`, and `next_deadline()` says when to
look again.

A gate per modem (`close_gate(imei)` during a call on that modem, `open_gate` after it)
holds its messages back: an SMS that arrives during a call is stored at once and delivered
after the call.

The queue is bounded by `cap` messages: when a store goes over it, the oldest messages
whose deliveries are all done are pruned. Undelivered messages are never pruned; when they
alone exceed the cap the new message is still stored and a `QueueOverCap` report says so.

Thread safety: one connection, guarded by a lock, so the asyncio adapter may call the
queue from a worker thread (`asyncio.to_thread`) to keep fsyncs off the event loop.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_CAP",
    "Delivery",
    "Pruned",
    "QueueOverCap",
    "QueueReport",
    "Sms",
    "SmsQueue",
    "StoredSms",
    "retry_delay",
]

DEFAULT_CAP = 10000
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    direction TEXT NOT NULL,
    originator TEXT NOT NULL,
    recipient TEXT NOT NULL,
    text TEXT NOT NULL,
    received_at REAL NOT NULL,
    imei TEXT NOT NULL,
    parts INTEGER NOT NULL,
    extra TEXT NOT NULL,
    stored_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    dest TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_at REAL NOT NULL,
    last_error TEXT NOT NULL,
    delivered_at REAL,
    PRIMARY KEY (message_id, dest)
);
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries(state, next_at);
"""

PENDING = "pending"
DELIVERED = "delivered"


@dataclass(frozen=True)
class Sms:
    """One whole SMS (parts already joined), received by a modem or to be sent by one.

    `direction` is "in" (received from the network) or "out" (to send). `received_at` is
    the SMSC time stamp for received SMS, else when we accepted it (epoch seconds).
    `parts` is how many PDUs carried it; `extra` holds anything else worth keeping
    (concatenation reference, SMSC address, ...) as (key, str or int) pairs, kept sorted by
    key so that what comes back from the file equals what went in.
    """

    originator: str
    text: str
    received_at: float
    imei: str = ""
    recipient: str = ""
    parts: int = 1
    direction: str = "in"
    extra: tuple[tuple[str, str | int], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra", tuple(sorted(dict(self.extra).items())))


@dataclass(frozen=True)
class Delivery:
    """One delivery handed out by `due`: send `sms` to `dest`, then mark the outcome."""

    message_id: int
    dest: str
    attempts: int
    sms: Sms


@dataclass(frozen=True)
class DeliveryState:
    """Where one destination of a stored message stands."""

    dest: str
    state: str
    attempts: int
    next_at: float
    last_error: str
    delivered_at: float | None


@dataclass(frozen=True)
class StoredSms:
    """A stored message with the state of each of its deliveries."""

    message_id: int
    sms: Sms
    stored_at: float
    deliveries: tuple[DeliveryState, ...]

    @property
    def delivered(self) -> bool:
        """Every destination confirmed it (vacuously true without destinations)."""
        return all(d.state == DELIVERED for d in self.deliveries)


@dataclass(frozen=True)
class Pruned:
    """Old, fully delivered messages were deleted to stay within the cap."""

    message_ids: tuple[int, ...]


@dataclass(frozen=True)
class QueueOverCap:
    """More undelivered messages than the cap: nothing was dropped, but admins must know."""

    messages: int
    cap: int


QueueReport = Pruned | QueueOverCap


def retry_delay(attempts: int, base: float, maximum: float) -> float:
    """Seconds before the next try after `attempts` failures: base * 2^(n-1), capped."""
    if attempts <= 0:
        return 0.0
    return float(min(base * (2 ** min(attempts - 1, 30)), maximum))


class SmsQueue:
    """SMS and their per-destination delivery state in one SQLite file (WAL, FULL sync).

    Keywords: `cap` (messages kept, see the module docstring), `retry_base` (first retry
    delay, seconds) and `retry_max` (the backoff ceiling).
    """

    def __init__(self, path: Path | str, *, cap: int = DEFAULT_CAP, retry_base: float = 5.0,
                 retry_max: float = 900.0) -> None:
        if cap < 1:
            raise ValueError(f"sms queue cap must be at least 1, got {cap}")
        if retry_base <= 0 or retry_max < retry_base:
            raise ValueError(f"sms retry: expected 0 < retry_base <= retry_max, got "
                             f"{retry_base} and {retry_max}")
        self.path = Path(path)
        self.cap = cap
        self.retry_base = retry_base
        self.retry_max = retry_max
        self._lock = threading.Lock()
        self._in_flight: set[tuple[int, str]] = set()
        self._closed_gates: set[str] = set()
        self._reports: list[QueueReport] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"{self.path}: WAL mode refused ({mode})")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            db.close()
            raise
        self._db: sqlite3.Connection | None = db

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Close the file; everything stored is already on disk."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> SmsQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise sqlite3.ProgrammingError(f"sms queue {self.path} is closed")
        return self._db

    # -- storing -----------------------------------------------------------------------

    def store(self, sms: Sms, destinations: Iterable[str], now: float) -> int:
        """Store `sms` for each destination; returns its id once committed and synced.

        The modem driver deletes the SMS from the SIM only after this returned. Each
        destination is due at once (unless its modem's gate is closed).
        """
        dests = list(dict.fromkeys(d for d in destinations if d))
        if sms.direction not in ("in", "out"):
            raise ValueError(f"sms direction must be 'in' or 'out', got {sms.direction!r}")
        extra = json.dumps(dict(sms.extra), sort_keys=True)
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                cur = db.execute(
                    "INSERT INTO messages (direction, originator, recipient, text, received_at,"
                    " imei, parts, extra, stored_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (sms.direction, sms.originator, sms.recipient, sms.text, sms.received_at,
                     sms.imei, sms.parts, extra, now))
                message_id = cur.lastrowid
                assert message_id is not None
                db.executemany(
                    "INSERT INTO deliveries (message_id, dest, state, attempts, next_at,"
                    " last_error, delivered_at) VALUES (?, ?, ?, 0, ?, '', NULL)",
                    [(message_id, dest, PENDING, now) for dest in dests])
                self._prune(db)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return message_id

    def _prune(self, db: sqlite3.Connection) -> None:
        """Inside the store transaction: keep at most `cap` messages, undelivered ones always."""
        total = int(db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
        excess = total - self.cap
        if excess <= 0:
            return
        rows = db.execute(
            "SELECT m.id FROM messages m WHERE NOT EXISTS (SELECT 1 FROM deliveries d"
            " WHERE d.message_id = m.id AND d.state != ?) ORDER BY m.id LIMIT ?",
            (DELIVERED, excess)).fetchall()
        ids = tuple(int(r[0]) for r in rows)
        if ids:
            marks = ",".join("?" * len(ids))
            db.execute(f"DELETE FROM deliveries WHERE message_id IN ({marks})", ids)
            db.execute(f"DELETE FROM messages WHERE id IN ({marks})", ids)
            self._reports.append(Pruned(ids))
        if total - len(ids) > self.cap:
            self._reports.append(QueueOverCap(total - len(ids), self.cap))

    # -- scheduling --------------------------------------------------------------------

    def close_gate(self, imei: str) -> None:
        """Hold back deliveries of messages from modem `imei` (a call is up on it)."""
        self._closed_gates.add(imei)

    def open_gate(self, imei: str) -> None:
        """Let that modem's messages go again; they are due at once if their time passed."""
        self._closed_gates.discard(imei)

    def gate_closed(self, imei: str) -> bool:
        """True while `imei`'s messages are held back."""
        return imei in self._closed_gates

    def due(self, now: float, *, limit: int = 100) -> list[Delivery]:
        """Deliveries to attempt now, oldest message first; each is marked in flight.

        A delivery handed out is not handed out again until `mark_failed` (or a restart,
        since in-flight marks live in memory only).
        """
        with self._lock:
            rows = self._conn().execute(
                "SELECT d.message_id, d.dest, d.attempts, m.direction, m.originator,"
                " m.recipient, m.text, m.received_at, m.imei, m.parts, m.extra"
                " FROM deliveries d JOIN messages m ON m.id = d.message_id"
                " WHERE d.state = ? AND d.next_at <= ? ORDER BY d.message_id, d.dest",
                (PENDING, now)).fetchall()
            out: list[Delivery] = []
            for row in rows:
                key = (int(row[0]), str(row[1]))
                if key in self._in_flight or row[8] in self._closed_gates:
                    continue
                self._in_flight.add(key)
                out.append(Delivery(key[0], key[1], int(row[2]), _sms(row[3:])))
                if len(out) >= limit:
                    break
        return out

    def next_deadline(self) -> float | None:
        """The earliest time a pending delivery (not in flight, not gated) becomes due."""
        with self._lock:
            rows = self._conn().execute(
                "SELECT d.message_id, d.dest, d.next_at, m.imei FROM deliveries d"
                " JOIN messages m ON m.id = d.message_id WHERE d.state = ?"
                " ORDER BY d.next_at", (PENDING,)).fetchall()
            for message_id, dest, next_at, imei in rows:
                if (int(message_id), str(dest)) in self._in_flight or imei in self._closed_gates:
                    continue
                return float(next_at)
        return None

    def mark_delivered(self, message_id: int, dest: str, now: float) -> None:
        """The destination confirmed the message (2xx); committed before returning."""
        with self._lock:
            self._in_flight.discard((message_id, dest))
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            db.execute("UPDATE deliveries SET state = ?, delivered_at = ?, last_error = ''"
                       " WHERE message_id = ? AND dest = ?",
                       (DELIVERED, now, message_id, dest))
            db.execute("COMMIT")

    def mark_failed(self, message_id: int, dest: str, now: float, reason: str) -> float:
        """The attempt failed; returns when the next one is due (capped backoff)."""
        with self._lock:
            self._in_flight.discard((message_id, dest))
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT attempts FROM deliveries WHERE message_id = ? AND dest = ?"
                             " AND state = ?", (message_id, dest, PENDING)).fetchone()
            if row is None:
                db.execute("COMMIT")
                return now
            attempts = int(row[0]) + 1
            next_at = now + retry_delay(attempts, self.retry_base, self.retry_max)
            db.execute("UPDATE deliveries SET attempts = ?, next_at = ?, last_error = ?"
                       " WHERE message_id = ? AND dest = ?",
                       (attempts, next_at, reason[:500], message_id, dest))
            db.execute("COMMIT")
        return next_at

    # -- reading -----------------------------------------------------------------------

    def get(self, message_id: int) -> StoredSms | None:
        """One stored message with its deliveries, or None."""
        with self._lock:
            db = self._conn()
            row = db.execute(
                "SELECT direction, originator, recipient, text, received_at, imei, parts,"
                " extra, stored_at FROM messages WHERE id = ?", (message_id,)).fetchone()
            if row is None:
                return None
            states = db.execute(
                "SELECT dest, state, attempts, next_at, last_error, delivered_at"
                " FROM deliveries WHERE message_id = ? ORDER BY dest",
                (message_id,)).fetchall()
        return StoredSms(message_id, _sms(row[:8]), float(row[8]), tuple(
            DeliveryState(str(s[0]), str(s[1]), int(s[2]), float(s[3]), str(s[4]),
                          None if s[5] is None else float(s[5])) for s in states))

    def message_ids(self) -> list[int]:
        """Ids of every stored message, oldest first."""
        with self._lock:
            rows = self._conn().execute("SELECT id FROM messages ORDER BY id").fetchall()
        return [int(r[0]) for r in rows]

    def stats(self) -> dict[str, int]:
        """Counts for `branchline status`: messages, pending deliveries, delivered ones."""
        with self._lock:
            db = self._conn()
            messages = int(db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
            counts = dict(db.execute(
                "SELECT state, COUNT(*) FROM deliveries GROUP BY state").fetchall())
        return {"messages": messages, "pending": int(counts.get(PENDING, 0)),
                "delivered": int(counts.get(DELIVERED, 0)), "in_flight": len(self._in_flight),
                "cap": self.cap}

    def take_reports(self) -> list[QueueReport]:
        """Drain what the admin should hear about: prunes and over-cap warnings."""
        out, self._reports = self._reports, []
        return out


def _sms(row: Sequence[Any]) -> Sms:
    """An `Sms` from (direction, originator, recipient, text, received_at, imei, parts, extra)."""
    direction, originator, recipient, text, received_at, imei, parts, extra = row
    loaded = json.loads(str(extra)) if extra else {}
    return Sms(originator=str(originator), text=str(text),
               received_at=float(received_at),
               imei=str(imei), recipient=str(recipient), parts=int(parts),
               direction=str(direction), extra=tuple(sorted(loaded.items())))
