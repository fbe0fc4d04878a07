"""bench.registrar's sipp side: the phones' CSV files, one sipp run per step, and the pure
helpers that turn sipp's -trace_stat/-trace_err files into counts (unit-tested in
tests/unit/test_bench_registrar.py)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.sip_sipp import percentile, read_sipp_rtt, read_sipp_stats, unexpected_statuses

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "bench" / "sipp"
REGISTER_XML = SCENARIOS / "registrar_register.xml"
PHONE_XML = SCENARIOS / "registrar_phone.xml"
FIRST_USER = 1000

#: sipp's cumulative failure columns in -trace_stat (each also has a "(P)" periodic twin).
FAIL_COLUMNS = (
    "FailedCannotSendMessage", "FailedMaxUDPRetrans", "FailedTcpConnect", "FailedTcpClosed",
    "FailedUnexpectedMessage", "FailedCallRejected", "FailedCmdNotSent",
    "FailedRegexpDoesntMatch", "FailedRegexpShouldntMatch", "FailedRegexpHdrNotFound",
    "FailedOutboundCongestion", "FailedTimeoutOnRecv", "FailedTimeoutOnSend",
)


@dataclass(frozen=True)
class Phone:
    """One bench phone: digest user = extension, and its password."""

    user: str
    password: str


def make_phones(count: int) -> list[Phone]:
    """`count` phones, users 1000, 1001, ...; each its own password (8+ chars, not the user)."""
    if count < 2 or count % 2:
        raise ValueError(f"phones: expected an even number >= 2, got {count}")
    return [Phone(str(FIRST_USER + i), f"bench-{FIRST_USER + i}-{(i * 7919) % 9973:04d}")
            for i in range(count)]


def auth_keyword(phone: Phone) -> str:
    """sipp's [authentication] keyword for a phone. sipp 3.6 does not expand [fieldN]
    nested inside the keyword, so the whole keyword goes into the CSV as one field."""
    return f"[authentication username={phone.user} password={phone.password}]"


def phones_csv(phones: Sequence[Phone]) -> str:
    """-inf file for registrar_register.xml: user;password;auth keyword, one phone a line."""
    return "SEQUENTIAL\n" + "".join(
        f"{p.user};{p.password};{auth_keyword(p)}\n" for p in phones)


def call_pairs(phones: Sequence[Phone]) -> list[tuple[Phone, Phone]]:
    """Caller i of the first half calls phone i of the second half: no phone is both
    caller and callee, and a callee is called again only after every other one was."""
    half = len(phones) // 2
    return [(phones[i], phones[half + i]) for i in range(half)]


def calls_csv(phones: Sequence[Phone]) -> str:
    """-inf file for registrar_call.xml: caller;callee;caller's auth keyword."""
    return "SEQUENTIAL\n" + "".join(
        f"{a.user};{b.user};{auth_keyword(a)}\n" for a, b in call_pairs(phones))


# ----------------------------------------------------------------------- sipp's files


@dataclass
class SippCounts:
    """What one sipp process reported: calls (scenario runs) and why some failed."""

    created: int = 0
    successful: int = 0
    failed: int = 0
    retransmissions: int = 0
    failure_kinds: dict[str, int] = field(default_factory=dict)
    unexpected: dict[str, int] = field(default_factory=dict)
    exit_code: int | None = None
    stats_found: bool = False

    @property
    def clean(self) -> bool:
        """Every scenario run sipp started completed, and sipp saw it so."""
        return (self.stats_found and self.failed == 0 and self.created > 0
                and self.successful == self.created)


def counts_from_stats(stats: dict[str, str], error_log: str = "") -> SippCounts:
    """SippCounts from the last -trace_stat row ({column: value}) and the -trace_err text.
    Empty stats (sipp died before writing any) count as not found, so never clean."""

    def col(name: str) -> int:
        try:
            return int(stats.get(name, "0") or 0)
        except ValueError:
            return 0

    return SippCounts(
        created=col("TotalCallCreated"),
        successful=col("SuccessfulCall(C)"),
        failed=col("FailedCall(C)"),
        retransmissions=col("Retransmissions(C)"),
        failure_kinds={c: col(f"{c}(C)") for c in FAIL_COLUMNS if col(f"{c}(C)")},
        unexpected=unexpected_statuses(error_log),
        stats_found=bool(stats),
    )


@dataclass
class Step:
    """One rung of a ladder: sipp at `rate` against one registrar, and what it cost."""

    peer: str
    kind: str  # "register", "re-register", "repair" or "calls"
    rate: float
    planned: int
    wall_s: float
    uac: SippCounts
    uas: SippCounts | None = None  # the called phones, for "calls"
    cpu_pct: float | None = None   # the registrar's CPU, % of one core, over the step
    rtt_ms: list[float] = field(default_factory=list)
    error_tail: str = ""
    tail_s: float = 0.0  # of wall_s, the last run's own length (a call's hold time)

    @property
    def clean(self) -> bool:
        """Every planned run succeeded on both sides; no failure anywhere."""
        ok = self.uac.clean and self.uac.created == self.planned
        if self.uas is not None:
            ok = ok and self.uas.failed == 0 and self.uas.successful >= self.uac.successful
        return ok

    @property
    def achieved(self) -> float:
        """Completed runs per second: over the wall time from the first start to the last
        end, less the last run's own length (`tail_s`)."""
        span = self.wall_s - self.tail_s
        return self.uac.successful / span if span > 0 else 0.0

    @property
    def sustained(self) -> float | None:
        """The rate this step shows the registrar keeps up with: None unless clean; the
        offered rate when completions kept within 10 % of it, else the completion rate
        (every run succeeded, but answers fell behind as they queued up)."""
        if not self.clean:
            return None
        return self.rate if self.achieved >= 0.9 * self.rate else round(self.achieved, 1)

    def summary(self) -> dict[str, Any]:
        """JSON-ready (without per-call times)."""
        out = asdict(self)
        out.pop("rtt_ms")
        out["clean"] = self.clean
        if self.clean:
            out.pop("error_tail")
        out["achieved_per_s"] = round(self.achieved, 1)
        if self.rtt_ms:
            out["rtt_p50_ms"] = percentile(self.rtt_ms, 50)
            out["rtt_p99_ms"] = percentile(self.rtt_ms, 99)
        return out


