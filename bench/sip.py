"""SIP figures: parser throughput, calls/s the gateway's UAS takes, INVITE->180 latency.

Run from the repository root (as root for microsecond latency figures; see below):

    .venv/bin/python -m bench.sip [--lines 20] [--rates 5,10,20,40] [--step-seconds 15]

Three parts, each printed as a table; the last line of output is one JSON object.

1. **Parse + serialise.** ``bytes(parse_message(data))`` on a representative INVITE with
   SDP, a 200 OK with SDP and a REGISTER with digest credentials; messages/s, median of 5
   runs.
2. **Calls/s.** The real daemon (``branchline run``) with ``--lines`` simulated phones
   (numbers 201...) that answer by themselves (sim option ``auto_answer_ms``) and hang up
   when they hear busy tone after the caller's BYE. Its only trunk is sipp's address, so
   sipp is a configured, trusted source. ``bench/sipp/uac_rtd.xml`` (sipp's standard uac
   flow, request-URI user taken round-robin from a CSV of the line numbers) runs at each
   rate in ``--rates`` for ``--step-seconds``; the figure is the highest rate with zero
   failed calls, beside sipp's own counts. The ramp stops after the first step with
   failures.
3. **INVITE->180 latency**, p50/p99, at ``--latency-rate`` calls/s for
   ``--latency-seconds``, for the gateway and for Kamailio in the same run with the same
   sipp scenario. Kamailio is a UAS-like responder (``KAMAILIO_UAS_CFG`` in ``bench/sip_peers.py``): ``t_newtran``,
   ``t_reply("180")``, ``t_reply("200")`` with SDP, BYE answered statelessly. The
   latency is the time from the INVITE datagram to the 180 datagram, both stamped by the
   kernel on loopback (``bench.capture``, needs root or CAP_NET_RAW). Without that
   permission sipp's own response times are used (1 ms resolution) and the JSON says so.

It never fails on the figures; a daemon that dies or a peer that is missing is reported.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.sip_peers import (
    AUTO_ANSWER_MS,
    KamailioUas,
    bench_gateway,
    cpu_seconds,
    gateway_config,
    rss_kib,
    write_users_csv,
)
from bench.sip_sipp import measure_latency, percentile, run_sipp
from gateway.sip.message import parse_message

PARSE_RUNS = 5
DEFAULT_RATES = (5, 10, 20, 40)

# ----------------------------------------------------------------------------- parse

INVITE = (
    b"INVITE sip:201@192.0.2.10:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice Example" <sip:+4930123456@trunk.example.net>;tag=1928301774\r\n'
    b"To: <sip:201@192.0.2.10>\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.net\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:+4930123456@198.51.100.7:5060;transport=udp>\r\n"
    b"Record-Route: <sip:198.51.100.1;lr>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE\r\n"
    b"Supported: timer, replaces\r\n"
    b"Session-Expires: 1800\r\n"
    b"User-Agent: ExampleTrunk/4.2\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 231\r\n"
    b"\r\n"
    b"v=0\r\n"
    b"o=- 2890844526 2890844526 IN IP4 198.51.100.7\r\n"
    b"s=-\r\n"
    b"c=IN IP4 198.51.100.7\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)

OK_200 = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKnashds8;rport=5060;received=192.0.2.10\r\n"
    b"Record-Route: <sip:198.51.100.1;lr>\r\n"
    b'From: "Line 1" <sip:201@trunk.example.net>;tag=a6c85cf\r\n'
    b"To: <sip:+4930123456@trunk.example.net>;tag=314159\r\n"
    b"Call-ID: 3848276298220188511@192.0.2.10\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:+4930123456@198.51.100.7:5060>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n"
    b"Server: ExampleTrunk/4.2\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 166\r\n"
    b"\r\n"
    b"v=0\r\n"
    b"o=- 2890844527 2890844527 IN IP4 198.51.100.7\r\n"
    b"s=-\r\n"
    b"c=IN IP4 198.51.100.7\r\n"
    b"t=0 0\r\n"
    b"m=audio 3456 RTP/AVP 0 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
)

REGISTER = (
    b"REGISTER sip:trunk.example.net SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKnashds7;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:201@trunk.example.net>;tag=456248\r\n"
    b"To: <sip:201@trunk.example.net>\r\n"
    b"Call-ID: 843817637684230@998sdasdh09\r\n"
    b"CSeq: 1827 REGISTER\r\n"
    b'Contact: <sip:201@192.0.2.10:5060>;+sip.instance="<urn:uuid:00000000-0000-1000-8000'
    b'-AABBCCDDEEFF>";expires=3600\r\n'
    b'Authorization: Digest username="201", realm="trunk.example.net", '
    b'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="sip:trunk.example.net", '
    b'response="6629fae49393a05397450978507c4ef1", algorithm=MD5, cnonce="0a4f113b", '
    b'qop=auth, nc=00000001, opaque="5ccc069c403ebaf9f0171e9517f40e41"\r\n'
    b"Expires: 3600\r\n"
    b"User-Agent: Branchline\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

PARSE_MESSAGES: dict[str, bytes] = {"INVITE+SDP": INVITE, "200 OK+SDP": OK_200, "REGISTER": REGISTER}


def parse_throughput(
    data: bytes, runs: int = PARSE_RUNS, min_seconds: float = 0.3,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Messages/s of parse + serialise for one message: median and spread over `runs`.

    Each run repeats the round trip until `min_seconds` have passed, so a fast parser is
    not measured on a handful of calls.
    """
    assert bytes(parse_message(data)), "message does not round-trip"
    rates: list[float] = []
    for _ in range(runs):
        n = 0
        start = clock()
        while True:
            for _ in range(200):
                bytes(parse_message(data))
            n += 200
            elapsed = clock() - start
            if elapsed >= min_seconds:
                break
        rates.append(n / elapsed)
    return {
        "median": statistics.median(rates),
        "min": min(rates),
        "max": max(rates),
        "runs": float(runs),
        "bytes": float(len(data)),
    }


