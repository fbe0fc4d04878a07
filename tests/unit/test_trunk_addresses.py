"""The trunk address schedule: answers kept for their TTL (clamped), failures retried with backoff."""

from __future__ import annotations

import pytest

from gateway.config.schema import HostPort, TrunkConfig
from gateway.security.trunk_addresses import (
    RefreshPolicy,
    TrunkAddressBook,
    TrunkHost,
    by_trunk,
    trunk_hosts,
)

HOST = TrunkHost("main", "sip.provider.example", None, "udp")
POLICY = RefreshPolicy(min_ttl=30.0, max_ttl=3600.0, retry_min=5.0, retry_max=60.0,
                       max_stale=600.0)


def test_every_host_is_due_at_start_and_pending_until_answered() -> None:
    book = TrunkAddressBook([HOST], POLICY, now=100.0)
    assert book.next_deadline() == 100.0
    assert book.due(100.0) == [HOST]
    assert book.due(100.0) == []  # pending: not handed out twice
    assert book.next_deadline() is None
    assert book.addresses() == {HOST: ()}


def test_answer_is_kept_for_its_ttl_then_an_address_no_longer_returned_is_dropped() -> None:
    book = TrunkAddressBook([HOST], POLICY, now=0.0)
    book.due(0.0)
    assert book.answered(HOST, [("198.51.100.4", 5060), ("198.51.100.5", 5062)], 120.0, 0.0)
    assert book.next_deadline() == 120.0
    assert book.due(119.0) == []
    assert book.due(120.0) == [HOST]
    assert book.answered(HOST, [("198.51.100.5", 5062)], 120.0, 120.0)
    assert book.addresses() == {HOST: (("198.51.100.5", 5062),)}
    book.due(240.0)
    assert not book.answered(HOST, [("198.51.100.5", 5062)], 120.0, 240.0)  # unchanged


@pytest.mark.parametrize(("ttl", "kept"), [(0.0, 30.0), (5.0, 30.0), (300.0, 300.0),
                                           (604800.0, 3600.0)])
def test_ttl_is_clamped_to_the_floor_and_ceiling(ttl: float, kept: float) -> None:
    book = TrunkAddressBook([HOST], POLICY, now=0.0)
    book.due(0.0)
    book.answered(HOST, [("192.0.2.1", 5060)], ttl, 0.0)
    assert book.next_deadline() == kept


def test_failed_lookups_back_off_and_the_trunk_is_trusted_once_dns_answers() -> None:
    book = TrunkAddressBook([HOST], POLICY, now=0.0)
    now = 0.0
    waits = []
    for _ in range(6):
        assert book.due(now) == [HOST]
        assert not book.failed(HOST, now)  # nothing was trusted, nothing changes
        deadline = book.next_deadline()
        assert deadline is not None
        waits.append(deadline - now)
        now = deadline
    assert waits == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]
    assert book.addresses() == {HOST: ()}
    assert book.due(now) == [HOST]
    assert book.answered(HOST, [("192.0.2.1", 5060)], 60.0, now)
    assert book.addresses() == {HOST: (("192.0.2.1", 5060),)}
    assert book.failures(HOST) == 0
    assert book.next_deadline() == now + 60.0


def test_a_dns_outage_keeps_the_last_answer_until_max_stale() -> None:
    book = TrunkAddressBook([HOST], POLICY, now=0.0)
    book.due(0.0)
    book.answered(HOST, [("192.0.2.1", 5060)], 60.0, 0.0)
    book.due(60.0)
    assert not book.failed(HOST, 60.0)
    assert book.addresses()[HOST] == (("192.0.2.1", 5060),)
    book.due(659.0)
    assert not book.failed(HOST, 659.0)
    book.due(660.0)
    assert book.failed(HOST, 660.0)  # 600 s past expiry: dropped
    assert book.addresses()[HOST] == ()


def test_an_empty_answer_untrusts_at_once_and_is_retried() -> None:
    book = TrunkAddressBook([HOST], POLICY, now=0.0)
    book.due(0.0)
    book.answered(HOST, [("192.0.2.1", 5060)], 60.0, 0.0)
    book.due(60.0)
    assert book.answered(HOST, [], 5.0, 60.0)
    assert book.addresses()[HOST] == ()
    assert book.next_deadline() == 65.0


def test_an_empty_answer_is_retried_once_its_negative_ttl_ran_out() -> None:
    """RFC 2308: the zone says how long "no such name" holds; a retry inside it is wasted."""
    book = TrunkAddressBook([HOST], POLICY, now=0.0)
    book.due(0.0)
    assert not book.answered(HOST, [], 20.0, 0.0)
    assert book.next_deadline() == 20.0  # not at retry_min (5 s)
    book.due(20.0)
    book.answered(HOST, [], 2.0, 20.0)
    assert book.next_deadline() == 30.0  # the backoff (10 s) when the TTL is shorter
    book.due(30.0)
    book.answered(HOST, [], 3600.0, 30.0)
    assert book.next_deadline() == 90.0  # never past retry_max


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="min_ttl"):
        RefreshPolicy(min_ttl=0.0)
    with pytest.raises(ValueError, match="retry_min"):
        RefreshPolicy(retry_min=10.0, retry_max=5.0)


def test_trunk_hosts_skip_ip_literals_and_keep_srv_lookups_portless() -> None:
    trunks = [
        TrunkConfig("a", HostPort("carrier.example", 5060, port_given=False),
                    HostPort("sbc.carrier.example", 5070), "carrier.example"),
        TrunkConfig("b", HostPort("192.0.2.7", 5060), HostPort("[2001:db8::1]", 5060), "b",
                    transport="tcp"),
    ]
    assert trunk_hosts(trunks) == (
        TrunkHost("a", "carrier.example", None, "udp"),
        TrunkHost("a", "sbc.carrier.example", 5070, "udp"),
    )
    grouped = by_trunk({trunk_hosts(trunks)[0]: [("192.0.2.1", 5071)],
                        trunk_hosts(trunks)[1]: [("192.0.2.1", 5071), ("192.0.2.2", 5070)]})
    assert grouped == {"a": [("192.0.2.1", 5071), ("192.0.2.2", 5070)]}
