"""CPU per bridged call over the gateway's full media path, at 1, 8, 32 and 64 calls.

Run from the repository root as root (the pacing capture needs an AF_PACKET socket):

    .venv/bin/python -m bench.media [--calls 1,8,32,64] [--hold 10] [--window 4]

For each step the real `branchline run` daemon gets N lines on the `null` backend (each says
1 kHz at -20 dBm0, discards what it hears, answers at once, echo canceller on), and sipp
(the trunk) places N concurrent calls, one to each line, echoing the RTP it gets
(`-rtp_echo`). Every call therefore runs the whole media path both ways in the daemon:
encode and pacing of the line's tone, RTP receive, jitter buffer, decode, concealment, DTMF
detection and echo cancellation on the line's capture.

While all N calls are up, for `--window` seconds, it measures:

- the daemon's CPU (utime + stime of the process, all threads) and sipp's, per call;
  beside them, baresip's CPU for one call of its own (baresip calling baresip, measured
  over the same window length in the same run);
- loss: packets lost or too late summed over the calls' stats in `branchline status`;
- pacing of what the daemon sends: p99 of the interval deviation, worst stream (the
  loopback capture of bench/capture.py).

The daemon runs with the scheduling systemd gives it (`CPUSchedulingPolicy=` and
`CPUSchedulingPriority=` of systemd/branchline.service, read from the file: SCHED_RR 10),
through `chrt`; `--no-realtime` runs it with normal scheduling instead, to compare. Which one
was used is printed and is in the JSON.

Prints a table, the largest N that passed (no loss and p99 < 1 ms) and the calls one core
would carry at the measured CPU per call; the last line is one JSON object. Goals: at most
1 % of a core per call and at least 64 calls per core (printed as met / not met).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.capture import (
    LoopbackCapture,
    PortSpan,
    RtpStream,
    UdpDatagram,
    group_rtp_streams,
    pacing_stats,
)

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "branchline.service"
GATEWAY_RTP: PortSpan = (32000, 33999)
FIRST_NUMBER = 2000
GOAL_CPU_PCT_PER_CALL = 1.0
GOAL_CALLS_PER_CORE = 64
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Step:
    calls: int
    up: int
    gw_cpu_pct: float  # of one core, the whole daemon
    idle_pct: float  # the same with the N lines idle, before the calls
    sipp_cpu_pct: float
    lost: int
    late: int
    concealed: int
    p99_ms: float | None
    streams: int

    @property
    def gw_per_call(self) -> float:
        return self.gw_cpu_pct / max(1, self.up)

    @property
    def net_per_call(self) -> float:
        """Per call, without what the daemon costs with the same lines idle."""
        return max(0.0, self.gw_cpu_pct - self.idle_pct) / max(1, self.up)

    @property
    def sipp_per_call(self) -> float:
        return self.sipp_cpu_pct / max(1, self.up)

    @property
    def passed(self) -> bool:
        return (self.up == self.calls and self.lost + self.late == 0
                and self.p99_ms is not None and self.p99_ms < 1.0 and self.gw_cpu_pct <= 100)


def cpu_seconds(pid: int) -> float:
    """CPU time of a process, all its live threads: the scheduler's own run time
    (/proc/PID/task/*/schedstat, nanoseconds) where the kernel keeps it, else utime + stime
    (10 ms ticks: a 1 s idle figure would be good to only +-1 % of a core)."""
    try:
        total = 0
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except FileNotFoundError:
                continue  # a thread that just ended
        return total / 1e9
    except (FileNotFoundError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14, 15)


def unit_scheduling(unit: Path = UNIT) -> tuple[str, int] | None:
    """(policy, priority) from the unit's CPUSchedulingPolicy= and CPUSchedulingPriority=,
    or None when it sets no real-time policy."""
    values = dict(re.findall(r"^(CPUScheduling(?:Policy|Priority))=(\S+)\s*$",
                             unit.read_text(), re.M))
    policy = values.get("CPUSchedulingPolicy")
    if policy not in ("rr", "fifo"):
        return None
    return policy, int(values.get("CPUSchedulingPriority", "1"))


def scheduling(realtime: bool) -> tuple[list[str], str]:
    """The command prefix that runs the daemon as the unit does, and a label for it."""
    wanted = unit_scheduling() if realtime else None
    if wanted is None:
        return [], "normal" + (" (--no-realtime)" if realtime is False else "")
    policy, priority = wanted
    argv = ["chrt", f"--{policy}", str(priority)]
    probe = subprocess.run([*argv, "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        raise SystemExit(f"bench.media: cannot run the daemon as the unit does ({' '.join(argv)}"
                         f"): {probe.stderr.strip()}; run as root, or pass --no-realtime")
    return argv, f"SCHED_{policy.upper()} {priority} (systemd/branchline.service)"


def gateway_config(n: int, sip_port: int, sipp_port: int, state_dir: Path) -> str:
    lines = "".join(
        f"""  - name: "n{i}"
    backend: "null"
    number: "{FIRST_NUMBER + i}"
    options:
      echo_canceller: true
"""
        for i in range(n))
    return f"""
gateway:
  name: bench-media
  country: US
  state_dir: {state_dir}
sip:
  listen: 127.0.0.1:{sip_port}
  rtp_ports: {GATEWAY_RTP[0]}-{GATEWAY_RTP[1]}
  codecs: [PCMU]
trunks:
  - name: far
    registrar: 127.0.0.1:{sipp_port}
    expires: 600
lines:
{lines}dialplan:
  digit_map: "(2xxx)"
  routes:
    - pattern: '2\\d\\d\\d'
      to: local
"""


def sipp_scenario(workdir: Path) -> Path:
    """sipp's own uac scenario with the called number taken from the CSV's first field."""
    text = subprocess.run(["sipp", "-sd", "uac"], capture_output=True, text=True,
                          check=False).stdout  # sipp exits 99 after dumping
    if "[service]" not in text:
        raise RuntimeError("sipp -sd uac did not print its uac scenario")
    path = workdir / "uac_lines.xml"
    path.write_text(text.replace("[service]", "[field0]"))
    return path


def daemon_streams(datagrams: Iterable[UdpDatagram], sipp_media: int) -> list[RtpStream]:
    """The RTP streams the bench's daemon sent: from its RTP range to sipp's media port.

    Other daemons on the box (integration tests running beside the bench) may use the same
    RTP port range; their streams, paced by another process, are not this step's figures.
    """
    return [s for s in group_rtp_streams(datagrams).values()
            if GATEWAY_RTP[0] <= s.sport <= GATEWAY_RTP[1] and s.dport == sipp_media
            and len(s.packets) > 10]


def run_step(n: int, hold: float, window: float, workdir: Path,
             prefix: list[str] | None = None) -> Step:
    from tests.integration.gateway_proc import GatewayProcess
    from tests.integration.peers.ports import free_port, free_sip_port

    step_dir = workdir / f"n{n}"
    step_dir.mkdir()
    sipp_port, gw_port, sipp_media = free_sip_port(), free_port(), free_port()
    gw = GatewayProcess(step_dir, gateway_config(n, gw_port, sipp_port, step_dir / "state"),
                        prefix=prefix or ())
    csv = step_dir / "lines.csv"
    csv.write_text("SEQUENTIAL\n" + "".join(f"{FIRST_NUMBER + i}\n" for i in range(n)))
    sipp_argv = [
        "sipp", "-sf", str(sipp_scenario(step_dir)), "-inf", str(csv),
        "-i", "127.0.0.1", "-p", str(sipp_port), "-mi", "127.0.0.1", "-mp", str(sipp_media),
        "-t", "u1", "-nostdin", "-aa", "-rtp_echo", "-m", str(n), "-l", str(n),
        "-r", str(max(1, min(n, 20))), "-d", str(int(hold * 1000)),
        "-timeout", f"{int(hold + 30)}s", f"127.0.0.1:{gw_port}",
    ]
    gw.start()
    gw_pid = gw.pid
    assert gw_pid is not None
    i0, ti0 = cpu_seconds(gw_pid), time.monotonic()
    time.sleep(1.0)  # the daemon with N idle lines: its cost before any call
    idle_pct = 100 * (cpu_seconds(gw_pid) - i0) / (time.monotonic() - ti0)
    sipp = subprocess.Popen(sipp_argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=step_dir)
    cap = LoopbackCapture([GATEWAY_RTP])
    try:
        deadline = time.monotonic() + 15
        up = 0
        while time.monotonic() < deadline:
            up = sum(1 for c in gw.status()["calls"] if c.get("stats", {}).get("packets_received"))
            if up >= n:
                break
            time.sleep(0.2)
        time.sleep(1.0)  # let the buffers settle
        before = gw.status()["calls"]
        # answering `status` for N calls holds the daemon's loop for some ms: keep that
        # stall out of the measured window
        time.sleep(0.5)
        cap.start()
        g0, s0, t0 = cpu_seconds(gw_pid), cpu_seconds(sipp.pid), time.monotonic()
        time.sleep(window)
        g1, s1, t1 = cpu_seconds(gw_pid), cpu_seconds(sipp.pid), time.monotonic()
        cap.stop()
        after = gw.status()["calls"]
    finally:
        try:
            sipp.wait(timeout=hold + 30)
        except subprocess.TimeoutExpired:
            sipp.kill()
        gw.stop()

    def total(calls: list[dict[str, Any]], key: str) -> int:
        return sum(int(c.get("stats", {}).get(key, 0)) for c in calls)

    streams = daemon_streams(cap.datagrams, sipp_media)
    p99s = [pacing_stats(s.arrivals()).p99_ms for s in streams]
    return Step(
        calls=n, up=min(len(after), up), idle_pct=idle_pct,
        gw_cpu_pct=100 * (g1 - g0) / (t1 - t0), sipp_cpu_pct=100 * (s1 - s0) / (t1 - t0),
        lost=total(after, "lost") - total(before, "lost"),
        late=total(after, "late") - total(before, "late"),
        concealed=total(after, "concealed_frames") - total(before, "concealed_frames"),
        p99_ms=max(p99s) if p99s else None, streams=len(streams),
    )


def baresip_reference(window: float, workdir: Path) -> float:
    """baresip's own CPU for one call (% of a core): one baresip calls another, both
    sending a tone; the callee's process is measured over the same window length."""
    from tests.integration.peers.baresip import Baresip
    from tests.integration.peers.ports import free_port, free_sip_port

    ref = workdir / "baresip"
    ref.mkdir()
    caller = Baresip("200", sip_port=free_sip_port(), ctrl_port=free_port(), tmpdir=ref,
                     tone=1000, record=False)
    callee = Baresip("300", sip_port=free_sip_port(), ctrl_port=free_port(), tmpdir=ref,
                     tone=440, answer_mode="auto", record=False)
    try:
        callee.start()
        caller.start()
        caller.dial(callee.direct_uri)
        caller.wait_for_event("CALL_ESTABLISHED", timeout=15)
        time.sleep(1.0)
        proc = callee._proc
        assert proc is not None
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(window)
        c1, t1 = cpu_seconds(proc.pid), time.monotonic()
        caller.hangup()
    finally:
        caller.stop()
        callee.stop()
    return 100 * (c1 - c0) / (t1 - t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="1,8,32,64")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds each call lasts")
    parser.add_argument("--window", type=float, default=4.0, help="seconds measured")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--no-realtime", dest="realtime", action="store_false",
                        help="run the daemon with normal scheduling, not the unit's SCHED_RR")
    args = parser.parse_args(argv)
    counts = [int(c) for c in re.split(r"[ ,]+", args.calls) if c]
    if args.window + 6 > args.hold:
        parser.error("--hold must leave room for set-up and the window (hold >= window + 6)")
    workdir = Path(tempfile.mkdtemp(prefix="bench-media-"))
    prefix, sched = scheduling(args.realtime)
    print(f"daemon scheduling: {sched}", flush=True)
    steps = [run_step(n, args.hold, args.window, workdir, prefix) for n in counts]
    baresip_pct = baresip_reference(args.window, workdir)
    # idle %core: the daemon with the same N lines on hook, before the calls; net %/call:
    # (gw - idle) / calls, what one more call costs (the goal is judged on gw %/call)
    print(f"{'calls':>5} {'up':>4} {'gw %core':>9} {'idle':>5} {'gw %/call':>9} "
          f"{'net %/call':>10} {'sipp %/call':>11} {'lost':>5} {'late':>5} {'concl':>6} "
          f"{'p99 ms':>7} pass")
    for s in steps:
        p99 = f"{s.p99_ms:.3f}" if s.p99_ms is not None else "-"
        print(f"{s.calls:>5} {s.up:>4} {s.gw_cpu_pct:>9.1f} {s.idle_pct:>5.1f} "
              f"{s.gw_per_call:>9.2f} {s.net_per_call:>10.2f} {s.sipp_per_call:>11.2f} "
              f"{s.lost:>5} {s.late:>5} {s.concealed:>6} {p99:>7} "
              f"{'yes' if s.passed else 'no'}")
    passed = [s.calls for s in steps if s.passed]
    biggest = max(steps, key=lambda s: s.calls)
    per_call = biggest.gw_per_call
    per_core = int(100 / per_call) if per_call > 0 else None
    print(f"largest step passed (no loss, pacing p99 < 1 ms): {max(passed) if passed else 0} "
          f"calls; at {per_call:.2f} % of a core per call one core carries {per_core} calls")
    print(f"baresip, one call (the callee of a baresip-to-baresip call, same window): "
          f"{baresip_pct:.2f} % of a core")
    print(f"goals: <= {GOAL_CPU_PCT_PER_CALL} % per call: "
          f"{'met' if per_call <= GOAL_CPU_PCT_PER_CALL else 'not met'}; "
          f">= {GOAL_CALLS_PER_CORE} calls per core: "
          f"{'met' if per_core is not None and per_core >= GOAL_CALLS_PER_CORE else 'not met'}")
    print(json.dumps({"steps": [asdict(s) | {"gw_per_call": s.gw_per_call,
                                             "net_per_call": s.net_per_call,
                                             "sipp_per_call": s.sipp_per_call,
                                             "passed": s.passed} for s in steps],
                      "largest_passed": max(passed) if passed else 0,
                      "baresip_pct_per_call": baresip_pct,
                      "calls_per_core": per_core, "scheduling": sched}))
    if not args.keep:
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
