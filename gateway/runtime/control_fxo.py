"""`branchline fxo LINE ACTION`: look at an exchange line and, on the sim backend, drive the
simulated exchange (ring it with a caller ID, hang up the far end, list the dialled digits).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.runtime.control import ControlError

if TYPE_CHECKING:
    from gateway.runtime.app import Gateway

ACTIONS = "state, ring, cancel, hangup, busy-number, heard, unplug, plug"


async def fxo(gw: Gateway, request: dict[str, Any]) -> dict[str, Any]:
    name = str(request.get("line"))
    fp = gw.fxo_lines.get(name)
    if fp is None:
        known = ", ".join(gw.fxo_lines) or "none"
        raise ControlError(f"no FXO line {name!r} (FXO lines: {known})")
    action = request.get("action", "state")
    if action == "state":
        return _state(gw, name)
    ex = fp.exchange
    if ex is None:
        raise ControlError(f"FXO line {name} uses backend {fp.config.backend!r}: only "
                           "simulated lines have an exchange to drive")
    from hal.base import HalError

    try:
        if action == "ring":
            caller = request.get("caller")
            ex.call_in(None if caller is None else str(caller), request.get("name"),
                       withheld=bool(request.get("withheld", False)),
                       method=request.get("method"))
        elif action == "cancel":
            ex.cancel()
        elif action == "hangup":
            ex.far_hang_up(str(request.get("how", "busy")))
        elif action == "unplug":
            ex.unplug()
        elif action == "plug":
            ex.plug()
        elif action == "busy-number":
            ex.busy_numbers.add(str(request.get("number", "")))
        elif action == "heard":
            from gateway.dsp.analysis import dominant_frequency, level_dbfs

            pcm = ex.heard(float(request.get("seconds", 0.5)))
            return {"line": name, "dominant_hz": round(dominant_frequency(pcm), 1),
                    "level_dbfs": round(level_dbfs(pcm), 1)}
        else:
            raise ControlError(f"unknown fxo action {action!r}: {ACTIONS}")
    except HalError as exc:
        raise ControlError(str(exc)) from exc
    gw._pump()
    return _state(gw, name)


def _state(gw: Gateway, name: str) -> dict[str, Any]:
    return next(s for s in gw.fxo_status() if s["name"] == name)
