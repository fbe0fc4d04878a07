"""Call records at run time: one `CallRecord` per finished call, written when it ends.

`SipCalls.end_call` (the one place call legs end) hands every ended leg to
`CallRecords._record_call`. One call makes one record:

- a port-to-port call (FXS to FXS, a line to a GSM channel) has two legs: the first leg to
  end keeps its cause and the second writes the record, with both ports;
- a SIP leg bridged to a port is one record, our port on one side and the trunk (the route
  target) or the SIP peer on the other;
- an outgoing leg that failed over to the route's next target writes nothing: the next
  target's leg writes the record, whose `attempts` lists every target tried. If no further
  leg appears (the next target could not be placed), the held record is written when the
  port goes idle;
- a call that never got a leg (no route, every trunk down, refused by policy, an INVITE for
  no line) is recorded through `_record_unplaced`.

Writing is the `CallRecorder`'s (gateway/store/call_writer.py): a journal append on the
event loop, the SQLite commit in its thread. `call_counts` counts records by outcome.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config.schema import Config
from gateway.runtime.call_end import CallEnd
from gateway.runtime.ports import Port
from gateway.store.call_writer import CallRecorder
from gateway.store.calls import (
    DEFAULT_MAX_AGE_DAYS,
    DEFAULT_MAX_ROWS,
    OUTCOMES,
    CallRecord,
    CallStore,
)

if TYPE_CHECKING:
    from gateway.runtime.sip_calls import Call

log = logging.getLogger("branchline")

DB_NAME = "calls.db"
JOURNAL_NAME = "calls.journal"
BUSY_STATUSES = frozenset({486, 600})
NO_ANSWER_STATUSES = frozenset({408, 480})
CANCEL_KINDS = frozenset({"local-cancel", "remote-cancel", "remote-hangup", "shutdown"})


def outcome_for(cause: CallEnd, answered: bool) -> str:
    """The record's outcome from why the call ended and whether it was answered."""
    if answered:
        return "answered"
    status = cause.status
    if cause.kind in CANCEL_KINDS:
        return "cancelled"
    if status in BUSY_STATUSES:
        return "busy"
    if cause.kind == "rejected" and status in NO_ANSWER_STATUSES:
        return "no-answer"
    if cause.kind == "rejected" and status is not None and (
            400 <= status < 500 or status >= 600):
        return "rejected"
    return "failed"


def open_recorder(config: Config) -> CallRecorder:
    """The store under `state_dir` with the configured retention, started."""
    settings = getattr(config, "call_records", None)
    store = CallStore(
        Path(config.gateway.state_dir) / DB_NAME,
        max_age_days=getattr(settings, "max_age_days", DEFAULT_MAX_AGE_DAYS),
        max_rows=getattr(settings, "max_rows", DEFAULT_MAX_ROWS),
        push=getattr(config, "push", None) is not None,
    )
    recorder = CallRecorder(store, Path(config.gateway.state_dir) / JOURNAL_NAME)
    recorder.start()
    return recorder


def _trunk_of(route: str | None) -> str | None:
    return route.split(":", 1)[1] if route and route.startswith("trunk:") else None


