"""A sans-IO AT command engine: bytes and `now` in; bytes to write, events and a deadline out.

A modem's AT port interleaves two conversations on one byte stream: the replies to the
command we sent (intermediate lines, then one final result code) and unsolicited result
codes (URCs) the modem sends whenever something happens (RING, +CMTI, +CREG, ...). A URC
can land between a reply's intermediate lines and its OK, so each line is classified on its
own:

- a final result code (OK, ERROR, +CME ERROR: n, ...) ends the pending command;
- a line whose name is in the URC table is unsolicited, unless the pending command queried
  that name (``AT+CREG?`` asks for ``+CREG:``; ``AT+CREG=2`` does not). For names a modem
  also sends on its own (+CREG, +CPIN, +CLIP, ...) a query gets one reply line of the reply's
  shape, and anything else is unsolicited: ``+CREG: 0,1`` answers ``AT+CREG?`` while
  ``+CREG: 1`` arriving with it is the network's news;
- any other line while a command is pending is one of its intermediate lines; with no
  command pending it is unsolicited.

Commands go out one at a time, the next only after the previous one's final result or
timeout. After a timeout the engine waits `QUIET_AFTER_TIMEOUT` before sending the next
command, so the late OK of the command that timed out is not taken as the next one's.

Nothing here grows without bound: an over-long line is dropped and counted, as are reply
lines beyond `MAX_REPLY_LINES` and events nobody collected beyond `MAX_EVENTS`.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "AtEngine",
    "AtEvent",
    "CommandDone",
    "CommandFailed",
    "CommandTimedOut",
    "Unsolicited",
    "CTRL_Z",
    "ESC",
    "MAX_EVENTS",
    "MAX_LINE",
    "MAX_REPLY_LINES",
    "PDU_LINE_WAIT",
    "QUIET_AFTER_TIMEOUT",
    "split_name",
]

CTRL_Z = b"\x1a"
"""Ends a message body typed after the ``> `` prompt (AT+CMGS, AT+CMGW)."""
ESC = b"\x1b"
"""Abandons the body at a ``> `` prompt; the modem then answers with a final result."""

MAX_LINE = 4096
"""Longest line kept, in bytes; the longest real line (AT+COPS=?) is well under 1 KiB."""
MAX_REPLY_LINES = 4096
"""Intermediate lines kept per command (AT+CMGL of a full SIM is about 500)."""
MAX_EVENTS = 4096
"""Events held for `AtEngine.next_event`; the oldest is dropped (and counted) beyond this."""
QUIET_AFTER_TIMEOUT = 0.5
"""Seconds to hold the next command after a timeout, so a late final result is not misread."""
PDU_LINE_WAIT = 1.0
"""Seconds to wait for the PDU line after +CMT/+CDS (or the rest of a +CUSD text broken
over lines) before reporting the URC as it is."""


@dataclass(frozen=True)
class CommandDone:
    """A command ended with OK or CONNECT; `lines` are its intermediate lines."""

    tag: int
    command: str
    final: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class CommandFailed:
    """A command ended with ERROR, +CME ERROR: n, +CMS ERROR: n, or a dial failure
    (NO CARRIER, BUSY, NO ANSWER, NO DIALTONE); `final` is that line as received."""

    tag: int
    command: str
    final: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class CommandTimedOut:
    """No final result came within the command's timeout."""

    tag: int
    command: str


@dataclass(frozen=True)
class Unsolicited:
    """A line the modem sent on its own: `name` is ``RING``, ``+CMTI``, ``NO CARRIER``...;
    `value` is the text after ``NAME:``; `extra` holds the PDU line after +CMT/+CDS."""

    name: str
    value: str
    extra: tuple[str, ...] = ()


AtEvent = CommandDone | CommandFailed | CommandTimedOut | Unsolicited


# ---------------------------------------------------------------------------------------
# The URC table: everything that decides "reply or unsolicited" lives here.


def _reg_reply(value: str) -> bool:
    """A read reply is ``n,stat[,...]`` (second field bare); a URC is ``stat`` or
    ``stat,"lac","ci"...`` (second field quoted)."""
    fields = value.split(",")
    return len(fields) >= 2 and not fields[1].strip().startswith('"')


def _clip_reply(value: str) -> bool:
    """AT+CLIP? answers ``n,m``; the URC starts with the quoted caller number."""
    return not value.strip().startswith('"')


@dataclass(frozen=True)
class _UrcRule:
    pdu_follows: bool = False
    """The next line is part of the URC (the PDU of +CMT/+CDS)."""
    quoted_text: bool = False
    """The value may hold a quoted text with line breaks in it (a USSD menu): lines are
    joined until the quotes balance."""
    single_reply: bool = False
    """A query of this name is answered by one line; a second one is a URC."""
    reply_shape: Callable[[str], bool] | None = None
    """For a read query (``?``): True when the value looks like the reply, not the URC."""


