"""One performance report: every bench on this machine in one go, one table against the peers.

    .venv/bin/python -m bench.report                 # full run, ~12 minutes on 2 cores
    .venv/bin/python -m bench.report --quick         # shorter steps and holds, ~3 minutes
    .venv/bin/python -m bench.report --out DIR       # where report.json/.png/logs go
    .venv/bin/python -m bench.report --only media,sip
    .venv/bin/python -m bench.report --board pi4     # on a board: also write its results file

Each bench runs as a subprocess (`python -m bench.NAME ...`) and its last JSON line (or, for
bench.failover, its --json file; for call_records and sms_queue, their text) is parsed. A
bench that fails, times out or prints no figures becomes a FAILED row with its error, and
the report goes on. Run as root: rtp_pacing, media and sip capture on "lo" (AF_PACKET),
failover makes network namespaces.

Prints the machine, one table (figure, gateway, peer in the same run, goal, mark), the
figures projected for Raspberry Pi boards (PROJECTED, see bench/report_project.py) or read
from hardware-tests/results/, and writes DIR/report.json and DIR/report.png (matplotlib, the
`plot` extra; without it the PNG is skipped and the report says why). Exit status 0 when
the report was written, whatever the figures; 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.report_figures import (
    FAILED,
    GOALS,
    MISSED,
    PARSERS,
    Row,
    failed_rows,
    fmt,
    judge,
    last_json,
    rows_baresip_rss,
    rows_footprint,
)
from bench.report_project import (
    BOARDS,
    HOST_CORE,
    IPC_VS_HOST,
    RESULTS_DIR,
    board_table,
    host_figures,
    load_results,
    results_document,
)

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Spec:
    """How to run one bench: its module, arguments per mode, and what its output is."""

    name: str
    full: list[str]
    quick: list[str]
    output: str = "json"  # "json": last JSON of stdout; "file": --json FILE; "text": stdout
    needs_root: bool = False
    timeout_full: float = 420.0
    timeout_quick: float = 120.0

    def argv(self, quick: bool, out: Path) -> list[str]:
        args = list(self.quick if quick else self.full)
        if self.output == "file":
            args += ["--json", str(out / f"{self.name}.json")]
        return [sys.executable, "-m", f"bench.{self.name}", *args]


#: The benches, in the order they run. Full-run arguments are cut from each bench's
#: default where the default alone would take most of the 15 minutes (registrar: 3 rates
#: per ladder instead of 6; failover: 9 rounds instead of 20; sip: 3 rates).
SPECS: tuple[Spec, ...] = (
    Spec("rtp_pacing", ["--seconds", "60"], ["--seconds", "8"], needs_root=True),
    Spec("media", ["--calls", "1,8,32,64", "--hold", "12", "--window", "5"],
         ["--calls", "1,8,32,64", "--hold", "8", "--window", "2"], needs_root=True),
    Spec("footprint", ["--json", "--runs", "3", "--idle-seconds", "10", "--call-seconds", "10"],
         ["--json", "--runs", "1", "--idle-seconds", "2", "--call-seconds", "2",
          "--settle", "1"]),
    Spec("report_probes", ["--calls", "4"], ["--calls", "2", "--settle", "1"]),
    Spec("sip", ["--rates", "5,10,20", "--step-seconds", "10", "--latency-seconds", "20"],
         ["--rates", "5", "--step-seconds", "4", "--latency-seconds", "4",
          "--idle-seconds", "1"], needs_root=True),
    Spec("registrar", ["--register-rates", "100,200,400", "--call-rates", "10,25,50",
                       "--call-seconds", "20"],
         ["--quick", "--register-rates", "50", "--call-rates", "10"], timeout_full=480.0),
    Spec("failover", ["--rounds", "9"], ["--rounds", "2"], output="file", needs_root=True,
         timeout_full=300.0),
    Spec("call_records", ["--seconds", "5"], ["--seconds", "1"], output="text"),
    Spec("sms_queue", ["--count", "200"], ["--count", "50"], output="text"),
)


@dataclass
class Outcome:
    """One bench's run: what ran, how long, and its figures or its error."""

    name: str
    argv: list[str]
    seconds: float = 0.0
    returncode: int | None = None
    data: Any = None  # parsed JSON, or stdout text for the text benches
    error: str | None = None
    rows: list[Row] = field(default_factory=list)


