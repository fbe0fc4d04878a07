"""Message waiting (RFC 3842 message-summary over RFC 6665 SUBSCRIBE/NOTIFY), sans-IO.

Why it exists: a voicemail server tells an analog line that messages wait, and the line
gives stutter dial tone and lights the lamp (VMWI). Two ways are common and both are kept:
- we SUBSCRIBE per line (`subscribe`) and the server NOTIFYs in that dialog; a 401/407 is
  answered with the account's credentials as REGISTER does, the subscription is refreshed
  before it expires (`refresh_at`), re-made when the server ends it or answers a refresh
  with 481, and retried `RETRY` seconds after a failure;
- the trunk sends NOTIFY without any subscription (Asterisk's unsolicited MWI). Those are
  accepted only from `unsolicited_sources` (the trunk's hosts, set by the runtime).

A NOTIFY from another address than the one we subscribed at (or the dialog's next hop),
or an unsolicited one from an unknown host, gets 403 and is counted
(`stats["refused_notify"]`). A message-summary body without `Messages-Waiting` gets 400.
Everything else is answered 200 and reported as `MessageSummary`.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass, field

from gateway.sip.auth import build_authorization, challenge_from
from gateway.sip.dialog import Dialog
from gateway.sip.errors import SipError
from gateway.sip.events import MessageSummary, SubscriptionChanged
from gateway.sip.headers import generate_call_id, generate_tag
from gateway.sip.message import Request, Response, build_request
from gateway.sip.target import Target, as_targets
from gateway.sip.transaction import (
    ClientNonInviteTransaction,
    ResponseReceived,
    TransactionTimedOut,
    TxEvent,
    TxState,
)
from gateway.sip.ua_accounts import Registrations
from gateway.sip.ua_core import Address, SipCore, dialog_dest

MESSAGE_SUMMARY = "message-summary"
SUMMARY_TYPE = "application/simple-message-summary"
RETRY = 60.0
MAX_AUTH_ROUNDS = 3
MAX_SUBSCRIPTIONS = 256


@dataclass(frozen=True)
class Summary:
    """A parsed message-summary body: waiting or not, voice messages new/old when given."""

    waiting: bool
    new: int | None = None
    old: int | None = None


def parse_summary(body: bytes) -> Summary:
    """Parse an application/simple-message-summary body; SipError when it says nothing."""
    waiting: bool | None = None
    new = old = None
    for line in body.decode("utf-8", "replace").splitlines():
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name, value = name.strip().lower(), value.strip()
        if name == "messages-waiting":
            if value.lower() not in ("yes", "no"):
                raise SipError(f"Messages-Waiting must be yes or no, got {value!r}")
            waiting = value.lower() == "yes"
        elif name == "voice-message":
            counts = value.split("(")[0].strip()
            a, slash, b = counts.partition("/")
            if slash and a.strip().isdigit() and b.strip().isdigit():
                new, old = int(a), int(b)
    if waiting is None:
        raise SipError("message-summary body without Messages-Waiting")
    return Summary(waiting, new, old)


def refresh_at(now: float, expires: int) -> float:
    """When to refresh a subscription granted for `expires` s: well before it runs out."""
    return now + max(min(expires * 0.9, expires - 32.0), expires / 2.0, 1.0)


@dataclass
class _Sub:
    """One subscription of ours; every field the machine needs lives here."""

    sub_id: str
    target_uri: str
    from_uri: str
    expires: int
    targets: list[Target]
    account_id: str | None
    event: str = MESSAGE_SUMMARY
    call_id: str = ""
    local_tag: str = ""
    cseq: int = 0
    dialog: Dialog | None = None
    request: Request | None = None
    tx: ClientNonInviteTransaction | None = None
    deadline: float | None = None
    active: bool = False
    removing: bool = False
    auth_nonce: str | None = None
    auth_nc: int = 0
    auth_rounds: int = 0
    sent_to: set[str] = field(default_factory=set)


class Subscriptions:
    """The user agent's SUBSCRIBE/NOTIFY part for message-summary."""

    def __init__(self, core: SipCore, accounts: Registrations) -> None:
        self._core = core
        self._accounts = accounts
        self._subs: dict[str, _Sub] = {}
        #: Hosts allowed to send NOTIFY without a subscription (the trunks; the runtime sets).
        self.unsolicited_sources: Container[str] = frozenset()
        core.stats.setdefault("refused_notify", 0)

    # -- our SUBSCRIBE ---------------------------------------------------------------

    def subscribe(self, sub_id: str, *, target_uri: str, from_uri: str,
                  dest: Address | Sequence[Target], expires: int, now: float,
                  account_id: str | None = None) -> None:
        """Start (or restart) subscription `sub_id` to message-summary at `target_uri`."""
        if expires <= 0:
            raise ValueError(f"expires must be positive, got {expires}")
        old = self._subs.pop(sub_id, None)
        if old is not None and old.active and not old.removing:
            self._send(old, now, expires=0)  # the replaced one ends at the server too
        if len(self._subs) >= MAX_SUBSCRIPTIONS:
            raise ValueError(f"more than {MAX_SUBSCRIPTIONS} subscriptions")
        targets = list(as_targets(dest, self._core.transport.lower()))
        sub = _Sub(sub_id, target_uri, from_uri, expires, targets, account_id)
        self._subs[sub_id] = sub
        self._new_dialog(sub)
        self._send(sub, now)

    def unsubscribe(self, sub_id: str, now: float) -> None:
        """End `sub_id` (SUBSCRIBE with Expires: 0); it is forgotten once answered."""
        sub = self._subs.get(sub_id)
        if sub is None:
            return
        sub.removing = True
        sub.deadline = now + 32.0  # forgotten even if nobody answers
        self._send(sub, now, expires=0)

    def state(self, sub_id: str) -> dict[str, object] | None:
        """Snapshot for the control socket."""
        sub = self._subs.get(sub_id)
        if sub is None:
            return None
        return {"active": sub.active, "target": sub.target_uri, "expires": sub.expires}

    def _new_dialog(self, sub: _Sub) -> None:
        sub.call_id = generate_call_id(self._core.local_host)
        sub.local_tag = generate_tag()
        sub.cseq = 0
        sub.dialog = None
        sub.active = False
        sub.request = None  # answers to the old dialog's requests are ignored from now
        self._abandon(sub)

    @staticmethod
    def _abandon(sub: _Sub) -> None:
        """Stop retransmitting a request nobody waits for any more."""
        if sub.tx is not None and sub.tx.state in (TxState.TRYING, TxState.PROCEEDING):
            sub.tx.abandon()
        sub.tx = None

    def _send(self, sub: _Sub, now: float, *, expires: int | None = None,
              auth: tuple[str, str] | None = None) -> None:
        core = self._core
        target = sub.targets[0]
        extra = [("Event", sub.event), ("Accept", SUMMARY_TYPE),
                 ("Expires", str(sub.expires if expires is None else expires)),
                 ("User-Agent", core.user_agent)]
        if auth is not None:
            extra.append(auth)
        contact = core.contact(None, target.transport)
        if sub.dialog is not None:
            req = sub.dialog.create_request("SUBSCRIBE", via=core.via(target.transport),
                                            contact=contact, extra=extra)
            sub.cseq = req.cseq.number
            dest = dialog_dest(sub.dialog, target.addr)
        else:
            sub.cseq += 1
            req = build_request("SUBSCRIBE", sub.target_uri,
                                from_addr=f"<{sub.from_uri}>;tag={sub.local_tag}",
                                to_addr=f"<{sub.target_uri}>", call_id=sub.call_id,
                                cseq=sub.cseq, via=core.via(target.transport),
                                contact=contact, extra=extra)
            dest = target.addr
        sub.request = req
        sub.sent_to.add(dest[0])
        tx = core.send_request(req, target, dest, now,
                               lambda ev, t: self._on_events(sub, req, ev, t))
        self._abandon(sub)
        sub.tx = tx

    def _on_events(self, sub: _Sub, req: Request, events: list[TxEvent], now: float) -> None:
        for event in events:
            if self._subs.get(sub.sub_id) is not sub or sub.request is not req:
                return  # an older request of this subscription, or a forgotten one
            if isinstance(event, ResponseReceived):
                self._on_response(sub, event.response, now)
            elif isinstance(event, TransactionTimedOut):
                self._failed(sub, f"no answer ({event.reason})", now)

    def _on_response(self, sub: _Sub, resp: Response, now: float) -> None:
        status = resp.status
        if status < 200:
            return
        if sub.removing:
            del self._subs[sub.sub_id]
            return
        if 200 <= status < 300:
            granted = _int(resp.headers.get("Expires"), sub.expires)
            if granted <= 0:
                self._failed(sub, "server granted no time", now)
                return
            assert sub.request is not None
            if sub.dialog is None:
                sub.dialog = Dialog.from_uac_response(sub.request, resp)
                sub.dialog.confirm()
            sub.auth_rounds = 0
            was = sub.active
            sub.active = True
            sub.deadline = refresh_at(now, granted)
            if not was:
                self._core.emit(SubscriptionChanged(sub.sub_id, True, f"{status} subscribed",
                                                    granted))
            return
        if status in (401, 407) and self._retry_with_auth(sub, resp, now):
            return
        if status == 423:
            minimum = _int(resp.headers.get("Min-Expires"), 0)
            if minimum > sub.expires:
                sub.expires = minimum
                self._send(sub, now)
                return
        if status == 481 and sub.dialog is not None:  # the server forgot us: start over
            self._new_dialog(sub)
            self._send(sub, now)
            return
        self._failed(sub, f"{status} {resp.reason}".strip(), now)

    def _retry_with_auth(self, sub: _Sub, resp: Response, now: float) -> bool:
        reg = self._accounts.get(sub.account_id)
        if reg is None or sub.auth_rounds >= MAX_AUTH_ROUNDS or sub.request is None:
            return False
        try:
            challenge = challenge_from(resp)
        except SipError:
            return False
        if challenge.nonce == sub.auth_nonce and not challenge.stale:
            return False  # answered this nonce already: the credentials are wrong
        if challenge.nonce != sub.auth_nonce:
            sub.auth_nc = 0
        sub.auth_nonce = challenge.nonce
        sub.auth_nc += 1
        sub.auth_rounds += 1
        settings = reg.settings
        value = build_authorization(
            challenge, method="SUBSCRIBE", uri=sub.request.uri,
            username=settings.auth_username or reg.username, password=settings.password,
            nc=sub.auth_nc)
        header = "Proxy-Authorization" if resp.status == 407 else "Authorization"
        self._send(sub, now, auth=(header, value))
        return True

    def _failed(self, sub: _Sub, reason: str, now: float) -> None:
        if sub.removing:
            self._subs.pop(sub.sub_id, None)
            return
        was = sub.active
        self._new_dialog(sub)
        sub.deadline = now + RETRY
        sub.auth_rounds = 0
        if was or reason:
            self._core.emit(SubscriptionChanged(sub.sub_id, False, reason, None))

    # -- timers ----------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The next refresh or retry."""
        due = [s.deadline for s in self._subs.values() if s.deadline is not None]
        return min(due) if due else None

    def handle_timer(self, now: float) -> None:
        """Refresh subscriptions about to expire, retry failed ones, forget ended ones."""
        for sub in [s for s in self._subs.values()
                    if s.deadline is not None and s.deadline <= now]:
            sub.deadline = None
            if sub.removing:
                self._subs.pop(sub.sub_id, None)
            else:
                self._send(sub, now)

    def sizes(self) -> dict[str, int]:
        """Entries this part holds."""
        return {"subscriptions": len(self._subs)}

    # -- NOTIFY ----------------------------------------------------------------------

    def in_dialog(self, req: Request) -> bool:
        """True for a NOTIFY in one of our subscriptions (Call-ID and our tag match), so
        the request filter treats it as in-dialog, as it does a call's requests."""
        return bool(req.to_tag) and any(s.call_id == req.call_id and s.local_tag == req.to_tag
                                        for s in self._subs.values())

    def handles(self, req: Request) -> bool:
        """True for a NOTIFY this part answers: one of our subscriptions, or unsolicited
        message-summary (no To tag)."""
        if any(s.call_id == req.call_id for s in self._subs.values()):
            return True
        return not req.to_tag and _event(req) == MESSAGE_SUMMARY

    def on_notify(self, req: Request, addr: Address, dest: Address, now: float) -> None:
        """Answer a NOTIFY `handles` accepted, and report what it says."""
        core = self._core
        sub = next((s for s in self._subs.values() if s.call_id == req.call_id), None)
        if sub is not None and req.to_tag not in (None, sub.local_tag):
            core.respond(req, 481, dest, now)
            return
        if sub is not None and not self._from_server(sub, addr):
            core.stats["refused_notify"] += 1
            core.respond(req, 403, dest, now)
            return
        if sub is None and addr[0] not in self.unsolicited_sources:
            core.stats["refused_notify"] += 1
            core.respond(req, 403, dest, now)
            return
        if _event(req) != MESSAGE_SUMMARY:
            core.respond(req, 489, dest, now)
            return
        summary: Summary | None = None
        if req.body:
            try:
                summary = parse_summary(req.body)
            except SipError as exc:
                core.stats["malformed"] += 1
                core.respond(req, 400, dest, now, reason=str(exc)[:60])
                return
        if sub is not None and sub.dialog is None and req.to_tag:
            # NOTIFY before the 2xx (RFC 6665 4.1.2.4): it sets the dialog up.
            sub.dialog = Dialog.from_uas_request(req, sub.local_tag, early=False)
            sub.dialog.local_seq = sub.cseq
        if sub is not None and sub.dialog is not None:
            if not sub.dialog.check_remote_cseq(req):
                core.respond(req, 500, dest, now)
                return
        core.respond(req, 200, dest, now, to_tag=sub.local_tag if sub is not None else None)
        if sub is not None:
            self._subscription_state(sub, req, now)
        if summary is not None:
            core.emit(MessageSummary(sub.sub_id if sub is not None else None, _user(req),
                                     summary.waiting, summary.new, summary.old, addr))

    def _subscription_state(self, sub: _Sub, req: Request, now: float) -> None:
        value = req.headers.get("Subscription-State") or ""
        state, *params = [p.strip() for p in value.split(";")]
        if state.lower() != "terminated" or sub.removing:
            return
        retry = RETRY
        for param in params:
            name, _, val = param.partition("=")
            if name.strip().lower() == "retry-after" and val.strip().isdigit():
                retry = float(val.strip())
        was = sub.active
        self._new_dialog(sub)
        sub.deadline = now + min(retry, RETRY) if retry else now
        if was:
            self._core.emit(SubscriptionChanged(sub.sub_id, False, "terminated by server",
                                                None))

    def _from_server(self, sub: _Sub, addr: Address) -> bool:
        if addr[0] in sub.sent_to or addr[0] in self.unsolicited_sources:
            return True
        return any(t.host == addr[0] for t in sub.targets)


def _event(req: Request) -> str:
    return (req.headers.get("Event") or "").split(";")[0].strip().lower()


def _user(req: Request) -> str | None:
    try:
        user = req.request_uri.user
        if user:
            return user
        return req.to_addr.uri.user
    except SipError:
        return None


def _int(value: str | None, default: int) -> int:
    if value is None:
        return default
    text = value.split(";")[0].strip()
    return int(text) if text.isdigit() else default


__all__ = ["MESSAGE_SUMMARY", "RETRY", "SUMMARY_TYPE", "Subscriptions", "Summary",
           "parse_summary", "refresh_at"]
