"""The control command `calls`: call records from the store, filtered (`branchline calls`)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from gateway.runtime.control_handlers import ControlCommandError
from gateway.store.calls import OUTCOMES, parse_time

if TYPE_CHECKING:
    from gateway.runtime.app import Gateway

MAX_LIMIT = 10_000


def _time_arg(request: dict[str, Any], key: str, now: float) -> float | None:
    value = request.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return parse_time(value, now)
        except ValueError as exc:
            raise ControlCommandError(f"{key}: {exc}") from None
    raise ControlCommandError(f"{key}: expected a time, got {value!r}")


async def calls(gw: Gateway, request: dict[str, Any]) -> dict[str, Any]:
    """{"calls": [record, ...] oldest first, "pending": not yet committed}. Arguments:
    since/until (ISO 8601, "-1h", or epoch seconds), line, outcome, limit (default 100)."""
    recorder = gw.call_recorder
    if recorder is None:
        raise ControlCommandError("call records are not open yet")
    now = time.time()
    since = _time_arg(request, "since", now)
    until = _time_arg(request, "until", now)
    outcome = request.get("outcome") or None
    if outcome is not None and outcome not in OUTCOMES:
        raise ControlCommandError(f"outcome {outcome!r}: expected one of {', '.join(OUTCOMES)}")
    line = request.get("line") or None
    limit = request.get("limit", 100)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise ControlCommandError(f"limit: expected 1..{MAX_LIMIT}, got {limit!r}")
    # Read in a worker thread with its own connection: never waits for a commit's fsync.
    records = await asyncio.to_thread(recorder.store.query, since, until, line, outcome, limit)
    return {"calls": [r.to_dict() for r in records], "pending": recorder.pending(),
            "counts": dict(gw.call_counts)}
