"""The live SIP trace: every message the transports send or receive, redacted, to the debug
log and to `branchline trace` watchers.

The transports call `SipTrace.message` with the exact bytes on the wire. When nobody looks
(trace off and no watcher) that costs one attribute test. A watcher has a bounded queue: a
watcher that reads slower than the gateway talks loses records, which are counted and
reported to it, and never slows the event loop or grows memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from gateway.runtime.control import Stream
from gateway.sip.trace import TraceFilter, describe, is_keepalive, redact

log = logging.getLogger("branchline.sip.trace")

Address = tuple[str, int]

#: Records, and bytes of message text, queued per watcher before new ones are dropped
#: (and counted): a watcher costs at most about this much memory.
WATCHER_QUEUE = 1000
WATCHER_BYTES = 1024 * 1024
#: Watchers at once; each is a control connection.
MAX_WATCHERS = 8


def _addr(addr: Address | None) -> str:
    if addr is None:
        return "?"
    host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
    return f"{host}:{addr[1]}"


class TraceWatcher:
    """One `branchline trace` client: its filter, its bounded queue and its drop count."""

    def __init__(self, flt: TraceFilter, limit: int = WATCHER_QUEUE,
                 byte_limit: int = WATCHER_BYTES) -> None:
        self.filter = flt
        self.limit = limit
        self.byte_limit = byte_limit
        self.queued_bytes = 0
        self.queue: deque[dict[str, Any]] = deque()
        self.dropped = 0
        self._reported_dropped = 0
        self._wake = asyncio.Event()
        self.closed = False

    def offer(self, record: dict[str, Any]) -> bool:
        """Queue `record`; False (and counted) when the queue is full."""
        size = len(record.get("text", ""))
        if len(self.queue) >= self.limit or self.queued_bytes + size > self.byte_limit:
            self.dropped += 1
            return False
        self.queue.append(record)
        self.queued_bytes += size
        self._wake.set()
        return True

    async def next_batch(self) -> list[dict[str, Any]] | None:
        """Wait for records; None once the watcher is closed. Drops show as a notice."""
        while not self.queue and not self.closed:
            self._wake.clear()
            await self._wake.wait()
        if self.closed:
            return None
        batch: list[dict[str, Any]] = []
        if self.dropped > self._reported_dropped:
            batch.append({"dropped": self.dropped - self._reported_dropped,
                          "dropped_total": self.dropped})
            self._reported_dropped = self.dropped
        batch.extend(self.queue)
        self.queue.clear()
        self.queued_bytes = 0
        return batch

    def close(self) -> None:
        """End `next_batch` waits."""
        self.closed = True
        self._wake.set()


class SipTrace:
    """Fan-out of traced messages to the debug log (when on) and to watchers."""

    def __init__(self, log_enabled: bool = False,
                 clock: Callable[[], float] = time.time) -> None:
        self.log_enabled = log_enabled
        self.clock = clock
        self.watchers: set[TraceWatcher] = set()
        self.stats: dict[str, int] = {"traced": 0, "watcher_drops": 0}

    @property
    def active(self) -> bool:
        """Whether anyone wants records; the transports test this before anything else."""
        return self.log_enabled or bool(self.watchers)

    def watch(self, flt: TraceFilter) -> TraceWatcher:
        """A new watcher; `unwatch` it when its client goes."""
        if len(self.watchers) >= MAX_WATCHERS:
            raise RuntimeError(f"too many trace watchers (at most {MAX_WATCHERS})")
        watcher = TraceWatcher(flt)
        self.watchers.add(watcher)
        return watcher

    def unwatch(self, watcher: TraceWatcher) -> None:
        """Forget `watcher` and count what it lost."""
        if watcher in self.watchers:
            self.watchers.discard(watcher)
            self.stats["watcher_drops"] += watcher.dropped
        watcher.close()

    def describe(self) -> dict[str, Any]:
        """State for `status` and the `trace on|off` answer."""
        live_drops = sum(w.dropped for w in self.watchers)
        return {
            "log": self.log_enabled,
            "watchers": len(self.watchers),
            "traced": self.stats["traced"],
            "watcher_drops": self.stats["watcher_drops"] + live_drops,
        }

    def message(self, direction: str, transport: str, local: Address | None,
                remote: Address, data: bytes, *, malformed: str | None = None) -> None:
        """One message `direction` ("in"/"out") on the wire; `malformed` when the
        transport already knows it is bad (a broken stream frame)."""
        if not self.active or is_keepalive(data):
            return
        info = describe(data)
        wanted = [w for w in self.watchers if w.filter.matches(info.call_id, remote)]
        if not wanted and not self.log_enabled:
            return
        self.stats["traced"] += 1
        record: dict[str, Any] = {
            "time": self.clock(),
            "direction": direction,
            "transport": transport,
            "local": _addr(local),
            "remote": _addr(remote),
            "size": len(data),
            "call_id": info.call_id,
            "malformed": malformed or info.malformed,
            "text": redact(data),
        }
        for watcher in wanted:
            watcher.offer(record)
        if self.log_enabled:
            log.debug("%s", format_record(record))


def trace_command(hub: SipTrace, request: dict[str, Any]) -> dict[str, Any] | Stream:
    """The control socket's `trace` command; ValueError carries a message for the admin.

    ``action``: "on"/"off" switch the trace in the debug log, "status" reports, "watch"
    (the default) streams records matching ``call_id`` and ``address`` until the client goes.
    """
    action = request.get("action") or "watch"
    if action in ("on", "off"):
        hub.log_enabled = action == "on"
        log.info("SIP trace in the debug log switched %s over the control socket", action)
        result = hub.describe()
        if hub.log_enabled and not log.isEnabledFor(logging.DEBUG):
            result["note"] = ("the daemon's log level is above debug, so the log shows no "
                              "trace; `branchline trace` shows it live")
        return result
    if action == "status":
        return hub.describe()
    if action != "watch":
        raise ValueError(f"unknown trace action {action!r}: on, off, status, watch")
    call_id, address = request.get("call_id"), request.get("address")
    if call_id is not None and (not isinstance(call_id, str) or not call_id.strip()):
        raise ValueError("call_id must be a non-empty string")
    if address is not None and not isinstance(address, str):
        raise ValueError("address must be a string host[:port]")
    flt = TraceFilter.build(call_id, address)
    try:
        watcher = hub.watch(flt)
    except RuntimeError as exc:
        raise ValueError(str(exc)) from None
    head = {"filter": str(flt), **hub.describe()}
    return Stream(head, watcher.next_batch, lambda: hub.unwatch(watcher))


def format_record(record: dict[str, Any]) -> str:
    """A record as an admin reads it: one header line, then the redacted message."""
    if "dropped" in record:
        return f"--- {record['dropped']} trace records dropped (watcher too slow) ---"
    when = record.get("time")
    stamp = ""
    if isinstance(when, int | float):
        stamp = time.strftime("%H:%M:%S", time.localtime(when)) + f".{int(when * 1000) % 1000:03d} "
    arrow = "<-" if record.get("direction") == "in" else "->"
    verb = "IN" if record.get("direction") == "in" else "OUT"
    bad = f" MALFORMED ({record['malformed']})" if record.get("malformed") else ""
    head = (f"{stamp}{verb} {str(record.get('transport', '?')).upper()} "
            f"{record.get('local')} {arrow} {record.get('remote')} "
            f"({record.get('size')} bytes){bad}")
    text = str(record.get("text", "")).replace("\r\n", "\n").rstrip("\n")
    return f"{head}\n{text}\n"
