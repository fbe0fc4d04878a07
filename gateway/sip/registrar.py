"""The survivable registrar: where the branch's own SIP phones register (RFC 3261 10.3).

Pure: a REGISTER that the edge already authenticated comes in with the authenticated
user name, the source it came from and `now`; the answer to send comes out as a
`Respond` (status, reason, headers), what changed as `BindingsChanged` events
(`events()`), and the next expiry from `get_timer()`.

Decisions:
- **One address of record per user.** The To URI's user part must be the user who
  authenticated (403 otherwise): a phone must not register someone else's extension. The
  To host is not checked: phones name the box by IP as often as by domain.
- **Contacts are matched** by ``+sip.instance`` (and ``reg-id``) when both sides carry one,
  so a phone that rebooted behind NAT on a new port replaces its old binding instead of
  piling up; otherwise by URI (scheme, user, host and port case-folded, transport).
- **Expiry:** the contact's ``expires`` parameter, else the Expires header, else
  `default_expires`; above `max_expires` it is shortened; a non-zero value below
  `min_expires` is refused with 423 and Min-Expires. 0 removes the binding.
- **Ordering (10.3 step 7):** a binding refreshed with the same Call-ID and a lower CSeq
  than the stored one aborts the whole request with 500 and changes nothing. The same
  CSeq again is the same request retransmitted (the user agent answers REGISTERs without
  a transaction when its table is full, so retransmissions can reach us): that binding is
  left as it is and the 200 is sent again.
- **`*` with Expires: 0** removes every binding of the user (a binding with the same
  Call-ID and a CSeq not lower is refused with 500); `*` with anything else (other
  contacts, a non-zero Expires, no Expires) is a 400.
- **max_contacts:** a request that would leave more bindings than that drops the oldest
  refreshed ones (a phone that changed address without an instance id is not locked out
  for an hour); a single request listing more than that is refused with 403.
- **NAT:** each binding keeps the source (ip, port) and transport the REGISTER came from:
  requests to the phone go there, whatever private address its Contact names.
- **Bounded:** only the users given at construction may hold bindings (they are the
  configured phones); at most `max_contacts` each.

Expiry times are on the caller's monotonic clock; `snapshot(now)` turns them into seconds
left so the store can carry them across a restart (see gateway/store/bindings.py).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from gateway.sip.errors import SipError
from gateway.sip.events import BindingsChanged, Respond
from gateway.sip.headers import NameAddr
from gateway.sip.message import Request
from gateway.sip.uri import SipUri

Address = tuple[str, int]

#: Snapshot format version written by `Registrar.snapshot`.
SNAPSHOT_VERSION = 1
#: Expires values are clamped to this before anything else (RFC 3261: 2**32-1 allowed).
_MAX_SECONDS = 2**32 - 1


class RegistrarLimits(Protocol):
    """What the registrar reads of `gateway.config.schema.RegistrarSettings`."""

    @property
    def min_expires(self) -> int: ...
    @property
    def max_expires(self) -> int: ...
    @property
    def default_expires(self) -> int: ...
    @property
    def max_contacts(self) -> int: ...


@dataclass(frozen=True)
class Limits:
    """Stand-alone limits (tests, and the daemon before its config names any)."""

    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 600
    max_contacts: int = 3


@dataclass(frozen=True)
class Binding:
    """One registered contact of a user, and where requests to it must be sent."""

    user: str
    contact: str  # the Contact URI: the Request-URI of requests to this phone
    source: Address  # where the REGISTER came from (send there: NAT)
    transport: str  # "udp", "tcp", "tls"
    expires_at: float  # on the registrar's clock
    call_id: str
    cseq: int
    instance: str | None = None  # +sip.instance, as received (quotes and <> kept)
    reg_id: str | None = None
    registered_at: float = 0.0  # last refresh, for eviction at max_contacts

    def expires_in(self, now: float) -> int:
        """Whole seconds left (never negative)."""
        return max(0, int(self.expires_at - now + 0.5))

    def key(self) -> tuple[str, ...]:
        """What makes two contacts the same binding (see the module docstring)."""
        if self.instance is not None:
            return ("instance", self.instance, self.reg_id or "")
        return ("uri", _uri_key(self.contact))

    def header_value(self, now: float) -> str:
        """This binding as a Contact value in our 200, with its expires."""
        params = ""
        if self.instance is not None:
            params += f";+sip.instance={self.instance}"
        if self.reg_id is not None:
            params += f";reg-id={self.reg_id}"
        return f"<{self.contact}>{params};expires={self.expires_in(now)}"


def _uri_key(contact: str) -> str:
    """URI comparison per RFC 3261 19.1.4, reduced to what phones vary in practice."""
    try:
        uri = SipUri.parse(contact)
    except SipError:
        return contact
    transport = uri.transport or "udp"
    return f"{uri.scheme}:{uri.user or ''}@{uri.host.lower()}:{uri.port or ''};{transport}"


class _Refused(Exception):
    def __init__(self, status: int, reason: str | None = None,
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(reason or str(status))
        self.answer = Respond(status, reason, headers)


@dataclass(frozen=True)
class _Wanted:
    """One Contact of the request: the binding it asks for (expires 0 = remove)."""

    contact: str
    instance: str | None
    reg_id: str | None
    expires: int


#: `*` (remove every binding), as `Registrar._wanted` returns it.
_ALL: list[_Wanted] = [_Wanted("*", None, None, 0)]


class Registrar:
    """Bindings per user, answered and expired; no I/O, no clock."""

    def __init__(self, settings: RegistrarLimits, domain: str, *,
                 users: Iterable[str] | None = None) -> None:
        """`users` are the only ones who may register (the configured phones).

        None lets any user the edge authenticated in (tests); the edge already refuses
        anyone it has no password for.
        """
        if not 0 < settings.min_expires <= settings.default_expires <= settings.max_expires:
            raise ValueError("registrar: expected 0 < min_expires <= default_expires <= "
                             "max_expires")
        if settings.max_contacts < 1:
            raise ValueError("registrar: max_contacts must be at least 1")
        self.settings = settings
        self.domain = domain
        self.users: frozenset[str] | None = frozenset(users) if users is not None else None
        self._bindings: dict[str, list[Binding]] = {}
        self._count = 0  # bindings held (live or not yet expired by the timer)
        self._heap: list[tuple[float, str]] = []  # (expires_at, user), stale entries allowed
        self._events: list[BindingsChanged] = []
        #: Incremented on every change: the store saves when it moves.
        self.version = 0
        #: Called after every change (the bindings store schedules a save; must not raise).
        self.on_change: Callable[[], None] | None = None
        self.stats: dict[str, int] = dict.fromkeys(
            ("registered", "refreshed", "removed", "expired", "queries", "refused",
             "out_of_order", "retransmissions"), 0)

    # ------------------------------------------------------------------ reading

    def lookup(self, user: str, now: float) -> list[Binding]:
        """The user's live bindings, freshest first."""
        found = [b for b in self._bindings.get(user, ()) if b.expires_at > now]
        found.sort(key=lambda b: b.registered_at, reverse=True)
        return found

    def all_bindings(self, now: float) -> dict[str, list[Binding]]:
        """Every user with a live binding (for status)."""
        return {user: live for user in sorted(self._bindings)
                if (live := self.lookup(user, now))}

    def __len__(self) -> int:
        return self._count

    def events(self) -> list[BindingsChanged]:
        """Drain what changed since the last call."""
        out, self._events = self._events, []
        return out

    # ------------------------------------------------------------------ REGISTER

    def handle(self, req: Request, source: Address, transport: str, user: str | None,
               now: float) -> Respond:
        """Apply one authenticated REGISTER; the answer to send (never raises)."""
        try:
            answer = self._handle(req, source, transport.lower(), user, now)
        except _Refused as refused:
            self.stats["refused"] += 1
            return refused.answer
        except SipError as exc:
            self.stats["refused"] += 1
            return Respond(400, f"Bad Request ({exc})"[:120])
        return answer

    def _handle(self, req: Request, source: Address, transport: str, user: str | None,
                now: float) -> Respond:
        if user is None:
            raise _Refused(403, "Not Authenticated")
        to_user = req.to_addr.uri.user
        if to_user != user:
            raise _Refused(403, "To Does Not Match Authenticated User")
        if self.users is not None and user not in self.users:
            raise _Refused(404, "Not Found")
        wanted = self._wanted(req)
        call_id = req.call_id
        cseq = req.cseq.number
        if not wanted:  # a query
            self.stats["queries"] += 1
            return self._ok(user, now)
        current = [b for b in self._bindings.get(user, ()) if b.expires_at > now]
        if wanted is _ALL:
            for b in current:
                if b.call_id == call_id and cseq <= b.cseq:
                    self._out_of_order()
            if current:
                self.stats["removed"] += len(current)
                self._set(user, [])
            return self._ok(user, now)
        if sum(1 for w in wanted if w.expires) > self.settings.max_contacts:
            raise _Refused(403, "Too Many Contacts")
        by_key = {b.key(): b for b in current}
        kept = dict(by_key)
        changed = False
        counts = dict.fromkeys(("registered", "refreshed", "removed"), 0)
        for w in wanted:
            new = Binding(user, w.contact, source, transport, now + w.expires, call_id, cseq,
                          w.instance, w.reg_id, now)
            old = by_key.get(new.key())
            if old is not None and old.call_id == call_id and cseq <= old.cseq:
                if cseq < old.cseq:
                    self._out_of_order()
                self.stats["retransmissions"] += 1
                continue  # this very request again: already applied
            if w.expires == 0:
                if kept.pop(new.key(), None) is not None:
                    counts["removed"] += 1
                    changed = True
                continue
            counts["refreshed" if old is not None else "registered"] += 1
            kept[new.key()] = new
            changed = True
        bindings = sorted(kept.values(), key=lambda b: b.registered_at)
        while len(bindings) > self.settings.max_contacts:
            bindings.pop(0)  # the longest unrefreshed goes first
            counts["removed"] += 1
        for name, count in counts.items():
            self.stats[name] += count
        if changed or len(current) != len(self._bindings.get(user, ())):
            self._set(user, bindings)
        return self._ok(user, now)

    def _wanted(self, req: Request) -> list[_Wanted]:
        """The request's Contacts (empty: a query; `_ALL`: remove all)."""
        values = req.headers.get_all("Contact")
        header = req.headers.get("Expires")
        expires_header: int | None = None
        if header is not None:
            expires_header = _seconds(header, "Expires")
        if not values:
            return []
        if "*" in (v.strip() for v in values):
            if len(values) != 1 or expires_header != 0:
                raise _Refused(400, "Bad Request (* needs Expires: 0 and no other Contact)")
            return _ALL
        out: list[_Wanted] = []
        for value in values:
            na = NameAddr.parse(value)
            if na.uri.scheme not in ("sip", "sips"):
                raise _Refused(400, "Bad Request (Contact must be a sip: URI)")
            raw = na.params.get("expires")
            if raw is not None:
                expires = _seconds(raw, "Contact expires")
            elif expires_header is not None:
                expires = expires_header
            else:
                expires = self.settings.default_expires
            if 0 < expires < self.settings.min_expires:
                raise _Refused(423, "Interval Too Brief",
                               (("Min-Expires", str(self.settings.min_expires)),))
            expires = min(expires, self.settings.max_expires)
            instance = na.params.get("+sip.instance")
            reg_id = na.params.get("reg-id")
            out.append(_Wanted(str(na.uri), instance, reg_id, expires))
        return out

    def _out_of_order(self) -> None:
        self.stats["out_of_order"] += 1
        raise _Refused(500, "Out Of Order CSeq", (("Retry-After", "1"),))

    def _ok(self, user: str, now: float) -> Respond:
        headers = [("Contact", b.header_value(now)) for b in self.lookup(user, now)]
        return Respond(200, "OK", tuple(headers))

    # ------------------------------------------------------------------ changing

    def _set(self, user: str, bindings: list[Binding]) -> None:
        self._count += len(bindings) - len(self._bindings.get(user, ()))
        if bindings:
            self._bindings[user] = bindings
            for b in bindings:
                heapq.heappush(self._heap, (b.expires_at, user))
        else:
            self._bindings.pop(user, None)
        self._compact()
        self.version += 1
        self._events.append(BindingsChanged(user, tuple(bindings)))
        if self.on_change is not None:
            self.on_change()

    def _compact(self) -> None:
        """Rebuild the expiry heap when stale entries outnumber live ones."""
        if len(self._heap) > 4 * self._count + 64:
            self._heap = [(b.expires_at, u) for u, bs in self._bindings.items() for b in bs]
            heapq.heapify(self._heap)

    def get_timer(self) -> float | None:
        """When the next binding expires (None when there is none)."""
        heap = self._heap
        while heap:
            at, user = heap[0]
            if any(b.expires_at == at for b in self._bindings.get(user, ())):
                return at
            heapq.heappop(heap)
        return None

    def expire(self, now: float) -> None:
        """Drop every binding whose time is up; one `BindingsChanged` per user touched."""
        heap = self._heap
        touched: set[str] = set()
        while heap and heap[0][0] <= now:
            touched.add(heapq.heappop(heap)[1])
        for user in sorted(touched):
            current = self._bindings.get(user, [])
            live = [b for b in current if b.expires_at > now]
            if len(live) != len(current):
                self.stats["expired"] += len(current) - len(live)
                self._set(user, live)

    handle_timer = expire

    # ------------------------------------------------------------------ persistence

    def snapshot(self, now: float) -> dict[str, object]:
        """Live bindings as plain JSON data, with seconds left instead of clock times."""
        rows: list[dict[str, object]] = []
        for user, bindings in sorted(self._bindings.items()):
            for b in bindings:
                if b.expires_at <= now:
                    continue
                rows.append({
                    "user": user, "contact": b.contact, "source": [b.source[0], b.source[1]],
                    "transport": b.transport, "expires_in": round(b.expires_at - now, 3),
                    "call_id": b.call_id, "cseq": b.cseq, "instance": b.instance,
                    "reg_id": b.reg_id, "age": round(now - b.registered_at, 3),
                })
        return {"version": SNAPSHOT_VERSION, "domain": self.domain, "bindings": rows}

    def restore(self, data: Mapping[str, object], now: float) -> int:
        """Load a `snapshot` (expires_in already reduced by the time it lay on disk).

        Rows that are expired, malformed, for users not allowed here, or beyond
        `max_contacts` are skipped. Returns how many bindings were loaded. Replaces
        whatever was held; emits `BindingsChanged` for each user loaded.
        """
        rows = data.get("bindings")
        if data.get("version") != SNAPSHOT_VERSION or not isinstance(rows, list):
            raise ValueError("bindings snapshot: unknown version or no bindings list")
        loaded: dict[str, list[Binding]] = {}
        for row in rows:
            b = _binding_from(row, now)
            if b is None or b.expires_at <= now:
                continue
            if self.users is not None and b.user not in self.users:
                continue
            same = [x for x in loaded.get(b.user, []) if x.key() != b.key()]
            loaded[b.user] = [*same, b][-self.settings.max_contacts:]
        self._bindings.clear()
        self._heap.clear()
        self._count = 0
        for user, bindings in loaded.items():
            bindings.sort(key=lambda x: x.registered_at)
            self._set(user, bindings)
        return sum(len(v) for v in loaded.values())


