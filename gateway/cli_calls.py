"""`branchline calls`: list the call records, filter them, export CSV or JSON.

Kept beside `gateway.cli` so that module only wires the subcommand in. The daemon reads its
own store (gateway/store/calls.py) and answers over the control socket.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from typing import Any, Protocol, TextIO

from gateway.store.calls import CSV_FIELDS, OUTCOMES, csv_row


class _Client(Protocol):
    def request(self, cmd: str, **args: Any) -> Any: ...


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``calls`` to the subcommands."""
    p = sub.add_parser("calls", help="list call records (filter, CSV or JSON export)",
                       parents=[common])
    p.add_argument("--since", metavar="TIME",
                   help="calls that started at or after TIME: ISO 8601 (UTC unless it "
                        "says) or relative: -1h, -30m, -7d")
    p.add_argument("--until", metavar="TIME", help="calls that started before TIME")
    p.add_argument("--line", metavar="NAME", help="calls on this line or port (either side)")
    p.add_argument("--outcome", choices=OUTCOMES)
    p.add_argument("--limit", type=int, default=100, metavar="N",
                   help="the newest N calls (default 100, at most 10000)")
    p.add_argument("--csv", action="store_true", help="print CSV (one header row)")


def relative_times(argv: Sequence[str] | None) -> list[str]:
    """``--since -1h`` as ``--since=-1h``: argparse takes "-1h" for an option otherwise."""
    args = list(sys.argv[1:] if argv is None else argv)
    out: list[str] = []
    i = 0
    while i < len(args):
        if args[i] in ("--since", "--until") and i + 1 < len(args) \
                and args[i + 1].startswith("-") and args[i + 1][1:2].isdigit():
            out.append(f"{args[i]}={args[i + 1]}")
            i += 2
            continue
        out.append(args[i])
        i += 1
    return out


def request_args(args: argparse.Namespace) -> dict[str, Any]:
    """The control request's arguments from the command line."""
    req: dict[str, Any] = {"limit": args.limit}
    for key in ("since", "until", "line", "outcome"):
        value = getattr(args, key, None)
        if value:
            req[key] = value
    return req


def _seconds(v: Any) -> str:
    return f"{float(v):.0f}s" if v is not None else "-"


def format_calls(records: list[dict[str, Any]]) -> str:
    """The text table: one line per call."""
    if not records:
        return "no calls"
    head = ("START (UTC)", "FROM", "TO", "OUTCOME", "CAUSE", "RING", "TALK", "ROUTE", "MOS")
    rows = [head]
    for r in records:
        cause = r.get("reason") or r.get("cause") or ""
        rows.append((
            (r.get("start") or "")[:19].replace("T", " "),
            r.get("port_a") or "-", r.get("port_b") or "-", r.get("outcome") or "",
            cause, _seconds(r.get("ring_seconds")), _seconds(r.get("talk_seconds")),
            r.get("route") or "-", f"{r['mos']:.2f}" if r.get("mos") is not None else "-"))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True))
                     .rstrip() for row in rows)


def run(args: argparse.Namespace, client: _Client, out: TextIO) -> int:
    """Carry out ``calls``; ControlError propagates to the caller (exit 1)."""
    result = client.request("calls", **request_args(args))
    records: list[dict[str, Any]] = list(result.get("calls") or [])
    if getattr(args, "csv", False):
        w = csv.writer(out, lineterminator="\n")
        w.writerow(CSV_FIELDS)
        for r in records:
            w.writerow(csv_row(r))
    elif getattr(args, "json", False):
        print(json.dumps(records, indent=2), file=out)
    else:
        print(format_calls(records), file=out)
    return 0
