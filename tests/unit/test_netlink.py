"""rtnetlink parsing and building (gateway/runtime/netlink.py) on kernel messages.

The hex strings are the kernel's answers to RTM_GETROUTE for 10.9.0.2, captured in a
network namespace with a veth pair v0 (10.9.0.1/24, index 3) <-> v1, while the route was
normal, a blackhole, unreachable, prohibit, and with no route at all.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct

import pytest

from gateway.runtime import netlink as nl
from gateway.runtime.netlink import LinkInfo, RouteWatch

ROUTE_UP = bytes.fromhex(
    "680000001800000001000000186f2cf402200000fe0000010002000008000f00fe000000080001000a090002"
    "0800040003000000080007000a090001080019000000000024000c0002000000000000000000000000000000"
    "00000000000000000000000000000000000000")
BLACKHOLE = bytes.fromhex(
    "380000000200000003000000186f2cf4eaffffff240000001a0001000300000000000000022000000000000"
    "000000000080001000a090002")
UNREACHABLE = bytes.fromhex(
    "380000000200000005000000186f2cf48fffffff240000001a0001000500000000000000022000000000000"
    "000000000080001000a090002")
PROHIBIT = bytes.fromhex(
    "380000000200000007000000186f2cf4f3ffffff240000001a0001000700000000000000022000000000000"
    "000000000080001000a090002")
NO_ROUTE = bytes.fromhex(
    "380000000200000011000000186f2cf49bffffff240000001a00010011000000000000000220000000000000"
    "000000000800010008080808")


def link_message(index: int, name: str, flags: int, *, kind: int = nl.RTM_NEWLINK) -> bytes:
    ifname = name.encode() + b"\0"
    attr = struct.pack("=HH", 4 + len(ifname), nl.IFLA_IFNAME) + ifname
    attr += b"\0" * (-len(attr) % 4)
    body = struct.pack("=BxHiII", 0, 1, index, flags, 0) + attr
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 7, 0) + body


def verdict(data: bytes, link: LinkInfo | None = None,
            last: LinkInfo | None = None) -> tuple[bool, str]:
    (msg,) = nl.parse_messages(data)
    if msg.type == nl.NLMSG_ERROR:
        return nl.route_verdict("10.9.0.2", None, nl.parse_error(msg), link, last)
    return nl.route_verdict("10.9.0.2", nl.parse_route(msg), 0, link, last)


def test_getroute_request_asks_for_one_host_address() -> None:
    req = nl.build_getroute("10.9.0.2", 3)
    (msg,) = nl.parse_messages(req)
    assert (msg.type, msg.flags, msg.seq) == (nl.RTM_GETROUTE, nl.NLM_F_REQUEST, 3)
    family, dst_len = msg.payload[0], msg.payload[1]
    assert (family, dst_len) == (socket.AF_INET, 32)
    # the kernel echoes our request after an error: the same bytes from the rtmsg on
    (err,) = nl.parse_messages(BLACKHOLE)
    assert err.payload[4 + 16:] == req[16:]
    v6 = nl.parse_messages(nl.build_getroute("2001:db8::1", 4))[0]
    assert (v6.payload[0], v6.payload[1]) == (socket.AF_INET6, 128)
    assert v6.payload.endswith(socket.inet_pton(socket.AF_INET6, "2001:db8::1"))


def test_parse_route_reply() -> None:
    (msg,) = nl.parse_messages(ROUTE_UP)
    route = nl.parse_route(msg)
    assert route is not None
    assert (route.family, route.type, route.dst, route.dst_len) == \
        (socket.AF_INET, nl.RTN_UNICAST, "10.9.0.2", 32)
    assert route.oif == 3 and route.table == 254 and route.gateway is None


def test_usable_route_through_a_running_link() -> None:
    up = LinkInfo(3, "v0", nl.IFF_UP | nl.IFF_RUNNING | nl.IFF_LOWER_UP)
    assert verdict(ROUTE_UP, up) == (True, "route to 10.9.0.2 dev v0")


def test_route_through_a_link_without_carrier_is_link_down() -> None:
    no_carrier = LinkInfo(3, "v0", nl.IFF_UP)  # ip link set <peer> down: NO-CARRIER
    assert verdict(ROUTE_UP, no_carrier) == (False, "link down: v0")


@pytest.mark.parametrize(("data", "reason"), [
    (BLACKHOLE, "no route to 10.9.0.2 (blackhole)"),
    (UNREACHABLE, "no route to 10.9.0.2 (unreachable)"),
    (PROHIBIT, "no route to 10.9.0.2 (prohibit)"),
    (NO_ROUTE, "no route to 10.9.0.2"),
])
def test_lookup_errors_are_unusable_with_their_kind(data: bytes, reason: str) -> None:
    assert verdict(data) == (False, reason)


def test_errno_of_the_error_messages() -> None:
    codes = [nl.parse_error(nl.parse_messages(d)[0]) for d in
             (BLACKHOLE, UNREACHABLE, PROHIBIT, NO_ROUTE)]
    assert codes == [errno.EINVAL, errno.EHOSTUNREACH, errno.EACCES, errno.ENETUNREACH]


def test_route_gone_with_its_link_names_the_link() -> None:
    admin_down = LinkInfo(3, "veth0", 0)
    assert verdict(NO_ROUTE, last=admin_down) == (False, "link down: veth0")
    # a link that is fine again does not take the blame
    assert verdict(NO_ROUTE, last=LinkInfo(3, "veth0", nl.IFF_UP | nl.IFF_RUNNING)) == \
        (False, "no route to 10.9.0.2")


def test_route_types_in_a_reply_are_unusable() -> None:
    for rtype, kind in ((nl.RTN_BLACKHOLE, "blackhole"), (nl.RTN_PROHIBIT, "prohibit")):
        route = nl.RouteInfo(socket.AF_INET, rtype, 254, "10.9.0.2", 32, None, None)
        assert nl.route_verdict("10.9.0.2", route, 0, None) == \
            (False, f"no route to 10.9.0.2 ({kind})")
    local = nl.RouteInfo(socket.AF_INET, nl.RTN_LOCAL, 255, "127.0.0.1", 32, 1, None)
    assert nl.route_verdict("127.0.0.1", local, 0, None)[0] is True


def test_parse_link_and_several_messages_in_one_datagram() -> None:
    data = link_message(3, "veth0", nl.IFF_UP) + link_message(4, "wan", 0, kind=nl.RTM_DELLINK)
    msgs = nl.parse_messages(data)
    assert [m.type for m in msgs] == [nl.RTM_NEWLINK, nl.RTM_DELLINK]
    links = [nl.parse_link(m) for m in msgs]
    assert links == [LinkInfo(3, "veth0", nl.IFF_UP), LinkInfo(4, "wan", 0)]
    assert links[0] is not None and not links[0].usable


def test_garbage_never_raises() -> None:
    assert nl.parse_messages(b"\x01\x02") == []
    assert nl.parse_messages(b"\xff\xff\x00\x00" + b"\0" * 12) == []  # length beyond data
    short = nl.NlMessage(nl.RTM_NEWROUTE, 0, 1, b"\x02")
    assert nl.parse_route(short) is None and nl.parse_link(short) is None
    assert nl.parse_error(nl.NlMessage(nl.NLMSG_ERROR, 0, 1, b"")) == errno.EIO


def test_unavailable_netlink_degrades_to_unknown_and_warns_once(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def refuse(*args: object, **kw: object) -> socket.socket:
        raise OSError(errno.EAFNOSUPPORT, "Address family not supported")

    async def go() -> None:
        watch = RouteWatch(asyncio.get_running_loop(), lambda: None)
        monkeypatch.setattr(nl.socket, "socket", refuse)
        with caplog.at_level(logging.WARNING, logger="branchline.netlink"):
            assert watch.start() is False
            assert watch.start() is False
        assert watch.available is False
        assert watch.check("10.9.0.2") is None
        watch.close()

    asyncio.run(go())
    assert len([r for r in caplog.records if "netlink unavailable" in r.message]) == 1


def test_live_loopback_route_is_usable() -> None:
    """On this host (Linux with netlink, as in CI): the kernel's route to 127.0.0.1."""
    async def go() -> tuple[bool, str] | None:
        watch = RouteWatch(asyncio.get_running_loop(), lambda: None)
        assert watch.start(), "netlink should open on the Linux test host"
        try:
            return watch.check("127.0.0.1")
        finally:
            watch.close()

    assert asyncio.run(go()) == (True, "127.0.0.1 is local")