def run_spec(spec: Spec, quick: bool, out: Path, runner: Any = subprocess.run) -> Outcome:
    """Run one bench and parse its output; never raises for the bench's own failures."""
    argv = spec.argv(quick, out)
    outcome = Outcome(spec.name, argv)
    if spec.needs_root and os.geteuid() != 0:
        outcome.error = "needs root (AF_PACKET capture on lo or network namespaces)"
        return outcome
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    if spec.output == "file":  # a file left by an earlier run must not pass for this one's
        (out / f"{spec.name}.json").unlink(missing_ok=True)
    t0 = time.monotonic()
    try:
        proc = runner(argv, cwd=ROOT, capture_output=True, text=True,
                      timeout=spec.timeout_quick if quick else spec.timeout_full)
    except subprocess.TimeoutExpired as exc:
        outcome.seconds = time.monotonic() - t0
        outcome.error = f"timed out after {exc.timeout:.0f} s"
        return outcome
    except OSError as exc:
        outcome.error = f"could not start: {exc}"
        return outcome
    outcome.seconds = time.monotonic() - t0
    outcome.returncode = proc.returncode
    (logs / f"{spec.name}.out").write_text(proc.stdout or "")
    (logs / f"{spec.name}.err").write_text(proc.stderr or "")
    try:
        if spec.output == "text":
            outcome.data = proc.stdout
        elif spec.output == "file":
            outcome.data = json.loads((out / f"{spec.name}.json").read_text())
        else:
            outcome.data = last_json(proc.stdout or "")
    except (OSError, ValueError) as exc:
        tail = (proc.stderr or "").strip().splitlines()[-1:] or [str(exc)]
        outcome.error = f"exit {proc.returncode}, no figures: {tail[0][:300]}"
        outcome.data = None
    return outcome


def rows_for(outcomes: dict[str, Outcome], quick: bool) -> list[Row]:
    """Every outcome's rows (FAILED rows for the ones with an error), judged."""
    rows: list[Row] = []
    probe = outcomes.get("report_probes")
    baresip_rss = None
    if probe is not None and probe.error is None and isinstance(probe.data, dict):
        baresip_rss = rows_baresip_rss(probe.data)
    for name, outcome in outcomes.items():
        if name == "report_probes":
            if outcome.error is not None:
                outcome.rows = failed_rows(name, outcome.error)
            rows += outcome.rows
            continue
        if outcome.error is not None:
            outcome.rows = failed_rows(name, outcome.error)
        else:
            try:
                if name == "footprint":
                    outcome.rows = rows_footprint(outcome.data, baresip_rss)
                else:
                    outcome.rows = PARSERS[name](outcome.data)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                outcome.error = f"output not understood: {type(exc).__name__}: {exc}"
                outcome.rows = failed_rows(name, outcome.error)
        rows += [judge(r, quick) for r in outcome.rows]
    return rows


# ----------------------------------------------------------------------------- machine


