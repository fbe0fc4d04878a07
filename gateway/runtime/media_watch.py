"""Media timeout: a connected SIP call that expects RTP and gets none for too long is ended.

A trunk call whose media died (the WAN dropped mid-call, the far end crashed without a
BYE) would otherwise hold the line for ever in silence. `MediaWatch` is pure: it is shown,
per call, whether RTP is expected now and how many packets have arrived so far, and says
which calls have gone `timeout` seconds without a new one. `MediaWatchCalls` (mixed into
`Gateway`) feeds it from the 20 ms tick and ends a silent call like a hang-up: BYE to the
far end, reorder to the port (cause "media timeout").
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.runtime import call_end
from gateway.runtime.call_end import CallEnd
from gateway.runtime.ports import machine_for
from gateway.runtime.sip_calls import Call

log = logging.getLogger("branchline")

#: The status the port's machine is given: not busy, so a handset hears reorder.
MEDIA_TIMEOUT_STATUS = 408
#: How often (s) the tick looks at the calls; well under any sensible timeout.
CHECK_INTERVAL = 0.1
RECEIVING = ("sendrecv", "recvonly")


@dataclass
class _Seen:
    packets: int
    since: float


class MediaWatch:
    """Which calls expecting RTP have had none for `timeout` s (0 or less: never)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._seen: dict[str, _Seen] = {}

    def observe(self, call_id: str, expecting: bool, packets: int, now: float) -> bool:
        """One look at a call: True when it expected RTP for `timeout` s and none came.

        The clock starts when RTP becomes expected (answer, resume) and restarts at every
        new packet; a call not expecting RTP (on hold, inactive) is not timed.
        """
        if not expecting or self.timeout <= 0:
            self._seen.pop(call_id, None)
            return False
        seen = self._seen.get(call_id)
        if seen is None or packets != seen.packets:
            self._seen[call_id] = _Seen(packets, now)
            return False
        return now - seen.since >= self.timeout

    def silent_for(self, call_id: str, now: float) -> float | None:
        """Seconds since the call's last packet (or since RTP was expected), if timed."""
        seen = self._seen.get(call_id)
        return None if seen is None else now - seen.since

    def retain(self, call_ids: Iterable[str]) -> None:
        """Forget calls that have ended."""
        keep = set(call_ids)
        for call_id in [c for c in self._seen if c not in keep]:
            del self._seen[call_id]


def expects_rtp(call: Call) -> bool:
    """A connected SIP leg whose negotiated direction lets the far end send to us."""
    return (call.kind == "sip" and call.state == "connected" and call.media is not None
            and not call.held and call.media.direction in RECEIVING)


class MediaWatchCalls:
    """Ends connected SIP calls whose media stopped; mixed into `Gateway`."""

    calls: dict[str, Call]

    if TYPE_CHECKING:
        from gateway.config.schema import Config

        config: Config

        def _end_call_locally(self, call: Call, now: float,
                              cause: CallEnd | None = None) -> None: ...

        def _pump(self) -> None: ...

    def _media_watch(self) -> MediaWatch:
        watch: MediaWatch | None = getattr(self, "media_watch", None)
        if watch is None:
            watch = self.media_watch = MediaWatch(self.config.sip.media_timeout)
            self._media_checked = float("-inf")
        return watch

    def _watch_media(self, now: float) -> None:
        """From the tick: end every call whose expected RTP has stopped for too long."""
        watch = self._media_watch()
        if watch.timeout <= 0 or now - self._media_checked < CHECK_INTERVAL:
            return
        self._media_checked = now
        silent = [call for call in list(self.calls.values())
                  if watch.observe(call.call_id, expects_rtp(call),
                                   call.media.packets_received if call.media else 0, now)]
        for call in silent:
            log.warning("call %s (line %s): no RTP for %.1f s while expecting it; ending it",
                        call.call_id, call.port.name, watch.silent_for(call.call_id, now) or 0.0)
            machine_for(call.port, call.call_id).call_ended("media timeout",
                                                            MEDIA_TIMEOUT_STATUS, now)
            self._end_call_locally(call, now, call_end.media_timeout())
        watch.retain(self.calls)
        if silent:
            self._pump()
