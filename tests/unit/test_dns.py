"""RFC 3263 target selection from plain DNS answers (no lookups)."""

from __future__ import annotations

import random
from collections import Counter

from gateway.sip.dns import Naptr, Query, Srv, TargetSelection, order_srv, select_targets
from gateway.sip.target import Target


def test_numeric_ip_needs_no_lookup() -> None:
    sel = TargetSelection("192.0.2.7")
    assert sel.needed() == []
    assert sel.targets() == [Target("udp", "192.0.2.7", 5060)]


def test_numeric_ip_with_tls_uses_5061_and_server_name() -> None:
    sel = TargetSelection("192.0.2.7", transport="tls", server_name="sip.example.com")
    assert sel.targets() == [Target("tls", "192.0.2.7", 5061, "sip.example.com")]


def test_explicit_port_asks_for_addresses_only() -> None:
    sel = TargetSelection("pbx.example.com", port=5080)
    assert sel.needed() == [Query("pbx.example.com", "A"), Query("pbx.example.com", "AAAA")]
    sel.add_answer(Query("pbx.example.com", "A"), ["192.0.2.1"])
    sel.add_answer(Query("pbx.example.com", "AAAA"), ["2001:db8::1"])
    assert sel.needed() == []
    assert sel.targets() == [
        Target("udp", "192.0.2.1", 5080),
        Target("udp", "2001:db8::1", 5080),
    ]


def test_naptr_order_and_preference_then_srv_then_a() -> None:
    answers = {
        Query("example.com", "NAPTR"): [
            Naptr(20, 10, "s", "SIP+D2U", "", "_sip._udp.example.com."),
            Naptr(10, 20, "s", "SIP+D2T", "", "_sip._tcp.example.com."),
            Naptr(10, 10, "s", "SIPS+D2T", "", "_sips._tcp.example.com."),
            Naptr(5, 10, "s", "SIP+D2W", "", "_sip._ws.example.com."),  # unsupported
        ],
        Query("_sips._tcp.example.com", "SRV"): [Srv(0, 0, 5061, "a.example.com.")],
        Query("_sip._tcp.example.com", "SRV"): [Srv(0, 0, 5060, "b.example.com.")],
        Query("_sip._udp.example.com", "SRV"): [Srv(0, 0, 5070, "c.example.com.")],
        Query("a.example.com", "A"): ["192.0.2.1"],
        Query("b.example.com", "A"): ["192.0.2.2"],
        Query("c.example.com", "A"): ["192.0.2.3"],
    }
    assert select_targets("example.com", answers) == [
        Target("tls", "192.0.2.1", 5061, "example.com"),
        Target("tcp", "192.0.2.2", 5060),
        Target("udp", "192.0.2.3", 5070),
    ]


def test_selection_asks_step_by_step() -> None:
    sel = TargetSelection("example.com", families=("A",))
    assert sel.needed() == [Query("example.com", "NAPTR")]
    sel.add_answer(Query("example.com", "NAPTR"), [
        Naptr(10, 10, "s", "SIP+D2U", "", "_sip._udp.example.com")
    ])
    assert sel.needed() == [Query("_sip._udp.example.com", "SRV")]
    sel.add_answer(Query("_sip._udp.example.com", "SRV"), [Srv(1, 0, 5062, "pbx.example.com")])
    assert sel.needed() == [Query("pbx.example.com", "A")]
    sel.add_answer(Query("pbx.example.com", "A"), ["127.0.0.1"])
    assert sel.needed() == []
    assert sel.targets() == [Target("udp", "127.0.0.1", 5062)]


