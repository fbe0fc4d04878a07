"""Footprint of the gateway daemon beside baresip: idle RSS, start-to-registered, CPU.

    .venv/bin/python -m bench.footprint                      # the checkout's gateway
    .venv/bin/python -m bench.footprint --gateway-root /tmp/before   # another tree's gateway
    .venv/bin/python -m bench.footprint --idle-seconds 20 --call-seconds 20 --json

Part 1 starts one Kamailio registrar, then the gateway daemon (two simulated lines, each
registering its own account) and a baresip phone registering one account, one after the
other. Start-to-registered is the time from launching the process until Kamailio's location
table holds every account it registers (asked with LOCATE every 20 ms); the median of
``--runs`` fresh starts is printed. Both then sit idle
for ``--idle-seconds``, side by side, and their RSS and CPU (% of one core, from
/proc/PID/stat) are read.

Part 2 starts the gateway with 20 simulated lines and no trunk, reads its idle CPU and RSS,
then puts the 20 lines in 10 line-to-line calls (lines 1-10 dial 11-20, which answer by
themselves) with both handsets of every call playing a tone in talkspurts (0.4 s on, 0.6 s
off; ``--call-audio tone`` for a steady one), and reads CPU and RSS over
``--call-seconds``. ``--blas-threads N`` hands that daemon OPENBLAS_NUM_THREADS=N, to see
what pinning BLAS to one thread is worth on the same code. The simulated handsets listen to what they hear inside the daemon,
so this CPU includes their work; a real FXS port spends none of it.

Figures are printed, never judged, except the project's RSS target, shown as met or not.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.sip_peers import cpu_seconds, rss_kib

IDLE_RSS_GOAL_KIB = 45 * 1024
"""Issue 6's goal for the idle daemon with two lines."""
LINE_PASSWORD = "footprint-secret"
BARESIP_USER = "300"
CALLS = 10


def _wait(what: str, predicate: Callable[[], bool], timeout: float,
          interval: float = 0.02) -> float:
    """Poll until `predicate`; returns the monotonic time it first held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}")


def _registered(kam: Any, users: Sequence[str]) -> Callable[[], bool]:
    return lambda: all(kam.registered(user) for user in users)


def _in_state(gw: Daemon, lines: Sequence[str], state: str) -> Callable[[], bool]:
    return lambda: all(gw.line_state(line) == state for line in lines)


class Daemon:
    """`branchline run` from a chosen source tree, driven over its control socket."""

    def __init__(self, workdir: Path, config_text: str, root: Path | None,
                 blas_threads: int | None = None) -> None:
        from gateway.runtime.control import ControlClient

        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "branchline.yaml"
        self.config.write_text(config_text)
        self.control = str(self.dir / "control.sock")
        self.log_path = self.dir / "branchline.log"
        self.root = root
        self.blas_threads = blas_threads
        self._client = ControlClient
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Launch; returns the monotonic launch time once the control socket answers."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.pop(name, None)  # measure what the code does, not what this shell set
        if self.blas_threads is not None:
            env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = str(self.blas_threads)
        if self.root is not None:
            env["PYTHONPATH"] = str(self.root)
        with open(self.log_path, "ab") as log:
            launched = time.monotonic()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "run", "--config", str(self.config),
                 "--control", self.control, "--log-level", "info"],
                stdout=log, stderr=subprocess.STDOUT, env=env,
                cwd=str(self.root) if self.root is not None else None,
            )
        _wait("the control socket", self._answers, 60.0, 0.05)
        return launched

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"branchline exited with {self.proc.returncode}:\n"
                               f"{self.log_path.read_text()[-3000:]}")
        try:
            self.request("status")
            return True
        except Exception:
            return False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def request(self, cmd: str, **args: Any) -> Any:
        return self._client(self.control, timeout=15.0).request(cmd, **args)

    def phone(self, line: str, action: str, **args: Any) -> Any:
        return self.request("phone", line=line, action=action, **args)

    def line_state(self, name: str) -> str:
        for entry in self.request("status")["lines"]:
            if entry["name"] == name:
                return str(entry["state"])
        raise KeyError(name)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def cpu_pct(pids: Sequence[int], seconds: float) -> list[float | None]:
    """Each process's CPU over the next `seconds`, in % of one core."""
    before = [cpu_seconds(pid) for pid in pids]
    t0 = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    after = [cpu_seconds(pid) for pid in pids]
    return [None if a is None or b is None else round(100 * (b - a) / wall, 2)
            for a, b in zip(before, after, strict=True)]


