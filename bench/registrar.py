"""bench.registrar: REGISTER/s and calls/s through a registrar with zero failures, for the
Branchline daemon's survivable registrar beside Kamailio, in the same run.

    python -m bench.registrar [--phones 1000] [--quick] [--peers gateway,kamailio]

sipp registers every phone with digest auth (its own user and password from a CSV), then
re-registers them all at rising rates, then phones of one half call phones of the other
half through the registrar at rising rates (the registrar must find the callee's binding).
Each ladder stops at its first step with a failure; the figure is the highest rate whose
step had none. Figures only: nothing here passes or fails on speed (see bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import registrar_caller
from bench.registrar_peers import GatewayDaemon, KamailioRegistrar
from bench.registrar_sipp import (
    REGISTER_XML,
    Phone,
    SippServer,
    Step,
    call_pairs,
    calls_csv,
    failure_text,
    highest_clean_rate,
    make_phones,
    phones_csv,
    run_uac,
)
from bench.sip_sipp import percentile

GOAL_REGISTER = 200.0
GOAL_CALLS = 50.0
EXPIRES = 3600
REGISTER_KINDS = ("register", "re-register")


@dataclass
class Plan:
    """What one run does (from the command line)."""

    phones: int = 1000
    register_rates: tuple[float, ...] = (100, 200, 400, 800, 1600, 3200)
    call_rates: tuple[float, ...] = (5, 10, 25, 50, 100, 200)
    #: Long enough to reach a steady state: the gateway keeps an ended call 32 s (64*T1)
    #: for retransmissions, and those count against its call table.
    call_seconds: float = 40.0
    call_ms: int = 1000
    server_cpu: int | None = 0
    sipp_cpu: int | None = 1
    #: One UDP worker: the registrar gets one core, and with two workers Kamailio can relay
    #: a callee's 200 before its 180 (sipp then counts the late 180 as a failure).
    kamailio_children: int = 1
    settle: float = 1.0
    recover: float = 65.0  # after a failed REGISTER step, before the repair pass
    #: Between the last REGISTER and the first call: a server transaction is kept 32 s
    #: (Timer J) after its answer, and the registration bursts fill the gateway's table.
    drain: float = 35.0


@dataclass
class PeerResult:
    """One registrar's ladders, or why it was not measured."""

    peer: str
    steps: list[Step] = field(default_factory=list)
    error: str | None = None
    alive_at_end: bool | None = None

    def register_rate(self) -> float | None:
        return highest_clean_rate(self.steps, REGISTER_KINDS)

    def call_rate(self) -> float | None:
        return highest_clean_rate(self.steps, ("calls",))

    def ladder(self, kinds: Sequence[str]) -> list[Step]:
        return [s for s in self.steps if s.kind in kinds]


class Ports:
    """Loopback ports for one peer: the registrar, the phones' (Contact) port, the callers'
    port, and the two sipp media ports."""

    def __init__(self) -> None:
        from tests.integration.peers.ports import free_port

        self.server, self.phones, self.callers = free_port(), free_port(), free_port()
        self.phones_media, self.callers_media = free_port(), free_port()


def _cpu_pct(server: KamailioRegistrar | GatewayDaemon, before: float | None,
             wall: float) -> float | None:
    after = server.cpu_seconds()
    if before is None or after is None or wall <= 0:
        return None
    return round(100.0 * (after - before) / wall, 1)


def register_step(peer: str, kind: str, server: Any, ports: Ports, plan: Plan, rate: float,
                  cseq: int, csv_path: Path, workdir: Path) -> Step:
    """Every phone (re-)registers once at `rate`/s; CSeqs cseq, cseq+1 for this pass."""
    before = server.cpu_seconds()
    counts, wall, rtt, tail = run_uac(
        ("127.0.0.1", ports.server), REGISTER_XML, csv_path,
        workdir / f"{peer}-{kind}-{rate:g}-{cseq}", rate=rate, count=plan.phones,
        local_port=ports.phones, cpu=plan.sipp_cpu,
        timeout=max(30.0, 3 * plan.phones / rate + 20),
        extra=["-nd", "-cid_str", "breg-%u@bench", "-key", "contact_port", str(ports.phones),
               "-key", "cseq1", str(cseq), "-key", "cseq2", str(cseq + 1),
               "-key", "expires", str(EXPIRES)])
    return Step(peer, kind, rate, plan.phones, wall, counts, cpu_pct=_cpu_pct(server, before, wall),
                rtt_ms=rtt, error_tail=tail)


