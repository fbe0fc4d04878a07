"""The host's links and routes, from rtnetlink: is there a usable way to the trunk now?

Why it exists: a dead WAN link is certain at once, while a missed OPTIONS probe is only a
hint; trunk health counts a link down or a missing route as DOWN straight away.

Two layers, as everywhere in Branchline:
- pure functions over bytes (`build_getroute`, `build_getlink`, `parse_messages`,
  `parse_route`, `parse_link`, `route_verdict`), unit-tested on kernel messages;
- `RouteWatch`, a thin adapter with two raw `AF_NETLINK`/`NETLINK_ROUTE` sockets: one
  subscribed to link and IPv4/IPv6 route changes (read with `loop.add_reader`), one to ask
  RTM_GETROUTE/RTM_GETLINK questions. The kernel answers those inside the send call, so a
  question is a send and a read on a blocking socket with a short timeout.

What counts as unusable (`route_verdict`): no route (ENETUNREACH), an `unreachable`
(EHOSTUNREACH), `prohibit` (EACCES) or `blackhole` (EINVAL from the lookup) route, or one
whose output interface is not up and running (carrier lost, `ip link set ... down`). When
the route vanished because its link went down, the reason names the link ("link down:
veth0") rather than the missing route.

Where netlink cannot be opened (not Linux, no permission, a sandbox) `RouteWatch.available`
is False, one WARNING is logged, and every question answers None ("unknown"): trunk health
then simply goes by its probes.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

log = logging.getLogger("branchline.netlink")

NETLINK_ROUTE = 0
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26
NLM_F_REQUEST = 0x1
RTMGRP_LINK = 0x1
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_ROUTE = 0x400
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_TABLE = 15
IFLA_IFNAME = 3
IFLA_OPERSTATE = 16
IFF_UP = 0x1
IFF_RUNNING = 0x40
IFF_LOWER_UP = 0x10000
RTN_UNICAST = 1
RTN_LOCAL = 2
RTN_BLACKHOLE = 6
RTN_UNREACHABLE = 7
RTN_PROHIBIT = 8
RTN_THROW = 9

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol,
#                                       scope, type, flags
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_RTATTR = struct.Struct("=HH")
_ERRNO = struct.Struct("=i")

_ROUTE_TYPES = {RTN_BLACKHOLE: "blackhole", RTN_UNREACHABLE: "unreachable",
                RTN_PROHIBIT: "prohibit", RTN_THROW: "throw"}
#: What the kernel's route lookup answers for each kind of unusable route.
_LOOKUP_ERRORS = {errno.ENETUNREACH: None, errno.EHOSTUNREACH: "unreachable",
                  errno.EACCES: "prohibit", errno.EPERM: "prohibit",
                  errno.EINVAL: "blackhole"}


@dataclass(frozen=True)
class NlMessage:
    """One netlink message: its type, flags, sequence number and payload."""

    type: int
    flags: int
    seq: int
    payload: bytes


@dataclass(frozen=True)
class RouteInfo:
    """What a route lookup or route notification said (the parts that matter here)."""

    family: int
    type: int
    table: int
    dst: str | None
    dst_len: int
    oif: int | None
    gateway: str | None


@dataclass(frozen=True)
class LinkInfo:
    """One network interface: index, name and whether it is up and has a carrier."""

    index: int
    name: str
    flags: int
    operstate: int | None = None

    @property
    def usable(self) -> bool:
        """Administratively up and running (carrier present)."""
        return bool(self.flags & IFF_UP) and bool(self.flags & (IFF_RUNNING | IFF_LOWER_UP))


# -- building -------------------------------------------------------------------------------


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attr(kind: int, value: bytes) -> bytes:
    raw = _RTATTR.pack(_RTATTR.size + len(value), kind) + value
    return raw + b"\0" * (_align(len(raw)) - len(raw))


def _message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, seq, 0) + body


def build_getroute(dst: str, seq: int) -> bytes:
    """RTM_GETROUTE for one destination address (the kernel's own route lookup)."""
    ip = ipaddress.ip_address(dst)
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    body = _RTMSG.pack(family, ip.max_prefixlen, 0, 0, 0, 0, 0, 0, 0)
    return _message(RTM_GETROUTE, NLM_F_REQUEST, seq, body + _attr(RTA_DST, ip.packed))


def build_getlink(index: int, seq: int) -> bytes:
    """RTM_GETLINK for one interface index."""
    body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0)
    return _message(RTM_GETLINK, NLM_F_REQUEST, seq, body)


