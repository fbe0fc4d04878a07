"""All SIP sockets of the daemon: UDP, TCP and TLS, listening and connecting.

The pure user agent says what to send (`Outgoing`: bytes, destination, transport, TLS
name); the manager finds or opens the socket. Streams are reused, keyed by
(transport, host, port). An accepted connection is keyed by the peer's address, so a
response to a request that came in on it goes back on the same connection (the spirit of
RFC 5923); a request whose top Via carries `;alias` also makes its sent-by an alias. A
connection that cannot be opened, or breaks, is reported to the agent as a transport
error so it fails over to the next target. Idle connections are closed.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

from gateway.runtime.trace import SipTrace
from gateway.runtime.transports.kernel import ListenError, set_receive_buffer, udp_socket_counters
from gateway.runtime.transports.stream import Address, StreamConnection
from gateway.runtime.transports.tls import (
    TlsClientSettings,
    TlsServerSettings,
    client_context,
    server_context,
)
from gateway.sip.dns import is_ip
from gateway.sip.framing import PING
from gateway.sip.target import Outgoing, Target

log = logging.getLogger("branchline.sip.transport")

KEEPALIVE_MODES = ("options", "crlf", "none")
#: How long the address of an inbound flow the peer closed is remembered: responses still
#: due to it are dropped quietly instead of dialling back to a port nobody listens on.
CLOSED_FLOW_MEMORY = 32.0
MAX_CLOSED_FLOWS = 1024
_VIA_ALIAS = re.compile(
    rb"^(?:via|v)[ \t]*:[ \t]*SIP/2\.0/(?:TCP|TLS)[ \t]+(\[[^\]]+\]|[^;:\s]+)(?::([0-9]+))?"
    rb"[^,\r\n]*;alias\b", re.I | re.M,
)


class SipCore(Protocol):
    """What the manager needs from the user agent (gateway.sip.ua.UserAgent meets it)."""

    def receive_datagram(self, data: bytes, addr: Address, now: float, *,
                         transport: str = "udp") -> None: ...

    def transport_error(self, addr: Address, now: float, *, transport: str = "udp") -> None: ...

    def messages_out(self) -> list[Outgoing]: ...


@dataclass(frozen=True)
class ListenSettings:
    """Where to listen; None turns a transport's listener off (it can still connect out)."""

    udp: Address | None = ("0.0.0.0", 5060)
    tcp: Address | None = None
    tls: Address | None = None
    tls_server: TlsServerSettings | None = None
    #: SO_RCVBUF asked for the UDP socket (None keeps the kernel's default).
    udp_receive_buffer: int | None = None
    #: The config key each listener comes from, named when it cannot be opened.
    config_keys: tuple[tuple[str, str], ...] = (
        ("udp", "sip.listen"), ("tcp", "sip.tcp_listen"), ("tls", "sip.tls_listen"),
    )


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, manager: TransportManager) -> None:
        self.manager = manager
        self.transport: asyncio.DatagramTransport | None = None
        self.last_dest: Address | None = None
        self.local: Address | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        name = transport.get_extra_info("sockname")
        self.local = (str(name[0]), int(name[1])) if name else None

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        remote = (str(addr[0]), int(addr[1]))
        if self.manager.trace.active:
            self.manager.trace.message("in", "udp", self.local, remote, data)
        self.manager.deliver(data, remote, "udp")
        self.manager.after_input()

    def error_received(self, exc: Exception) -> None:
        # Linux reports ICMP port-unreachable for the last datagram sent here.
        if self.last_dest is not None:
            self.manager.report_error(self.last_dest, "udp")


