"""Trunks at the SIP edge: trusted by what their names resolve to, and rate-limited all the same.

`trunk_sources_pinned` is what the daemon builds its ACL with (through `build_edge` and
`TrunkTrust`), so it is tested here with the real config type.
"""

from __future__ import annotations

import logging

import pytest

from gateway.config.schema import HostPort, TrunkConfig
from gateway.runtime.edge import TRUNK_LIMITS, SipEdge, trunk_sources_pinned
from gateway.security.acl import SourceAcl, TrunkSource
from gateway.security.events import LOGGER_NAME
from gateway.security.ratelimit import Budget, RateLimits
from gateway.security.trunk_addresses import TrunkHost
from gateway.sip.events import Accept, Drop, Respond
from gateway.sip.message import Request, parse_message

SECRET = b"0123456789abcdef0123456789abcdef"
TRUNK = ("192.0.2.10", 5060)
STRANGER = ("203.0.113.7", 5072)

SRV_TRUNK = TrunkConfig("carrier", HostPort("carrier.example", 5060, port_given=False),
                        HostPort("carrier.example", 5060, port_given=False), "carrier.example")
SRV_HOST = TrunkHost("carrier", "carrier.example", None, "udp")


def options(src: tuple[str, int], n: int, method: str = "OPTIONS") -> Request:
    text = (f"{method} sip:gw.example SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {src[0]}:{src[1]};branch=z9hG4bK{n}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:t@{src[0]}>;tag=f{n}\r\nTo: <sip:gw.example>\r\n"
            f"Call-ID: c{n}\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n")
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


def edge_for(trunks: list[TrunkConfig], resolved: dict[TrunkHost, list[tuple[str, int]]],
             **kwargs: object) -> SipEdge:
    acl = SourceAcl(trunk_sources_pinned(trunks, resolved), local_networks=None)
    return SipEdge(acl, realm="gw", nonce_secret=SECRET, **kwargs)  # type: ignore[arg-type]


def verdicts(edge: SipEdge, src: tuple[str, int], count: int, now: float = 0.0,
             method: str = "OPTIONS") -> list[str]:
    return [type(edge.filter(options(src, i, method), src, "udp", now, False)).__name__
            for i in range(count)]


# ---------------------------------------------------------------------- who is a trunk


def test_production_sources_from_the_real_config_type() -> None:
    ip_trunk = TrunkConfig("pbx", HostPort("198.51.100.7", 5060), HostPort("198.51.100.8", 5070),
                           "pbx")
    resolved = {SRV_HOST: [("192.0.2.21", 5071), ("192.0.2.22", 5073)]}
    assert trunk_sources_pinned([ip_trunk, SRV_TRUNK], resolved) == (
        TrunkSource("pbx", ("198.51.100.7",), 5060),
        TrunkSource("pbx", ("198.51.100.8",), 5070),
        TrunkSource("carrier", ("192.0.2.21",), 5071),
        TrunkSource("carrier", ("192.0.2.22",), 5073),
    )
    assert trunk_sources_pinned([ip_trunk, SRV_TRUNK], resolved, pin_ports=False) == (
        TrunkSource("pbx", ("198.51.100.7", "198.51.100.8")),
        TrunkSource("carrier", ("192.0.2.21", "192.0.2.22")),
    )


def test_srv_target_is_trusted_on_its_port_once_resolved() -> None:
    unresolved = edge_for([SRV_TRUNK], {})
    src = ("192.0.2.21", 5071)
    assert isinstance(unresolved.filter(options(src, 1), src, "udp", 0.0, False), Respond)
    edge = edge_for([SRV_TRUNK], {SRV_HOST: [src]})
    assert edge.filter(options(src, 1), src, "udp", 0.0, False) == Accept()
    assert edge.call_source("c1", src) is not None
    other_port = ("192.0.2.21", 5060)
    assert isinstance(edge.filter(options(other_port, 2), other_port, "udp", 0.0, False),
                      Respond)


def test_fresh_answers_swap_in_without_losing_counters() -> None:
    old, new = ("192.0.2.21", 5071), ("192.0.2.23", 5071)
    edge = edge_for([SRV_TRUNK], {SRV_HOST: [old]})
    assert edge.filter(options(old, 1), old, "udp", 0.0, False) == Accept()
    edge.with_trunk_sources(trunk_sources_pinned([SRV_TRUNK], {SRV_HOST: [new]}))
    assert isinstance(edge.filter(options(old, 2), old, "udp", 1.0, False), Respond)
    assert edge.filter(options(new, 3), new, "udp", 1.0, False) == Accept()
    assert edge.stats["trunk"] == 2


# ---------------------------------------------------------------------- trunk rate limits


def test_trusted_trunk_flood_is_limited_at_the_higher_trunk_limit(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER_NAME)
    ip_trunk = TrunkConfig("main", HostPort(*TRUNK), HostPort(*TRUNK), "main")
    edge = edge_for([ip_trunk], {})
    burst = int(TRUNK_LIMITS.request.burst)
    got = verdicts(edge, TRUNK, burst + 300)
    assert got == ["Accept"] * burst + ["Drop"] * 300
    assert edge.stats["trunk"] == burst and edge.stats["trunk_rate_limited"] == 300
    # A stranger is held to the lower budget (100), so the trunk's is higher.
    stranger = verdicts(edge, STRANGER, burst)
    assert stranger.count("Drop") == burst - 100
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER_NAME]
    trunk_lines = [ln for ln in lines if "event=trunk-rate-limited " in ln]
    assert len(trunk_lines) == 1 and 'trunk="main"' in trunk_lines[0]
    # The trunk's own event kind is not one fail2ban bans on: a spoofed flood must not
    # get the provider's address banned.
    assert not [ln for ln in lines if f"event=rate-limited src={TRUNK[0]}:" in ln]
    # It refills at the trunk's rate: one second later 100 more get through.
    assert verdicts(edge, TRUNK, 150, now=1.0).count("Accept") == int(TRUNK_LIMITS.request.rate)


def test_trunk_invites_draw_on_the_trunk_call_budget() -> None:
    ip_trunk = TrunkConfig("main", HostPort(*TRUNK), HostPort(*TRUNK), "main")
    edge = edge_for([ip_trunk], {}, trunk_limits={
        "main": RateLimits(request=Budget(1000.0, 1000.0), call=Budget(1.0, 5.0))})
    got = verdicts(edge, TRUNK, 8, method="INVITE")
    assert got == ["Accept"] * 5 + ["Drop"] * 3
    assert isinstance(edge.filter(options(TRUNK, 99), TRUNK, "udp", 0.0, False), Accept)
    drop = edge.filter(options(TRUNK, 100, "INVITE"), TRUNK, "udp", 0.0, False)
    assert isinstance(drop, Drop) and "call" in drop.reason