# ----------------------------------------------------------------------------- run


@dataclass
class Ports:
    """Loopback ports for one bench run."""

    gateway: int
    kamailio: int
    sipp: int
    sipp_media: int

    @classmethod
    def pick(cls) -> Ports:
        """Free ports from the integration tests' allocator (same ranges, no clashes)."""
        from tests.integration.peers.ports import free_port, free_sip_port

        return cls(free_port(), free_sip_port(), free_sip_port(), free_port())


def run_gateway_part(
    args: argparse.Namespace, workdir: Path, ports: Ports
) -> dict[str, Any]:
    """Latency at a fixed rate, then the calls/s ramp, against one daemon."""
    users = write_users_csv(workdir / "lines.csv", args.lines)
    gw = bench_gateway(workdir, gateway_config(ports.gateway, ports.sipp, args.lines,
                                               workdir / "state"), args.log_level)
    sipp_args = {"users_csv": users, "local_port": ports.sipp, "media_port": ports.sipp_media,
                 "call_ms": args.call_ms}
    target = ("127.0.0.1", ports.gateway)
    result: dict[str, Any] = {"lines": args.lines, "auto_answer_ms": AUTO_ANSWER_MS,
                              "call_ms": args.call_ms}
    gw.start()
    pid = gw.pid
    time.sleep(2.0)  # let start-up settle before measuring
    cpu0 = cpu_seconds(pid) if pid else None
    time.sleep(args.idle_seconds)
    cpu1 = cpu_seconds(pid) if pid else None
    if cpu0 is not None and cpu1 is not None:
        result["idle_cpu_pct"] = round(100 * (cpu1 - cpu0) / args.idle_seconds, 1)
    try:
        cpu0 = cpu_seconds(pid) if pid else None
        run, figures = measure_latency(target, args.latency_rate, args.latency_seconds,
                                       workdir, "gw-latency", **sipp_args)
        cpu1 = cpu_seconds(pid) if pid else None
        result["latency"] = {"rate": args.latency_rate, "seconds": args.latency_seconds,
                             "sipp": run.summary(), **figures}
        if cpu0 is not None and cpu1 is not None:
            result["latency"]["daemon_cpu_pct"] = round(
                100 * (cpu1 - cpu0) / max(args.latency_seconds, 1e-9), 1)
        steps: list[dict[str, Any]] = []
        for rate in args.rates:
            _settle(gw, args.lines)
            cpu0 = cpu_seconds(pid) if pid else None
            t0 = time.monotonic()
            step = run_sipp(target, rate, args.step_seconds, workdir, tag=f"gw-{rate:g}cps",
                            **sipp_args)
            wall = time.monotonic() - t0
            cpu1 = cpu_seconds(pid) if pid else None
            entry = step.summary()
            entry["rtt_ms_p50"] = percentile(step.rtt_ms, 50) if step.rtt_ms else None
            entry["rtt_ms_p99"] = percentile(step.rtt_ms, 99) if step.rtt_ms else None
            entry["wall_s"] = round(wall, 1)
            if cpu0 is not None and cpu1 is not None:
                entry["daemon_cpu_pct"] = round(100 * (cpu1 - cpu0) / max(wall, 1e-9), 1)
            entry["daemon_alive"] = gw.running
            entry["daemon_rss_kib"] = rss_kib(pid) if pid else None
            steps.append(entry)
            print(f"  {rate:g} cps: {step.successful}/{step.created} ok, {step.failed} failed",
                  file=sys.stderr, flush=True)
            if not step.clean or not gw.running:
                break
        result["steps"] = steps
        clean = [s["rate"] for s in steps if s["clean"]]
        result["max_clean_cps"] = max(clean) if clean else None
        result["daemon_alive"] = gw.running
    except BaseException:
        print(f"gateway log tail ({gw.log_path}):\n{gw.log_text()[-4000:]}", file=sys.stderr)
        raise
    finally:
        gw.stop()
    return result