_URC_RULES: dict[str, _UrcRule] = {
    "+CLIP": _UrcRule(single_reply=True, reply_shape=_clip_reply),
    "+CMTI": _UrcRule(),
    "+CMT": _UrcRule(pdu_follows=True),
    "+CDS": _UrcRule(pdu_follows=True),
    "+CDSI": _UrcRule(),
    "+CBM": _UrcRule(pdu_follows=True),
    "+CLCC": _UrcRule(),
    "+CREG": _UrcRule(single_reply=True, reply_shape=_reg_reply),
    "+CEREG": _UrcRule(single_reply=True, reply_shape=_reg_reply),
    "+CGREG": _UrcRule(single_reply=True, reply_shape=_reg_reply),
    "+C5GREG": _UrcRule(single_reply=True, reply_shape=_reg_reply),
    "+CUSD": _UrcRule(single_reply=True, quoted_text=True),
    "+CRING": _UrcRule(),
    "+CCWA": _UrcRule(),
    "+CSSI": _UrcRule(),
    "+CSSU": _UrcRule(),
    "+CIEV": _UrcRule(),
    "+CGEV": _UrcRule(),
    "+CTZV": _UrcRule(),
    "+CTZE": _UrcRule(),
    "+CPIN": _UrcRule(single_reply=True),
    "+CFUN": _UrcRule(single_reply=True),
    "+QIND": _UrcRule(),
    "+QUSIM": _UrcRule(),
    "+QPCMV": _UrcRule(single_reply=True),
}
"""Names (``+X`` before the colon) a modem sends unprompted. ``^...`` names are all URCs."""

_BARE_URCS = frozenset(
    {
        "RING",
        "RDY",
        "CALL READY",
        "SMS READY",
        "PB DONE",
        "POWERED DOWN",
        "NORMAL POWER DOWN",
        "UNDER-VOLTAGE POWER DOWN",
        "OVER-VOLTAGE POWER DOWN",
    }
)
"""Whole lines that are always unsolicited."""

_DIAL_RESULTS = frozenset({"NO CARRIER", "BUSY", "NO ANSWER", "NO DIALTONE"})
"""Final results of ATD/ATA/ATO; at any other time (a voice call ending) unsolicited."""

_FAILED_PREFIXES = ("+CME ERROR:", "+CMS ERROR:")

_TERMINATOR = re.compile(rb"[\r\n]")
_CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")


def split_name(line: str) -> tuple[str, str]:
    """``+CMTI: "SM",3`` -> (``+CMTI``, ``"SM",3``); a bare line is its own name."""
    if line[:1] in ("+", "^") and ":" in line:
        name, _, value = line.partition(":")
        return name.strip(), value.strip()
    return line, ""