def _seconds(text: str, what: str) -> int:
    text = text.strip()
    if not text.isdigit() or not text.isascii():
        raise _Refused(400, f"Bad Request ({what} is not a number of seconds)")
    return min(int(text), _MAX_SECONDS)


def _binding_from(row: object, now: float) -> Binding | None:
    """One snapshot row, or None when it is not usable."""
    if not isinstance(row, dict):
        return None
    try:
        user, contact, transport = row["user"], row["contact"], row["transport"]
        source, call_id, cseq = row["source"], row["call_id"], row["cseq"]
        expires_in, age = float(row["expires_in"]), float(row.get("age", 0.0))
        instance, reg_id = row.get("instance"), row.get("reg_id")
    except (KeyError, TypeError, ValueError):
        return None
    if not (isinstance(user, str) and isinstance(contact, str) and isinstance(transport, str)
            and isinstance(call_id, str) and isinstance(cseq, int)
            and isinstance(source, list) and len(source) == 2
            and isinstance(source[0], str) and isinstance(source[1], int)
            and (instance is None or isinstance(instance, str))
            and (reg_id is None or isinstance(reg_id, str))):
        return None
    try:
        SipUri.parse(contact)
    except SipError:
        return None
    return Binding(user, contact, (source[0], source[1]), transport, now + expires_in,
                   call_id, cseq, instance, reg_id, now - age)