def _settle(gw: Any, lines: int, timeout: float = 15.0) -> None:
    """Wait until every line is idle again, so one step's hang-ups don't fail the next."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            states = [entry.get("state") for entry in gw.status()["lines"]]
        except Exception:
            return
        if all(s == "idle" for s in states):
            return
        time.sleep(0.2)


def run_kamailio_part(args: argparse.Namespace, workdir: Path, ports: Ports) -> dict[str, Any]:
    """The same latency run against Kamailio answering as a UAS."""
    users = write_users_csv(workdir / "lines.csv", args.lines)
    kam = KamailioUas(workdir, ports.kamailio, rtp_port=ports.sipp_media + 10)
    kam.start()
    try:
        run, figures = measure_latency(
            ("127.0.0.1", ports.kamailio), args.latency_rate, args.latency_seconds, workdir,
            "kamailio-latency", users_csv=users, local_port=ports.sipp,
            media_port=ports.sipp_media, call_ms=args.call_ms)
    finally:
        kam.stop()
    return {"rate": args.latency_rate, "seconds": args.latency_seconds,
            "children": kam.children, "sipp": run.summary(), **figures}


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.{digits}f}" if v < 100 else f"{v:,.0f}"
    return f"{v}"


def render(report: dict[str, Any]) -> str:
    """The human-readable tables."""
    out = [f"host: {report['host_cpus']} CPUs, load average at start "
           f"{report['load_avg_start'][0]:.2f}, at end {report.get('load_avg_end', ['?'])[0]}",
           ""]
    out += ["parse + serialise (bytes(parse_message(m))), messages/s, median of "
           f"{PARSE_RUNS} runs"]
    out.append(f"  {'message':<12} {'bytes':>6} {'median':>10} {'min':>10} {'max':>10}")
    for name, fig in report["parse"].items():
        out.append(f"  {name:<12} {int(fig['bytes']):>6} {fig['median']:>10,.0f} "
                   f"{fig['min']:>10,.0f} {fig['max']:>10,.0f}")
    gw = report.get("gateway")
    if gw:
        out.append("")
        out.append(f"sipp calls/s against the gateway UAS ({gw['lines']} auto-answering lines, "
                   f"answer after {gw['auto_answer_ms']} ms, call {gw['call_ms']} ms)")
        out.append(f"  {'cps':>5} {'created':>8} {'ok':>6} {'failed':>7} {'retrans':>8} "
                   f"{'cpu%':>6} {'rtt p50/p99 ms':>15}  failures")
        for s in gw.get("steps", []):
            why = ", ".join(f"{k}={v}" for k, v in s["failure_kinds"].items())
            if s["unexpected"]:
                why += " (" + ", ".join(f"{k}: {v}" for k, v in s["unexpected"].items()) + ")"
            out.append(
                f"  {s['rate']:>5g} {s['created']:>8} {s['successful']:>6} {s['failed']:>7} "
                f"{s['retransmissions']:>8} {_fmt(s.get('daemon_cpu_pct'), 1):>6} "
                f"{_fmt(s['rtt_ms_p50'], 0) + '/' + _fmt(s['rtt_ms_p99'], 0):>15}  {why or '-'}")
        out.append(f"  daemon CPU with no calls: {_fmt(gw.get('idle_cpu_pct'), 1)}% of one core")
        out.append(f"  highest rate with zero failed calls: {_fmt(gw.get('max_clean_cps'), 0)} cps"
                   f"; daemon alive after the ramp: {gw.get('daemon_alive')}")
    rows = [("gateway", gw["latency"] if gw else None), ("kamailio", report.get("kamailio"))]
    rows = [(n, r) for n, r in rows if r]
    if rows:
        out.append("")
        first = rows[0][1]
        assert first is not None
        out.append(f"INVITE->100 and INVITE->180 latency at {first['rate']:g} cps for "
                   f"{first['seconds']:g} s ({first['source']})")
        out.append(f"  {'peer':<9} {'calls':>6} {'180 p50':>9} {'180 p99':>9} {'180 max':>9} "
                   f"{'100 p50':>9} {'100 p99':>9} {'sipp ok/failed':>15}")
        for name, r in rows:
            assert r is not None
            a, b = r["invite_180"], r["invite_100"]
            sipp = r["sipp"]
            out.append(
                f"  {name:<9} {a['calls']:>6} {_fmt(a['p50_ms']):>9} {_fmt(a['p99_ms']):>9} "
                f"{_fmt(a['max_ms']):>9} {_fmt(b['p50_ms']):>9} {_fmt(b['p99_ms']):>9} "
                f"{str(sipp['successful']) + '/' + str(sipp['failed']):>15}")
        ratio = report.get("ratio_p99_180")
        if ratio is not None:
            out.append(f"  gateway/kamailio INVITE->180: p50 x{report['ratio_p50_180']:.1f}, "
                       f"p99 x{ratio:.1f}")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m bench.sip`."""
    parser = argparse.ArgumentParser(prog="python -m bench.sip", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=20, help="simulated lines (default 20)")
    parser.add_argument("--rates", default=",".join(str(r) for r in DEFAULT_RATES),
                        help="calls/s steps, comma-separated (default 5,10,20,40)")
    parser.add_argument("--step-seconds", type=float, default=15.0,
                        help="length of each rate step (default 15)")
    parser.add_argument("--call-ms", type=int, default=500,
                        help="how long sipp holds each answered call before BYE (default 500)")
    parser.add_argument("--latency-rate", type=float, default=None,
                        help="calls/s of the latency runs (default: 5, or lines/4 if lower, "
                        "so every line is idle again before its next call)")
    parser.add_argument("--latency-seconds", type=float, default=20.0,
                        help="length of each latency run (default 20)")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning"),
                        help="the daemon's log level (default info)")
    parser.add_argument("--idle-seconds", type=float, default=5.0,
                        help="how long the daemon's idle CPU is measured (default 5)")
    parser.add_argument("--parse-only", action="store_true", help="only the parser figures")
    parser.add_argument("--no-kamailio", action="store_true", help="skip the Kamailio run")
    parser.add_argument("--keep", action="store_true",
                        help="keep the working directory (configs, logs, sipp files)")
    args = parser.parse_args(argv)
    try:
        args.rates = [float(r) for r in str(args.rates).split(",") if r.strip()]
    except ValueError:
        parser.error(f"--rates {args.rates!r}: expected numbers separated by commas")
    if not args.rates or min(args.rates) <= 0:
        parser.error("--rates must be positive")
    if not 1 <= args.lines <= 700:
        parser.error("--lines must be 1..700")
    if args.latency_rate is None:
        args.latency_rate = min(5.0, args.lines / 4)

    report: dict[str, Any] = {
        "bench": "sip",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host_cpus": os.cpu_count(),
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
    }
    report["parse"] = {name: parse_throughput(data) for name, data in PARSE_MESSAGES.items()}
    if not args.parse_only:
        workdir = Path(tempfile.mkdtemp(prefix="bench-sip-"))
        try:
            ports = Ports.pick()
            if not args.no_kamailio:
                report["kamailio"] = run_kamailio_part(args, workdir, ports)
            report["gateway"] = run_gateway_part(args, workdir, ports)
        finally:
            if args.keep:
                print(f"working directory kept: {workdir}", file=sys.stderr)
            else:
                shutil.rmtree(workdir, ignore_errors=True)
        gw_lat = report["gateway"]["latency"]["invite_180"]
        k_lat = report.get("kamailio", {}).get("invite_180")
        if k_lat and k_lat["p99_ms"] and gw_lat["p99_ms"] is not None:
            report["ratio_p50_180"] = round(gw_lat["p50_ms"] / k_lat["p50_ms"], 2)
            report["ratio_p99_180"] = round(gw_lat["p99_ms"] / k_lat["p99_ms"], 2)
    report["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(render(report), flush=True)
    print(json.dumps(report, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
