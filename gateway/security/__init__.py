"""Security building blocks for the SIP edge: who may talk to us, how fast, and where calls go.

- `acl`: is a request from a trusted trunk, a local user who must authenticate, or nobody?
- `ratelimit`: per-source token buckets against scanners, floods and password guessing.
- `permissions`: which callers may use GSM, FXO and trunk targets for which numbers
  (toll-fraud defence).
- `events`: the one-line ``SECURITY event=...`` log format that fail2ban bans on.

All of it is pure (no I/O, no clock), so the runtime wires it in and tests drive it with
plain values.
"""

from gateway.security.acl import AclDecision, SourceAcl, TrunkSource
from gateway.security.events import (
    AUTH_FAILURE,
    CALL_DENIED,
    RATE_LIMITED,
    TRUNK_RATE_LIMITED,
    UNKNOWN_SOURCE,
    format_event,
    log_event,
)
from gateway.security.permissions import (
    Allowed,
    CallSource,
    Denied,
    Permissions,
    TargetPolicy,
)
from gateway.security.ratelimit import Budget, RateLimiter, RateLimits, Verdict, source_key

__all__ = [
    "AUTH_FAILURE",
    "CALL_DENIED",
    "RATE_LIMITED",
    "TRUNK_RATE_LIMITED",
    "UNKNOWN_SOURCE",
    "AclDecision",
    "Allowed",
    "Budget",
    "CallSource",
    "Denied",
    "Permissions",
    "RateLimiter",
    "RateLimits",
    "SourceAcl",
    "TargetPolicy",
    "TrunkSource",
    "Verdict",
    "format_event",
    "log_event",
    "source_key",
]
