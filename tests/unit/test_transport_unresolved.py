"""The transport never takes a host name: `sendto` would resolve it on the event loop.

With the WAN down, the system resolver inside `socket.sendto(data, ("name", port))` blocks
the whole daemon (every line's audio) for its timeout. Names are resolved by the trunk
lookups; a name reaching the transport is refused and reported as unreachable.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.runtime.transports import ListenSettings, TransportManager
from gateway.sip.target import Outgoing, Target


class Core:
    def __init__(self) -> None:
        self.errors: list[tuple[tuple[str, int], str]] = []

    def receive_datagram(self, *args: Any, **kwargs: Any) -> None:
        pass

    def transport_error(self, addr: tuple[str, int], now: float, *,
                        transport: str = "udp") -> None:
        self.errors.append((addr, transport))

    def messages_out(self) -> list[Outgoing]:
        return []


def test_a_host_name_is_never_handed_to_the_socket() -> None:
    async def run() -> None:
        core = Core()
        mgr = TransportManager(core, asyncio.get_running_loop())  # type: ignore[arg-type]
        await mgr.start(ListenSettings(udp=("127.0.0.1", 0)))
        try:
            udp = mgr._udp
            assert udp is not None and udp.transport is not None
            asked: list[Any] = []
            real = udp.transport.sendto

            def sendto(data: bytes, addr: Any = None) -> None:
                asked.append(addr)
                if isinstance(addr, tuple) and addr[0][:1].isdigit():
                    real(data, addr)

            udp.transport.sendto = sendto  # type: ignore[method-assign]
            mgr.send(Outgoing(b"REGISTER sip:carrier.test SIP/2.0\r\n\r\n",
                              ("carrier.test", 5060), "udp"))
            mgr.send(Outgoing(b"INVITE sip:1@carrier.test SIP/2.0\r\n\r\n",
                              ("carrier.test", 5060), "tcp"))
            mgr.ping(Target("udp", "carrier.test", 5060))
            mgr.send(Outgoing(b"OPTIONS sip:x SIP/2.0\r\n\r\n", ("127.0.0.1", 9), "udp"))
            assert asked == [("127.0.0.1", 9)]  # only the address went to the socket
            assert mgr.stats["connects"] == 0 and mgr.connection_count() == 0
            assert mgr.stats["unresolved_dest"] == 3
            assert core.errors == [(("carrier.test", 5060), "udp"),
                                   (("carrier.test", 5060), "tcp"),
                                   (("carrier.test", 5060), "udp")]
        finally:
            await mgr.close()

    asyncio.run(run())