def test_no_naptr_falls_back_to_udp_srv_first() -> None:
    answers = {
        Query("example.com", "NAPTR"): [],
        Query("_sip._udp.example.com", "SRV"): [
            Srv(20, 0, 5090, "backup.example.com"),
            Srv(10, 0, 5080, "primary.example.com"),
        ],
        Query("_sip._tcp.example.com", "SRV"): [Srv(10, 0, 5060, "tcp.example.com")],
        Query("primary.example.com", "A"): ["127.0.0.1"],
        Query("backup.example.com", "A"): ["127.0.0.2"],
        Query("tcp.example.com", "A"): ["127.0.0.3"],
    }
    assert select_targets("example.com", answers, supported=("udp", "tcp")) == [
        Target("udp", "127.0.0.1", 5080),
        Target("udp", "127.0.0.2", 5090),
        Target("tcp", "127.0.0.3", 5060),
    ]


def test_no_naptr_no_srv_uses_a_on_default_port() -> None:
    answers = {Query("example.com", "A"): ["192.0.2.9"]}
    assert select_targets("example.com", answers) == [Target("udp", "192.0.2.9", 5060)]


def test_sips_without_records_uses_tls_5061() -> None:
    answers = {Query("example.com", "A"): ["192.0.2.9"]}
    assert select_targets("example.com", answers, secure=True) == [
        Target("tls", "192.0.2.9", 5061, "example.com")
    ]


def test_explicit_transport_queries_its_srv() -> None:
    sel = TargetSelection("example.com", transport="tcp", families=("A",))
    assert sel.needed() == [Query("_sip._tcp.example.com", "SRV")]
    sel.add_answer(Query("_sip._tcp.example.com", "SRV"), [])
    assert sel.needed() == [Query("example.com", "A")]
    sel.add_answer(Query("example.com", "A"), ["192.0.2.4"])
    assert sel.targets() == [Target("tcp", "192.0.2.4", 5060)]


def test_srv_dot_target_means_no_service() -> None:
    answers = {
        Query("example.com", "NAPTR"): [],
        Query("_sip._udp.example.com", "SRV"): [Srv(0, 0, 0, ".")],
        Query("example.com", "A"): ["192.0.2.9"],
    }
    assert select_targets("example.com", answers, supported=("udp",)) == [
        Target("udp", "192.0.2.9", 5060)
    ]


def test_srv_weights_follow_rfc2782_proportions() -> None:
    records = [Srv(10, 90, 1, "heavy"), Srv(10, 10, 2, "light"), Srv(5, 0, 3, "first")]
    rng = random.Random(1234)
    firsts: Counter[str] = Counter()
    for _ in range(2000):
        ordered = order_srv(records, rng)
        assert ordered[0].target == "first"  # lowest priority always first
        assert sorted(r.target for r in ordered) == ["first", "heavy", "light"]
        firsts[ordered[1].target] += 1
    share = firsts["heavy"] / 2000
    assert 0.85 < share < 0.95


def test_zero_weight_records_still_appear() -> None:
    ordered = order_srv([Srv(1, 0, 1, "z"), Srv(1, 100, 2, "w")], random.Random(0))
    assert {r.target for r in ordered} == {"z", "w"}


def test_selection_is_stable_between_needed_and_targets() -> None:
    records = [Srv(1, 50, 5060 + i, f"h{i}.example.com") for i in range(5)]
    answers = {
        Query("_sip._udp.example.com", "SRV"): records,
        **{Query(f"h{i}.example.com", "A"): [f"127.0.0.{i + 1}"] for i in range(5)},
    }
    sel = TargetSelection("example.com", transport="udp", families=("A",), rng=random.Random(7))
    sel.add_answers(answers)
    assert sel.needed() == []
    assert sel.targets() == sel.targets()


def test_target_count_is_bounded() -> None:
    answers = {
        Query("_sip._udp.example.com", "SRV"): [Srv(1, 0, 5060, "many.example.com")],
        Query("many.example.com", "A"): [f"10.0.{i // 256}.{i % 256}" for i in range(500)],
    }
    assert len(select_targets("example.com", answers, transport="udp")) == 16


def test_garbage_addresses_are_ignored() -> None:
    answers = {Query("example.com", "A"): ["not-an-ip", "192.0.2.1"]}
    assert select_targets("example.com", answers, port=5060) == [Target("udp", "192.0.2.1", 5060)]
