"""One configured modem on the asyncio loop: its AT port, profile, SIM, network and supervisor.

Several users share the one AT port: the GSM line's commands, the SIM check, the supervisor's
liveness probes, network polling and SMS reads (`command()`). The port's AT engine sends them
one at a time and hands each result back to whoever asked; unsolicited result codes fan out to
every subscriber (`subscribe()`). Nothing here blocks the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from gateway.config.modems import ModemConfig
from gateway.modem.at import CommandDone, Unsolicited
from gateway.modem.profiles import ModemProfile
from hal.base import AtPort, AudioPort, ModemLost

__all__ = ["ModemDriver", "Profile"]

log = logging.getLogger(__name__)

Profile = ModemProfile


class ModemDriver:
    """One configured modem: owns its serial AtPort, AtEngine, profile init, SimCard,
    network polling and ModemSupervisor; re-attaches by IMEI under a new /dev name."""

    name: str
    config: ModemConfig
    imei: str | None
    profile: Profile | None
    audio: AudioPort | None
    """The voice path for calls (serial-pcm pty, uac/usb-soundcard ALSA, sim); None while
    the modem is not attached or its audio could not be opened."""

    def __init__(
        self,
        config: ModemConfig,
        loop: asyncio.AbstractEventLoop,
        *,
        on_change: Callable[[ModemDriver], None] | None = None,
    ) -> None:
        self.name = config.name
        self.config = config
        self.imei = None
        self.profile = None
        self.audio = None
        self._loop = loop
        self._on_change = on_change
        self._port: AtPort | None = None
        self._subscribers: list[Callable[[Unsolicited], None]] = []
        self._up = False

    async def start(self) -> None:
        """Open, probe and initialise the modem; never raises for an absent modem: it is
        reported in `status()` and re-probed."""

    async def close(self) -> None:
        """Stop polling and supervising, release the AT port and the audio. Idempotent."""

    @property
    def up(self) -> bool:
        """Attached, initialised, SIM ready."""
        return self._up

    async def command(
        self, line: str, *, timeout: float = 5.0, body: bytes | None = None
    ) -> CommandDone:
        """Send one AT command through the shared port, after those already queued.

        Raises hal.base.CommandError on an error result or timeout, ModemLost when the
        modem is not attached or goes away meanwhile.
        """
        port = self._port
        if port is None:
            raise ModemLost(f"modem {self.name}: not attached")
        return await port.command(line, timeout, body=body)

    def subscribe(self, fn: Callable[[Unsolicited], None]) -> Callable[[], None]:
        """Call `fn` with every unsolicited result code; returns the unsubscribe function."""
        self._subscribers.append(fn)

        def unsubscribe() -> None:
            if fn in self._subscribers:
                self._subscribers.remove(fn)

        return unsubscribe

    def status(self) -> dict[str, Any]:
        """name, profile, state, device, imei, model, revision, sim: {state, detail},
        network: {registration, operator, technology}, signal: {rssi_dbm, rsrp_dbm, ...},
        last_error."""
        return {
            "name": self.name,
            "profile": self.config.profile,
            "state": "starting",
            "device": None,
            "imei": self.imei,
            "model": None,
            "revision": None,
            "sim": {"state": None, "detail": None},
            "network": {"registration": None, "operator": None, "technology": None},
            "signal": {"rssi_dbm": None, "rsrp_dbm": None},
            "last_error": None,
        }
