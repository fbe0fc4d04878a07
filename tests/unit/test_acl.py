"""Source ACL: trunk addresses are trusted, local networks must authenticate, others rejected."""

from __future__ import annotations

import pytest

from gateway.security.acl import PRIVATE_NETWORKS, SourceAcl, TrunkSource

PROVIDER = TrunkSource("primary", ("sip.provider.example", "198.51.100.0/28"))
BACKUP = TrunkSource("backup", ("203.0.113.80",), port=5060)
RESOLVED = {"SIP.Provider.Example.": ["192.0.2.10", "2001:db8:5::10"]}


def acl(local: tuple[str, ...] | None = ("192.168.0.0/16",)) -> SourceAcl:
    return SourceAcl([PROVIDER, BACKUP], RESOLVED, local)


@pytest.mark.parametrize(
    ("ip", "port", "trunk"),
    [
        ("192.0.2.10", 5060, "primary"),  # resolved host name (case and trailing dot ignored)
        ("2001:db8:5::10", 5080, "primary"),  # resolved IPv6, any port
        ("::ffff:192.0.2.10", 5060, "primary"),  # IPv4-mapped from a dual-stack socket
        ("198.51.100.15", 40000, "primary"),  # inside the CIDR
        ("203.0.113.80", 5060, "backup"),  # pinned port matches
    ],
)
def test_trunk_addresses_are_trusted(ip: str, port: int, trunk: str) -> None:
    d = acl().check(ip, port)
    assert d.trust == "trunk" and d.is_trunk
    assert d.trunk == trunk
    assert trunk in d.reason


def test_reason_names_the_host_name_a_trunk_was_matched_through() -> None:
    assert "sip.provider.example" in acl().check("192.0.2.10", 5060).reason


@pytest.mark.parametrize(
    ("ip", "port", "trust"),
    [
        ("198.51.100.16", 5060, "reject"),  # just outside the /28
        ("192.0.2.11", 5060, "reject"),  # next to the resolved address
        ("203.0.113.81", 5060, "reject"),
        ("192.168.1.20", 5060, "authenticate"),  # a phone on the LAN
        ("10.0.0.5", 5060, "reject"),  # private, but not this branch's LAN
    ],
)
def test_everyone_else_authenticates_or_is_rejected(ip: str, port: int, trust: str) -> None:
    d = acl().check(ip, port)
    assert d.trust == trust and d.trunk is None
    assert d.must_authenticate == (trust == "authenticate")
    assert d.rejected == (trust == "reject")


def test_pinned_port_mismatch_is_not_a_trunk_and_says_so() -> None:
    d = acl().check("203.0.113.80", 5062)
    assert d.trust == "reject"
    assert "backup" in d.reason and "5062" in d.reason


def test_no_local_network_list_means_anyone_may_authenticate() -> None:
    assert acl(None).check("203.0.113.200", 5060).trust == "authenticate"
    assert acl(None).check("198.51.100.1", 5060).trust == "trunk"


def test_empty_local_network_list_means_trunks_only() -> None:
    assert acl(()).check("192.168.1.20", 5060).trust == "reject"


def test_private_networks_constant_covers_lan_and_loopback() -> None:
    a = SourceAcl([], local_networks=PRIVATE_NETWORKS)
    for ip in ("10.1.2.3", "172.20.0.1", "192.168.5.5", "127.0.0.1", "fd00::5", "::1"):
        assert a.check(ip, 5060).trust == "authenticate", ip
    for ip in ("172.32.0.1", "8.8.8.8", "2001:db8::1"):
        assert a.check(ip, 5060).trust == "reject", ip


def test_most_specific_network_wins_over_order() -> None:
    broad = TrunkSource("carrier", ("198.51.100.0/24",))
    narrow = TrunkSource("pbx", ("198.51.100.7",))
    a = SourceAcl([broad, narrow])
    assert a.check("198.51.100.7", 5060).trunk == "pbx"
    assert a.check("198.51.100.8", 5060).trunk == "carrier"


def test_unresolved_host_names_match_nothing_and_are_reported() -> None:
    a = SourceAcl([PROVIDER], resolved={})
    assert a.unresolved == (("primary", "sip.provider.example"),)
    assert a.check("192.0.2.10", 5060).trust == "authenticate"
    fresh = a.with_resolved(RESOLVED)
    assert fresh.unresolved == ()
    assert fresh.check("192.0.2.10", 5060).trunk == "primary"
    # The old ACL is unchanged (the runtime swaps them atomically).
    assert a.check("192.0.2.10", 5060).trust == "authenticate"


def test_with_trunks_swaps_trunk_addresses_and_keeps_local_networks() -> None:
    a = acl().with_trunks([TrunkSource("carrier", ("192.0.2.50",), 5071)])
    assert a.check("192.0.2.50", 5071).trunk == "carrier"
    assert a.check("192.0.2.50", 5060).trust == "reject"
    assert a.check("192.168.1.20", 5060).trust == "authenticate"


def test_with_resolved_keeps_local_networks() -> None:
    a = acl().with_resolved({})
    assert a.check("192.168.1.20", 5060).trust == "authenticate"
    assert a.check("8.8.8.8", 5060).trust == "reject"


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: SourceAcl([TrunkSource("t", ("300.1.2.3",))]), "trunk 't' address '300.1.2.3'"),
        (lambda: SourceAcl([TrunkSource("t", ("bad host!",))]), "host name"),
        (lambda: SourceAcl([TrunkSource("t", ("sip.example:5060",))]), "CIDR"),
        (lambda: SourceAcl([TrunkSource("t", ("192.0.2.1",), port=0)]), "port"),
        (lambda: SourceAcl([], local_networks=["192.168.0.0/33"]), "local_networks"),
        (lambda: acl().check("sip.provider.example", 5060), "ip"),
    ],
)
def test_bad_input_gets_a_named_error(make: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()  # type: ignore[operator]
