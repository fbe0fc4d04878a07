"""gateway.runtime.call_records: one record per call, built from the legs as they end."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from gateway.routing.targets import TrunkTarget
from gateway.runtime import call_end
from gateway.runtime.call_records import CallRecords
from gateway.runtime.failover import Attempt
from gateway.runtime.sip_calls import Call
from gateway.store.calls import CallRecord


class Recorder:
    def __init__(self) -> None:
        self.records: list[CallRecord] = []

    def submit(self, rec: CallRecord) -> None:
        self.records.append(rec)


class Host(CallRecords):
    """The parts of Gateway the mixin reads, with `end_call`'s order: out of the table,
    then recorded."""

    def __init__(self) -> None:
        self.loop: Any = SimpleNamespace(time=lambda: 100.0)
        self.calls: dict[str, Call] = {}
        self.call_recorder = Recorder()
        self.attempts: dict[str, Attempt] = {}

    def attempt_for(self, port: Any) -> Attempt | None:
        return self.attempts.get(port.name)

    def end(self, call: Call, cause: call_end.CallEnd, now: float) -> None:
        del self.calls[call.call_id]
        self._record_call(call, cause, now)

    @property
    def recs(self) -> list[CallRecord]:
        return self.call_recorder.records


def port(name: str, kind: str = "fxs") -> Any:
    return SimpleNamespace(name=name, kind=kind, number=name)


def test_port_to_port_call_is_one_record_with_both_ports() -> None:
    h = Host()
    a = Call("local-a", port("1"), "out", "102", "local", 10.0)
    b = Call("local-b", port("2"), "in", "101", "local", 10.0)
    a.peer, b.peer = b, a
    h.calls = {a.call_id: a, b.call_id: b}
    a.answered_at = b.answered_at = 12.0
    h.end(b, call_end.local_hangup(), 20.0)  # line 2 hangs up first
    assert h.recs == []
    h.end(a, call_end.peer_hangup("2"), 20.0)
    (rec,) = h.recs
    assert (rec.port_a, rec.port_b, rec.direction, rec.call_id) == ("1", "2", "local", "local-a")
    assert (rec.outcome, rec.cause) == ("answered", "local-hangup")
    assert rec.talk_seconds == 8.0 and rec.ring_seconds == 2.0
    assert h.call_counts["answered"] == 1


def test_busy_local_call_counts_once() -> None:
    h = Host()
    a = Call("local-a", port("1"), "out", "102", "local", 10.0)
    b = Call("local-b", port("2"), "in", "101", "local", 10.0)
    a.peer, b.peer = b, a
    h.calls = {a.call_id: a, b.call_id: b}
    h.end(b, call_end.rejected(486), 11.0)
    h.end(a, call_end.rejected(486, "line 2"), 11.0)
    (rec,) = h.recs
    assert (rec.outcome, rec.sip_status, rec.answer) == ("busy", 486, None)


def _attempt(h: Host, lp: Any) -> Attempt:
    attempt = Attempt(lp.name, "300", (TrunkTarget("first"), TrunkTarget("pbx")), 10.0)
    h.attempts[lp.name] = attempt
    return attempt


def test_failed_over_leg_leaves_the_record_to_the_next_target() -> None:
    h = Host()
    lp = port("1")
    attempt = _attempt(h, lp)
    first = Call("c1", lp, "out", "sip:300@x", "sip", 10.0, route="trunk:first")
    attempt.placed("c1")
    h.calls = {"c1": first}
    h.end(first, call_end.from_ua("rejected", 503, "out"), 10.5)
    assert h.recs == []  # the next target is tried
    attempt.failed("rejected", 503, 10.5)
    second = Call("c2", lp, "out", "sip:300@x", "sip", 10.5, route="trunk:pbx",
                  attempts=attempt.history())
    attempt.placed("c2")
    second.answered_at = 11.0
    h.calls = {"c2": second}
    h.end(second, call_end.from_ua("remote hangup", None, "out"), 15.0)
    (rec,) = h.recs
    assert (rec.outcome, rec.route, rec.port_b, rec.port_b_kind) == (
        "answered", "trunk:pbx", "pbx", "trunk")
    assert [a["target"] for a in rec.attempts] == ["trunk:first", "trunk:pbx"]
    h._record_port_idle(lp)
    assert len(h.recs) == 1  # nothing held back


def test_failed_over_leg_with_no_next_leg_is_written_when_the_port_idles() -> None:
    h = Host()
    lp = port("1")
    attempt = _attempt(h, lp)
    first = Call("c1", lp, "out", "sip:300@x", "sip", 10.0, route="trunk:first")
    attempt.placed("c1")
    h.calls = {"c1": first}
    h.end(first, call_end.from_ua("timeout", 408, "out"), 11.5)
    attempt.failed("timeout", 408, 11.5)
    assert h.recs == []
    h._record_port_idle(lp)  # the caller hung up before the next target had a leg
    (rec,) = h.recs
    assert (rec.outcome, rec.cause, rec.route) == ("cancelled", "local-cancel", "trunk:first")


def test_unplaced_call_is_recorded() -> None:
    h = Host()
    h._record_unplaced(port("1"), "222", call_end.CallEnd("no-route", "no route 404", 404),
                       50.0)
    (rec,) = h.recs
    assert (rec.port_a, rec.port_b, rec.outcome, rec.sip_status) == ("1", "222", "failed", 404)
    assert h.call_counts["failed"] == 1