class TransportManager:
    """Owns every SIP socket; the app calls `flush()` after driving the agent."""

    def __init__(
        self,
        core: SipCore,
        loop: asyncio.AbstractEventLoop,
        after_input: Callable[[], None] = lambda: None,
        *,
        idle_timeout: float = 300.0,
        connect_timeout: float = 5.0,
        max_connections: int = 256,
    ) -> None:
        self.core = core
        self.loop = loop
        self.after_input = after_input
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.ports: dict[str, int] = {}
        self.trace = SipTrace()
        #: SO_RCVBUF of the UDP socket as the kernel reports it (it doubles what is asked).
        self.udp_receive_buffer: int | None = None
        self.stats: dict[str, int] = {
            "sent": 0, "send_failures": 0, "connects": 0, "connect_failures": 0,
            "accepted": 0, "refused": 0, "framing_errors": 0, "idle_closed": 0,
            "pings_sent": 0,
        }
        self._udp: _Udp | None = None
        self._servers: list[asyncio.Server] = []
        self._conns: dict[tuple[str, str, int], StreamConnection] = {}
        self._tls: dict[str, tuple[ssl.SSLContext, TlsClientSettings]] = {}
        self._default_tls: ssl.SSLContext | None = None
        self._keepalives: dict[str, asyncio.TimerHandle] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed_flows: OrderedDict[tuple[str, str, int], float] = OrderedDict()

    # -- life cycle

    async def start(self, listen: ListenSettings) -> None:
        """Open the listeners; `ports` then holds the bound port of each.

        A listener that cannot be opened raises `ListenError` naming the address and its
        config key; the listeners already open are closed again.
        """
        keys = dict(listen.config_keys)
        try:
            await self._listen(listen, keys)
        except Exception:
            await self.close()
            raise
        self._arm_sweeper()

    async def _listen(self, listen: ListenSettings, keys: dict[str, str]) -> None:
        if listen.udp is not None:
            try:
                transport, proto = await self.loop.create_datagram_endpoint(
                    lambda: _Udp(self), local_addr=listen.udp
                )
            except OSError as exc:
                raise ListenError("udp", listen.udp, keys.get("udp", "?"), exc) from None
            self._udp = proto
            self.ports["udp"] = int(transport.get_extra_info("sockname")[1])
            if listen.udp_receive_buffer is not None:
                sock = transport.get_extra_info("socket")
                self.udp_receive_buffer = set_receive_buffer(sock, listen.udp_receive_buffer)
        if listen.tcp is not None:
            try:
                server = await self.loop.create_server(
                    lambda: StreamConnection(self, "tcp", False), listen.tcp[0], listen.tcp[1]
                )
            except OSError as exc:
                raise ListenError("tcp", listen.tcp, keys.get("tcp", "?"), exc) from None
            self._servers.append(server)
            self.ports["tcp"] = int(server.sockets[0].getsockname()[1])
        if listen.tls is not None:
            if listen.tls_server is None:
                raise ValueError("a TLS listener needs sip.tls cert_file and key_file")
            ctx = server_context(listen.tls_server)
            try:
                server = await self.loop.create_server(
                    lambda: StreamConnection(self, "tls", False), listen.tls[0], listen.tls[1],
                    ssl=ctx,
                )
            except OSError as exc:
                raise ListenError("tls", listen.tls, keys.get("tls", "?"), exc) from None
            self._servers.append(server)
            self.ports["tls"] = int(server.sockets[0].getsockname()[1])

    def kernel_stats(self) -> dict[str, int]:
        """The UDP socket as the kernel sees it: receive buffer, queued bytes, drops.

        `kernel_drops` counts datagrams the kernel threw away before we read them (a full
        receive buffer during a burst, mostly).
        """
        out: dict[str, int] = {}
        if self.udp_receive_buffer is not None:
            out["udp_receive_buffer"] = self.udp_receive_buffer
        if self._udp is not None and self._udp.transport is not None:
            sock = self._udp.transport.get_extra_info("socket")
            if sock is not None:
                out.update(udp_socket_counters(sock))
        return out

    async def close(self) -> None:
        """Close listeners, connections and timers."""
        for handle in self._keepalives.values():
            handle.cancel()
        self._keepalives.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in list(self._tasks):
            task.cancel()
        for conn in set(self._conns.values()):
            conn.close()
        self._conns.clear()
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.close()

    # -- configuration

    def set_tls_client(self, names: Iterable[str], settings: TlsClientSettings) -> None:
        """Use `settings` for TLS to any of `names` (a trunk's domain, hosts, server name)."""
        ctx = client_context(settings)
        for name in names:
            self._tls[name.lower()] = (ctx, settings)

    def set_keepalive(self, key: str, targets: Sequence[Target], mode: str,
                      interval: float) -> None:
        """NAT keep-alive toward a trunk: "crlf" pings every `interval` s; others stop it.

        "options" is the agent's own OPTIONS probe, so the manager has nothing to do.
        """
        if mode not in KEEPALIVE_MODES:
            raise ValueError(f"keepalive must be one of {KEEPALIVE_MODES}, not {mode!r}")
        old = self._keepalives.pop(key, None)
        if old is not None:
            old.cancel()
        if mode != "crlf" or not targets:
            return

        def tick() -> None:
            for target in targets:
                self.ping(target)
            self._keepalives[key] = self.loop.call_later(interval, tick)

        self._keepalives[key] = self.loop.call_later(interval, tick)

    # -- sending

    def flush(self) -> None:
        """Send everything the agent has queued."""
        for out in self.core.messages_out():
            self.send(out)

    def send(self, out: Outgoing) -> None:
        """Send one message over its transport, opening a connection when needed."""
        if not self._addressed(out.dest, out.transport):
            return
        if out.transport == "udp":
            self._send_udp(out.data, out.dest)
            return
        key = (out.transport, out.dest[0], out.dest[1])
        conn = self._conns.get(key)
        if conn is None or conn.closed:
            if out.data.startswith(b"SIP/2.0 ") and self._peer_closed(key):
                # The client closed its own flow (RFC 3261 18.2.2 would dial back to the
                # same ephemeral port, where nobody listens any more).
                self.count("replies_after_close")
                return
            conn = self._connect(out)
            if conn is None:
                return
        if conn.send(out.data):
            self.stats["sent"] += 1
        else:
            self.stats["send_failures"] += 1
            self.report_error(out.dest, out.transport)

    def ping(self, target: Target) -> None:
        """One keep-alive: CRLFCRLF on an open stream to `target`, CRLF over UDP."""
        if not self._addressed(target.addr, target.transport):
            return
        if target.transport == "udp":
            self._send_udp(b"\r\n", target.addr)
        else:
            conn = self._conns.get((target.transport, target.host, target.port))
            if conn is None or conn.closed or not conn.send(PING):
                return
        self.stats["pings_sent"] += 1

    def connection_count(self) -> int:
        """Open stream connections (aliases counted once)."""
        return len({id(c) for c in self._conns.values() if not c.closed})

    def _addressed(self, dest: Address, transport: str) -> bool:
        """False (and the agent told) for a host name: it is never resolved here.

        `socket.sendto` with a name runs the system resolver inside the call, on the event
        loop, which stalls every call's audio while DNS is down; names are resolved by the
        trunk lookups and only their addresses get this far.
        """
        if is_ip(dest[0]):
            return True
        self.count("unresolved_dest")
        log.warning("SIP send to %s:%s over %s refused: a host name, not an address",
                    dest[0], dest[1], transport)
        self.report_error(dest, transport)
        return False

    def _send_udp(self, data: bytes, dest: Address) -> None:
        if self._udp is None or self._udp.transport is None:
            self.stats["send_failures"] += 1
            self.report_error(dest, "udp")
            return
        self._udp.last_dest = dest
        try:
            self._udp.transport.sendto(data, dest)
            self.stats["sent"] += 1
            if self.trace.active:
                self.trace.message("out", "udp", self._udp.local, dest, data)
        except OSError as exc:
            log.warning("SIP send to %s:%s failed: %s", dest[0], dest[1], exc)
            self.stats["send_failures"] += 1
            self.report_error(dest, "udp")

    def _connect(self, out: Outgoing) -> StreamConnection | None:
        ctx: ssl.SSLContext | None = None
        sni: str | None = None
        if out.transport == "tls":
            ctx, sni = self._tls_for(out)
        elif out.transport != "tcp":
            log.warning("unknown SIP transport %r", out.transport)
            return None
        if self.connection_count() >= self.max_connections:
            self.stats["refused"] += 1
            self.report_error(out.dest, out.transport)
            return None
        conn = StreamConnection(self, out.transport, True, out.dest)
        self._conns[(out.transport, out.dest[0], out.dest[1])] = conn
        task = self.loop.create_task(self._open(conn, out.dest, ctx, sni))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return conn

    def _tls_for(self, out: Outgoing) -> tuple[ssl.SSLContext, str]:
        for name in (out.server_name, out.dest[0]):
            if name and name.lower() in self._tls:
                ctx, settings = self._tls[name.lower()]
                return ctx, settings.server_name or out.server_name or out.dest[0]
        if self._default_tls is None:
            self._default_tls = client_context(TlsClientSettings())
        return self._default_tls, out.server_name or out.dest[0]

    async def _open(self, conn: StreamConnection, dest: Address, ctx: ssl.SSLContext | None,
                    sni: str | None) -> None:
        self.stats["connects"] += 1
        try:
            await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: conn, dest[0], dest[1], ssl=ctx,
                    server_hostname=sni if ctx is not None else None,
                ),
                self.connect_timeout,
            )
        except (OSError, ssl.SSLError, TimeoutError, ValueError) as exc:
            self.stats["connect_failures"] += 1
            log.warning("SIP %s connection to %s:%s failed: %s", conn.name, dest[0], dest[1],
                        exc or type(exc).__name__)
            conn.closed = True
            self._drop(conn)
            self.report_error(dest, conn.name)
            self.after_input()

    # -- called by the protocols

    def accept_connection(self, conn: StreamConnection) -> bool:
        """Register a new connection; refuse an inbound one beyond `max_connections`."""
        if conn.outbound:
            return True
        if self.connection_count() >= self.max_connections:
            self.stats["refused"] += 1
            return False
        assert conn.peer is not None
        self.stats["accepted"] += 1
        self._conns[(conn.name, conn.peer[0], conn.peer[1])] = conn
        return True

    def deliver(self, data: bytes, addr: Address, transport: str,
                conn: StreamConnection | None = None) -> None:
        """Hand one whole message to the agent; the agent must not raise, but a bug must
        not take the socket down either."""
        if conn is not None and not data.startswith(b"SIP/2.0"):
            self._note_alias(data, conn)
        try:
            self.core.receive_datagram(data, addr, self.loop.time(), transport=transport)
        except Exception:
            log.exception("SIP input from %s:%s raised", addr[0], addr[1])

    def forget(self, conn: StreamConnection, exc: Exception | None) -> None:
        """A connection closed: drop its table entries.

        An outbound flow the peer closed or broke is a transport error for its address
        (a request in flight on it can get no response there); an inbound one just goes.
        """
        self._drop(conn)
        if conn.closed_locally:
            return
        if not conn.outbound and conn.peer is not None:
            self._closed_flows[(conn.name, conn.peer[0], conn.peer[1])] = self.loop.time()
            while len(self._closed_flows) > MAX_CLOSED_FLOWS:
                self._closed_flows.popitem(last=False)
        dest = conn.key or conn.peer
        if dest is not None and (exc is not None or conn.outbound):
            self.report_error(dest, conn.name)
            self.after_input()

    def report_error(self, dest: Address, transport: str) -> None:
        """Tell the agent that `dest` cannot be reached over `transport`."""
        try:
            self.core.transport_error(dest, self.loop.time(), transport=transport)
        except Exception:
            log.exception("transport_error for %s:%s raised", dest[0], dest[1])

    def count(self, name: str) -> None:
        """Bump a counter in `stats`."""
        self.stats[name] = self.stats.get(name, 0) + 1

    def _peer_closed(self, key: tuple[str, str, int]) -> bool:
        closed_at = self._closed_flows.get(key)
        if closed_at is None:
            return False
        if self.loop.time() - closed_at > CLOSED_FLOW_MEMORY:
            del self._closed_flows[key]
            return False
        return True

    def _drop(self, conn: StreamConnection) -> None:
        for key in [k for k, c in self._conns.items() if c is conn]:
            del self._conns[key]

    def _note_alias(self, data: bytes, conn: StreamConnection) -> None:
        head = data.split(b"\r\n\r\n", 1)[0]
        match = _VIA_ALIAS.search(head)
        if match is None:
            return
        host = match.group(1).decode("latin-1").strip("[]")
        port = int(match.group(2) or (5061 if conn.name == "tls" else 5060))
        if is_ip(host) and 0 < port < 65536:
            self._conns.setdefault((conn.name, host, port), conn)

    # -- idle connections

    def _arm_sweeper(self) -> None:
        period = max(1.0, self.idle_timeout / 4)
        self._sweeper = self.loop.call_later(period, self._sweep)

    def _sweep(self) -> None:
        self.close_idle(self.loop.time())
        self._arm_sweeper()

    def close_idle(self, now: float) -> int:
        """Close connections silent for longer than `idle_timeout`; returns how many."""
        closed = 0
        for conn in set(self._conns.values()):
            if now - conn.last_activity > self.idle_timeout:
                self.stats["idle_closed"] += 1
                conn.close()
                self._drop(conn)
                closed += 1
        return closed
