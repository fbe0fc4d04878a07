"""bench.sip's sipp driver: runs bench/sipp/uac_rtd.xml, reads sipp's counts, and times
INVITE->100/180 from a kernel-timestamped loopback capture."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "bench" / "sipp" / "uac_rtd.xml"



@dataclass
class SippRun:
    """sipp's own counts for one run at one rate, and the failure reasons it logged."""

    rate: float
    seconds: float
    exit_code: int
    created: int = 0
    successful: int = 0
    failed: int = 0
    retransmissions: int = 0
    failure_kinds: dict[str, int] = field(default_factory=dict)
    unexpected: dict[str, int] = field(default_factory=dict)
    rtt_ms: list[float] = field(default_factory=list)
    error_tail: str = ""

    @property
    def clean(self) -> bool:
        """Every call completed: the rate counts as sustained."""
        return self.failed == 0 and self.created > 0 and self.successful == self.created

    def summary(self) -> dict[str, Any]:
        """JSON-ready counts (without the per-call times)."""
        out = asdict(self)
        out.pop("rtt_ms")
        out["clean"] = self.clean
        return out


_FAIL_COLUMNS = (
    "FailedCannotSendMessage",
    "FailedMaxUDPRetrans",
    "FailedTcpConnect",
    "FailedTcpClosed",
    "FailedUnexpectedMessage",
    "FailedCallRejected",
    "FailedCmdNotSent",
    "FailedRegexpDoesntMatch",
    "FailedRegexpShouldntMatch",
    "FailedRegexpHdrNotFound",
    "FailedOutboundCongestion",
    "FailedTimeoutOnRecv",
    "FailedTimeoutOnSend",
)