def highest_clean_rate(steps: Sequence[Step], kinds: Sequence[str]) -> float | None:
    """The highest `Step.sustained` rate among the steps of these kinds (None when no step
    was clean): the highest rate with zero failures that the registrar kept up with."""
    rates = [r for s in steps if s.kind in kinds and (r := s.sustained) is not None]
    return max(rates) if rates else None


def failure_text(counts: SippCounts) -> str:
    """Short failure description for the table ("-" when there is none)."""
    parts = [f"{k}={v}" for k, v in counts.failure_kinds.items()]
    parts += [f"{k}: {v}" for k, v in sorted(counts.unexpected.items(),
                                               key=lambda kv: -kv[1])[:3]]
    if not counts.stats_found:
        parts.append("no sipp statistics (sipp failed to start?)")
    return ", ".join(parts) or "-"


# ----------------------------------------------------------------------------- running


def sipp_binary() -> str:
    """sipp's path, or RuntimeError with the package to install."""
    found = shutil.which("sipp")
    if found is None:
        raise RuntimeError("sipp is not installed (apt-get install sip-tester)")
    return found


def pin(cpu: int | None) -> Callable[[], None] | None:
    """preexec_fn that pins the child (and everything it forks) to one CPU, as
    `taskset -c <cpu>` does; None leaves it to the scheduler."""
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def _stat_args(rundir: Path, name: str) -> list[str]:
    return ["-trace_stat", "-stf", str(rundir / f"{name}_stat.csv"), "-fd", "1",
            "-trace_err", "-error_file", str(rundir / f"{name}_errors.log")]


def _collect(rundir: Path, name: str, exit_code: int | None) -> tuple[SippCounts, str]:
    stat = rundir / f"{name}_stat.csv"
    err = rundir / f"{name}_errors.log"
    errors = err.read_text(errors="replace") if err.exists() else ""
    counts = counts_from_stats(read_sipp_stats(stat) if stat.exists() else {}, errors)
    counts.exit_code = exit_code
    return counts, errors[-600:]


def run_uac(target: tuple[str, int], scenario: Path, csv_path: Path, rundir: Path, *,
            rate: float, count: int, local_port: int, extra: Sequence[str] = (),
            cpu: int | None = None, timeout: float = 120.0) -> tuple[SippCounts, float, list[float],
                                                                     str]:
    """sipp as client: `count` scenario runs at `rate`/s; waits for all of them to end.
    Returns the counts, the wall time, the response times (measure 1) and an error tail."""
    rundir.mkdir(parents=True, exist_ok=True)
    cmd = [sipp_binary(), f"{target[0]}:{target[1]}", "-sf", str(scenario), "-inf", str(csv_path),
           "-r", f"{rate:g}", "-m", str(count), "-i", "127.0.0.1", "-p", str(local_port),
           "-recv_timeout", "8000", "-timeout", f"{int(timeout)}s", "-timeout_error",
           "-max_recv_loops", "10000", "-max_sched_loops", "10000",
           "-nostdin", "-trace_rtt", "-rtt_freq", "1", *_stat_args(rundir, "uac"), *extra]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=rundir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          timeout=timeout + 30, check=False, preexec_fn=pin(cpu))
    wall = time.monotonic() - start
    counts, tail = _collect(rundir, "uac", proc.returncode)
    rtt_files = sorted(rundir.glob("*_rtt.csv"))
    rtt = read_sipp_rtt(rtt_files[-1]) if rtt_files else []
    return counts, wall, rtt, (tail + proc.stderr.decode(errors="replace")[-300:]).strip()


class SippServer:
    """sipp as the called phones (registrar_phone.xml) on one port, for one step."""

    def __init__(self, rundir: Path, port: int, media_port: int, cpu: int | None) -> None:
        self.rundir = rundir
        self.port = port
        self.media_port = media_port
        self.cpu = cpu
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start listening; returns once sipp had a moment to bind (it prints nothing)."""
        self.rundir.mkdir(parents=True, exist_ok=True)
        cmd = [sipp_binary(), "-sf", str(PHONE_XML), "-i", "127.0.0.1", "-p", str(self.port),
               "-mi", "127.0.0.1", "-mp", str(self.media_port), "-nostdin",
               "-max_recv_loops", "10000", "-max_sched_loops", "10000",
               *_stat_args(self.rundir, "uas")]
        self._proc = subprocess.Popen(cmd, cwd=self.rundir, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, preexec_fn=pin(self.cpu))
        time.sleep(0.3)
        if self._proc.poll() is not None:
            raise RuntimeError(f"sipp (called phones) exited with {self._proc.returncode} "
                               f"on port {self.port}")

    def stop(self, timeout: float = 15.0) -> SippCounts:
        """SIGUSR1 (sipp's soft exit: calls in progress finish), wait, read its counts."""
        proc = self._proc
        code: int | None = None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGUSR1)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            code = proc.returncode
        counts, _ = _collect(self.rundir, "uas", code)
        return counts
