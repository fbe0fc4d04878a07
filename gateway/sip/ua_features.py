"""The user agent's transfer (REFER, Replaces) and message-waiting methods.

A mixin of `UserAgent` (gateway/sip/ua.py), kept apart so that module stays short; the work
is done by `Referrals` (refer.py) and `Subscriptions` (subscribe.py), which the agent
builds.
"""

from __future__ import annotations

from collections.abc import Container, Sequence

from gateway.sip.call_state import ESTABLISHED
from gateway.sip.errors import SipError
from gateway.sip.refer import Referrals, parse_replaces, replaces_of
from gateway.sip.subscribe import Subscriptions
from gateway.sip.target import Target
from gateway.sip.ua_calls import CallTable
from gateway.sip.ua_core import Address


class TransferAndMwi:
    """REFER both ways, Replaces, and message-summary subscriptions (see the parts)."""

    _refers: Referrals
    _subs: Subscriptions
    _table: CallTable

    # -- transfer: REFER (RFC 3515), Replaces (RFC 3891) ------------------------------

    def refer(self, call_id: str, refer_to: str, now: float, *,
              referred_by: str | None = None) -> bool:
        """Ask the call's peer to call `refer_to` (a Refer-To value, see
        gateway.sip.refer.refer_to_value); progress comes as `ReferProgress`. False when the
        call is not established or a transfer of it is already in progress."""
        return self._refers.refer(call_id, refer_to, now, referred_by=referred_by)

    def accept_refer(self, call_id: str, now: float) -> bool:
        """Take on the transfer announced by `ReferReceived`: 202 and NOTIFY 100."""
        return self._refers.accept(call_id, now)

    def reject_refer(self, call_id: str, status: int, now: float) -> bool:
        """Refuse the transfer announced by `ReferReceived` (e.g. 403); the call goes on."""
        return self._refers.reject(call_id, status, now)

    def notify_refer(self, call_id: str, status: int, now: float) -> bool:
        """Tell the transferor how the new call goes (sipfrag); >= 200 is the last word."""
        return self._refers.notify(call_id, status, now)

    def replaces(self, call_id: str) -> str | None:
        """The Replaces value naming this call's dialog to its peer, for an attended
        transfer's Refer-To (None before the call has a dialog)."""
        call = self._table.get(call_id)
        found = replaces_of(call) if call is not None else None
        return str(found) if found is not None else None

    def replaced_call(self, replaces: str) -> str | None:
        """The live call a Replaces value (of an incoming INVITE) names, or None."""
        try:
            wanted = parse_replaces(replaces)
        except SipError:
            return None
        call = self._table.get(wanted.call_id)
        if call is None or call.over or call.dialog is None:
            return None
        if (call.dialog.local_tag, call.dialog.remote_tag) != (wanted.to_tag, wanted.from_tag):
            return None
        if wanted.early_only and call.state in ESTABLISHED:
            return None
        return call.call_id

    # -- message waiting: SUBSCRIBE/NOTIFY message-summary (RFC 3842) ------------------

    def subscribe_mwi(self, sub_id: str, *, target_uri: str, from_uri: str,
                      dest: Address | Sequence[Target], expires: int, now: float,
                      account_id: str | None = None) -> None:
        """Subscribe to message-summary; NOTIFYs come as `MessageSummary(sub_id, ...)`."""
        self._subs.subscribe(sub_id, target_uri=target_uri, from_uri=from_uri, dest=dest,
                             expires=expires, now=now, account_id=account_id)

    def unsubscribe_mwi(self, sub_id: str, now: float) -> None:
        """End a message-summary subscription."""
        self._subs.unsubscribe(sub_id, now)

    def mwi_state(self, sub_id: str) -> dict[str, object] | None:
        """A subscription's state for the control socket (None if unknown)."""
        return self._subs.state(sub_id)

    @property
    def notify_sources(self) -> Container[str]:
        """Hosts whose NOTIFY without a subscription (unsolicited MWI) is accepted: a set,
        or any container the runtime keeps current (the trunks' addresses)."""
        return self._subs.unsolicited_sources

    @notify_sources.setter
    def notify_sources(self, hosts: Container[str]) -> None:
        self._subs.unsolicited_sources = hosts



__all__ = ["TransferAndMwi"]