def read_sipp_stats(path: Path) -> dict[str, str]:
    """The last row of a sipp -trace_stat file as {column: value} (cumulative columns)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter=";"))
    if len(rows) < 2:
        return {}
    header, last = rows[0], rows[-1]
    return dict(zip(header, last, strict=False))


def read_sipp_rtt(path: Path) -> list[float]:
    """Response times (ms) of measure 1 from a sipp -trace_rtt file."""
    out: list[float] = []
    with open(path, newline="") as f:
        for row in csv.reader(f, delimiter=";"):
            if len(row) >= 3 and row[2].strip() == "1":
                try:
                    out.append(float(row[1]))
                except ValueError:
                    continue
    return out


_UNEXPECTED = re.compile(r"while expecting '([^']*)' \(index \d+\), received '([^\r\n']*)")
_DEAD_CALL = re.compile(r"Dead call \S+ \((\w+)\), received '([^\r\n']*)")


def unexpected_statuses(error_log: str) -> dict[str, int]:
    """Count what sipp received instead of what it expected ("180 <- 486 Busy Here"), and
    late messages for calls it had already closed ("dead call <- 200 OK"); the latter are
    not failures but show the server answering late."""
    counts: dict[str, int] = {}
    for expected, got in _UNEXPECTED.findall(error_log):
        key = f"expected {expected}, got {got.strip().removeprefix('SIP/2.0 ')}"
        counts[key] = counts.get(key, 0) + 1
    for _state, got in _DEAD_CALL.findall(error_log):
        key = f"after the call ended: {got.strip().removeprefix('SIP/2.0 ')}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def run_sipp(
    target: tuple[str, int], rate: float, seconds: float, workdir: Path, *, users_csv: Path,
    local_port: int, media_port: int, call_ms: int, tag: str,
) -> SippRun:
    """One sipp run of `rate * seconds` calls; waits for every call to finish."""
    sipp = shutil.which("sipp")
    if sipp is None:
        raise RuntimeError("sipp is not installed (apt-get install sip-tester)")
    rundir = workdir / f"sipp-{tag}"
    rundir.mkdir(parents=True, exist_ok=True)
    calls = max(1, round(rate * seconds))
    stat_file = rundir / "stat.csv"
    err_file = rundir / "errors.log"
    cmd = [
        sipp, f"{target[0]}:{target[1]}", "-sf", str(SCENARIO), "-inf", str(users_csv),
        "-r", f"{rate:g}", "-m", str(calls), "-d", str(call_ms),
        "-i", "127.0.0.1", "-p", str(local_port), "-mi", "127.0.0.1", "-mp", str(media_port),
        "-recv_timeout", "8000", "-timeout", f"{int(seconds + 40)}s", "-timeout_error",
        "-nostdin", "-trace_stat", "-stf", str(stat_file), "-fd", "1",
        "-trace_rtt", "-rtt_freq", "1", "-trace_err", "-error_file", str(err_file),
    ]
    proc = subprocess.run(cmd, cwd=rundir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          timeout=seconds + 60, check=False)
    run = SippRun(rate=rate, seconds=seconds, exit_code=proc.returncode)
    stats = read_sipp_stats(stat_file) if stat_file.exists() else {}

    def count(col: str) -> int:
        try:
            return int(stats.get(col, "0") or 0)
        except ValueError:
            return 0

    run.created = count("TotalCallCreated")
    run.successful = count("SuccessfulCall(C)")
    run.failed = count("FailedCall(C)")
    run.retransmissions = count("Retransmissions(C)")
    run.failure_kinds = {c: count(f"{c}(C)") for c in _FAIL_COLUMNS if count(f"{c}(C)")}
    errors = err_file.read_text(errors="replace") if err_file.exists() else ""
    run.unexpected = unexpected_statuses(errors)
    run.error_tail = (errors[-600:] + proc.stderr.decode(errors="replace")[-300:]).strip()
    rtt_files = sorted(rundir.glob("*_rtt.csv"))
    if rtt_files:
        run.rtt_ms = read_sipp_rtt(rtt_files[-1])
    if not stats:
        run.failed = max(run.failed, calls)
    return run


# ----------------------------------------------------------------------------- latency


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-len(ordered) * q // 100)))
    return ordered[int(rank) - 1]


def _header(payload: bytes, name: bytes) -> bytes | None:
    head = payload.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name:
            return value.strip()
    return None


def invite_delays(datagrams: Sequence[Any], server_port: int) -> dict[str, list[float]]:
    """Per call: seconds from the first INVITE sent to `server_port` to the first 100 and
    180 the server sent back (matched by Call-ID, INVITE CSeq only)."""
    sent: dict[bytes, float] = {}
    firsts: dict[str, dict[bytes, float]] = {"100": {}, "180": {}}
    for d in datagrams:
        payload: bytes = d.payload
        if d.dport == server_port and payload.startswith(b"INVITE "):
            cid = _header(payload, b"call-id")
            if cid is not None and cid not in sent:
                sent[cid] = d.time
        elif d.sport == server_port and payload.startswith(b"SIP/2.0 "):
            code = payload[8:11].decode(errors="replace")
            cseq = _header(payload, b"cseq") or b""
            cid = _header(payload, b"call-id")
            if code in firsts and cseq.endswith(b"INVITE") and cid is not None:
                firsts[code].setdefault(cid, d.time)
    return {
        code: [t - sent[cid] for cid, t in seen.items() if cid in sent]
        for code, seen in firsts.items()
    }


def latency_figures(delays_s: Sequence[float]) -> dict[str, float | int | None]:
    """p50/p99/max in ms of a list of delays in seconds."""
    if not delays_s:
        return {"calls": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    ms = [d * 1000.0 for d in delays_s]
    return {
        "calls": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(max(ms), 3),
    }


def measure_latency(
    target: tuple[str, int], rate: float, seconds: float, workdir: Path, tag: str,
    **sipp_args: Any,
) -> tuple[SippRun, dict[str, Any]]:
    """A sipp run at `rate` with INVITE->100/180 delays taken from a loopback capture
    (kernel timestamps) when permitted, else from sipp's -trace_rtt (1 ms steps)."""
    from bench.capture import LoopbackCapture

    port = target[1]
    cap: LoopbackCapture | None = LoopbackCapture([(port, port)])
    try:
        assert cap is not None
        cap.start()
    except PermissionError:
        cap = None
    try:
        run = run_sipp(target, rate, seconds, workdir, tag=tag, **sipp_args)
    finally:
        if cap is not None:
            cap.stop()
    if cap is not None:
        delays = invite_delays(cap.datagrams, port)
        figures: dict[str, Any] = {
            "source": "kernel timestamps on lo (bench.capture)",
            "invite_180": latency_figures(delays["180"]),
            "invite_100": latency_figures(delays["100"]),
            "kernel_drops": cap.kernel_drops,
        }
    else:
        figures = {
            "source": "sipp -trace_rtt (1 ms resolution; run as root for the capture)",
            "invite_180": latency_figures([v / 1000.0 for v in run.rtt_ms]),
            "invite_100": latency_figures([]),
        }
    return run, figures
