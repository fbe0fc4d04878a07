"""AT command-line syntax as module firmware reads it: splitting a line after "AT"
into commands, one extended command into name/operation/argument, and errors."""

from __future__ import annotations

UNKNOWN = -1
"""Error code of a command the firmware does not know: plain ERROR whatever +CMEE says."""


class CommandError(Exception):
    """A command failed; `code` is the +CME/+CMS error number."""

    def __init__(self, code: int = 100, sms: bool = False) -> None:
        super().__init__(code)
        self.code = code
        self.sms = sms


def split_commands(body: str) -> list[str]:
    """Split what follows "AT" into single commands, as firmware walks the line.

    Basic commands are a letter (or & plus a letter) with an optional number; extended
    ones (+, ^, $, %) run to the next ';' outside quotes; D takes the rest of the line.
    """
    cmds: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c in " ;":
            i += 1
        elif c in "+^$%":
            j, quoted = i, False
            while j < len(body) and (quoted or body[j] != ";"):
                quoted ^= body[j] == '"'
                j += 1
            cmds.append(body[i:j].strip())
            i = j + 1
        elif c.upper() == "D":
            cmds.append(body[i:])
            break
        elif c == "&" or c.isalpha():
            j = i + (2 if c == "&" else 1)
            if c.upper() == "S" and c != "&":
                while j < len(body) and (body[j].isdigit() or body[j] in "=?"):
                    j += 1
            while j < len(body) and body[j].isdigit():
                j += 1
            cmds.append(body[i:j])
            i = j
        else:
            raise ValueError(body)
    return cmds


def parse_extended(cmd: str) -> tuple[str, str, str]:
    """("+CMGF", "=", "0") from "+CMGF=0"; op is "", "?", "=?" or "="."""
    upper = cmd.upper()
    for op in ("=?", "?", "="):
        pos = upper.find(op)
        if pos > 0 and (op != "?" or "=" not in upper[:pos]):
            return upper[:pos].strip(), op, cmd[pos + len(op):].strip()
    return upper.strip(), "", ""


def split_args(arg: str) -> list[str]:
    """Comma-separated arguments with quotes removed (quoted commas stay inside)."""
    out, cur, quoted = [], "", False
    for ch in arg:
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return out if arg.strip() else []
