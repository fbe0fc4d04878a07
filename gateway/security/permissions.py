"""Route-target permissions: the toll-fraud defence in front of GSM, FXO and trunks.

A box that bridges SIP to a SIM card or a PSTN line turns every stolen password or open
relay into premium-rate and international calls on the owner's bill. So before a call is
placed on a target, `Permissions.check` asks three questions:

1. **Who is calling?** Each target lists the source classes allowed to use it: analog line
   names (``"fxs1"``), ``"local-users"`` (authenticated SIP phones), ``"trunk:<name>"``
   (calls arriving from that trunk) or ``"any"``.
2. **Which number?** Allowed and denied number prefixes; the longest matching prefix wins
   and a tie goes to deny. With no match, the target's `default` applies. Unless a policy
   says otherwise, international (``00``, ``011``, ``+``) and premium-rate (``900``,
   ``1900``, ``0900``, ``976``) prefixes are denied, so "allow 0044" opens one country and
   nothing else.
3. **How many at once?** At most `TargetPolicy.max_calls` calls on the target; calls are
   counted with `Permissions.admit` and `Permissions.release`.

A target with no policy is denied: a new modem or trunk carries no calls until someone
decides who may use it. Pure and deterministic; no I/O and no clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

SourceKind = Literal["line", "local-user", "trunk"]

#: Source class matching every authenticated local SIP user.
LOCAL_USERS: Final = "local-users"
#: Source class matching every caller (use for the "local" target, not for GSM or FXO).
ANY: Final = "any"

#: Prefixes denied unless a policy replaces `TargetPolicy.deny`: international access
#: (ITU ``00``, North American ``011``, E.164 ``+``) and common premium-rate ranges.
DEFAULT_DENIED_PREFIXES: Final[tuple[str, ...]] = (
    "00",
    "011",
    "+",
    "900",
    "1900",
    "976",
    "1976",
    "0900",
)

_NUMBER_RE: Final = re.compile(r"\+?[0-9*#]{1,32}")
_PREFIX_RE: Final = re.compile(r"\+?[0-9*#]{0,32}")
_TRUNK_CLASS_RE: Final = re.compile(r"trunk:[a-z0-9_-]+")


@dataclass(frozen=True)
class CallSource:
    """Where a call comes from: an analog line, an authenticated local user, or a trunk.

    `name` is the line name, the local user name, or the trunk name.
    """

    kind: SourceKind
    name: str

    @classmethod
    def line(cls, name: str) -> CallSource:
        """A call from an analog port (FXS) by its configured line name."""
        return cls("line", name)

    @classmethod
    def local_user(cls, user: str) -> CallSource:
        """A call from a SIP phone that passed digest authentication as `user`."""
        return cls("local-user", user)

    @classmethod
    def trunk(cls, name: str) -> CallSource:
        """A call that arrived from a trusted trunk."""
        return cls("trunk", name)

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class Allowed:
    """The call may be placed on the target."""

    target: str
    number: str

    @property
    def allowed(self) -> bool:
        """Always True; lets callers test either result the same way."""
        return True


DenialCode = Literal["no-policy", "source", "number", "bad-number", "busy", "duplicate"]


@dataclass(frozen=True)
class Denied:
    """The call is refused. `code` is stable for metrics; `reason` is for the log line.

    `status` is the SIP response to send: 403 for policy refusals, 503 when the target is
    at its call limit (the caller may try again later), 484 for a malformed number.
    """

    target: str
    code: DenialCode
    reason: str
    status: int = 403

    @property
    def allowed(self) -> bool:
        """Always False."""
        return False


Decision = Allowed | Denied


@dataclass(frozen=True)
class TargetPolicy:
    """Who may call out through one target, to which numbers, and how many at once.

    `target` is a route target such as ``"gsm"``, ``"fxo"`` or ``"trunk:primary"``. A
    policy for ``"gsm"`` also covers ``"gsm:<port>"`` unless that has its own policy.
    `max_calls` None means no limit beyond the hardware's own.
    """

    target: str
    sources: tuple[str, ...]
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = DEFAULT_DENIED_PREFIXES
    default: Literal["allow", "deny"] = "allow"
    max_calls: int | None = None

    def __post_init__(self) -> None:
        if not self.target:
            raise ValueError("target: expected a route target name such as 'gsm'")
        if (
            isinstance(self.sources, str)
            or isinstance(self.allow, str)
            or isinstance(self.deny, str)
        ):
            raise ValueError(
                f"policy {self.target!r}: sources, allow and deny must be lists, not a string"
            )
        for cls in self.sources:
            if cls.startswith("trunk:") and not _TRUNK_CLASS_RE.fullmatch(cls):
                raise ValueError(f"policy {self.target!r} source {cls!r}: expected trunk:<name>")
            if not cls:
                raise ValueError(f"policy {self.target!r}: empty source class")
        for prefix in (*self.allow, *self.deny):
            if not _PREFIX_RE.fullmatch(prefix):
                raise ValueError(
                    f"policy {self.target!r} prefix {prefix!r}: expected digits, * or #, "
                    "optionally after a leading +"
                )
        if self.default not in ("allow", "deny"):
            raise ValueError(f"policy {self.target!r} default: expected 'allow' or 'deny'")
        if self.max_calls is not None and self.max_calls < 0:
            raise ValueError(f"policy {self.target!r} max_calls: expected >= 0")

    def admits_source(self, source: CallSource) -> bool:
        """Whether the caller belongs to one of the allowed source classes."""
        for cls in self.sources:
            if cls == ANY:
                return True
            if cls == LOCAL_USERS:
                if source.kind == "local-user":
                    return True
            elif cls.startswith("trunk:"):
                if source.kind == "trunk" and cls[len("trunk:") :] == source.name:
                    return True
            elif source.kind == "line" and cls == source.name:
                return True
        return False

    def number_rule(self, number: str) -> tuple[bool, str | None]:
        """(allowed, matching prefix) by longest prefix; None prefix means the default."""
        best_len = -1
        best: tuple[bool, str | None] = (self.default == "allow", None)
        for prefix in self.allow:
            if number.startswith(prefix) and len(prefix) > best_len:
                best_len, best = len(prefix), (True, prefix)
        for prefix in self.deny:
            if number.startswith(prefix) and len(prefix) >= best_len:
                best_len, best = len(prefix), (False, prefix)
        return best


class Permissions:
    """Policies per target plus the count of calls each target is carrying."""

    def __init__(self, policies: Iterable[TargetPolicy]) -> None:
        self._policies: dict[str, TargetPolicy] = {}
        for policy in policies:
            if policy.target in self._policies:
                raise ValueError(f"policy for target {policy.target!r} given twice")
            self._policies[policy.target] = policy
        self._calls: dict[str, str] = {}  # call id -> policy target it counts against
        self._active: dict[str, int] = {}

    def policy_for(self, target: str) -> TargetPolicy | None:
        """The policy that governs a target: its own, else its family's (``gsm:1`` -> ``gsm``)."""
        policy = self._policies.get(target)
        if policy is None and ":" in target:
            policy = self._policies.get(target.split(":", 1)[0])
        return policy

    def active(self, target: str) -> int:
        """Calls currently counted against the target's policy."""
        policy = self.policy_for(target)
        return 0 if policy is None else self._active.get(policy.target, 0)

    def check(self, source: CallSource, number: str, target: str) -> Decision:
        """Whether `source` may call `number` through `target` now; changes nothing."""
        policy = self.policy_for(target)
        if policy is None:
            return Denied(target, "no-policy", f"no permission policy for target {target}")
        if not _NUMBER_RE.fullmatch(number):
            return Denied(
                target,
                "bad-number",
                "number must be digits, * or # (optionally after a leading +)",
                484,
            )
        if not policy.admits_source(source):
            return Denied(target, "source", f"{source} may not call through {target}")
        ok, prefix = policy.number_rule(number)
        if not ok:
            why = f"prefix {prefix} denied" if prefix is not None else "not in an allowed prefix"
            return Denied(target, "number", f"{why} on {target}")
        active = self._active.get(policy.target, 0)
        if policy.max_calls is not None and active >= policy.max_calls:
            return Denied(target, "busy", f"{target} at its limit of {policy.max_calls} calls", 503)
        return Allowed(target, number)

    def admit(self, call_id: str, source: CallSource, number: str, target: str) -> Decision:
        """`check`, and if allowed count the call against the target until `release`."""
        if call_id in self._calls:
            return Denied(target, "duplicate", f"call {call_id} already admitted")
        decision = self.check(source, number, target)
        if isinstance(decision, Allowed):
            policy = self.policy_for(target)
            assert policy is not None  # check() denied otherwise
            self._calls[call_id] = policy.target
            self._active[policy.target] = self._active.get(policy.target, 0) + 1
        return decision

    def release(self, call_id: str) -> bool:
        """Stop counting a call; False if it was not admitted (safe to call twice)."""
        key = self._calls.pop(call_id, None)
        if key is None:
            return False
        self._active[key] -= 1
        if not self._active[key]:
            del self._active[key]
        return True
