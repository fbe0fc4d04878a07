"""The user agent's accounts: one `RegistrationClient` each, and their removal."""

from __future__ import annotations

from dataclasses import replace

from gateway.sip.message import Response
from gateway.sip.registration import AccountSettings, RegistrationClient
from gateway.sip.target import Outgoing
from gateway.sip.ua_core import Address, SipCore


class Registrations:
    """Registers each account and keeps its credentials for calls that are challenged."""

    def __init__(self, core: SipCore) -> None:
        self._core = core
        self._accounts: dict[str, RegistrationClient] = {}
        self._removing: set[str] = set()

    def add(self, account_id: str, settings: AccountSettings, now: float) -> None:
        """Start registering `account_id` (replaces an account of the same id)."""
        core = self._core
        if not settings.instance_id:
            settings = replace(settings, instance_id=core.instance_id)
        reg = RegistrationClient(account_id, settings, local_host=core.local_host,
                                 local_port=core.local_port, transport=core.transport,
                                 user_agent=core.user_agent, t1=core.t1,
                                 target_set=core.target_set(settings.target_list()))
        self._accounts[account_id] = reg
        self._removing.discard(account_id)
        reg.start(now)

    def remove(self, account_id: str, now: float) -> None:
        """Unregister; the account disappears once the registrar answered or timed out."""
        reg = self._accounts.get(account_id)
        if reg is None:
            return
        self._removing.add(account_id)
        reg.unregister(now)

    def state(self, account_id: str) -> dict[str, object]:
        """Snapshot for the control socket: registered, phase, expires, reason..."""
        reg = self._accounts.get(account_id)
        if reg is None:
            return {"account_id": account_id, "registered": False, "phase": "unknown"}
        return reg.state()

    def get(self, account_id: str | None) -> RegistrationClient | None:
        """The account a call was placed for (its credentials answer a 401/407)."""
        return self._accounts.get(account_id or "")

    def receive_response(self, resp: Response, now: float) -> bool:
        """Offer a response no transaction matched; True when an account took it."""
        return any(reg.receive_response(resp, now) for reg in self._accounts.values())

    def transport_error(self, addr: Address, transport: str, now: float) -> None:
        """The transport could not reach `addr`: tell the accounts that use it."""
        for reg in self._accounts.values():
            if reg.dest == addr and reg.target.transport == transport:
                reg.transport_error(now)

    def take_output(self) -> list[Outgoing]:
        """What the registration clients want sent."""
        return [Outgoing(bytes(m), t.addr, t.transport, t.server_name)
                for reg in self._accounts.values() for m, t in reg.outgoing()]

    def get_timer(self) -> float | None:
        """The earliest deadline of any account."""
        due = [t for reg in self._accounts.values() if (t := reg.get_timer()) is not None]
        return min(due) if due else None

    def handle_timer(self, now: float) -> None:
        """Run the accounts' timers due at `now`."""
        for reg in list(self._accounts.values()):
            deadline = reg.get_timer()
            if deadline is not None and deadline <= now:
                reg.handle_timer(now)

    def pull_events(self) -> None:
        """Move the accounts' events to the agent's queue; drop finished removals."""
        for account_id, reg in list(self._accounts.items()):
            for event in reg.events():
                self._core.emit(event)
            if account_id in self._removing and reg.done:
                self._removing.discard(account_id)
                self._accounts.pop(account_id, None)
