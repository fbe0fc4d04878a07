"""The daemon's side of the survivable registrar: built from the config, restored from
disk, saved on every change, and described for `branchline status`.

The registrar itself is pure (gateway/sip/registrar.py) and sits on `UserAgent.registrar`;
the edge authenticates the phones (gateway/runtime/edge.py `users_from_config`); the
bindings file is gateway/store/bindings.py. Without ``sip_phones`` in the config there is
no registrar and REGISTER is answered as before.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.sip.registrar import Limits, Registrar
from gateway.sip.ua import UserAgent
from gateway.store.bindings import BindingsStore


class LocalRegistrar:
    """The registrar and its bindings file, for one running daemon."""

    def __init__(self, config: Any, loop: asyncio.AbstractEventLoop, ua: UserAgent) -> None:
        self.config = config
        self.loop = loop
        phones = tuple(getattr(config, "sip_phones", ()) or ())
        self.phones = phones
        settings = getattr(config, "registrar", None) or Limits()
        self.registrar = Registrar(settings, config.gateway.name,
                                   users=[p.user for p in phones])
        self.store = BindingsStore(config.gateway.state_dir, self.registrar, loop)
        self.ua = ua

    def start(self) -> int:
        """Restore saved bindings, then take REGISTERs; how many bindings came back."""
        count = self.store.load()
        self.registrar.on_change = self.store.changed  # every later change is saved
        self.ua.registrar = self.registrar
        return count

    async def close(self) -> None:
        """Save what is unsaved (bindings stay valid across the restart)."""
        await self.store.close()

    def status(self) -> list[dict[str, Any]]:
        """One entry per configured phone, with its live contacts."""
        now = self.loop.time()
        out: list[dict[str, Any]] = []
        for phone in self.phones:
            bindings = self.registrar.lookup(phone.user, now)
            out.append({
                "user": phone.user,
                "number": getattr(phone, "number", phone.user) or phone.user,
                "display_name": getattr(phone, "display_name", None),
                "registered": bool(bindings),
                "contacts": [{
                    "contact": b.contact,
                    "source": f"{b.source[0]}:{b.source[1]}",
                    "transport": b.transport,
                    "expires_in": b.expires_in(now),
                    "instance": b.instance,
                } for b in bindings],
            })
        return out


def start_local_registrar(config: Any, loop: asyncio.AbstractEventLoop,
                          ua: UserAgent) -> LocalRegistrar | None:
    """The registrar when the config lists local phones, started; else None."""
    if not getattr(config, "sip_phones", ()):
        return None
    local = LocalRegistrar(config, loop, ua)
    local.start()
    return local