# -- parsing --------------------------------------------------------------------------------


def parse_messages(data: bytes) -> list[NlMessage]:
    """Split one datagram from a netlink socket into its messages; stops at garbage."""
    out: list[NlMessage] = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, flags, seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            break
        out.append(NlMessage(kind, flags, seq, data[offset + _NLMSGHDR.size:offset + length]))
        offset += _align(length)
    return out


def _attrs(data: bytes, offset: int) -> Iterator[tuple[int, bytes]]:
    while offset + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size or offset + length > len(data):
            return
        yield kind & 0x3FFF, data[offset + _RTATTR.size:offset + length]
        offset += _align(length)


def _address(family: int, raw: bytes) -> str | None:
    try:
        if family == socket.AF_INET and len(raw) == 4:
            return str(ipaddress.IPv4Address(raw))
        if family == socket.AF_INET6 and len(raw) == 16:
            return str(ipaddress.IPv6Address(raw))
    except ValueError:
        return None
    return None


def parse_error(msg: NlMessage) -> int:
    """The errno of an NLMSG_ERROR (0 = an acknowledgement), as a positive number."""
    if len(msg.payload) < _ERRNO.size:
        return errno.EIO
    code: int = _ERRNO.unpack_from(msg.payload)[0]
    return -code


def parse_route(msg: NlMessage) -> RouteInfo | None:
    """An RTM_NEWROUTE/RTM_DELROUTE payload, or None when it is too short."""
    if len(msg.payload) < _RTMSG.size:
        return None
    family, dst_len, _src, _tos, table, _proto, _scope, rtype, _flags = \
        _RTMSG.unpack_from(msg.payload)
    dst = oif = gateway = None
    for kind, value in _attrs(msg.payload, _RTMSG.size):
        if kind == RTA_DST:
            dst = _address(family, value)
        elif kind == RTA_OIF and len(value) >= 4:
            oif = struct.unpack_from("=I", value)[0]
        elif kind == RTA_GATEWAY:
            gateway = _address(family, value)
        elif kind == RTA_TABLE and len(value) >= 4:
            table = struct.unpack_from("=I", value)[0]
    return RouteInfo(family, rtype, table, dst, dst_len, oif, gateway)


def parse_link(msg: NlMessage) -> LinkInfo | None:
    """An RTM_NEWLINK/RTM_DELLINK payload, or None when it is too short."""
    if len(msg.payload) < _IFINFOMSG.size:
        return None
    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(msg.payload)
    name = f"if{index}"
    operstate = None
    for kind, value in _attrs(msg.payload, _IFINFOMSG.size):
        if kind == IFLA_IFNAME:
            name = value.split(b"\0", 1)[0].decode("utf-8", "replace")
        elif kind == IFLA_OPERSTATE and value:
            operstate = value[0]
    return LinkInfo(index, name, flags, operstate)


def route_verdict(dst: str, route: RouteInfo | None, lookup_errno: int,
                  link: LinkInfo | None, last_link: LinkInfo | None = None
                  ) -> tuple[bool, str]:
    """Is the kernel's answer for `dst` a usable way out? (usable, reason).

    `route`/`lookup_errno`: the RTM_GETROUTE answer (a route, or the error the lookup
    gave); `link`: the route's output interface now; `last_link`: the interface the last
    usable route to `dst` went through, named when the route vanished with its link.
    """
    if route is None:
        if last_link is not None and not last_link.usable:
            return False, f"link down: {last_link.name}"
        kind = _LOOKUP_ERRORS.get(lookup_errno, "")
        if kind is None:
            return False, f"no route to {dst}"
        if kind:
            return False, f"no route to {dst} ({kind})"
        return False, f"no route to {dst} ({os.strerror(lookup_errno)})"
    if route.type in _ROUTE_TYPES:
        return False, f"no route to {dst} ({_ROUTE_TYPES[route.type]})"
    if route.type == RTN_LOCAL:
        return True, f"{dst} is local"
    if link is not None and not link.usable:
        return False, f"link down: {link.name}"
    via = f" via {route.gateway}" if route.gateway else ""
    dev = f" dev {link.name}" if link is not None else ""
    return True, f"route to {dst}{via}{dev}"


# -- the adapter ----------------------------------------------------------------------------


