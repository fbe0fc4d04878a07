"""Call transfer with REFER (RFC 3515), Replaces (RFC 3891) and RFC 5589's flows, sans-IO.

Why it exists: a handset's transfer (blind or attended) is carried out by asking the far end
of a call to call someone else, and a PBX transfers us the same way. Everything here
happens inside an INVITE dialog we already hold; nothing creates a dialog.

Sending (`refer`): one REFER per call at a time, with Refer-To (and Replaces escaped into
it for an attended transfer). The REFER's final response and the NOTIFYs of the implicit
subscription (Event: refer, a message/sipfrag body) become `ReferProgress` events; a
non-2xx to the REFER, a sipfrag >= 200 or a NOTIFY ending the subscription is final.
Each NOTIFY is answered 200 (481 when we sent no REFER in that dialog).

Receiving (`on_refer`): only the dialog's peer may transfer us: a REFER from another
address gets 403 and is counted (`stats["refused_refer"]`). A REFER without a usable
Refer-To gets 400; one while another is in progress gets 491. The rest is held and
reported as `ReferReceived`; the runtime decides (toll-fraud rules for the new target)
with `accept` (202, then the NOTIFY "100 Trying" RFC 3515 2.4.4 asks for) or `reject`
(unanswered for `ANSWER_TIMEOUT` s: 500), and reports the new call's progress with `notify`
(the final one ends the subscription).

Replaces values name a dialog as its receiver sees it: `to-tag` is the receiver's local
tag, `from-tag` its remote tag (RFC 3891 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote

from gateway.sip.call_state import ESTABLISHED, Call
from gateway.sip.errors import SipError
from gateway.sip.events import ReferProgress, ReferReceived
from gateway.sip.headers import NameAddr
from gateway.sip.message import Request, default_reason
from gateway.sip.transaction import (
    ResponseReceived,
    ServerTransaction,
    TransactionTimedOut,
    TxEvent,
)
from gateway.sip.ua_calls import CallTable
from gateway.sip.ua_core import Address, SipCore

SIPFRAG = "message/sipfrag;version=2.0"
#: How long the implicit subscription of a REFER we accept lasts (seconds, Subscription-State).
REFER_SUBSCRIPTION = 60
#: A REFER the runtime neither accepted nor refused within this many seconds gets 500.
ANSWER_TIMEOUT = 8.0


@dataclass(frozen=True)
class Replaces:
    """A parsed Replaces value: the dialog to take over (RFC 3891)."""

    call_id: str
    to_tag: str
    from_tag: str
    early_only: bool = False

    def __str__(self) -> str:
        text = f"{self.call_id};to-tag={self.to_tag};from-tag={self.from_tag}"
        return text + (";early-only" if self.early_only else "")


def parse_replaces(value: str) -> Replaces:
    """Parse `call-id;to-tag=..;from-tag=..[;early-only]`; SipError names what is missing."""
    call_id, *params = [part.strip() for part in value.strip().split(";")]
    found: dict[str, str] = {}
    early = False
    for param in params:
        name, _, val = param.partition("=")
        name = name.strip().lower()
        if name == "early-only":
            early = True
        elif name in ("to-tag", "from-tag"):
            found[name] = val.strip()
    if not call_id or "to-tag" not in found or "from-tag" not in found:
        raise SipError(f"Replaces needs call-id, to-tag and from-tag, got {value!r}")
    return Replaces(call_id, found["to-tag"], found["from-tag"], early)


def refer_to_value(target_uri: str, replaces: Replaces | None = None) -> str:
    """The Refer-To header: `<uri>`, with `?Replaces=` escaped (RFC 3891 6.1) when attended."""
    if replaces is None:
        return f"<{target_uri}>"
    escaped = quote(str(replaces), safe="")
    return f"<{target_uri}?Replaces={escaped}>"


def parse_refer_to(value: str) -> tuple[str, str | None]:
    """(target URI without URI headers, unescaped Replaces or None) of a Refer-To."""
    uri = NameAddr.parse(value).uri
    replaces = None
    for name, val in uri.headers.items():
        if name.lower() == "replaces":
            replaces = unquote(val)
    uri.headers = {}
    return str(uri), replaces


def sipfrag(status: int) -> bytes:
    """A message/sipfrag body holding just a status line (RFC 3420)."""
    return f"SIP/2.0 {status} {default_reason(status)}\r\n".encode()


def parse_sipfrag(body: bytes) -> int | None:
    """The status of a sipfrag's status line, or None when it holds none."""
    first = body.decode("utf-8", "replace").lstrip().split("\r\n", 1)[0].split("\n", 1)[0]
    parts = first.split()
    if len(parts) >= 2 and parts[0].upper().startswith("SIP/") and parts[1].isdigit() \
            and len(parts[1]) == 3:
        return int(parts[1])
    return None


