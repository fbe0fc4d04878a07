"""`branchline sms send MODEM NUMBER TEXT` and `branchline ussd MODEM CODE`.

Kept beside `gateway.cli` so that module only wires the subcommands in. Both talk to the
daemon, which owns the modems: `sms send` queues the SMS (it survives a restart) and waits a
while for the modem to send it; `ussd` waits for the network's answer.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Protocol, TextIO

SEND_WAIT = 30.0
USSD_WAIT = 20.0


class _Client(Protocol):
    def request(self, cmd: str, **args: Any) -> Any: ...


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``sms send|status`` and ``ussd`` to the subcommands."""
    sms = sub.add_parser("sms", help="send an SMS through a modem; the SMS queue",
                         parents=[common])
    actions = sms.add_subparsers(dest="sms_action", metavar="ACTION", required=True)
    send = actions.add_parser("send", help="queue an SMS and wait for the modem to send it",
                              parents=[common])
    send.add_argument("modem", metavar="MODEM", help="modem (or GSM group) name")
    send.add_argument("number", metavar="NUMBER", help="recipient, e.g. +41791234567")
    send.add_argument("text", metavar="TEXT")
    send.add_argument("--wait", type=float, default=SEND_WAIT, metavar="SECONDS",
                      help=f"how long to wait for the modem (default {SEND_WAIT:g}; "
                           "0: just queue it)")
    actions.add_parser("status", help="the SMS queue's counts", parents=[common])
    ussd = sub.add_parser("ussd", help="send a USSD code (e.g. *100#) and print the answer",
                          parents=[common])
    ussd.add_argument("modem", metavar="MODEM")
    ussd.add_argument("code", metavar="CODE")
    ussd.add_argument("--wait", type=float, default=USSD_WAIT, metavar="SECONDS")


def client_timeout(args: argparse.Namespace) -> float:
    """The control client's timeout: the daemon's wait plus some slack."""
    return float(getattr(args, "wait", 0.0) or 0.0) + 5.0


def run(args: argparse.Namespace, client: _Client, out: TextIO) -> int:
    """Carry out ``sms`` / ``ussd``; ControlError propagates to the caller (exit 1)."""
    as_json = getattr(args, "json", False)
    if args.command == "ussd":
        result = client.request("ussd", modem=args.modem, code=args.code, timeout=args.wait)
        text = result.get("text")
    elif args.sms_action == "send":
        result = client.request("sms", action="send", modem=args.modem, number=args.number,
                                text=args.text, wait=args.wait)
        if result.get("delivered"):
            text = f"sms {result.get('id')}: sent"
        else:
            why = result.get("last_error") or "not sent yet"
            text = f"sms {result.get('id')}: queued, {why}; the daemon keeps trying"
    else:
        result = client.request("sms", action="status")
        text = ", ".join(f"{k} {v}" for k, v in result.items() if k != "receivers")
    print(json.dumps(result, indent=2) if as_json else text, file=out)
    return 0