def machine(load: tuple[float, float, float] | None = None) -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {"cpu_model": None, "cpu_mhz": None, "cpu_family": None,
                            "cpu_model_number": None}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "model name" and info["cpu_model"] is None:
                info["cpu_model"] = value
            elif key == "cpu MHz" and info["cpu_mhz"] is None:
                info["cpu_mhz"] = float(value)
            elif key == "cpu family" and info["cpu_family"] is None:
                info["cpu_family"] = int(value)
            elif key == "model" and info["cpu_model_number"] is None:
                info["cpu_model_number"] = int(value)
    except (OSError, ValueError):
        pass
    commit = _git("rev-parse", "--short=12", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return info | {
        "cores": os.cpu_count(),
        "load_before": list(load or os.getloadavg()),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": commit,
        "tree_modified": bool(dirty),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


# ----------------------------------------------------------------------------- rendering


def render(info: dict[str, Any], rows: Sequence[Row], boards: list[dict[str, Any]],
           outcomes: dict[str, Outcome], quick: bool, host_hz: float) -> str:
    """The whole report as text."""
    load_b = " ".join(f"{x:.2f}" for x in info["load_before"])
    load_a = " ".join(f"{x:.2f}" for x in info.get("load_after", []))
    out = [
        f"Branchline performance report ({'--quick' if quick else 'full'} run), {info['date']}",
        f"machine: {info['cpu_model']} ({info['cores']} cores, {info['cpu_mhz']} MHz reported),"
        f" kernel {info['kernel']}, Python {info['python']}",
        f"commit {info['commit']}{' + local changes' if info['tree_modified'] else ''}; "
        f"load average before {load_b}, after {load_a}",
        "",
    ]
    peers = [f"{r.peer_name}: {fmt(r.peer, r.unit)}" if r.peer_name else "" for r in rows]
    goals = [GOALS[r.goal].text if r.goal else "" for r in rows]
    w_fig = max([len(r.figure) for r in rows] + [6]) + 2
    w_peer = max([len(p) for p in peers] + [15]) + 2
    w_goal = max([len(g) for g in goals] + [4]) + 2
    head = f"{'bench':<13}{'figure':<{w_fig}}{'gateway':>14}  {'peer (same run)':<{w_peer}}" \
           f"{'goal':<{w_goal}}mark"
    out += [head, "-" * len(head)]
    for r, peer, goal in zip(rows, peers, goals, strict=True):
        mark = {MISSED: "<< MISSED", FAILED: "FAILED"}.get(r.verdict, r.verdict)
        out.append(f"{r.bench:<13}{r.figure:<{w_fig}}{fmt(r.gateway, r.unit):>14}  "
                   f"{peer:<{w_peer}}{goal:<{w_goal}}{mark}")
        if r.note:
            out.append(f"{'':<13}  ({r.note})")
    out += ["", "goal sources: " + "; ".join(
        f"{g.text}: {g.source}" for g in GOALS.values())]
    out += ["", f"Raspberry Pi boards: PROJECTED from this host's CPU seconds x "
                f"{host_hz / 1e9:.2f} GHz = cycles, scaled by clock and per-clock ratio vs "
                f"{HOST_CORE} (" + ", ".join(f"{k} {v}" for k, v in IPC_VS_HOST.items())
            + "; estimates, see bench/report_project.py). 'measured' = "
              "hardware-tests/results/<board>.json. Pacing, loss and RSS are not projected."]
    if info.get("cpu_family") != 25 or "AMD" not in str(info.get("cpu_model")):
        out.append(f"  NOTE: the per-clock ratios are against {HOST_CORE}; this host is "
                   f"{info.get('cpu_model')}, so the PROJ columns do not apply to it.")
    bhead = f"  {'figure':<46}{'this host':>12}" + "".join(f"{b.name:>24}" for b in BOARDS)
    out += [bhead]
    for b in boards:
        cells = []
        for board in BOARDS:
            cell = b["boards"][board.key]
            tag = {"projected": " PROJ", "measured": " MEAS"}.get(cell["how"], "")
            cells.append(f"{fmt(cell['value'], b['unit']) + tag:>24}")
        out.append(f"  {b['figure']:<46}{fmt(b['host'], b['unit']):>12}" + "".join(cells))
    out += ["", "bench runs:"]
    for o in outcomes.values():
        status = "ok" if o.error is None else f"FAILED: {o.error}"
        out.append(f"  {o.name:<14}{o.seconds:7.1f} s  {' '.join(o.argv[2:])}  [{status}]")
    missed = [r for r in rows if r.verdict == MISSED]
    out += ["", f"goals missed: {len(missed)}; benches failed: "
                f"{sum(o.error is not None for o in outcomes.values())}"]
    return "\n".join(out)


def write_plot(path: Path, outcomes: dict[str, Outcome], title: str = "") -> str:
    """The PNG: pacing p50/p99/max and CPU per call against the call count. Returns what
    happened, for the report."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ("PNG skipped: matplotlib is not installed "
                "(pip install -e '.[plot]' installs it)")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    rtp = outcomes.get("rtp_pacing")
    streams = (rtp.data or {}).get("streams", {}) if rtp and rtp.error is None else {}
    if streams:
        labels = ["p50", "p99", "max"]
        for i, (name, key) in enumerate((("gateway", "gateway->baresip"),
                                         ("baresip", "baresip->gateway"))):
            s = streams.get(key) or {}
            values = [s.get(f"{k}_ms") or 0.0 for k in labels]
            ax1.bar([x + 0.38 * i for x in range(3)], values, width=0.38, label=name)
        ax1.set_xticks([x + 0.19 for x in range(3)], labels)
        ax1.set_yscale("log")
        ax1.set_ylabel("send interval deviation, ms")
        ax1.set_title("RTP pacing, one call")
        ax1.legend()
    else:
        ax1.text(0.5, 0.5, "rtp_pacing: no figures", ha="center", transform=ax1.transAxes)
    media = outcomes.get("media")
    steps = (media.data or {}).get("steps", []) if media and media.error is None else []
    if steps:
        steps = [s for s in steps if s.get("up")]
        xs = [s["calls"] for s in steps]
        ax2.plot(xs, [s.get("gw_per_call") for s in steps], "o-", label="gateway")
        ax2.set_ylim(bottom=0)
        bs = media.data.get("baresip_pct_per_call") if media else None
        if isinstance(bs, (int, float)):
            ax2.axhline(bs, color="tab:orange", ls="--", label="baresip, one call")
        ax2.axhline(GOALS["cpu_per_call"].limit or 1.0, color="tab:red", ls=":",
                    label="goal")
        ax2.set_xscale("log", base=2)
        ax2.set_xticks(xs, [str(x) for x in xs])
        ax2.set_xlabel("concurrent bridged calls")
        ax2.set_ylabel("% of one core per call")
        ax2.set_title("CPU per call")
        ax2.legend()
    else:
        ax2.text(0.5, 0.5, "media: no figures", ha="center", transform=ax2.transAxes)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"PNG written: {path}"


# ----------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="shorter holds and steps (see SPECS); registrar, calls/core "
                             "and bindings goals are then not judged")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "report",
                        help="directory for report.json, report.png and logs/")
    names = [s.name for s in SPECS]
    parser.add_argument("--only", default=None, help=f"comma list of {','.join(names)}")
    parser.add_argument("--host-ghz", type=float, default=None,
                        help="this host's clock for the projection (default: /proc/cpuinfo)")
    parser.add_argument("--board", default=None, choices=[b.key for b in BOARDS],
                        help="this machine IS that board: also write "
                             "hardware-tests/results/<board>.json")
    args = parser.parse_args(argv)
    selected = names if args.only is None else [n.strip() for n in args.only.split(",")]
    unknown = set(selected) - set(names)
    if unknown:
        parser.error(f"--only: unknown bench(es) {', '.join(sorted(unknown))}")
    args.out.mkdir(parents=True, exist_ok=True)
    info = machine()
    started = time.monotonic()
    outcomes: dict[str, Outcome] = {}
    for spec in SPECS:
        if spec.name not in selected:
            continue
        print(f"bench.report: running {spec.name} ...", file=sys.stderr, flush=True)
        outcomes[spec.name] = run_spec(spec, args.quick, args.out)
        o = outcomes[spec.name]
        print(f"bench.report: {spec.name} {o.seconds:.1f} s"
              f"{'' if o.error is None else ' FAILED: ' + o.error}", file=sys.stderr,
              flush=True)
    info["load_after"] = list(os.getloadavg())
    info["seconds"] = round(time.monotonic() - started, 1)
    rows = rows_for(outcomes, args.quick)
    host_hz = (args.host_ghz * 1e9 if args.host_ghz else (info["cpu_mhz"] or 0) * 1e6)
    data = {name: o.data for name, o in outcomes.items() if o.error is None}
    host = host_figures(data.get("media"), data.get("registrar"), data.get("footprint"),
                        data.get("sip"))
    results = load_results()
    boards = board_table(host, host_hz, results)
    load = " ".join(f"{x:.2f}" for x in info["load_before"])
    plot_note = write_plot(args.out / "report.png", outcomes,
                           f"Branchline {'--quick' if args.quick else 'full'} report, "
                           f"{info['date']}, commit {info['commit']}, {info['cpu_model']} "
                           f"x{info['cores']}, load before {load}")
    text = render(info, rows, boards, outcomes, args.quick, host_hz)
    print(text)
    print(plot_note)
    print(f"total {info['seconds']:.0f} s")
    report = {
        "report": "branchline", "mode": "quick" if args.quick else "full", "machine": info,
        "rows": [r.as_dict() for r in rows],
        "boards": boards, "host_hz": host_hz, "ipc_vs_host": IPC_VS_HOST,
        "host_core": HOST_CORE, "plot": plot_note,
        "benches": {n: {"argv": o.argv[1:], "seconds": round(o.seconds, 1),
                        "returncode": o.returncode, "error": o.error, "data": o.data}
                    for n, o in outcomes.items()},
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    print(f"JSON written: {args.out / 'report.json'}")
    if args.board:
        doc = results_document(args.board, str(info["cpu_model"]), info["date"],
                               str(info["commit"]), host)
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        (RESULTS_DIR / f"{args.board}.json").write_text(json.dumps(doc, indent=1))
        print(f"board figures written: {RESULTS_DIR / (args.board + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
