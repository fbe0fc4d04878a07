"""SIPVicious (svmap, svwar, svcrack) as a hostile peer, pinned to one loopback target.

These are the tools Internet scanners run against port 5060. Tests run Debian's
``sipvicious`` package against the gateway's own port on 127.0.0.1 and nothing else: the
target host is fixed here, and every run binds its own free local port so runs never meet
a real SIP service on 5060.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Final

from .ports import free_port, release

TARGET_HOST: Final = "127.0.0.1"
TOOLS: Final = ("svmap", "svwar", "svcrack")

#: A row of svwar's result table: "| 101 | reqauth |".
_ROW_RE: Final = re.compile(r"^\|\s*([^|\s]+)\s*\|\s*([^|]*?)\s*\|\s*$", re.MULTILINE)


def sipvicious_binary(tool: str = "svwar") -> str | None:
    """Path of one of the tools, or None when the package is not installed."""
    return shutil.which(tool)


@dataclass(frozen=True)
class ToolRun:
    """What one tool printed (stdout and stderr together: it logs to stderr)."""

    tool: str
    args: tuple[str, ...]
    returncode: int
    output: str

    @property
    def found_nothing(self) -> bool:
        """The tool's own summary line for "no result"."""
        return "found nothing" in self.output

    def table(self) -> dict[str, str]:
        """svwar's / svcrack's result table as first column -> second column."""
        rows = dict(_ROW_RE.findall(self.output))
        for header in ("Extension", "SIP Device", "Password"):
            rows.pop(header, None)
        return rows


class Sipvicious:
    """Runs the tools against 127.0.0.1:`port` only."""

    def __init__(self, port: int, *, timeout: float = 120.0) -> None:
        if not 1 <= port <= 65535:
            raise ValueError(f"port: expected 1..65535, got {port}")
        self.port = port
        self.timeout = timeout
        self.runs: list[ToolRun] = []

    def _run(self, tool: str, *args: str) -> ToolRun:
        binary = sipvicious_binary(tool)
        if binary is None:
            raise FileNotFoundError(f"{tool} not installed (Debian package sipvicious)")
        local = free_port()
        try:
            argv = (*args, "-P", str(local), "-p", str(self.port), TARGET_HOST)
            proc = subprocess.run([binary, *argv], capture_output=True, text=True,
                                  timeout=self.timeout, check=False, stdin=subprocess.DEVNULL)
        finally:
            release(local)
        run = ToolRun(tool, argv, proc.returncode, proc.stdout + proc.stderr)
        self.runs.append(run)
        return run

    def svmap(self, *extra: str) -> ToolRun:
        """Discover SIP devices (OPTIONS sweep), here on the one target."""
        return self._run("svmap", *extra)

    def svwar(self, extensions: str, *, method: str = "REGISTER", force: bool = False
              ) -> ToolRun:
        """Enumerate extensions, e.g. ``"101,102,555,999"``."""
        args = ["-e", extensions, "-m", method]
        if force:
            args.append("--force")
        return self._run("svwar", *args)

    def svcrack(self, user: str, passwords: str, *, give_up_after: float = 5.0) -> ToolRun:
        """Guess `user`'s password over a numeric range such as ``"1000-1200"``."""
        return self._run("svcrack", "-u", user, "-r", passwords,
                         f"--maximumtime={give_up_after:g}", "-v")

    def transcript(self) -> str:
        """Every run's command and output, for failure messages."""
        return "\n".join(f"$ {r.tool} {' '.join(r.args)} -> {r.returncode}\n{r.output}"
                         for r in self.runs)
