"""The ``security`` control command: who is locked out now, and lifting a lock-out.

A password guesser locks out every client behind its source address (the rate limiter
refuses the address until its auth-failure budget refills, a minute per try by default).
This lets an admin see that and lift it at once instead of waiting.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING, Any

from gateway.runtime.control_handlers import ControlCommandError as ControlError

if TYPE_CHECKING:
    from gateway.runtime.app import Gateway

log = logging.getLogger("branchline.security")

#: Why a source is refused, by the budget that ran out.
REASONS = {
    "auth-failure": "too many failed authentications",
    "request": "request rate",
    "call": "INVITE/REGISTER rate",
}


def _limiter(gw: Gateway) -> Any:
    if gw.edge is None:
        raise ControlError("security: the SIP edge is not running yet")
    return gw.edge.limiter


def blocked(gw: Gateway) -> dict[str, Any]:
    """The sources refused now, longest lock-out first."""
    now = gw.loop.time()
    return {
        "blocked": [
            {
                "source": b.source,
                "bucket": b.bucket,
                "reason": REASONS.get(b.bucket, b.bucket),
                "seconds_left": round(b.seconds_left, 1),
                "failures": b.failures,
                "last_seen_ago": round(max(now - b.last_seen, 0.0), 1),
            }
            for b in _limiter(gw).blocked(now)
        ]
    }


def unblock(gw: Gateway, address: Any) -> dict[str, Any]:
    """Lift the limits on one source (an address, or an IPv6 /64 as listed)."""
    text = str(address or "").strip()
    try:
        if "/" in text:
            ipaddress.ip_network(text, strict=False)
        else:
            ipaddress.ip_address(text)
    except ValueError:
        raise ControlError(
            f"security unblock: {text!r} is not an IP address (or an IPv6 /64 as listed)"
        ) from None
    limiter = _limiter(gw)
    listed = {b.source for b in limiter.blocked(gw.loop.time())}
    key = text if text in listed else _key(text)
    if not limiter.unblock(text):
        raise ControlError(f"security unblock: {text} is not blocked"
                           + (f" (blocked: {', '.join(sorted(listed))})" if listed else ""))
    log.warning("security: %s unblocked by an admin", key)
    return {"unblocked": key, "was_blocked": key in listed}


def _key(text: str) -> str:
    from gateway.security.ratelimit import source_key

    try:
        return source_key(text)
    except ValueError:
        return text


def handle(gw: Gateway, request: dict[str, Any]) -> dict[str, Any]:
    """Dispatch ``{"cmd": "security", "action": "list" | "unblock", "address": ...}``."""
    action = request.get("action") or "list"
    if action == "list":
        return blocked(gw)
    if action == "unblock":
        return unblock(gw, request.get("address"))
    raise ControlError(f"unknown security action {action!r}: list, unblock")