def call_step(peer: str, server: Any, ports: Ports, plan: Plan, rate: float, csv_path: Path,
              workdir: Path) -> Step:
    """Callers call callees at `rate`/s for `call_seconds`; the callees answer on the port
    they registered from."""
    count = max(1, round(rate * plan.call_seconds))
    rundir = workdir / f"{peer}-calls-{rate:g}"
    phones = SippServer(rundir / "phones", ports.phones, ports.phones_media, plan.sipp_cpu)
    phones.start()
    before = server.cpu_seconds()
    try:
        counts, wall, rtt, tail = registrar_caller.run_process(
            ("127.0.0.1", ports.server), csv_path, rundir / "callers", rate=rate, count=count,
            call_ms=plan.call_ms, port=ports.callers, media_port=ports.callers_media,
            cpu=plan.sipp_cpu, timeout=plan.call_seconds + 60)
        cpu = _cpu_pct(server, before, wall)
    finally:
        uas = phones.stop()
    return Step(peer, "calls", rate, count, wall, counts, uas=uas, cpu_pct=cpu, rtt_ms=rtt,
                error_tail=tail, tail_s=plan.call_ms / 1000.0)


def measure_peer(peer: str, plan: Plan, phones: Sequence[Phone], workdir: Path) -> PeerResult:
    """Start one registrar, run both ladders against it, stop it."""
    result = PeerResult(peer)
    ports = Ports()
    server: KamailioRegistrar | GatewayDaemon
    if peer == "kamailio":
        server = KamailioRegistrar(workdir, ports.server, phones, plan.kamailio_children)
    else:
        server = GatewayDaemon(workdir, ports.server, phones)
    reg_csv = workdir / "phones.csv"
    call_csv = workdir / "calls.csv"
    try:
        server.start(plan.server_cpu)
        cseq = 1
        for i, rate in enumerate(plan.register_rates):
            step = register_step(peer, "register" if i == 0 else "re-register", server, ports,
                                 plan, rate, cseq, reg_csv, workdir)
            cseq += 2
            result.steps.append(step)
            time.sleep(plan.settle)
            if not step.clean:
                break
        if not all(s.clean for s in result.steps):
            # The calls need every phone bound: one more pass at the lowest rate, once an
            # overload's after-effects (e.g. a source locked out for a minute) are over.
            print(f"{peer}: REGISTER step failed; waiting {plan.recover:g} s before the "
                  "repair pass", file=sys.stderr)
            time.sleep(plan.recover)
            result.steps.append(register_step(peer, "repair", server, ports, plan,
                                              plan.register_rates[0], cseq, reg_csv, workdir))
            time.sleep(plan.settle)
        time.sleep(plan.drain)
        for rate in plan.call_rates:
            step = call_step(peer, server, ports, plan, rate, call_csv, workdir)
            result.steps.append(step)
            time.sleep(plan.settle)
            if not step.clean:
                break
    except (RuntimeError, OSError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        result.alive_at_end = server.alive
        if result.alive_at_end is False and result.error is None:
            result.error = f"{peer} died: {server.log_tail(1500)}"
        server.stop()
    return result


# ------------------------------------------------------------------------------ output


def _ms(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{percentile(values, 50):.1f}/{percentile(values, 99):.1f}"


def _cpu(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def step_table(results: Sequence[PeerResult], kinds: Sequence[str], calls: bool) -> list[str]:
    """The rows of one ladder for every peer."""
    head = (f"  {'peer':9} {'step':12} {'rate/s':>7} {'planned':>7} {'ok':>6} {'failed':>6} "
            f"{'retrans':>7} {'wall s':>7} {'done/s':>7} {'cpu%':>6} {'rtt p50/p99 ms':>15}")
    rows = [head + ("  callee ok/failed" if calls else "") + "  failures"]
    for res in results:
        for s in res.ladder(kinds):
            row = (f"  {res.peer:9} {s.kind:12} {s.rate:>7g} {s.planned:>7} "
                   f"{s.uac.successful:>6} {s.uac.failed:>6} {s.uac.retransmissions:>7} "
                   f"{s.wall_s:>7.1f} {s.achieved:>7.1f} {_cpu(s.cpu_pct):>6} {_ms(s.rtt_ms):>15}")
            if calls:
                uas = s.uas
                row += f"  {uas.successful if uas else '-':>8}/{uas.failed if uas else '-':<7}"
            rows.append(row + "  " + failure_text(s.uac))
    return rows


def figure(res: PeerResult, kinds: Sequence[str], tried: Sequence[float]) -> str:
    """'400', '1600+' (the highest rung tried was clean) or 'not measured: <why>'."""
    if res.error is not None and not res.ladder(kinds):
        return f"not measured: {res.error[:200]}"
    ladder = res.ladder(kinds)
    if not ladder:
        return "not measured: no step ran"
    best = highest_clean_rate(ladder, kinds)
    if best is None:
        first = ladder[0]
        if first.uac.successful == 0:
            return f"not measured: nothing completed ({failure_text(first.uac)[:200]})"
        return f"none (the first step, {first.rate:g}/s, had failures)"
    return f"{best:g}+" if best >= max(tried) else f"{best:g}"


def goal_line(name: str, goal: float, res: PeerResult | None, kinds: Sequence[str],
              tried: Sequence[float]) -> str:
    label = f"goal: gateway >= {goal:g} {name} on one core ".ljust(52, ".")
    if res is None:
        return label + " not measured: gateway not run"
    best = highest_clean_rate(res.steps, kinds)
    if best is None:
        return label + " NOT met (no rate without failures)"
    if best >= goal:
        return label + f" met ({best:g}/s)"
    if best >= max(tried):
        return label + f" not decided (every rate tried was clean; the highest, {best:g}/s, " \
            "is below the goal)"
    return label + f" NOT met ({best:g}/s)"


def report(results: Sequence[PeerResult], plan: Plan, load: tuple[float, float]) -> list[str]:
    pin = ("not pinned" if plan.server_cpu is None else
           f"registrar pinned to CPU {plan.server_cpu} (sched_setaffinity, as taskset -c), "
           f"sipp to CPU {plan.sipp_cpu}")
    lines = [
        f"bench.registrar: {plan.phones} phones, {pin}; load average {load[0]:.2f} at start, "
        f"{load[1]:.2f} at end",
        "",
        f"REGISTER with digest, all {plan.phones} phones per step (each: REGISTER, 401, "
        "REGISTER with credentials, 200); the first step creates the bindings, the next refresh "
        "them; rtt = first REGISTER to 200",
        *step_table(results, ("register", "re-register", "repair"), calls=False),
        "",
        f"calls: {plan.phones // 2} callers -> {plan.phones // 2} registered callees, "
        f"{plan.call_seconds:g} s per step, {plan.call_ms} ms after the answer, BYE; "
        "INVITE challenged, answered with credentials; rtt = authenticated INVITE to 200",
        *step_table(results, ("calls",), calls=True),
        "",
        "highest rate with zero failures (+: the highest rate tried; the limit is above it)",
    ]
    for res in results:
        lines.append(f"  {res.peer:9} registrations/s: "
                     f"{figure(res, REGISTER_KINDS, plan.register_rates):<14} "
                     f"calls/s: {figure(res, ('calls',), plan.call_rates)}")
        if res.error:
            lines.append(f"  {res.peer:9} error: {res.error[:300]}")
    gw = next((r for r in results if r.peer == "gateway"), None)
    lines += ["  (a registration is 2 REGISTER requests: REGISTER requests/s is twice the "
              "figure)",
              goal_line("registrations/s", GOAL_REGISTER, gw, REGISTER_KINDS,
                        plan.register_rates),
              goal_line("calls/s", GOAL_CALLS, gw, ("calls",), plan.call_rates)]
    return lines


def json_line(results: Sequence[PeerResult], plan: Plan, load: tuple[float, float]) -> str:
    return json.dumps({
        "bench": "registrar", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "phones": plan.phones, "host_cpus": os.cpu_count(), "load_avg": load,
        "server_cpu": plan.server_cpu, "sipp_cpu": plan.sipp_cpu,
        "goals": {"registrations_per_s": GOAL_REGISTER, "calls_per_s": GOAL_CALLS},
        "peers": {r.peer: {
            "registrations_per_s": r.register_rate(), "calls_per_s": r.call_rate(),
            "error": r.error, "alive_at_end": r.alive_at_end,
            "steps": [s.summary() for s in r.steps]} for r in results},
    })


def _rates(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def parse_args(argv: Sequence[str] | None) -> tuple[Plan, argparse.Namespace]:
    ap = argparse.ArgumentParser(prog="python -m bench.registrar", description=__doc__.split(
        "\n\n")[0])
    ap.add_argument("--phones", type=int, default=None, help="phones (even; default 1000)")
    ap.add_argument("--quick", action="store_true",
                    help="50 phones, two short steps per ladder (the integration test's run)")
    ap.add_argument("--peers", default="gateway,kamailio",
                    help="comma list of gateway, kamailio (default both)")
    ap.add_argument("--register-rates", type=_rates, default=None)
    ap.add_argument("--call-rates", type=_rates, default=None)
    ap.add_argument("--call-seconds", type=float, default=None)
    ap.add_argument("--call-ms", type=int, default=None)
    ap.add_argument("--kamailio-children", type=int, default=1)
    ap.add_argument("--recover", type=float, default=None,
                    help="s to wait after a failed REGISTER step (default 65)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin registrar and sipp")
    ap.add_argument("--keep", action="store_true", help="keep configs and sipp files")
    args = ap.parse_args(argv)
    plan = Plan()
    if args.quick:
        plan = Plan(phones=50, register_rates=(25, 50), call_rates=(5, 10), call_seconds=3.0,
                    call_ms=300, settle=0.5, recover=5.0, drain=1.0)
    if args.phones is not None:
        plan.phones = args.phones
    if args.register_rates:
        plan.register_rates = args.register_rates
    if args.call_rates:
        plan.call_rates = args.call_rates
    if args.call_seconds is not None:
        plan.call_seconds = args.call_seconds
    if args.call_ms is not None:
        plan.call_ms = args.call_ms
    plan.kamailio_children = args.kamailio_children
    if args.recover is not None:
        plan.recover = args.recover
    cpus = sorted(os.sched_getaffinity(0))
    if args.no_pin or len(cpus) < 2:
        plan.server_cpu = plan.sipp_cpu = None
    else:
        plan.server_cpu, plan.sipp_cpu = cpus[0], cpus[1]
    return plan, args


def main(argv: Sequence[str] | None = None) -> int:
    plan, args = parse_args(argv)
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = set(peers) - {"gateway", "kamailio"}
    if unknown:
        print(f"unknown peer(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    phones = make_phones(plan.phones)
    workdir = Path(tempfile.mkdtemp(prefix="bench-registrar-"))
    (workdir / "phones.csv").write_text(phones_csv(phones))
    (workdir / "calls.csv").write_text(calls_csv(phones))
    assert len(call_pairs(phones)) == plan.phones // 2
    load_start = os.getloadavg()[0]
    results = [measure_peer(peer, plan, phones, workdir) for peer in peers]
    load = (load_start, os.getloadavg()[0])
    print("\n".join(report(results, plan, load)))
    print(json_line(results, plan, load))
    if args.keep:
        print(f"kept: {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    broken = [r.peer for r in results if r.error is not None]
    for r in results:
        if r.error is not None:
            print(f"{r.peer}: {r.error}", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
