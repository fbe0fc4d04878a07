"""Figures for Raspberry Pi boards: projected from this host's cycle counts, or measured on a
board by `hardware-tests/` (a results file), which then replaces the projection.

**How a figure is projected.** A CPU figure measured here is CPU seconds; times the host's
clock it is cycles. A board with clock f and a per-clock throughput r relative to this host
(r < 1: fewer Python bytecodes retired per cycle) needs cycles / r, i.e.

    board CPU share = host CPU share x (f_host / f_board) / r

Capacities (per second, per core) scale by the inverse. Only figures measured as CPU time
are projected: wall-clock figures (start to registered, INVITE->180, detection) include
waiting, so cycles do not give them; RTP pacing, loss and RSS depend on the scheduler,
timers and the C libraries, not on cycles.

**The per-clock ratios** (`IPC_VS_HOST`) are estimates for CPython's interpreter loop, not
measurements, relative to an AMD Zen 4 core (this machine: AMD EPYC family 25 model 17):

- Cortex-A72 ~0.33: CPython benchmarks (pystone, pyperformance) on a Pi 4 at 1.5 GHz run
  about 10x slower than on a current 4.5-5 GHz x86 core, i.e. about 1/3 per clock.
- Cortex-A53 ~0.15: the Pi 4 (A72, 1.5 GHz) is reported 2 to 3 times as fast as the Pi 3
  B+ (A53, 1.4 GHz) on CPU benchmarks (e.g. lemariva.com, "Raspberry Pi 4B: How much
  faster is the new CPU?", 2019/2020), about 2.2x per clock; 0.33 / 2.2 = 0.15.

Expect +-30 % from these ratios alone, and more from the host clock: /proc/cpuinfo under
KVM reports the nominal clock, while the host may boost above it (then every projection is
optimistic by the boost ratio). A board run replaces all of it.

**The results file** a board writes (`python -m bench.report --board pi4` writes it; the
hardware tests may write it too): `hardware-tests/results/<board>.json`

    {"format": "branchline-figures/1", "board": "pi4", "machine": "Raspberry Pi 4 ...",
     "date": "...", "commit": "...", "figures": {"media.cpu_pct_per_call": 3.1, ...}}

with the keys of `PROJECTED_KEYS`; a key missing from the file stays projected.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS_FORMAT = "branchline-figures/1"
RESULTS_DIR = Path(__file__).resolve().parent.parent / "hardware-tests" / "results"

#: Per-clock CPython throughput relative to this host's core (AMD Zen 4); see the docstring.
IPC_VS_HOST: dict[str, float] = {"cortex-a53": 0.15, "cortex-a72": 0.33}
HOST_CORE = "AMD Zen 4 (EPYC family 25)"


@dataclass(frozen=True)
class Board:
    key: str
    name: str
    core: str
    hz: float


BOARDS = (
    Board("pi3", "Pi 3 B (A53 1.2 GHz)", "cortex-a53", 1.2e9),
    Board("pi4", "Pi 4 B (A72 1.5 GHz)", "cortex-a72", 1.5e9),
    Board("pi4-1.8", "Pi 4 B (A72 1.8 GHz)", "cortex-a72", 1.8e9),
    Board("zero2w", "Zero 2 W (A53 1.0 GHz)", "cortex-a53", 1.0e9),
)

#: key -> (label, unit, kind): kind "cpu" scales like CPU time, "rate" inversely.
PROJECTED_KEYS: dict[str, tuple[str, str, str]] = {
    "media.cpu_pct_per_call": ("CPU per bridged call (largest step)", "% core", "cpu"),
    "media.calls_per_core": ("calls one core carries (by CPU)", "calls", "rate"),
    "registrar.registrations_per_s": ("registrations/s one core carries (by CPU)", "/s", "rate"),
    "registrar.calls_per_s": ("registrar calls/s one core carries (by CPU)", "/s", "rate"),
    "sip.uas_calls_per_s": ("calls/s into the UAS one core carries (by CPU)", "/s", "rate"),
    "footprint.idle_cpu_pct": ("idle CPU, two registered lines", "% core", "cpu"),
}


def slowdown(board: Board, host_hz: float) -> float:
    """How many times longer the board takes for the same work: (f_host / f_board) / r."""
    return (host_hz / board.hz) / IPC_VS_HOST[board.core]


def project(value: float, kind: str, board: Board, host_hz: float) -> float:
    """One host figure on `board`: CPU-like figures grow by the slowdown, rates shrink."""
    factor = slowdown(board, host_hz)
    if kind == "cpu":
        return value * factor
    if kind == "rate":
        return value / factor
    raise ValueError(f"unknown kind {kind!r}")


def host_figures(media: dict[str, Any] | None, registrar: dict[str, Any] | None,
                 footprint: dict[str, Any] | None, sip: dict[str, Any] | None
                 ) -> dict[str, float]:
    """The figures to project, from the benches' JSON (missing benches are left out).

    Capacities come from CPU per operation, not from the rates the run reached: the
    registrar's CPU share over its highest clean step, divided by the operations done, is
    CPU seconds per registration (or call); a core carries 1 / that.
    """
    out: dict[str, float] = {}
    if media:
        steps = [s for s in media.get("steps") or [] if s.get("up")]
        if steps:
            big = max(steps, key=lambda s: s["up"])
            per_call = float(big["gw_cpu_pct"]) / big["up"]
            out["media.cpu_pct_per_call"] = per_call
            if per_call > 0:
                out["media.calls_per_core"] = 100.0 / per_call
    if registrar:
        steps = (registrar.get("peers") or {}).get("gateway", {}).get("steps") or []
        for key, kinds in (("registrar.registrations_per_s", ("register", "re-register")),
                           ("registrar.calls_per_s", ("calls",))):
            clean = [s for s in steps if s.get("kind") in kinds and s.get("clean")
                     and s.get("cpu_pct") and s.get("achieved_per_s")]
            if clean:
                best = max(clean, key=lambda s: s["achieved_per_s"])
                cpu_s_per_op = (best["cpu_pct"] / 100.0) / best["achieved_per_s"]
                out[key] = 1.0 / cpu_s_per_op
    if footprint:
        idle = (footprint.get("registered") or {}).get("gateway_idle_cpu_pct")
        if isinstance(idle, (int, float)):
            out["footprint.idle_cpu_pct"] = float(idle)
    if sip:
        steps = [s for s in (sip.get("gateway") or {}).get("steps") or []
                 if s.get("clean") and s.get("daemon_cpu_pct") and s.get("rate")]
        if steps:
            best = max(steps, key=lambda s: s["rate"])
            out["sip.uas_calls_per_s"] = best["rate"] / (best["daemon_cpu_pct"] / 100.0)
    return out


def load_results(directory: Path = RESULTS_DIR) -> dict[str, dict[str, Any]]:
    """Board key -> its results file's content, for every well-formed file; others skipped
    with the reason in `_error`."""
    found: dict[str, dict[str, Any]] = {}
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            found[path.stem] = {"_error": f"{path.name}: {exc}"}
            continue
        if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT \
                or not isinstance(data.get("figures"), dict):
            found[path.stem] = {"_error": f"{path.name}: not {RESULTS_FORMAT}"}
            continue
        found[str(data.get("board") or path.stem)] = data | {"_path": str(path)}
    return found


def board_table(host: dict[str, float], host_hz: float,
                results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per projected figure: the host's value and, per board, the value with
    "measured" (from a results file) or "projected"."""
    rows = []
    for key, (label, unit, kind) in PROJECTED_KEYS.items():
        row: dict[str, Any] = {"key": key, "figure": label, "unit": unit,
                               "host": host.get(key), "boards": {}}
        for board in BOARDS:
            measured = (results.get(board.key) or {}).get("figures", {}).get(key)
            if isinstance(measured, (int, float)):
                row["boards"][board.key] = {"value": float(measured), "how": "measured"}
            elif key in host and host_hz > 0:
                row["boards"][board.key] = {"value": project(host[key], kind, board, host_hz),
                                            "how": "projected"}
            else:
                row["boards"][board.key] = {"value": None, "how": "no figure"}
        rows.append(row)
    return rows


def results_document(board: str, machine: str, date: str, commit: str,
                     figures: dict[str, float]) -> dict[str, Any]:
    """What `--board NAME` writes to hardware-tests/results/NAME.json."""
    return {"format": RESULTS_FORMAT, "board": board, "machine": machine, "date": date,
            "commit": commit, "figures": {k: v for k, v in figures.items()
                                          if k in PROJECTED_KEYS}}
