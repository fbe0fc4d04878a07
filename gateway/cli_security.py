"""`branchline security`: list the sources the daemon refuses now, and unblock one.

Kept beside `gateway.cli` so that module only wires the subcommand in.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any, Protocol, TextIO


class _Client(Protocol):
    def request(self, cmd: str, **args: Any) -> Any: ...


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``security [list]`` and ``security unblock ADDRESS`` to the subcommands."""
    security = sub.add_parser(
        "security", help="sources locked out now (wrong passwords, floods); unblock one",
        parents=[common])
    actions = security.add_subparsers(dest="security_action", metavar="ACTION")
    actions.add_parser("list", help="blocked sources with their time left (the default)",
                       parents=[common])
    unblock = actions.add_parser("unblock", help="lift a source's lock-out now",
                                 parents=[common])
    unblock.add_argument("address", metavar="ADDRESS",
                         help="the IP address (or the IPv6 /64 the list shows)")


def _seconds(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    total = max(int(round(value)), 0)
    minutes, secs = divmod(total, 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def format_blocked(result: Mapping[str, Any]) -> str:
    """The ``security`` answer as a table: source, why, failures, time left."""
    rows = [
        [
            str(b.get("source", "-")),
            str(b.get("reason") or b.get("bucket") or "-"),
            str(b.get("failures", "-")),
            _seconds(b.get("seconds_left")),
        ]
        for b in result.get("blocked") or []
    ]
    if not rows:
        return "No source is blocked."
    headers = ["SOURCE", "REASON", "FAILURES", "TIME LEFT"]
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
             for row in [headers, *rows]]
    return "\n".join(lines)


def run(args: argparse.Namespace, client: _Client, out: TextIO) -> int:
    """Carry out ``security``; ControlError propagates to the caller (exit 1)."""
    as_json = getattr(args, "json", False)
    action = getattr(args, "security_action", None) or "list"
    if action == "unblock":
        result = client.request("security", action="unblock", address=args.address)
        if as_json:
            print(json.dumps(result, indent=2), file=out)
        else:
            print(f"{result.get('unblocked', args.address)}: unblocked", file=out)
        return 0
    result = client.request("security", action="list")
    if as_json:
        print(json.dumps(result, indent=2), file=out)
    else:
        print(format_blocked(result), file=out)
    return 0