class RouteWatch:
    """Link/route change notifications and route questions over rtnetlink.

    `on_change()` is called (from the event loop, coalesced to once per loop turn) after
    any link or route change; the owner then asks `check(ip)` for the addresses it cares
    about. `check` answers (usable, reason), or None when netlink is unavailable.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, on_change: Callable[[], None], *,
                 query_timeout: float = 0.5) -> None:
        self.loop = loop
        self.on_change = on_change
        self.query_timeout = query_timeout
        self.available = False
        self.changes = 0
        self._events: socket.socket | None = None
        self._query: socket.socket | None = None
        self._seq = 0
        self._scheduled = False
        self._links: dict[int, LinkInfo] = {}
        self._last_oif: dict[str, int] = {}
        self._warned = False

    def start(self) -> bool:
        """Open the sockets and subscribe; False (logged once) where netlink is unavailable."""
        try:
            events = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
            try:
                events.bind((0, RTMGRP_LINK | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE))
                events.setblocking(False)
                query = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
            except OSError:
                events.close()
                raise
            query.bind((0, 0))
            query.settimeout(self.query_timeout)
            self.loop.add_reader(events.fileno(), self._readable)
        except (OSError, AttributeError, NotImplementedError, ValueError) as exc:
            self._warn(f"netlink unavailable ({exc}); trunk health goes by probes alone")
            return False
        self._events, self._query = events, query
        self.available = True
        return True

    def close(self) -> None:
        """Stop listening and close both sockets."""
        if self._events is not None:
            try:
                self.loop.remove_reader(self._events.fileno())
            except (ValueError, RuntimeError):
                pass
            self._events.close()
            self._events = None
        if self._query is not None:
            self._query.close()
            self._query = None
        self.available = False

    def _warn(self, text: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("%s", text)

    def _readable(self) -> None:
        sock = self._events
        if sock is None:
            return
        relevant = False
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # ENOBUFS: we missed some; re-check everything anyway
                relevant = True
                if exc.errno != errno.ENOBUFS:
                    break
                continue
            if not data:
                break
            for msg in parse_messages(data):
                if msg.type in (RTM_NEWLINK, RTM_DELLINK):
                    link = parse_link(msg)
                    if link is not None:
                        if msg.type == RTM_DELLINK:
                            link = LinkInfo(link.index, link.name, 0, link.operstate)
                        self._links[link.index] = link
                    relevant = True
                elif msg.type in (RTM_NEWROUTE, RTM_DELROUTE):
                    relevant = True
        if relevant and not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._changed)

    def _changed(self) -> None:
        self._scheduled = False
        self.changes += 1
        try:
            self.on_change()
        except Exception:
            log.exception("netlink change handler raised")

    def _ask(self, request: bytes, seq: int) -> list[NlMessage]:
        sock = self._query
        assert sock is not None
        sock.send(request)
        while True:
            msgs = [m for m in parse_messages(sock.recv(65536)) if m.seq == seq]
            if msgs:
                return msgs

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        return self._seq

    def link(self, index: int) -> LinkInfo | None:
        """The interface with this index, asked of the kernel (None if it is gone)."""
        seq = self._next_seq()
        for msg in self._ask(build_getlink(index, seq), seq):
            if msg.type == RTM_NEWLINK:
                found = parse_link(msg)
                if found is not None:
                    self._links[index] = found
                return found
        return None

    def check(self, ip: str) -> tuple[bool, str] | None:
        """(usable, reason) for the kernel's route to `ip`; None when it cannot be asked."""
        if not self.available:
            return None
        try:
            seq = self._next_seq()
            route: RouteInfo | None = None
            code = 0
            for msg in self._ask(build_getroute(ip, seq), seq):
                if msg.type == NLMSG_ERROR:
                    code = parse_error(msg)
                elif msg.type == RTM_NEWROUTE:
                    route = parse_route(msg)
            link = self.link(route.oif) if route is not None and route.oif else None
            last = self._last_oif.get(ip)
            last_link = None
            if route is None and last is not None:
                last_link = self.link(last) or LinkInfo(
                    last, self._links[last].name if last in self._links else f"if{last}", 0)
            usable, reason = route_verdict(ip, route, code, link, last_link)
            if usable and route is not None and route.oif:
                self._last_oif[ip] = route.oif
            return usable, reason
        except (OSError, ValueError) as exc:
            self._warn(f"netlink route question failed ({exc}); going by probes alone")
            return None


__all__ = ["LinkInfo", "NlMessage", "RouteInfo", "RouteWatch", "build_getlink",
           "build_getroute", "parse_error", "parse_link", "parse_messages", "parse_route",
           "route_verdict"]
