"""Config problems as data: each with its line and column, all reported at once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file; line and column are 1-based (0 when not in the file)."""

    line: int
    column: int
    path: str
    message: str
    expected: str = ""

    def format(self, source: str) -> str:
        """ "FILE:LINE:COL: path: message (expected: ...)", the shape editors can jump to."""
        where = f"{source}:{self.line}:{self.column}" if self.line > 0 else source
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        if self.expected:
            text += f" (expected: {self.expected})"
        return text


class ConfigError(Exception):
    """A config was refused; `errors` lists every issue found, in file order."""

    def __init__(self, source: str, errors: Sequence[ConfigIssue]) -> None:
        self.source = source
        self.errors: list[ConfigIssue] = list(errors)
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return "\n".join(issue.format(self.source) for issue in self.errors)
