"""The figures of `bench.report`: the goals, each bench's output turned into rows, the verdicts.

Pure: text and dicts in, rows out. `bench/report.py` runs the benches and prints the rows.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

MET, MISSED, FAILED, NOT_JUDGED = "met", "MISSED", "FAILED", "not judged"


@dataclass(frozen=True)
class Goal:
    """A target a figure is held to, and where it was set.

    `op` is one of "<=", "<", ">=", "abs<" (|value| < limit) or "<=peer" (no worse than the
    peer's figure in the same run). `full_only`: the goal needs the full run's size (1,000
    phones, the 64-call step, the rates up to the goal); a --quick run is not judged on it.
    """

    text: str
    op: str
    limit: float | None
    source: str
    full_only: bool = False


#: Every goal the report judges, with the issue (or file) that set it.
GOALS: dict[str, Goal] = {
    "pacing_p99": Goal("gateway p99 <= baresip p99 (same call)", "<=peer", None,
                       "issue 2, must-hold 3 (bench/rtp_pacing)"),
    # A least-squares drift over the quick run's 8 s call is mostly scheduler noise.
    "pacing_drift": Goal("|drift| < 50 ppm", "abs<", 50.0, "issue 2, must-hold 3",
                         full_only=True),
    "cpu_per_call": Goal("<= 1 % of a core per call", "<=", 1.0, "issue 11, must-hold 5"),
    "calls_per_core": Goal(">= 64 calls on one core, no loss, pacing p99 < 1 ms", ">=", 64,
                           "issue 11, must-hold 5"),
    "idle_rss": Goal("<= 45 MB idle, two registered lines", "<=", 45.0, "issue 6"),
    "bindings": Goal(">= 1,000 phones bound", ">=", 1000, "issue 8, must-hold 3",
                     full_only=True),
    "registrations": Goal(">= 200 registrations/s on one core", ">=", 200,
                          "issue 8, must-hold 3", full_only=True),
    "registrar_calls": Goal(">= 50 calls/s on one core, zero failures", ">=", 50,
                            "issue 8, must-hold 3", full_only=True),
    "detect_p99": Goal("p99 detection < 2 s", "<", 2.0, "issue 8, must-hold 2"),
    "calls_lost": Goal("no call lost", "<=", 0, "issue 8, must-hold 2"),
}


@dataclass
class Row:
    """One line of the table: the gateway's figure beside the peer's, and its goal."""

    bench: str
    figure: str
    gateway: float | None
    unit: str = ""
    peer_name: str = ""
    peer: float | None = None
    goal: str | None = None  # a key of GOALS
    verdict: str = ""  # met, MISSED, FAILED, not judged, or "" (no goal)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.goal is not None:
            out["goal_text"] = GOALS[self.goal].text
            out["goal_source"] = GOALS[self.goal].source
        return out


def meets(goal: Goal, value: float, peer: float | None = None) -> bool | None:
    """Whether `value` meets `goal`; None when it cannot be judged (no peer figure)."""
    if goal.op == "<=peer":
        return None if peer is None else value <= peer
    assert goal.limit is not None
    if goal.op == "<=":
        return value <= goal.limit
    if goal.op == "<":
        return value < goal.limit
    if goal.op == ">=":
        return value >= goal.limit
    if goal.op == "abs<":
        return abs(value) < goal.limit
    raise ValueError(f"goal {goal.text!r}: unknown op {goal.op!r}")


def judge(row: Row, quick: bool = False) -> Row:
    """Set `row.verdict` from its goal (a FAILED row stays FAILED)."""
    if row.verdict == FAILED or row.goal is None:
        return row
    goal = GOALS[row.goal]
    if quick and goal.full_only:
        row.verdict = NOT_JUDGED
        row.note = _join(row.note, "needs the full run")
        return row
    if row.gateway is None or (isinstance(row.gateway, float) and math.isnan(row.gateway)):
        row.verdict = MISSED
        row.note = _join(row.note, "no figure")
        return row
    ok = meets(goal, row.gateway, row.peer)
    row.verdict = NOT_JUDGED if ok is None else (MET if ok else MISSED)
    return row


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a else b


def failed_rows(bench: str, error: str) -> list[Row]:
    """A bench that did not produce its figures: one FAILED row carrying the error."""
    first = error.strip().splitlines()[-1] if error.strip() else "no output"
    return [Row(bench, "(bench failed)", None, verdict=FAILED, note=first[:300])]


def last_json(text: str) -> dict[str, Any]:
    """The last JSON object in a bench's stdout: its last line, or an indented object that
    starts on a line of its own ("{") and runs to the end. ValueError if there is none."""
    lines = text.rstrip().splitlines()
    for line in reversed(lines):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                value = json.loads(line)
            except ValueError:
                break
            if isinstance(value, dict):
                return value
            break
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].rstrip() == "{":
            try:
                value = json.loads("\n".join(lines[i:]))
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    raise ValueError("no JSON object at the end of the output")


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _dig(data: Any, *path: str | int) -> Any:
    for key in path:
        if isinstance(data, dict):
            data = data.get(key)
        elif isinstance(data, list) and isinstance(key, int) and -len(data) <= key < len(data):
            data = data[key]
        else:
            return None
    return data


# ----------------------------------------------------------------------------- per bench


def rows_rtp(data: dict[str, Any]) -> list[Row]:
    gw = _dig(data, "streams", "gateway->baresip") or {}
    bs = _dig(data, "streams", "baresip->gateway") or {}
    rows = [Row("rtp_pacing", f"RTP pacing {name}", _num(gw.get(key)), unit,
                "baresip", _num(bs.get(key)))
            for name, key, unit in (("p50", "p50_ms", "ms"), ("p99", "p99_ms", "ms"),
                                    ("max", "max_ms", "ms"), ("drift", "drift_ppm", "ppm"))]
    rows[1].goal, rows[3].goal = "pacing_p99", "pacing_drift"
    b2b = _num(gw.get("back_to_back"))
    rows.append(Row("rtp_pacing", "RTP back-to-back sends", b2b, "", "baresip",
                    _num(bs.get("back_to_back"))))
    return rows


def rows_media(data: dict[str, Any]) -> list[Row]:
    baresip = _num(data.get("baresip_pct_per_call"))
    rows: list[Row] = []
    for step in data.get("steps") or []:
        calls, up = step.get("calls"), step.get("up")
        note = "" if up == calls else f"only {up} of {calls} calls up"
        if step.get("passed") is False:
            p99 = _num(step.get("p99_ms"))
            note = _join(note, f"step not passed: lost {step.get('lost', 0)}, late "
                               f"{step.get('late', 0)}, pacing p99 {fmt(p99, 'ms')}")
        per_call = _num(step.get("gw_per_call")) if up else None  # no call up: no figure
        rows.append(Row("media", f"CPU per bridged call, {calls} calls", per_call, "% core",
                        "baresip (1 call)", baresip, "cpu_per_call", note=note))
    tried = max((s.get("calls", 0) for s in data.get("steps") or []), default=0)
    rows.append(Row("media", "most calls on one core, no loss, pacing p99 < 1 ms",
                    _num(data.get("largest_passed")), "calls", goal="calls_per_core",
                    note=_join(f"largest step tried {tried}",
                               f"daemon scheduling {data.get('scheduling') or 'normal'}")))
    rows.append(Row("media", "calls one core carries at the measured CPU/call",
                    _num(data.get("calls_per_core")), "calls",
                    note="extrapolated from the largest step"))
    return rows


def rows_footprint(data: dict[str, Any], baresip_rss_per_call_mb: float | None = None,
                   ) -> list[Row]:
    reg = data.get("registered") or {}
    calls = data.get("calls") or {}

    def mb(v: Any) -> float | None:
        n = _num(v)
        return None if n is None else n / 1024

    rows = [
        Row("footprint", "idle RSS, two registered lines", mb(reg.get("gateway_idle_rss_kib")),
            "MB", "baresip", mb(reg.get("baresip_idle_rss_kib")), "idle_rss"),
        Row("footprint", "start to registered", _num(reg.get("gateway_registered_s")), "s",
            "baresip", _num(reg.get("baresip_registered_s"))),
        Row("footprint", "idle CPU, two registered lines", _num(reg.get("gateway_idle_cpu_pct")),
            "% core", "baresip", _num(reg.get("baresip_idle_cpu_pct"))),
    ]
    per_call = None
    idle, busy, n = (_num(calls.get("idle_rss_kib")), _num(calls.get("calls_rss_kib")),
                     _num(calls.get("calls")))
    if idle is not None and busy is not None and n:
        per_call = (busy - idle) / n / 1024
    rows.append(Row("footprint", "RSS per call", per_call, "MB", "baresip",
                    baresip_rss_per_call_mb,
                    note="gateway: 10 line-to-line calls on 20 lines, after the first call "
                         "loaded numpy; baresip: one call, bench.report_probes"))
    return rows


def rows_sip(data: dict[str, Any]) -> list[Row]:
    gw = _dig(data, "gateway", "latency", "invite_180") or {}
    kam = _dig(data, "kamailio", "invite_180") or {}
    rows = [Row("sip", f"INVITE->180 {p}", _num(gw.get(f"{p}_ms")), "ms", "Kamailio",
                _num(kam.get(f"{p}_ms"))) for p in ("p50", "p99")]
    steps = _dig(data, "gateway", "steps") or []
    tried = max((s.get("rate", 0) for s in steps), default=None)
    rows.append(Row("sip", "calls/s into the UAS, zero failures",
                    _num(_dig(data, "gateway", "max_clean_cps")), "/s",
                    note=f"highest rate tried {tried}; Kamailio answers the latency run only"))
    return rows


def rows_registrar(data: dict[str, Any]) -> list[Row]:
    peers = data.get("peers") or {}
    gw, kam = peers.get("gateway") or {}, peers.get("kamailio") or {}

    def bound(peer: dict[str, Any]) -> float | None:
        first = next((s for s in peer.get("steps") or [] if s.get("kind") == "register"), None)
        return None if first is None else _num(_dig(first, "uac", "successful"))

    rows = [
        Row("registrar", "bindings (phones registered)", bound(gw), "", "Kamailio", bound(kam),
            "bindings"),
        Row("registrar", "registrations/s, zero failures", _num(gw.get("registrations_per_s")),
            "/s", "Kamailio", _num(kam.get("registrations_per_s")), "registrations",
            note="a registration is 2 REGISTER requests"),
        Row("registrar", "calls/s phone to phone, zero failures", _num(gw.get("calls_per_s")),
            "/s", "Kamailio", _num(kam.get("calls_per_s")), "registrar_calls"),
    ]
    for row, kinds in ((rows[1], ("register", "re-register")), (rows[2], ("calls",))):
        tried = max((s.get("rate", 0) for s in gw.get("steps") or []
                     if s.get("kind") in kinds), default=None)
        if row.gateway is not None and tried is not None and row.gateway >= tried:
            row.note = _join(row.note, f"gateway clean at the highest rate tried ({fmt(tried)}"
                                       "/s): its limit is above it")
    for name, peer in (("gateway", gw), ("kamailio", kam)):
        if peer.get("error"):
            rows[0].note = _join(rows[0].note, f"{name}: {str(peer['error'])[:120]}")
    return rows


def rows_failover(data: dict[str, Any]) -> list[Row]:
    fig = data.get("figures") or {}
    rows = [
        Row("failover", "failover detection p50", _num(_dig(fig, "detect_status", "p50")), "s"),
        Row("failover", "failover detection p99", _num(_dig(fig, "detect_status", "p99")), "s",
            goal="detect_p99", note=f"{fig.get('rounds')} rounds"),
        Row("failover", "first call through GSM p99", _num(_dig(fig, "gsm_call", "p99")), "s"),
        Row("failover", "fail-back p50", _num(_dig(fig, "failback", "p50")), "s",
            note="includes failback_after (5 s by default)"),
        Row("failover", "fail-back p99", _num(_dig(fig, "failback", "p99")), "s"),
        Row("failover", "calls lost", _num(fig.get("calls_lost")), "",
            goal="calls_lost", note=f"of {fig.get('calls_placed')}"),
    ]
    return rows


_TICK = re.compile(r"^(\w+)\s+ticks\s+\d+\s+lateness median\s+([\d.]+) ms\s+p99\s+([\d.]+) ms")
_SMS = re.compile(r"^(FULL|NORMAL)\s+([\d.]+) ms")


def rows_call_records(text: str) -> list[Row]:
    """bench.call_records prints text: the tick lateness of each phase."""
    p99 = {m.group(1): float(m.group(3)) for line in text.splitlines()
           if (m := _TICK.match(line.strip()))}
    if "recorder" not in p99:
        raise ValueError("no 'recorder' phase line in bench.call_records output")
    return [Row("call_records", "20 ms tick lateness p99, 50 records/s", p99["recorder"], "ms",
                "no records", p99.get("idle"), note=f"SQLite commit on the loop instead: {fmt(p99.get('inline'), 'ms')}")]


def rows_sms_queue(text: str) -> list[Row]:
    """bench.sms_queue prints text: store median per synchronous mode."""
    med = {m.group(1): float(m.group(2)) for line in text.splitlines()
           if (m := _SMS.match(line.strip()))}
    if "FULL" not in med:
        raise ValueError("no FULL line in bench.sms_queue output")
    return [Row("sms_queue", "SMS store, power-cut safe (median)", med["FULL"], "ms",
                "synchronous=NORMAL", med.get("NORMAL"))]


def rows_baresip_rss(data: dict[str, Any]) -> float | None:
    """The probe's baresip RSS per call, in MB."""
    kib = _num(_dig(data, "baresip", "rss_per_call_kib"))
    return None if kib is None else kib / 1024


#: bench name -> turns its output (parsed JSON, or stdout for the text benches) into rows.
PARSERS: dict[str, Callable[[Any], list[Row]]] = {
    "rtp_pacing": rows_rtp,
    "media": rows_media,
    "sip": rows_sip,
    "registrar": rows_registrar,
    "failover": rows_failover,
    "call_records": rows_call_records,
    "sms_queue": rows_sms_queue,
}


def fmt(value: float | None, unit: str = "") -> str:
    """Three significant figures, at most 3 decimals; "-" for no figure."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    a = abs(value)
    if a >= 100 or value == int(value):
        text = f"{value:,.0f}"
    elif a >= 10:
        text = f"{value:.1f}"
    elif a >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3f}"
    return f"{text} {unit}".rstrip() if unit else text
