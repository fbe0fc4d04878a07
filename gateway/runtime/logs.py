"""Logging set-up for the daemon: journald with structured fields, or plain stderr.

Under systemd (stderr is the stream ``JOURNAL_STREAM`` names) the daemon logs through systemd-python's
``JournalHandler``, so every line carries the structured fields ``LINE``, ``TRUNK``,
``CALL_ID``, ``EVENT`` and ``SIP_CODE`` that code passes with ``extra=fields(...)``::

    log.info("call %s ended", call_id, extra=fields(line="1", call_id=call_id, event="call-end"))

and an admin can ask ``journalctl -u branchline CALL_ID=…`` or ``TRUNK=main EVENT=trunk-health``.
On stderr the message text is unchanged (the fail2ban filter reads it the same either way).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

#: The daemon's stderr format (and the message layout the fail2ban filter expects).
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The journal has its own timestamp, level (PRIORITY) and logger (LOGGER) fields.
JOURNAL_FORMAT = "%(levelname)s %(name)s: %(message)s"
#: Syslog identifier in the journal; the fail2ban filter expects "branchline[pid]:".
IDENTIFIER = "branchline"

#: fields() keyword -> journal field name.
FIELD_NAMES: Mapping[str, str] = {
    "line": "LINE",
    "trunk": "TRUNK",
    "call_id": "CALL_ID",
    "event": "EVENT",
    "sip_code": "SIP_CODE",
}
MODES = ("auto", "journal", "stderr")


def fields(*, line: str | None = None, trunk: str | None = None, call_id: str | None = None,
           event: str | None = None, sip_code: int | None = None) -> dict[str, Any]:
    """The ``extra=`` mapping for a log call: the structured journal fields that are given."""
    given = {"line": line, "trunk": trunk, "call_id": call_id, "event": event,
             "sip_code": sip_code}
    return {FIELD_NAMES[k]: str(v) for k, v in given.items() if v is not None}


def journal_available() -> bool:
    try:  # by name: the repository's own systemd/ folder would shadow it for mypy
        journal = importlib.import_module("systemd.journal")
    except ImportError:
        return False
    return hasattr(journal, "JournalHandler")


def choose_mode(mode: str, env: Mapping[str, str] | None = None,
                have_journal: bool | None = None) -> str:
    """``journal`` or ``stderr`` for the configured ``gateway.log`` value."""
    env = os.environ if env is None else env
    if mode not in MODES:
        raise ValueError(f"gateway.log: expected one of {', '.join(MODES)}, got {mode!r}")
    available = journal_available() if have_journal is None else have_journal
    if mode == "journal":
        if not available:
            raise ValueError("gateway.log: journal needs systemd-python "
                             "(pip install systemd-python, or python3-systemd)")
        return "journal"
    if mode == "auto" and available and stderr_is_journal(env):
        return "journal"
    return "stderr"


def stderr_is_journal(env: Mapping[str, str], fd: int = 2) -> bool:
    """True when `fd` is the journal stream systemd named in JOURNAL_STREAM ("dev:inode").

    A child started from a service inherits JOURNAL_STREAM with its stderr redirected
    elsewhere (a test harness's log file); comparing the stream's identity keeps that child
    on stderr, as systemd.exec(5) advises.
    """
    raw = env.get("JOURNAL_STREAM", "")
    dev, _, ino = raw.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def journal_handler(sender: Any = None) -> logging.Handler:
    """A JournalHandler with the daemon's identifier; `sender` replaces journal.send (tests)."""
    journal = importlib.import_module("systemd.journal")
    kwargs: dict[str, Any] = {"SYSLOG_IDENTIFIER": IDENTIFIER}
    if sender is not None:
        kwargs["sender_function"] = sender
    handler: logging.Handler = journal.JournalHandler(**kwargs)
    handler.setFormatter(logging.Formatter(JOURNAL_FORMAT))
    return handler


def setup_logging(level: str = "info", mode: str = "auto",
                  env: Mapping[str, str] | None = None) -> str:
    """Install the root handler for `mode`; returns the mode used (journal or stderr).

    As ``logging.basicConfig``, it leaves a root logger that already has handlers alone
    (a test harness capturing logs), apart from the level.
    """
    used = choose_mode(mode, env)
    root = logging.getLogger()
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    if root.handlers:
        return used
    if used == "journal":
        handler = journal_handler()
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    return used


__all__ = ["FIELD_NAMES", "LOG_FORMAT", "choose_mode", "fields", "journal_handler",
           "setup_logging"]
