"""The local phones' registrar bindings on disk, so they survive a daemon restart.

`state_dir/bindings.json` holds `Registrar.snapshot()` plus the wall-clock time it was
taken: the registrar counts on a monotonic clock that restarts with the daemon, so what is
kept is the seconds each binding had left, and a load takes off the time the file lay
there. Bindings that ran out meanwhile are dropped.

Writes are atomic (a temp file in the same directory, fsync, rename, fsync of the
directory): a power cut leaves the old file or the new one. They are coalesced (at most
one per `delay`, 100 ms) and run in a worker thread, so a burst of REGISTERs costs one
write and the event loop never waits on the SD card.

A file that cannot be read as a snapshot is renamed aside (``bindings.json.corrupt-<time>``)
and reported; the daemon starts with no bindings (the phones register again within their
interval) rather than not at all.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.sip.registrar import Registrar
from gateway.store.atomic import write_atomic as atomic_write

log = logging.getLogger("branchline.bindings")

FILE_NAME = "bindings.json"


def encode(snapshot: dict[str, object], wall_now: float) -> bytes:
    """The file's bytes for a registrar snapshot taken at `wall_now` (time.time())."""
    return json.dumps({**snapshot, "saved_at": round(wall_now, 3)}, indent=1,
                      sort_keys=True).encode() + b"\n"


def decode(data: bytes, wall_now: float) -> dict[str, Any]:
    """A snapshot ready for `Registrar.restore`: seconds left reduced by the time on disk.

    Raises ValueError for anything that is not a snapshot this version wrote.
    """
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    saved_at = doc.get("saved_at")
    rows = doc.get("bindings")
    if not isinstance(saved_at, (int, float)) or not isinstance(rows, list):
        raise ValueError("no saved_at or bindings")
    elapsed = max(0.0, wall_now - float(saved_at))  # a clock set back never adds time
    out: list[object] = []
    for row in rows:
        if isinstance(row, dict) and isinstance(row.get("expires_in"), (int, float)):
            row = {**row, "expires_in": float(row["expires_in"]) - elapsed}
        out.append(row)
    return {**doc, "bindings": out}


class BindingsStore:
    """Keeps `state_dir/bindings.json` in step with a registrar (one per daemon)."""

    def __init__(self, state_dir: str | os.PathLike[str], registrar: Registrar,
                 loop: asyncio.AbstractEventLoop, *, delay: float = 0.1,
                 retry_after: float = 5.0,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.path = Path(state_dir) / FILE_NAME
        self.registrar = registrar
        self.loop = loop
        self.delay = delay
        self.retry_after = retry_after  # after a failed write (disk full, read-only)
        self.wall_clock = wall_clock
        self.saved_version = registrar.version
        self.writes = 0
        self.errors = 0
        self._timer: asyncio.TimerHandle | None = None
        self._writing: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ start

    def load(self) -> int:
        """Restore what the file holds into the registrar; how many bindings were loaded.

        A missing file is a first start. An unreadable or malformed one is set aside and
        reported; neither stops the daemon.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return 0
        except OSError as exc:
            log.warning("bindings: cannot read %s (%s); starting without bindings",
                        self.path, exc)
            return 0
        try:
            count = self.registrar.restore(decode(data, self.wall_clock()), self.loop.time())
        except ValueError as exc:
            aside = self.path.with_name(f"{FILE_NAME}.corrupt-{int(self.wall_clock())}")
            try:
                os.replace(self.path, aside)
            except OSError:
                aside = self.path
            log.warning("bindings: %s is not a bindings file (%s); set aside as %s, "
                        "starting without bindings", self.path, exc, aside.name)
            return 0
        self.saved_version = self.registrar.version
        log.info("bindings: %d restored from %s", count, self.path)
        return count

    # ------------------------------------------------------------------ saving

    def changed(self) -> None:
        """Call after the registrar may have changed (cheap): schedules one coalesced save."""
        if self.registrar.version == self.saved_version or self._timer is not None \
                or self._writing is not None:
            return
        self._timer = self.loop.call_later(self.delay, self._flush)

    def _flush(self) -> None:
        self._timer = None
        version = self.registrar.version
        data = encode(self.registrar.snapshot(self.loop.time()), self.wall_clock())
        self._writing = self.loop.run_in_executor(None, atomic_write, self.path, data)
        self._writing.add_done_callback(lambda fut: self._written(fut, version))

    def _written(self, fut: asyncio.Future[None], version: int) -> None:
        self._writing = None
        exc = fut.exception() if not fut.cancelled() else None
        wait = self.delay
        if exc is not None:
            self.errors += 1
            wait = max(self.delay, self.retry_after)
            log.warning("bindings: cannot save %s: %s (retrying in %.0f s)", self.path, exc,
                        wait)
        else:
            self.writes += 1
            self.saved_version = version
        if self.registrar.version != self.saved_version:
            self._timer = self.loop.call_later(wait, self._flush)

    async def close(self) -> None:
        """Finish any write in progress and save what is still unsaved (at shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._writing is not None:
            try:
                await asyncio.shield(self._writing)
            except Exception:  # reported by _written
                pass
        if self._timer is not None:  # _written re-armed it
            self._timer.cancel()
            self._timer = None
        if self.registrar.version != self.saved_version:
            try:
                atomic_write(self.path, encode(self.registrar.snapshot(self.loop.time()),
                                               self.wall_clock()))
                self.saved_version = self.registrar.version
                self.writes += 1
            except OSError as exc:
                self.errors += 1
                log.warning("bindings: cannot save %s: %s", self.path, exc)

    def describe(self) -> dict[str, object]:
        """For status: where, how many writes, failures, whether something is unsaved."""
        return {"path": str(self.path), "writes": self.writes, "errors": self.errors,
                "unsaved": self.registrar.version != self.saved_version}
