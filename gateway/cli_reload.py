"""`branchline reload`: the daemon reads its config file again and applies it live.

Kept beside `gateway.cli` so that module only wires the subcommand in. A refused reload
(any error in the file) lists every error and exits 1; the daemon keeps its running config.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Protocol, TextIO

#: A reload resolves changed trunks' names before it answers.
RELOAD_TIMEOUT = 30.0


class _Client(Protocol):
    def request(self, cmd: str, **args: Any) -> Any: ...


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``reload`` to the subcommands."""
    sub.add_parser("reload", help="apply the config file again, keeping calls up "
                   "(like SIGHUP)", parents=[common])


def format_reload(result: dict[str, Any]) -> tuple[str, str]:
    """(stdout text, stderr text) for a reload reply."""
    if not result.get("reloaded"):
        errors = result.get("errors") or ["refused"]
        head = f"reload refused ({len(errors)} error(s)); the running config stays:"
        return "", "\n".join([head, *errors])
    lines = [f"reloaded {result.get('file', '')}".rstrip()]
    changes = result.get("changes") or []
    lines += [f"  {c}" for c in changes] or ["  no change"]
    for name in result.get("pending_lines") or []:
        lines.append(f"  line {name}: in a call, takes its new settings when idle")
    restart = result.get("needs_restart") or []
    warn = f"needs a restart to take effect: {', '.join(restart)}" if restart else ""
    return "\n".join(lines), warn


def run(client: _Client, out: TextIO, err: TextIO, *, as_json: bool) -> int:
    """Ask the daemon to reload; 0 when applied, 1 when refused."""
    result = client.request("reload")
    if as_json:
        print(json.dumps(result, indent=2), file=out)
    else:
        text, warn = format_reload(result)
        if text:
            print(text, file=out)
        if warn:
            print(warn, file=err)
    return 0 if result.get("reloaded") else 1