def replaces_of(call: Call) -> Replaces | None:
    """The Replaces value that names `call`'s dialog to its peer (to-tag: the peer's tag)."""
    if call.dialog is None or not call.dialog.remote_tag:
        return None
    return Replaces(call.call_id, call.dialog.remote_tag, call.dialog.local_tag)


@dataclass
class _Received:
    """A REFER we hold until the runtime accepts or refuses it, then report on."""

    request: Request
    tx: ServerTransaction
    dest: Address
    deadline: float
    answered: bool = False
    done: bool = False


class Referrals:
    """The user agent's REFER part: transfers we ask for and transfers asked of us."""

    def __init__(self, core: SipCore, table: CallTable) -> None:
        self._core = core
        self._table = table
        self._sent: dict[str, int] = {}  # call_id -> CSeq of our REFER in progress
        self._received: dict[str, _Received] = {}
        for name in ("refused_refer", "refused_notify"):
            core.stats.setdefault(name, 0)

    # -- sending ---------------------------------------------------------------------

    def refer(self, call_id: str, refer_to: str, now: float, *,
              referred_by: str | None = None) -> bool:
        """Send REFER in the call's dialog; False when the call cannot be transferred now."""
        self.prune()
        call = self._table.get(call_id)
        if call is None or call.over or call.dialog is None or call.state not in ESTABLISHED \
                or call_id in self._sent:
            return False
        extra = [("Refer-To", refer_to)]
        if referred_by is not None:
            extra.append(("Referred-By", referred_by))
        tx = self._table.send_request(
            call, "REFER", now, lambda ev, t: self._on_refer_events(call_id, ev), extra=extra)
        self._sent[call_id] = tx.request.cseq.number
        return True

    def _on_refer_events(self, call_id: str, events: list[TxEvent]) -> None:
        for event in events:
            if call_id not in self._sent:
                return
            if isinstance(event, ResponseReceived):
                status = event.response.status
                if status >= 300:
                    self._finish_sent(call_id, status)
                elif status >= 200:
                    self._core.emit(ReferProgress(call_id, status, False))
            elif isinstance(event, TransactionTimedOut):
                self._finish_sent(call_id, 408)

    def _finish_sent(self, call_id: str, status: int) -> None:
        del self._sent[call_id]
        self._core.emit(ReferProgress(call_id, status, True))

    def on_notify(self, call: Call, req: Request, addr: Address, dest: Address,
                  now: float) -> None:
        """A NOTIFY in a call's dialog: the progress of our REFER."""
        core = self._core
        if not self._from_peer(call, addr):
            core.stats["refused_notify"] += 1
            core.respond(req, 403, dest, now)
            return
        event = (req.headers.get("Event") or "").split(";")[0].strip().lower()
        if event != "refer":
            core.respond(req, 489, dest, now)  # Bad Event (RFC 6665)
            return
        if call.call_id not in self._sent:
            core.respond(req, 481, dest, now)
            return
        core.respond(req, 200, dest, now)
        status = parse_sipfrag(req.body)
        state = (req.headers.get("Subscription-State") or "").split(";")[0].strip().lower()
        terminated = state == "terminated"
        if status is None:
            if terminated:
                self._finish_sent(call.call_id, 487)
            return
        if status >= 200:
            self._finish_sent(call.call_id, status)
        elif terminated:
            self._finish_sent(call.call_id, 487)  # ended while the new call still rang
        else:
            core.emit(ReferProgress(call.call_id, status, False))

    # -- receiving -------------------------------------------------------------------

    def on_refer(self, call: Call, req: Request, addr: Address, dest: Address,
                 now: float) -> None:
        """A REFER in a call's dialog: refuse it, or hold it and report `ReferReceived`."""
        core = self._core
        if not self._from_peer(call, addr):
            core.stats["refused_refer"] += 1
            core.respond(req, 403, dest, now)
            return
        values = req.headers.get_all("Refer-To")
        if len(values) != 1:
            core.respond(req, 400, dest, now, reason="Exactly One Refer-To Needed")
            return
        try:
            target, replaces = parse_refer_to(values[0])
            if replaces is not None:
                parse_replaces(replaces)
        except SipError:
            core.respond(req, 400, dest, now, reason="Bad Refer-To")
            return
        if call.state not in ESTABLISHED:
            core.respond(req, 481, dest, now)
            return
        pending = self._received.get(call.call_id)
        if pending is not None and not pending.done:
            core.respond(req, 491, dest, now)
            return
        self.prune()
        tx = core.server_tx(req, dest, now)
        self._received[call.call_id] = _Received(req, tx, dest, now + ANSWER_TIMEOUT)
        core.emit(ReferReceived(call.call_id, target, replaces,
                                req.headers.get("Referred-By"), addr))

    def accept(self, call_id: str, now: float) -> bool:
        """202 Accepted to the held REFER, and the first NOTIFY (100 Trying)."""
        pending = self._received.get(call_id)
        call = self._table.get(call_id)
        if pending is None or pending.answered or call is None or call.over:
            return False
        pending.answered = True
        self._core.respond(pending.request, 202, pending.dest, now, tx=pending.tx,
                           to_tag=call.local_tag)
        return self.notify(call_id, 100, now)

    def reject(self, call_id: str, status: int, now: float) -> bool:
        """Refuse the held REFER (403, 603...); the call goes on."""
        pending = self._received.get(call_id)
        call = self._table.get(call_id)
        if pending is None or pending.answered or call is None:
            return False
        if not 300 <= status <= 699:
            raise ValueError(f"reject_refer needs a 300-699 status, got {status}")
        del self._received[call_id]
        self._core.respond(pending.request, status, pending.dest, now, tx=pending.tx,
                           to_tag=call.local_tag)
        return True

    def notify(self, call_id: str, status: int, now: float) -> bool:
        """Report the new call's progress to the transferor; >= 200 ends the subscription."""
        pending = self._received.get(call_id)
        call = self._table.get(call_id)
        if pending is None or not pending.answered or pending.done or call is None \
                or call.over or call.dialog is None:
            return False
        final = status >= 200
        state = ("terminated;reason=noresource" if final
                 else f"active;expires={REFER_SUBSCRIPTION}")
        self._table.send_request(call, "NOTIFY", now, body=sipfrag(status),
                                 content_type=SIPFRAG,
                                 extra=[("Event", f"refer;id={pending.request.cseq.number}"),
                                        ("Subscription-State", state)])
        if final:
            pending.done = True
        return True

    def get_timer(self) -> float | None:
        """When the oldest REFER nobody answered runs out of time."""
        due = [r.deadline for r in self._received.values() if not r.answered]
        return min(due) if due else None

    def handle_timer(self, now: float) -> None:
        """Answer 500 to REFERs the runtime left unanswered (the peer would wait for 32 s)."""
        for call_id, pending in list(self._received.items()):
            if not pending.answered and pending.deadline <= now:
                del self._received[call_id]
                self._core.respond(pending.request, 500, pending.dest, now, tx=pending.tx,
                                   reason="Not Handled In Time")

    def prune(self) -> None:
        """Forget transfers whose call has ended: nothing more to report either way."""
        for table in (self._sent, self._received):
            for call_id in [c for c in table if self._gone(c)]:
                del table[call_id]

    def _gone(self, call_id: str) -> bool:
        call = self._table.get(call_id)
        return call is None or call.over

    def sizes(self) -> dict[str, int]:
        """Entries this part holds (flood tests check they stay bounded)."""
        return {"refers_out": len(self._sent), "refers_in": len(self._received)}

    # -- helpers ---------------------------------------------------------------------

    def _from_peer(self, call: Call, addr: Address) -> bool:
        """The request came from the address the call runs with, or its dialog's next hop."""
        if addr[0] == call.peer[0]:
            return True
        return call.dialog is not None and addr == self._table.dest(call)


__all__ = ["ANSWER_TIMEOUT", "REFER_SUBSCRIPTION", "SIPFRAG", "Referrals", "Replaces", "parse_refer_to",
           "parse_replaces", "parse_sipfrag", "refer_to_value", "replaces_of", "sipfrag"]
