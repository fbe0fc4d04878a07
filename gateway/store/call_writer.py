"""The call records' writer thread and its kill -9 journal (see gateway/store/calls.py).

`CallRecorder.submit` is what the event loop calls when a call ends: it appends the record
to the journal with one ``write()`` (no fsync: the kernel keeps it whatever happens to this
process) and hands it to a thread that commits it to SQLite, batching whatever queued up
meanwhile into one transaction, so an SD card's fsync never holds up the 20 ms audio tick.
Once nothing submitted is left uncommitted the journal is emptied. At start the journal is
replayed (records are keyed by uuid: replaying one already committed changes nothing) and
retention runs; it runs again every `prune_interval` seconds in the thread.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from gateway.store.calls import CallRecord, CallStore

__all__ = ["CallRecorder"]

log = logging.getLogger("branchline")

PRUNE_INTERVAL = 3600.0
MAX_BATCH = 500
#: After a record arrives, wait this long for more before committing: one fsync (and one
#: wake-up of this thread, which competes for the GIL with the event loop) per batch.
BATCH_DELAY = 0.05
RETRY_DELAY = 1.0

_STOP = object()


class CallRecorder:
    """Commits submitted records in a writer thread; a journal covers the gap."""

    def __init__(self, store: CallStore, journal: Path | str, *,
                 prune_interval: float = PRUNE_INTERVAL, batch_delay: float = BATCH_DELAY,
                 on_committed: Callable[[Sequence[CallRecord]], None] | None = None,
                 wallclock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.journal = Path(journal)
        self.prune_interval = prune_interval
        self.batch_delay = batch_delay
        self.on_committed = on_committed
        self._wallclock = wallclock
        self._queue: queue.Queue[object] = queue.Queue()  # (record, its JSON) or _STOP
        self._jlock = threading.Lock()
        self._done = threading.Condition(self._jlock)
        self._pending = 0
        self._fd: int | None = None
        self._thread: threading.Thread | None = None
        self.committed = 0
        self.replayed = 0
        self.pruned = 0
        self.last_error = ""

    def start(self) -> None:
        """Replay what a crash left in the journal, apply retention, start the thread."""
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        self.replayed = self.store.replay_journal(self.journal)
        if self.replayed:
            log.warning("call records: %d record(s) recovered from %s after a crash",
                        self.replayed, self.journal)
        self._prune()
        self._fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._thread = threading.Thread(target=self._run, name="call-records", daemon=True)
        self._thread.start()

    def submit(self, rec: CallRecord) -> None:
        """Journal `rec` (safe from kill -9 once this returns) and queue its commit."""
        body = rec.to_json()
        with self._jlock:
            if self._fd is None:
                raise RuntimeError("call recorder is not running")
            os.write(self._fd, body.encode() + b"\n")
            self._pending += 1
        self._queue.put((rec, body))

    def pending(self) -> int:
        """Records submitted and not committed yet."""
        with self._jlock:
            return self._pending

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted is committed (True) or `timeout` passed."""
        with self._done:
            return self._done.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued, stop the thread, close the journal."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None
        with self._jlock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    # -- the thread ----------------------------------------------------------------------

    def _prune(self) -> None:
        try:
            n = self.store.prune(self._wallclock())
        except Exception as exc:  # noqa: BLE001  retention must never stop the writer
            self.last_error = f"retention: {exc}"
            log.warning("call records: retention failed: %s", exc)
            return
        self.pruned += n
        if n:
            log.info("call records: retention deleted %d record(s)", n)

    def _run(self) -> None:
        next_prune = time.monotonic() + self.prune_interval
        stopping = False
        while not stopping:
            try:
                item = self._queue.get(timeout=max(0.0, next_prune - time.monotonic()))
            except queue.Empty:
                item = None
            batch: list[tuple[CallRecord, str]] = []
            if item is _STOP:
                stopping = True
            elif isinstance(item, tuple):
                batch.append(item)
            if batch and not stopping and self.batch_delay > 0:
                time.sleep(self.batch_delay)  # let more arrive: one fsync for them all
            while len(batch) < MAX_BATCH and not stopping:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stopping = True
                elif isinstance(more, tuple):
                    batch.append(more)
            if batch:
                self._commit(batch)
            if time.monotonic() >= next_prune:
                self._prune()
                next_prune = time.monotonic() + self.prune_interval

    def _commit(self, items: list[tuple[CallRecord, str]]) -> None:
        batch = [rec for rec, _ in items]
        while True:
            try:
                self.store.record_many(batch, [body for _, body in items])
                break
            except Exception as exc:  # noqa: BLE001  kept in the journal; try again
                self.last_error = str(exc)
                log.error("call records: commit of %d record(s) failed (kept in the "
                          "journal, retrying): %s", len(batch), exc)
                time.sleep(RETRY_DELAY)
        self.committed += len(batch)
        with self._done:
            self._pending -= len(batch)
            if self._pending == 0 and self._fd is not None:
                os.ftruncate(self._fd, 0)
            self._done.notify_all()
        if self.on_committed is not None:
            try:
                self.on_committed(batch)
            except Exception:  # noqa: BLE001
                log.exception("call records: on_committed failed")