def thread_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def registering_config(kamailio_port: int, sip_port: int, state: Path, suffix: str) -> str:
    lines = "\n".join(
        f'  - name: "{i}"\n    backend: sim\n    number: "10{i}"\n'
        f"    trunk:\n      name: main\n      username: gw{i}{suffix}\n"
        f"      password: {LINE_PASSWORD}"
        for i in (1, 2)
    )
    return f"""
gateway:
  name: footprint
  country: US
  state_dir: {state}
sip:
  listen: 127.0.0.1:{sip_port}
  codecs: [PCMU]
trunks:
  - name: main
    registrar: 127.0.0.1:{kamailio_port}
    expires: 600
lines:
{lines}
dialplan:
  digit_map: "(1xx)"
  routes:
    - pattern: '1\\d\\d'
      to: local
"""


def calls_config(sip_port: int, state: Path) -> str:
    lines = "\n".join(
        f'  - name: "{i}"\n    backend: sim\n    number: "{200 + i}"'
        + ("\n    options: {auto_answer_ms: 100}" if i > CALLS else "")
        for i in range(1, 2 * CALLS + 1)
    )
    return f"""
gateway:
  name: footprint-calls
  country: US
  state_dir: {state}
sip:
  listen: 127.0.0.1:{sip_port}
  codecs: [PCMU]
lines:
{lines}
dialplan:
  digit_map: "(2xx)"
  routes:
    - pattern: '2\\d\\d'
      to: local
"""