class CallRecords:
    """Mixed into `Gateway`: builds and submits the records; counts them by outcome."""

    config: Config
    loop: asyncio.AbstractEventLoop
    calls: dict[str, Call]

    def _records_state(self) -> tuple[CallRecorder | None, dict[str, CallRecord]]:
        recorder: CallRecorder | None = getattr(self, "call_recorder", None)
        held: dict[str, CallRecord] | None = getattr(self, "_held_records", None)
        if held is None:
            held = {}
            self._held_records = held
        return recorder, held

    @property
    def call_counts(self) -> dict[str, int]:
        """Finished calls by outcome since the start (for metrics)."""
        counts: dict[str, int] | None = getattr(self, "_call_counts", None)
        if counts is None:
            counts = dict.fromkeys(OUTCOMES, 0)
            self._call_counts = counts
        return counts

    def records_status(self) -> dict[str, Any]:
        """For `branchline status`: the store's state, and calls by outcome since start."""
        recorder, held = self._records_state()
        if recorder is None:
            return {"open": False, "by_outcome": dict(self.call_counts)}
        return {"open": True, "committed": recorder.committed, "pending": recorder.pending(),
                "recovered": recorder.replayed, "pruned": recorder.pruned,
                "last_error": recorder.last_error or None, "held": len(held),
                "by_outcome": dict(self.call_counts)}

    def _wallclock(self, t: float) -> float:
        return t + (time.time() - self.loop.time())

    def _submit_record(self, rec: CallRecord) -> None:
        recorder, _ = self._records_state()
        self.call_counts[rec.outcome] = self.call_counts.get(rec.outcome, 0) + 1
        if recorder is None:
            return
        try:
            recorder.submit(rec)
        except Exception:  # noqa: BLE001  a record must never break a call
            log.exception("call %s: call record not written", rec.call_id)

    def _record_call(self, call: Call, cause: CallEnd, now: float) -> None:
        """`call`'s leg just ended with `cause` (it is out of the call table, its media
        not freed yet): write the call's record, or leave it to the leg that ends last."""
        peer = call.peer
        if peer is not None and self.calls.get(peer.call_id) is peer:
            call.ended = (cause, now)  # the peer leg writes the record when it ends
            return
        _, held = self._records_state()
        if self._fails_over(call, cause):
            held[call.port.name] = self._build(call, cause, now)
            return
        first = peer.ended if peer is not None and peer.ended is not None else None
        if first is not None:
            cause = first[0]
        held.pop(call.port.name, None)
        if peer is not None:
            held.pop(peer.port.name, None)
        self._submit_record(self._build(call, cause, now))

    def _fails_over(self, call: Call, cause: CallEnd) -> bool:
        """Whether the route's next target will be tried after this leg's failure."""
        from gateway.runtime.failover import fails_over

        attempt_for = getattr(self, "attempt_for", None)
        attempt = attempt_for(call.port) if attempt_for is not None else None
        return (attempt is not None and not attempt.done and call.direction == "out"
                and call.state == "setup" and call.call_id == attempt.current_call
                and bool(attempt.remaining)
                and fails_over(cause.kind.replace("-", " "), cause.status))

    def _record_port_idle(self, port: Port) -> None:
        """The port went idle: a failed-over call whose next target made no leg is
        written now, with every target tried."""
        _, held = self._records_state()
        rec = held.pop(port.name, None)
        if rec is None:
            return
        attempt_for = getattr(self, "attempt_for", None)
        attempt = attempt_for(port) if attempt_for is not None else None
        if attempt is not None and (not attempt.done or attempt.failures):
            if not attempt.done:  # the caller hung up while the next target was placed
                cause = CallEnd("local-cancel", "local cancel")
            else:  # the last target failed without a leg (e.g. no such target)
                last = attempt.failures[-1]
                cause = CallEnd(last.reason.replace(" ", "-"), f"{last.reason} "
                                f"{last.status or ''}".strip(), last.status)
                if last.status is not None and last.status >= 400 and last.status != 503:
                    cause = CallEnd("rejected", cause.text, last.status)
            rec = replace(rec, attempts=tuple(attempt.history()), cause=cause.kind,
                          reason=cause.text, sip_status=cause.status,
                          outcome=outcome_for(cause, False),
                          end=self._wallclock(self.loop.time()))
        self._submit_record(rec)

    def _record_unplaced(self, port: Port | None, number: str, cause: CallEnd, now: float,
                         *, direction: str = "out", remote: str = "") -> None:
        """A call that never got a leg (no route, refused, for no line): one record."""
        at = self._wallclock(now)
        here = (port.name, port.kind) if port is not None else ("", "")
        there = (number, "number") if direction == "out" else ("sip", "sip")
        a, b = (here, there) if direction == "out" else (there, here)
        self._submit_record(CallRecord(
            uuid=str(uuid.uuid4()), call_id=f"unplaced-{secrets.token_hex(8)}",
            direction=direction, port_a=a[0], port_a_kind=a[1], port_b=b[0],
            port_b_kind=b[1], start=at, end=at, outcome=outcome_for(cause, False),
            cause=cause.kind, reason=cause.text, sip_status=cause.status,
            remote=remote or number))

    def _build(self, call: Call, cause: CallEnd, now: float) -> CallRecord:
        peer = call.peer
        # The caller's leg is side a: for a port-to-port call the "out" leg.
        first_leg = peer if peer is not None and call.direction == "in" else call
        other = call if first_leg is peer else peer
        start = min(call.started, peer.started) if peer is not None else call.started
        answered = call.answered_at if call.answered_at is not None else (
            peer.answered_at if peer is not None else None)
        if peer is not None and other is not None:
            a = (first_leg.port.name, first_leg.port.kind)
            b = (other.port.name, other.port.kind)
            target: str | None = other.port.name
        else:
            trunk = _trunk_of(call.route)
            far = (trunk, "trunk") if trunk else ("sip", "sip")
            here = (call.port.name, call.port.kind)
            a, b = (here, far) if call.direction == "out" else (far, here)
            target = call.remote
        route = call.route or (peer.route if peer is not None else None)
        attempts = call.attempts or (peer.attempts if peer is not None else [])
        media: dict[str, Any] = {}
        if call.media is not None:
            stats = call.media.stats()
            if stats.get("packets_received", 0) > 0:
                media = {
                    "rtp_loss_pct": round(100.0 * float(stats["loss_fraction"]), 2),
                    "jitter_ms": round(float(stats["jitter_ms"]), 2),
                    "r_factor": round(float(stats["r_factor"]), 1),
                    "mos": round(float(stats["mos"]), 2),
                    "jb_delay_ms": round(float(stats.get("jb_delay_mean_ms", 0.0)), 1),
                    "concealed_pct": round(float(stats.get("concealed_pct", 0.0)), 2),
                }
            media["packets_received"] = int(stats.get("packets_received", 0))
            media["packets_sent"] = int(stats.get("packets_sent", 0))
        return CallRecord(
            uuid=str(uuid.uuid4()), call_id=first_leg.call_id, direction=first_leg.direction
            if peer is None else "local", port_a=a[0], port_a_kind=a[1], port_b=b[0],
            port_b_kind=b[1], start=self._wallclock(start), end=self._wallclock(now),
            answer=self._wallclock(answered) if answered is not None else None,
            outcome=outcome_for(cause, answered is not None), cause=cause.kind,
            reason=cause.text, sip_status=cause.status, remote=call.remote, route=route,
            target=target, attempts=tuple(attempts),
            codec=call.params.codec if call.params is not None else None, **media)