def _split_unquoted(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    quoted = False
    start = 0
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _parse_command(command: str) -> tuple[bool, dict[str, str]]:
    """(is a dial/answer command, {name: form}) where form is exec, read, test or set."""
    upper = command.upper()
    if not upper.startswith("AT"):
        return False, {}
    rest = command[2:]
    if rest[:1].upper() == "D" or rest.upper() in ("A", "O", "O0"):
        return True, {}
    forms: dict[str, str] = {}
    for part in _split_unquoted(rest, ";"):
        start = min((i for i in (part.find("+"), part.find("^")) if i >= 0), default=-1)
        if start < 0:
            continue
        body = part[start:]
        m = re.match(r"[+^][A-Za-z0-9_]+", body)
        if m is None:
            continue
        name = m.group(0).upper()
        tail = body[m.end() :].strip()
        if tail == "":
            form = "exec"
        elif tail == "?":
            form = "read"
        elif tail == "=?":
            form = "test"
        else:
            form = "set"
        forms[name] = form
    return False, forms


@dataclass
class _Pending:
    tag: int
    command: str
    timeout: float
    body: bytes | None


@dataclass
class _Active:
    tag: int
    command: str
    deadline: float
    body: bytes | None
    dial: bool
    queried: dict[str, str]
    awaiting_prompt: bool
    body_sent: bool = False
    echo_seen: bool = False
    seen: set[str] = field(default_factory=set)
    lines: list[str] = field(default_factory=list)


@dataclass
class _PduWait:
    """A URC whose next line(s) belong to it: a PDU line, or the rest of a quoted text."""

    name: str
    value: str
    deadline: float
    joining: bool = False


class AtEngine:
    """Runs AT commands one at a time over a byte stream and sorts out what comes back.

    The caller feeds received bytes with `receive`, writes whatever `bytes_to_send` returns,
    drains `next_event`, and calls `handle_timer` once `get_timer`'s deadline has passed.
    """

    def __init__(self) -> None:
        self._queue: deque[_Pending] = deque()
        self._active: _Active | None = None
        self._out = bytearray()
        self._events: deque[AtEvent] = deque()
        self._partial = b""
        self._discarding = False
        self._pdu_wait: _PduWait | None = None
        self._quiet_until: float | None = None
        self._next_tag = 1
        self._counters: dict[str, int] = {
            "lines_too_long": 0,
            "control_bytes": 0,
            "stray_finals": 0,
            "reply_lines_dropped": 0,
            "events_dropped": 0,
            "timeouts": 0,
        }

    # -- public API --------------------------------------------------------------------

    def send(
        self, command: str, now: float, *, timeout: float = 5.0, body: bytes | None = None
    ) -> int:
        """Queue `command` (without its CR); returns the tag its result event will carry.

        `body` is typed after the ``> `` prompt and ended with Ctrl-Z (AT+CMGS/AT+CMGW).
        """
        command = command.strip()
        if not command or any(c in command for c in "\r\n\x1a\x1b"):
            raise ValueError(
                f"AT command {command!r}: expected one non-empty line without CR, LF, "
                "Ctrl-Z or ESC"
            )
        if not timeout > 0:
            raise ValueError(f"AT command {command!r}: timeout must be > 0, got {timeout!r}")
        if body is not None and (CTRL_Z in body or ESC in body):
            raise ValueError(f"AT command {command!r}: body must not contain Ctrl-Z or ESC")
        tag = self._next_tag
        self._next_tag += 1
        self._queue.append(_Pending(tag, command, timeout, body))
        self._start_next(now)
        return tag

    def receive(self, data: bytes, now: float) -> None:
        """Feed bytes read from the modem, split anywhere."""
        if not data:
            return
        parts = _TERMINATOR.split(self._partial + data)
        self._partial = parts.pop()
        for raw in parts:
            if self._discarding:
                self._discarding = False
                continue
            if len(raw) > MAX_LINE:
                self._counters["lines_too_long"] += 1
                continue
            self._raw_line(raw, now)
        if len(self._partial) > MAX_LINE:
            self._counters["lines_too_long"] += 1
            self._partial = b""
            self._discarding = True
        active = self._active
        if (
            active is not None
            and active.awaiting_prompt
            and not self._discarding
            and self._partial.strip() == b">"
        ):
            self._partial = b""
            self._on_prompt(active)
        self._start_next(now)

    def bytes_to_send(self) -> bytes:
        """Bytes to write to the modem now (and forget)."""
        data = bytes(self._out)
        self._out.clear()
        return data

    def next_event(self) -> AtEvent | None:
        """The oldest event not yet collected, or None."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When `handle_timer` must next be called, or None if nothing is timed."""
        deadlines: list[float] = []
        if self._active is not None:
            deadlines.append(self._active.deadline)
        elif self._queue and self._quiet_until is not None:
            deadlines.append(self._quiet_until)
        if self._pdu_wait is not None:
            deadlines.append(self._pdu_wait.deadline)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Expire whatever is due at `now`: a command's timeout, a missing PDU line."""
        wait = self._pdu_wait
        if wait is not None and now >= wait.deadline:
            self._pdu_wait = None
            self._emit(Unsolicited(wait.name, wait.value))
        active = self._active
        if active is not None and now >= active.deadline:
            self._active = None
            self._counters["timeouts"] += 1
            if active.awaiting_prompt:
                self._out += ESC  # leave the modem's text-entry mode if it is in it
            self._quiet_until = now + QUIET_AFTER_TIMEOUT
            self._emit(CommandTimedOut(active.tag, active.command))
        self._start_next(now)

    @property
    def busy(self) -> bool:
        """True while a command is out or queued."""
        return self._active is not None or bool(self._queue)

    @property
    def counters(self) -> dict[str, int]:
        """What was dropped or went wrong, by kind (a copy)."""
        return dict(self._counters)

    # -- internals ---------------------------------------------------------------------

    def _emit(self, event: AtEvent) -> None:
        if len(self._events) >= MAX_EVENTS:
            self._events.popleft()
            self._counters["events_dropped"] += 1
        self._events.append(event)

    def _start_next(self, now: float) -> None:
        if self._active is not None or not self._queue:
            return
        if self._quiet_until is not None:
            if now < self._quiet_until:
                return
            self._quiet_until = None
        job = self._queue.popleft()
        dial, queried = _parse_command(job.command)
        self._active = _Active(
            tag=job.tag,
            command=job.command,
            deadline=now + job.timeout,
            body=job.body,
            dial=dial,
            queried=queried,
            awaiting_prompt=job.body is not None or "+CMGS" in queried or "+CMGW" in queried,
        )
        self._out += job.command.encode("ascii", "replace") + b"\r"

    def _on_prompt(self, active: _Active) -> None:
        active.awaiting_prompt = False
        if active.body is None:
            self._out += ESC  # a prompt nobody has a body for: cancel it cleanly
            return
        self._out += active.body + CTRL_Z
        active.body_sent = True

    def _raw_line(self, raw: bytes, now: float) -> None:
        cleaned, n = _CONTROL.subn(b"", raw)
        if n:
            # Ctrl-Z in the echo of a message body is expected, not noise.
            self._counters["control_bytes"] += n - raw.count(CTRL_Z)
        line = cleaned.decode("utf-8", "replace").strip()
        if line:
            self._line(line, now)

    def _line(self, line: str, now: float) -> None:
        wait = self._pdu_wait
        upper = line.upper()
        if wait is not None and wait.joining:
            name = split_name(line)[0].upper()
            if self._final_text(upper) or name in _URC_RULES or upper in _BARE_URCS:
                # The closing quote never came; report what there is and read this line.
                self._pdu_wait = None
                self._emit(Unsolicited(wait.name, wait.value))
            else:
                wait.value += "\n" + line
                if wait.value.count('"') % 2 == 0 or len(wait.value) > MAX_LINE:
                    self._pdu_wait = None
                    self._emit(Unsolicited(wait.name, wait.value))
                return
        elif wait is not None:
            self._pdu_wait = None
            self._emit(Unsolicited(wait.name, wait.value, (line,)))
            return
        active = self._active
        if active is not None:
            if active.awaiting_prompt and line == ">":
                self._on_prompt(active)
                return
            if not active.echo_seen and upper == active.command.upper():
                active.echo_seen = True
                return
            if active.body_sent and active.body is not None:
                text = line.lstrip("> ").strip()
                if text.encode("utf-8", "replace") == active.body.strip():
                    return  # the modem echoing the body we typed
            final = self._final(upper, active)
            if final is not None:
                self._active = None
                lines = tuple(active.lines)
                if final:
                    self._emit(CommandDone(active.tag, active.command, line, lines))
                else:
                    self._emit(CommandFailed(active.tag, active.command, line, lines))
                return
        elif upper in ("OK", "ERROR") or upper.startswith(_FAILED_PREFIXES):
            self._counters["stray_finals"] += 1
            return
        name, value = split_name(line)
        if self._unsolicited(name.upper(), value, upper, active):
            rule = _URC_RULES.get(name.upper())
            if rule is not None and rule.pdu_follows:
                self._pdu_wait = _PduWait(name, value, now + PDU_LINE_WAIT)
            elif rule is not None and rule.quoted_text and value.count('"') % 2 == 1:
                self._pdu_wait = _PduWait(name, value, now + PDU_LINE_WAIT, joining=True)
            else:
                self._emit(Unsolicited(name, value))
            return
        assert active is not None
        if len(active.lines) >= MAX_REPLY_LINES:
            self._counters["reply_lines_dropped"] += 1
        else:
            active.lines.append(line)

    @staticmethod
    def _final_text(upper: str) -> bool:
        """Could this line end some command?"""
        return (
            upper in ("OK", "ERROR", "CONNECT")
            or upper.startswith(("CONNECT ", *_FAILED_PREFIXES))
            or upper in _DIAL_RESULTS
        )

    @staticmethod
    def _final(upper: str, active: _Active) -> bool | None:
        """True for success, False for failure, None if `upper` does not end `active`."""
        if upper == "OK" or upper == "CONNECT" or upper.startswith("CONNECT "):
            return True
        if upper == "ERROR" or upper.startswith(_FAILED_PREFIXES):
            return False
        if active.dial and upper in _DIAL_RESULTS:
            return False
        return None

    @staticmethod
    def _unsolicited(name: str, value: str, upper: str, active: _Active | None) -> bool:
        if active is None:
            return True
        if upper in _BARE_URCS or upper in _DIAL_RESULTS:
            return True
        rule = _URC_RULES.get(name)
        if rule is None and not name.startswith("^"):
            return False
        form = active.queried.get(name)
        if form is None or form == "set":
            return True
        if rule is not None:
            if rule.single_reply and name in active.seen:
                return True
            if form == "read" and rule.reply_shape is not None and not rule.reply_shape(value):
                return True
        active.seen.add(name)
        return False