def part_registered(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Gateway and baresip register to one Kamailio; start-to-registered, idle RSS/CPU.

    Each run registers accounts of its own, so a contact left from the run before cannot
    make a start look registered early.
    """
    from tests.integration.peers.baresip import Baresip
    from tests.integration.peers.kamailio import KamailioTrunk
    from tests.integration.peers.ports import free_port, free_sip_port

    runs = range(args.runs)
    users = {f"gw{i}r{run}": LINE_PASSWORD for run in runs for i in (1, 2)}
    users.update({f"{BARESIP_USER}{run}": "bob-footprint" for run in runs})
    kam = KamailioTrunk(free_sip_port(), users, tmpdir=work, min_expires=1)
    kam.start()
    out: dict[str, Any] = {}
    gw_times: list[float] = []
    phone_times: list[float] = []
    gw: Daemon | None = None
    phone: Any = None
    try:
        for run in runs:
            if gw is not None:
                phone.stop()
                gw.stop()
            accounts = (f"gw1r{run}", f"gw2r{run}")
            gw = Daemon(work / f"gw{run}", registering_config(
                kam.port, free_port(), work / "gw-state", f"r{run}"), args.gateway_root)
            launched = gw.start()
            done = _wait("the gateway's two accounts", _registered(kam, accounts), 30.0)
            gw_times.append(done - launched)
            user = f"{BARESIP_USER}{run}"
            phone = Baresip(user, sip_port=free_sip_port(), ctrl_port=free_port(),
                            tmpdir=work, password=users[user],
                            registrar=f"127.0.0.1:{kam.port}", tone=None, record=False)
            launched = time.monotonic()
            phone.start()
            done = _wait("baresip's account", _registered(kam, [user]), 30.0)
            phone_times.append(done - launched)
        assert gw is not None and phone is not None and phone._proc is not None
        out["gateway_registered_s"] = round(statistics.median(gw_times), 3)
        out["baresip_registered_s"] = round(statistics.median(phone_times), 3)
        out["gateway_registered_runs_s"] = [round(t, 3) for t in gw_times]
        out["baresip_registered_runs_s"] = [round(t, 3) for t in phone_times]
        bpid = phone._proc.pid
        time.sleep(args.settle)
        out["gateway_idle_cpu_pct"], out["baresip_idle_cpu_pct"] = cpu_pct(
            [gw.pid, bpid], args.idle_seconds)
        out["gateway_idle_rss_kib"] = rss_kib(gw.pid)
        out["baresip_idle_rss_kib"] = rss_kib(bpid)
        out["gateway_threads"] = thread_count(gw.pid)
        out["gateway_loaded"] = gw.request("status").get("process", {}).get("loaded")
    finally:
        if phone is not None:
            phone.stop()
        if gw is not None:
            gw.stop()
        kam.stop()
    return out


def part_calls(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """20 lines idle, then in 10 line-to-line calls with audio both ways."""
    from tests.integration.audio import write_tone_wav
    from tests.integration.peers.ports import free_port

    gw = Daemon(work / "calls", calls_config(free_port(), work / "calls-state"),
                args.gateway_root, args.blas_threads)
    tone_a = write_tone_wav(work / "a.wav", 440.0, -12.0, 30.0)
    tone_b = write_tone_wav(work / "b.wav", 1000.0, -12.0, 30.0)
    if args.call_audio == "talkspurts":
        tone_a, tone_b = _talkspurts(tone_a), _talkspurts(tone_b)
    out: dict[str, Any] = {"lines": 2 * CALLS, "calls": CALLS, "audio": args.call_audio,
                           "blas_threads": args.blas_threads}
    try:
        gw.start()
        time.sleep(args.settle)
        out["idle_cpu_pct"] = cpu_pct([gw.pid], args.idle_seconds)[0]
        out["idle_rss_kib"] = rss_kib(gw.pid)
        for i in range(1, CALLS + 1):
            gw.phone(str(i), "offhook")
        for i in range(1, CALLS + 1):
            _wait(f"dial tone on line {i}", _in_state(gw, [str(i)], "dial-tone"), 10.0, 0.05)
            gw.phone(str(i), "dial", digits=str(200 + CALLS + i))
        for i in range(1, CALLS + 1):
            _wait(f"call {i} connected", _in_state(gw, [str(i), str(CALLS + i)], "connected"),
                  20.0, 0.1)
            gw.phone(str(i), "play", path=str(tone_a))
            gw.phone(str(CALLS + i), "play", path=str(tone_b))
        time.sleep(args.settle)
        out["calls_cpu_pct"] = cpu_pct([gw.pid], args.call_seconds)[0]
        out["calls_rss_kib"] = rss_kib(gw.pid)
        out["threads"] = thread_count(gw.pid)
        connected = sum(entry["state"] == "connected" for entry in gw.request("status")["lines"])
        out["lines_connected_at_end"] = connected
    finally:
        gw.stop()
    return out


def _talkspurts(path: Path, on: float = 0.4, off: float = 0.6) -> Path:
    """The WAV with every `on + off` seconds' last `off` silenced: bursts, as speech has."""
    with wave.open(str(path), "rb") as w:
        params, pcm = w.getparams(), bytearray(w.readframes(w.getnframes()))
    period, keep = round((on + off) * params.framerate) * 2, round(on * params.framerate) * 2
    for start in range(0, len(pcm), period):
        end = min(start + period, len(pcm))
        pcm[start + keep : end] = bytes(max(0, end - start - keep))
    out = path.with_name(path.stem + "-spurts.wav")
    with wave.open(str(out), "wb") as w:
        w.setparams(params)
        w.writeframes(bytes(pcm))
    return out


def _mib(kib: int | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.1f} MB"


def render(report: dict[str, Any]) -> str:
    calls = report["calls"]
    text = [f"bench.footprint  {report['date']}  gateway from {report['gateway_root']}",
            f"load average before: {report['loadavg']}  cpus: {report['cpus']}", ""]
    if "registered" in report:
        text += _render_registered(report) + [""]
    blas = calls["blas_threads"]
    text += [
        f"  20 lines, no call : CPU {calls['idle_cpu_pct']}% of a core, RSS "
        f"{_mib(calls['idle_rss_kib'])}",
        f"  20 lines, 10 calls: CPU {calls['calls_cpu_pct']}% of a core, RSS "
        f"{_mib(calls['calls_rss_kib'])} ({report['call_seconds']:g} s, {calls['audio']}, "
        f"{calls['lines_connected_at_end']}/20 lines still connected, "
        f"{calls['threads']} threads"
        + ("" if blas is None else f", OPENBLAS_NUM_THREADS={blas} from the environment")
        + ")",
    ]
    return "\n".join(text)


def _render_registered(report: dict[str, Any]) -> list[str]:
    reg = report["registered"]
    rss = reg["gateway_idle_rss_kib"]
    goal = "n/a" if rss is None else ("met" if rss <= IDLE_RSS_GOAL_KIB else "NOT met")
    rows = [
        ("", "gateway", "baresip"),
        ("idle RSS", _mib(rss), _mib(reg["baresip_idle_rss_kib"])),
        (f"start-to-registered ({len(reg['gateway_registered_runs_s'])}x)",
         f"{reg['gateway_registered_s']:.2f} s", f"{reg['baresip_registered_s']:.2f} s"),
        (f"idle CPU ({report['idle_seconds']:g} s)", f"{reg['gateway_idle_cpu_pct']}%",
         f"{reg['baresip_idle_cpu_pct']}%"),
    ]
    text = [f"  {a:<26}{b:>12}{c:>12}" for a, b, c in rows]
    text += [
        "",
        f"  gateway idle RSS, two registered lines: {_mib(rss)} (goal <= 45 MB: {goal})",
        f"  gateway threads: {reg['gateway_threads']}; optional libraries loaded: "
        f"{reg['gateway_loaded'] if reg['gateway_loaded'] is not None else 'not reported'}",
    ]
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.footprint", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateway-root", type=Path, default=None,
                        help="source tree whose gateway to run (default: this checkout)")
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--call-seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=3,
                        help="starts of both to take the median start-to-registered over")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds to wait after start-up or call set-up before measuring")
    parser.add_argument("--call-audio", choices=("talkspurts", "tone"), default="talkspurts",
                        help="what the handsets play in the calls: a tone in 0.4 s bursts every "
                        "second, as speech comes in talkspurts (default), or a steady tone")
    parser.add_argument("--blas-threads", type=int, default=None,
                        help="give the 20-line daemon OPENBLAS_NUM_THREADS=N (default: unset, "
                        "so the code decides)")
    parser.add_argument("--calls-only", action="store_true",
                        help="skip Kamailio/baresip and measure the 20-line part only")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--keep", action="store_true", help="keep configs and logs")
    args = parser.parse_args(argv)
    if args.gateway_root is not None:
        args.gateway_root = args.gateway_root.resolve()
        if not (args.gateway_root / "gateway" / "cli.py").is_file():
            parser.error(f"--gateway-root {args.gateway_root}: no gateway/cli.py there")
    from tests.integration.peers.baresip import baresip_binary
    from tests.integration.peers.kamailio import kamailio_binary

    for name, found in (("kamailio", kamailio_binary()), ("baresip", baresip_binary())):
        if found is None:
            print(f"bench.footprint: {name} is not installed", file=sys.stderr)
            return 2
    work = Path(tempfile.mkdtemp(prefix="bench-footprint-"))
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "gateway_root": str(args.gateway_root or Path(__file__).resolve().parent.parent),
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "cpus": os.cpu_count(),
        "idle_seconds": args.idle_seconds,
        "call_seconds": args.call_seconds,
    }
    try:
        if not args.calls_only:
            report["registered"] = part_registered(args, work)
        report["calls"] = part_calls(args, work)
    finally:
        if args.keep:
            print(f"configs and logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    report["loadavg_after"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
