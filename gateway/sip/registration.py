"""Registration client with registrar health probing, sans-IO.

Why it exists: a branch gateway must know quickly that its trunk is gone (Timer F is 32 s,
far too slow for failover) and must come back as soon as the registrar answers again. So,
besides REGISTER with digest auth and refreshes, it sends an OPTIONS probe every
`probe_interval` with a short `probe_timeout`; after `down_after` consecutive probe
failures the account is reported not registered ("registrar unreachable") and recovery
starts: probes every second plus REGISTER attempts with capped exponential backoff. Any
response to a probe, even 404 or 405, proves the registrar is reachable, and a REGISTER
goes out at once.

It never gives up and never reports registered without a 200 to the current REGISTER.
All REGISTERs of one binding share a Call-ID and use increasing CSeqs (RFC 3261 10.2).

Several registrar targets (RFC 3263, `AccountSettings.targets`): a REGISTER moves on to the
next target on transport error, on 503, or when nothing at all (not even 100) came back
within `target_timeout`. The target that answered becomes sticky (shared with calls of the
same trunk through a `TargetSet`); each refresh goes back to the preferred first target,
so a recovered primary is used again at the next refresh.

A registrar known only by name (no `targets`, no IP literal) gets nothing sent to it, never a
bare name, until `set_targets` hands it addresses (reason `NO_ADDRESS` meanwhile).

When the trunk has a health monitor (gateway/runtime/trunk_health.py) the account sends no
OPTIONS of its own (`probe_interval` 0: one probe stream per trunk, not per account): the
monitor calls `trunk_down` (not registered, "trunk down", nothing sent) and `register_now`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum

from gateway.sip.auth import Challenge, build_authorization, challenge_from
from gateway.sip.dns import is_ip
from gateway.sip.errors import SipError
from gateway.sip.events import RegistrationStateChanged
from gateway.sip.headers import NameAddr, generate_branch, generate_call_id, generate_tag
from gateway.sip.message import Request, Response, build_request
from gateway.sip.target import Target, TargetSet
from gateway.sip.transaction import (
    T1,
    ClientNonInviteTransaction,
    ResponseReceived,
    TransactionTimedOut,
    TxEvent,
    client_key,
)
from gateway.sip.uri import SipUri

MAX_AUTH_ROUNDS = 3
#: The reason while the registrar's name has no address (the runtime adds what DNS said).
NO_ADDRESS = "registrar has no address (waiting for DNS)"


@dataclass
class AccountSettings:
    """One SIP account as the registration client needs it (the runtime maps config here)."""

    aor: str
    registrar_host: str
    registrar_port: int = 5060
    username: str = ""
    password: str = ""
    auth_username: str | None = None
    expires: int = 600
    contact: str = ""
    instance_id: str | None = None
    probe_interval: float = 5.0
    probe_timeout: float = 2.0
    down_after: int = 2
    retry_base: float = 1.0
    retry_max: float = 30.0
    recovery_probe_interval: float = 1.0
    unregister_timeout: float = 5.0
    transport: str = "udp"
    targets: tuple[Target, ...] = ()
    target_timeout: float = 1.5

    def target_list(self) -> tuple[Target, ...]:
        """`targets` when set, else the single registrar_host/port over `transport`."""
        if self.targets:
            return self.targets
        return (Target(self.transport.lower(), self.registrar_host, self.registrar_port),)


class RegPhase(Enum):
    """What the client is doing now; `registered` is tracked separately."""

    IDLE = "idle"
    REGISTERING = "registering"
    REGISTERED = "registered"
    WAITING_RETRY = "waiting to retry"
    RECOVERING = "recovering"
    TRUNK_DOWN = "trunk down"
    UNREGISTERING = "unregistering"
    STOPPED = "stopped"


def refresh_delay(expires: int) -> float:
    """When to refresh a binding: min(expires/2, expires-30), never zero or negative."""
    delay = min(expires * 0.5, expires - 30.0)
    if delay <= 0:
        delay = expires * 0.5
    return max(delay, 0.5)


def _same_contact(a: SipUri, b: SipUri) -> bool:
    return (a.user == b.user and a.host.lower() == b.host.lower()
            and (a.port or 5060) == (b.port or 5060))


class RegistrationClient:
    """Keeps one account registered and watches its registrar; driven like a transaction."""

    def __init__(self, account_id: str, settings: AccountSettings, *, local_host: str,
                 local_port: int, transport: str = "udp",
                 user_agent: str = "Branchline/0.1", t1: float = T1,
                 target_set: TargetSet | None = None) -> None:
        self.account_id = account_id
        self.settings = settings
        self.local_host = local_host
        self.local_port = local_port
        self.targets = target_set or TargetSet(settings.target_list())
        self._index = self.targets.start()
        self._tried = 1
        self._target_deadline: float | None = None
        self.transport = self.target.transport.upper() if settings.targets or \
            settings.transport.lower() != "udp" else transport.upper()
        self.user_agent = user_agent
        self.t1 = t1
        aor = SipUri.parse(settings.aor)
        self._aor = aor
        self.username = settings.username or (aor.user or "")
        self.contact = settings.contact or f"sip:{self.username}@{local_host}:{local_port}"
        self.registrar_uri = f"sip:{aor.host}" + (f":{aor.port}" if aor.port else "")
        self.phase = RegPhase.IDLE
        self.registered = False
        self.granted_expires: int | None = None
        self.last_reason = "not started"
        self._expires = settings.expires
        self._call_id = generate_call_id(local_host)
        self._from_tag = generate_tag()
        self._cseq = 0
        self._reg_tx: ClientNonInviteTransaction | None = None
        self._reg_nonce: str | None = None
        self._reg_expires = settings.expires
        self._auth_rounds = 0
        self._nonce: str | None = None
        self._nc = 0
        self._probe_tx: ClientNonInviteTransaction | None = None
        self._probe_sent_at = 0.0
        self._probe_failures = 0
        self._refresh_at: float | None = None
        self._probe_at: float | None = None
        self._retry_at: float | None = None
        self._attempt = 0
        self._events: list[RegistrationStateChanged] = []
        self._last_emitted: tuple[bool, str] | None = None

    @property
    def target(self) -> Target:
        """The registrar target in use now."""
        return self.targets.targets[self._index]

    @property
    def dest(self) -> tuple[str, int]:
        """(host, port) of the registrar target in use now."""
        return self.target.addr

    @property
    def addressed(self) -> bool:
        """True when there is an address to send to: resolved targets or an IP literal."""
        return bool(self.settings.targets) or is_ip(self.settings.registrar_host)

    # -- driving ---------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Send the first REGISTER."""
        self._register(now)

    def unregister(self, now: float) -> None:
        """Remove the binding (Expires: 0); a RegistrationStateChanged reports completion."""
        self._probe_tx = None
        self._refresh_at = self._probe_at = self._retry_at = None
        self.phase = RegPhase.UNREGISTERING
        self._auth_rounds = 0
        self._register(now, expires=0, timeout=self.settings.unregister_timeout)

    def set_targets(self, targets: Sequence[Target], now: float) -> bool:
        """The registrar's name resolved anew (DNS answered at last, or changed its answer).

        The new targets replace the old ones; an empty list is ignored (the last addresses
        are the best guess left). A binding in place is left alone: its next refresh or
        probe goes to the new targets. An account that is not registered and is not waiting
        on one of the new targets registers now instead of at its next retry. Returns True
        when the targets changed.
        """
        fresh = tuple(targets)
        if not fresh or fresh == self.targets.targets:
            return False
        in_flight = self._reg_tx.dest if self._reg_tx is not None else None
        current = self.target
        self.targets = TargetSet(fresh)
        self.settings = replace(self.settings, targets=fresh)
        if current in fresh:
            self.targets.succeeded(fresh.index(current))
        self._index = self.targets.start()
        self._tried = 1
        if self.registered or self.phase in (RegPhase.IDLE, RegPhase.UNREGISTERING,
                                             RegPhase.STOPPED, RegPhase.TRUNK_DOWN):
            return True
        if in_flight is not None and any(t.addr == in_flight for t in fresh):
            return True  # a REGISTER to a target still listed is under way
        if self._reg_tx is not None:
            self._reg_tx.abandon()
        self._reg_tx = self._probe_tx = None
        self._retry_at = self._probe_at = self._target_deadline = None
        self._attempt = 0
        self.phase = RegPhase.REGISTERING
        self._register(now)
        return True

    def trunk_down(self, now: float) -> None:
        """The trunk's health says DOWN: stop, report not registered, send nothing."""
        if self.phase in (RegPhase.UNREGISTERING, RegPhase.STOPPED, RegPhase.TRUNK_DOWN):
            return
        for tx in (self._reg_tx, self._probe_tx):
            if tx is not None and not tx.terminated:
                tx.abandon()
        self._reg_tx = self._probe_tx = None
        self._refresh_at = self._probe_at = self._retry_at = self._target_deadline = None
        self.registered = False
        self.granted_expires = None
        self._attempt = 0
        self.phase = RegPhase.TRUNK_DOWN
        self._emit(False, "trunk down", None)

    def register_now(self, now: float) -> None:
        """The trunk is back: register at once unless registered or a REGISTER is under way."""
        if self.registered or self.phase in (RegPhase.UNREGISTERING, RegPhase.STOPPED):
            return
        if self._reg_tx is not None and not self._reg_tx.terminated:
            return
        self._retry_at = self._probe_at = None
        self._probe_tx = None
        self._attempt = 0
        self.phase = RegPhase.REGISTERING
        self._register(now)

    @property
    def done(self) -> bool:
        """True after unregistration finished; the owner may drop the client."""
        return self.phase is RegPhase.STOPPED

    def receive_response(self, response: Response, now: float) -> bool:
        """Feed a response; returns False if it belongs to none of our transactions."""
        try:
            key = client_key(response)
        except SipError:
            return False
        if self._reg_tx is not None and key == self._reg_tx.key:
            tx = self._reg_tx
            self._dispatch_register(tx, tx.receive(response, now), now)
            return True
        if self._probe_tx is not None and key == self._probe_tx.key:
            tx = self._probe_tx
            self._dispatch_probe(tx, tx.receive(response, now), now)
            return True
        return False

    def transport_error(self, now: float) -> None:
        """The registrar's address bounced (ICMP unreachable): fail what is in flight."""
        if self._probe_tx is not None:
            tx = self._probe_tx
            self._dispatch_probe(tx, tx.transport_error(now), now)
        if self._reg_tx is not None:
            rtx = self._reg_tx
            self._dispatch_register(rtx, rtx.transport_error(now), now)

    def outgoing(self) -> list[tuple[Request, Target]]:
        """Drain queued requests with the target each must go to (REGISTER and probe)."""
        out: list[tuple[Request, Target]] = []
        for tx in (self._reg_tx, self._probe_tx):
            if tx is None or tx.dest is None:
                continue
            target = Target(tx.transport, tx.dest[0], tx.dest[1], tx.server_name)
            out.extend((m, target) for m in tx.messages_to_send() if isinstance(m, Request))
        return out

    def get_timer(self) -> float | None:
        """Earliest deadline: transaction timers, refresh, probe or retry."""
        times = [self._refresh_at, self._probe_at, self._retry_at, self._target_deadline]
        for tx in (self._reg_tx, self._probe_tx):
            if tx is not None:
                times.append(tx.get_timer())
        due = [t for t in times if t is not None]
        return min(due) if due else None

    def handle_timer(self, now: float) -> None:
        """Run everything due at `now`."""
        if self._target_deadline is not None and self._target_deadline <= now:
            self._target_deadline = None
            if self._reg_tx is not None and not self._reg_tx.terminated:
                self._reg_tx.abandon()
                self._reg_tx = None
                if not self._fail_over(now):
                    self._failed("registrar unreachable", now, unreachable=True)
        if self._reg_tx is not None:
            tx = self._reg_tx
            self._dispatch_register(tx, tx.handle_timer(now), now)
        if self._probe_tx is not None:
            ptx = self._probe_tx
            self._dispatch_probe(ptx, ptx.handle_timer(now), now)
        if self._retry_at is not None and self._retry_at <= now:
            self._retry_at = None
            self._register(now)
        if self._refresh_at is not None and self._refresh_at <= now:
            self._refresh_at = None
            if self._reg_tx is None or self._reg_tx.terminated:
                self.targets.prefer_again()
                self._register(now)
        if self._probe_at is not None and self._probe_at <= now:
            self._probe_at = None
            self._probe(now)

    def messages_to_send(self) -> list[Request]:
        """Drain REGISTER/OPTIONS requests (and retransmissions) for `dest`."""
        out: list[Request] = []
        for tx in (self._reg_tx, self._probe_tx):
            if tx is not None:
                out.extend(m for m in tx.messages_to_send() if isinstance(m, Request))
        return out

    def events(self) -> list[RegistrationStateChanged]:
        """Drain state-change events."""
        out, self._events = self._events, []
        return out

    def state(self) -> dict[str, object]:
        """A snapshot for the control socket and metrics."""
        return {
            "account_id": self.account_id,
            "registered": self.registered,
            "phase": self.phase.value,
            "expires": self.granted_expires,
            "reason": self.last_reason,
            "probe_failures": self._probe_failures,
            "next_retry": self._retry_at,
            "next_refresh": self._refresh_at,
        }

    # -- REGISTER --------------------------------------------------------------------

    def _via(self) -> str:
        return (f"SIP/2.0/{self.target.transport.upper()} {self.local_host}:{self.local_port}"
                f";branch={generate_branch()};rport")

    def _contact_for_target(self) -> str:
        """Our Contact adapted to the target's transport (;transport=tcp, sips: for TLS)."""
        contact = self.contact
        transport = self.target.transport
        if transport in ("tcp", "tls") and ";transport=" not in contact:
            return contact + f";transport={transport}"
        return contact

    def _fail_over(self, now: float) -> bool:
        """Resend the REGISTER to the next untried target; False when none is left."""
        nxt = self.targets.next_after(self._index, self._tried)
        if nxt is None or self.phase is RegPhase.STOPPED:
            return False
        self._index = nxt
        self._tried += 1
        self._reg_nonce = None
        self._register(now, failover=True)
        return True

    def _register(self, now: float, *, expires: int | None = None,
                  challenge: tuple[str, Challenge] | None = None,
                  timeout: float | None = None, failover: bool = False) -> None:
        if not self.addressed:
            self._no_address()
            return
        if not failover and challenge is None:
            self._index = self.targets.start()
            self._tried = 1
        if expires is None:
            expires = 0 if self.phase is RegPhase.UNREGISTERING else self._expires
        if self.phase in (RegPhase.IDLE, RegPhase.WAITING_RETRY):
            self.phase = RegPhase.REGISTERING
        if timeout is None and self.phase is RegPhase.RECOVERING:
            timeout = max(self.settings.probe_timeout, 1.0)
        if timeout is None and self.phase is RegPhase.UNREGISTERING:
            timeout = self.settings.unregister_timeout
        self._cseq += 1
        contact = f"<{self._contact_for_target()}>"
        if self.settings.instance_id:
            contact += f';+sip.instance="<{self.settings.instance_id}>"'
        if expires == 0:
            contact += ";expires=0"
        extra = [("Expires", str(expires)), ("User-Agent", self.user_agent),
                 ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO")]
        self._reg_nonce = None
        if challenge is not None:
            header, chal = challenge
            value = build_authorization(
                chal, method="REGISTER", uri=self.registrar_uri,
                username=self.settings.auth_username or self.username,
                password=self.settings.password, nc=self._nc)
            extra.append((header, value))
            self._reg_nonce = chal.nonce
        req = build_request(
            "REGISTER", self.registrar_uri,
            from_addr=f"<{self.settings.aor}>;tag={self._from_tag}",
            to_addr=f"<{self.settings.aor}>", call_id=self._call_id, cseq=self._cseq,
            via=self._via(), contact=contact, extra=extra)
        self._reg_expires = expires
        target = self.target
        self._reg_tx = ClientNonInviteTransaction(
            req, now, reliable=target.reliable, timeout=timeout, t1=self.t1, dest=target.addr)
        self._reg_tx.transport = target.transport
        self._reg_tx.server_name = target.server_name
        multi = len(self.targets) > 1 and self._tried < len(self.targets)
        self._target_deadline = now + self.settings.target_timeout if multi else None

    def _dispatch_register(self, tx: ClientNonInviteTransaction, events: list[TxEvent],
                           now: float) -> None:
        for event in events:
            if tx is not self._reg_tx:
                return
            if isinstance(event, ResponseReceived):
                self._target_deadline = None
                if event.response.status == 503 and self._fail_over(now):
                    return
                if event.response.status >= 200:
                    self.targets.succeeded(self._index)
                self._on_register_response(event.response, now)
            elif isinstance(event, TransactionTimedOut):
                self._reg_tx = None
                self._target_deadline = None
                if event.reason == "transport error" and self._fail_over(now):
                    return
                reason = ("registrar unreachable" if event.reason == "transport error"
                          or self.phase is RegPhase.RECOVERING else "REGISTER timed out")
                self._failed(reason, now, unreachable=True)
        if self._reg_tx is not None and self._reg_tx.terminated:
            self._reg_tx = None

    def _on_register_response(self, resp: Response, now: float) -> None:
        status = resp.status
        if status < 200:
            return
        self._probe_failures = 0
        if status in (401, 407):
            self._on_challenge(resp, now)
            return
        self._auth_rounds = 0
        if status == 423 and self.phase is not RegPhase.UNREGISTERING:
            minimum = resp.headers.get("Min-Expires") or ""
            if minimum.isdigit() and int(minimum) > self._expires:
                self._expires = int(minimum)
                self._register(now)
                return
        if 200 <= status < 300:
            if self.phase is RegPhase.UNREGISTERING:
                self._stopped("unregistered")
                return
            granted = self._granted(resp)
            if granted <= 0:
                self._failed("registrar granted no binding", now)
                return
            self._registered(granted, now)
            return
        self._failed(f"{status} {resp.reason}".strip(), now)

    def _on_challenge(self, resp: Response, now: float) -> None:
        proxy = resp.status == 407
        try:
            challenge = challenge_from(resp)
        except SipError:
            self._failed(f"{resp.status} without a usable challenge", now)
            return
        repeated = self._reg_nonce is not None and challenge.nonce == self._reg_nonce \
            and not challenge.stale
        if repeated or self._auth_rounds >= MAX_AUTH_ROUNDS:
            self._auth_rounds = 0
            self._failed(f"{resp.status} authentication failed (check password)", now)
            return
        if challenge.nonce != self._nonce:
            self._nonce = challenge.nonce
            self._nc = 0
        self._nc += 1
        self._auth_rounds += 1
        header = "Proxy-Authorization" if proxy else "Authorization"
        timeout = self.settings.unregister_timeout if self.phase is RegPhase.UNREGISTERING \
            else None
        self._register(now, expires=self._reg_expires, challenge=(header, challenge),
                       timeout=timeout)

    def _granted(self, resp: Response) -> int:
        ours = SipUri.parse(self.contact)
        for value in resp.headers.get_all("Contact"):
            try:
                addr = NameAddr.parse(value)
            except SipError:
                continue
            instance = addr.params.get("+sip.instance")
            same_instance = (instance is not None and self.settings.instance_id is not None
                             and self.settings.instance_id in instance)
            if _same_contact(addr.uri, ours) or same_instance:
                text = addr.params.get("expires")
                if text is not None and text.isdigit():
                    return int(text)
        header = resp.headers.get("Expires")
        if header is not None and header.strip().isdigit():
            return int(header.strip())
        return self._reg_expires

    def _registered(self, granted: int, now: float) -> None:
        self.registered = True
        self.phase = RegPhase.REGISTERED
        self._attempt = 0
        self._retry_at = None
        changed = self.granted_expires != granted
        self.granted_expires = granted
        self._refresh_at = now + refresh_delay(granted)
        if self.settings.probe_interval <= 0:
            self._probe_at = None  # the trunk's health monitor probes for every account
        elif self._probe_tx is None and self._probe_at is None:
            self._probe_at = now + self.settings.probe_interval
        elif self._probe_at is not None:
            self._probe_at = min(self._probe_at, now + self.settings.probe_interval)
        self._emit(True, "registered", granted, force=changed)

    def _failed(self, reason: str, now: float, *, unreachable: bool = False) -> None:
        if self.phase is RegPhase.UNREGISTERING:
            self._stopped(f"unregister ended: {reason}")
            return
        self.registered = False
        self.granted_expires = None
        self._refresh_at = None
        delay = min(self.settings.retry_base * (2 ** min(self._attempt, 16)),
                    self.settings.retry_max)
        self._attempt += 1
        self._retry_at = now + delay
        if unreachable and self.settings.probe_interval > 0:
            self.phase = RegPhase.RECOVERING
            if self._probe_tx is None:
                self._probe_at = now + self.settings.recovery_probe_interval
        else:
            self.phase = RegPhase.WAITING_RETRY
            self._probe_at = None
            self._probe_tx = None
        self._emit(False, reason, None)

    def _no_address(self) -> None:
        """Nothing to send to: wait for `set_targets` (an unregister simply ends)."""
        self._reg_tx = None
        self._retry_at = self._target_deadline = None
        if self.phase is RegPhase.UNREGISTERING:
            self._stopped(f"unregistered ({NO_ADDRESS})")
            return
        self.registered = False
        self.granted_expires = None
        self._refresh_at = None
        self.phase = RegPhase.WAITING_RETRY
        self._emit(False, NO_ADDRESS, None)

    def _stopped(self, reason: str) -> None:
        self.phase = RegPhase.STOPPED
        self.registered = False
        self.granted_expires = None
        self._reg_tx = None
        self._probe_tx = None
        self._refresh_at = self._probe_at = self._retry_at = None
        self._emit(False, reason, None, force=True)

    def _emit(self, registered: bool, reason: str, expires: int | None, *,
              force: bool = False) -> None:
        self.last_reason = reason
        if not force and self._last_emitted == (registered, reason):
            return
        self._last_emitted = (registered, reason)
        self._events.append(RegistrationStateChanged(self.account_id, registered, reason,
                                                     expires))

    # -- OPTIONS probes --------------------------------------------------------------

    def _probe(self, now: float) -> None:
        if self.phase in (RegPhase.UNREGISTERING, RegPhase.STOPPED) or not self.addressed:
            return
        req = build_request(
            "OPTIONS", self.registrar_uri,
            from_addr=f"<{self.settings.aor}>;tag={generate_tag()}",
            to_addr=f"<{self.registrar_uri}>", call_id=generate_call_id(self.local_host),
            cseq=1, via=self._via(),
            extra=[("User-Agent", self.user_agent), ("Accept", "application/sdp")])
        self._probe_sent_at = now
        target = self.target
        self._probe_tx = ClientNonInviteTransaction(
            req, now, reliable=target.reliable, timeout=self.settings.probe_timeout,
            t1=self.t1, dest=target.addr)
        self._probe_tx.transport = target.transport
        self._probe_tx.server_name = target.server_name

    def _next_probe(self, now: float) -> None:
        if self.phase is RegPhase.RECOVERING:
            interval = self.settings.recovery_probe_interval
        elif self.registered:
            interval = self.settings.probe_interval
        else:
            self._probe_at = None
            return
        self._probe_at = max(now, self._probe_sent_at + interval)

    def _dispatch_probe(self, tx: ClientNonInviteTransaction, events: list[TxEvent],
                        now: float) -> None:
        for event in events:
            if tx is not self._probe_tx:
                return
            if isinstance(event, ResponseReceived):
                self._probe_tx = None
                self._probe_failures = 0
                if self.phase is RegPhase.RECOVERING:
                    # reachable again: register now, with a fresh transaction
                    self.phase = RegPhase.REGISTERING
                    self._retry_at = None
                    self._probe_at = None
                    self._register(now)
                else:
                    self._next_probe(now)
            elif isinstance(event, TransactionTimedOut):
                self._probe_tx = None
                self._probe_failures += 1
                if self.registered and self._probe_failures >= self.settings.down_after:
                    self._reg_tx = None  # a refresh in flight cannot succeed either
                    self._failed("registrar unreachable", now, unreachable=True)
                self._next_probe(now)
        if self._probe_tx is not None and self._probe_tx.terminated:
            self._probe_tx = None
