"""An INVITE for no line of the box, routed by the dial plan to a port kind (GSM, FXO).

Shared by the GSM and FXO call code: read the number from the Request-URI, route it, and
put the caller through the route guard. Each kind then seizes its own port.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.routing.router import RouteDecision, Router
from gateway.security.permissions import CallSource, Denied
from gateway.security.routeguard import RouteGuard
from gateway.sip import events as sev

if TYPE_CHECKING:
    from gateway.runtime.edge import SipEdge

log = logging.getLogger("branchline")

Refuse = Callable[[sev.IncomingCall, int, str, float], None]


def route_incoming(router: Router, ev: sev.IncomingCall) -> RouteDecision | None:
    """The dial plan's decision for the INVITE's Request-URI user, or None (no route, or
    a Request-URI that cannot be read: not ours to route)."""
    from gateway.sip.uri import SipUri

    try:
        return router.route(SipUri.parse(ev.request_uri).user or "")
    except Exception:  # noqa: BLE001  NoRoute, or an unreadable Request-URI: not ours
        return None


def admit_incoming(edge: SipEdge | None, ev: sev.IncomingCall, number: str, target: str,
                   guard_for: Callable[[str], RouteGuard], refuse: Refuse,
                   now: float) -> CallSource | None:
    """The caller, when it may reach `number` through `target`; None when not: `refuse` has
    answered the INVITE (403 for an unknown caller, the guard's status otherwise) and the
    refusal is logged. `guard_for(source.kind)` picks the guard (trunks have their own)."""
    source = edge.call_source(ev.call_id, ev.source) if edge is not None else None
    if source is None:
        refuse(ev, 403, "caller not known", now)
        return None
    verdict = guard_for(source.kind).check(source, number, target, src_addr=ev.source,
                                           call_id=ev.call_id)
    if isinstance(verdict, Denied):
        log.warning("call %s from %s to %s via %s refused: %s", ev.call_id, source, number,
                    target, verdict.reason)
        refuse(ev, verdict.status, "not permitted", now)
        return None
    return source
