"""Per-source token buckets, driven by a fake clock (plain `now` values)."""

from __future__ import annotations

import pytest

from gateway.security.ratelimit import (
    AUTH_FAILURE,
    CALL,
    REQUEST,
    Budget,
    RateLimiter,
    RateLimits,
    source_key,
)

ATTACKER = "203.0.113.7"
OTHER = "198.51.100.9"


def small_limits() -> RateLimits:
    return RateLimits(
        request=Budget(rate=10.0, burst=20.0),
        call=Budget(rate=1.0, burst=3.0),
        auth_failure=Budget(rate=1.0 / 60.0, burst=3.0),
    )


def test_burst_then_steady_rate_for_requests() -> None:
    rl = RateLimiter(small_limits())
    results = [rl.check_request(ATTACKER, "OPTIONS", 100.0).allowed for _ in range(25)]
    assert results == [True] * 20 + [False] * 5
    # 10 tokens/s: after 0.5 s five more requests pass, the sixth does not.
    later = [rl.check_request(ATTACKER, "OPTIONS", 100.5).allowed for _ in range(6)]
    assert later == [True] * 5 + [False]


def test_invite_and_register_share_a_smaller_budget() -> None:
    rl = RateLimiter(small_limits())
    assert [rl.check_request(ATTACKER, "INVITE", 0.0).allowed for _ in range(2)] == [True, True]
    assert rl.check_request(ATTACKER, "register", 0.0).allowed  # method case does not matter
    v = rl.check_request(ATTACKER, "REGISTER", 0.0)
    assert (v.allowed, v.bucket) == (False, CALL)
    assert v.retry_after == pytest.approx(1.0)
    # Other methods still have request budget.
    assert rl.check_request(ATTACKER, "OPTIONS", 0.0).allowed
    # One second later one call token is back.
    assert rl.check_request(ATTACKER, "INVITE", 1.0).allowed
    assert not rl.check_request(ATTACKER, "INVITE", 1.0).allowed


def test_refused_request_consumes_nothing() -> None:
    rl = RateLimiter(small_limits())
    for _ in range(3):
        rl.check_request(ATTACKER, "INVITE", 0.0)
    for _ in range(50):
        assert rl.check_request(ATTACKER, "INVITE", 0.0).bucket == CALL
    # The 50 refused INVITEs drew no request tokens: 17 of 20 remain.
    results = [rl.check_request(ATTACKER, "OPTIONS", 0.0).allowed for _ in range(18)]
    assert results == [True] * 17 + [False]


def test_sources_are_independent() -> None:
    rl = RateLimiter(small_limits())
    for _ in range(20):
        rl.check_request(ATTACKER, "OPTIONS", 0.0)
    assert not rl.check_request(ATTACKER, "OPTIONS", 0.0).allowed
    assert rl.check_request(OTHER, "OPTIONS", 0.0).allowed


def test_auth_failures_lock_the_source_out_until_a_token_refills() -> None:
    rl = RateLimiter(small_limits())
    v1 = rl.record_auth_failure(ATTACKER, 10.0)
    v2 = rl.record_auth_failure(ATTACKER, 11.0)
    assert v1.allowed and v2.allowed
    v3 = rl.record_auth_failure(ATTACKER, 12.0)
    assert (v3.allowed, v3.bucket, v3.first) == (False, AUTH_FAILURE, True)
    assert v3.retry_after == pytest.approx(60.0 - 2.0 / 60.0 * 60.0, abs=1e-6)
    # Locked out: even an OPTIONS is refused, and not reported again in the window.
    v = rl.check_request(ATTACKER, "OPTIONS", 13.0)
    assert (v.allowed, v.bucket, v.first) == (False, AUTH_FAILURE, False)
    # Others are unaffected.
    assert rl.check_request(OTHER, "REGISTER", 13.0).allowed
    # At t=12 the bucket held 2/60 of a token; at 1/60 per second it is whole at t=70.
    assert not rl.check_request(ATTACKER, "REGISTER", 69.0).allowed
    assert rl.check_request(ATTACKER, "REGISTER", 71.0).allowed


def test_one_report_per_source_per_window_with_suppressed_count() -> None:
    rl = RateLimiter(small_limits(), report_window=60.0)
    for _ in range(20):
        rl.check_request(ATTACKER, "OPTIONS", 0.0)
    firsts = []
    for i in range(100):
        v = rl.check_request(ATTACKER, "OPTIONS", 0.0 + i * 0.001)
        assert not v.allowed
        firsts.append(v.first)
    assert firsts == [True] + [False] * 99
    # A different source gets its own report.
    for _ in range(20):
        rl.check_request(OTHER, "OPTIONS", 1.0)
    assert rl.check_request(OTHER, "OPTIONS", 1.0).first
    # After the window the next hit is reported again, carrying the 99 suppressed hits.
    for _ in range(20):
        rl.check_request(ATTACKER, "OPTIONS", 60.0)  # refilled: drain it again
    v = rl.check_request(ATTACKER, "OPTIONS", 60.0)
    assert (v.first, v.suppressed) == (True, 99)
    v = rl.check_request(ATTACKER, "OPTIONS", 60.0)
    assert (v.first, v.suppressed) == (False, 1)


def test_memory_is_capped_least_recently_seen_goes_first() -> None:
    rl = RateLimiter(small_limits(), max_sources=4)
    for i in range(4):
        rl.check_request(f"192.0.2.{i}", "OPTIONS", 0.0)
    rl.check_request("192.0.2.0", "OPTIONS", 0.1)  # refresh .0: .1 is now the oldest
    rl.check_request("192.0.2.99", "OPTIONS", 0.2)
    assert len(rl) == 4
    assert "192.0.2.1" not in rl
    assert "192.0.2.0" in rl and "192.0.2.99" in rl


def test_spoofed_flood_does_not_evict_a_penalised_guesser() -> None:
    rl = RateLimiter(small_limits(), max_sources=64)
    for t in range(3):
        rl.record_auth_failure(ATTACKER, float(t))
    assert not rl.check_request(ATTACKER, "REGISTER", 3.0).allowed
    # 1000 spoofed sources, all newer than the attacker's entry.
    for i in range(1000):
        rl.check_request(f"10.{i // 250}.{i % 250}.1", "OPTIONS", 4.0)
    assert len(rl) == 64
    assert ATTACKER in rl
    assert not rl.check_request(ATTACKER, "REGISTER", 5.0).allowed


def test_idle_entries_expire_once_nothing_would_be_lost() -> None:
    rl = RateLimiter(small_limits(), report_window=30.0)
    # Slowest refill: 3 auth-failure tokens at 1/60 per second = 180 s.
    assert rl.idle_after == pytest.approx(180.0)
    rl.check_request(ATTACKER, "OPTIONS", 0.0)
    rl.check_request(OTHER, "OPTIONS", 100.0)
    assert rl.expire(179.0) == 0
    assert rl.expire(180.0) == 1
    assert ATTACKER not in rl and OTHER in rl
    rl.check_request("192.0.2.1", "OPTIONS", 500.0)  # expiry also runs on every call
    assert OTHER not in rl and len(rl) == 1


def test_ipv6_sources_share_a_budget_per_64() -> None:
    rl = RateLimiter(small_limits())
    for i in range(20):
        assert rl.check_request(f"2001:db8:1:2::{i + 1:x}", "OPTIONS", 0.0).allowed
    assert not rl.check_request("2001:db8:1:2:ffff::1", "OPTIONS", 0.0).allowed
    assert rl.check_request("2001:db8:1:3::1", "OPTIONS", 0.0).allowed
    assert source_key("2001:db8:1:2:abcd::1") == "2001:db8:1:2::/64"
    assert source_key("::ffff:192.0.2.5") == "192.0.2.5"


def test_clock_going_backwards_grants_nothing() -> None:
    rl = RateLimiter(small_limits())
    for _ in range(3):
        rl.check_request(ATTACKER, "INVITE", 100.0)
    assert not rl.check_request(ATTACKER, "INVITE", 50.0).allowed
    assert not rl.check_request(ATTACKER, "INVITE", 100.5).allowed
    assert rl.check_request(ATTACKER, "INVITE", 101.0).allowed


def test_forget_resets_a_source() -> None:
    rl = RateLimiter(small_limits())
    for t in range(3):
        rl.record_auth_failure(ATTACKER, float(t))
    rl.forget(ATTACKER)
    assert rl.check_request(ATTACKER, "REGISTER", 3.0).allowed


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Budget(rate=0.0, burst=5.0), "rate"),
        (lambda: Budget(rate=1.0, burst=0.5), "burst"),
        (lambda: RateLimiter(max_sources=0), "max_sources"),
        (lambda: RateLimiter(report_window=0.0), "report_window"),
        (lambda: RateLimiter().check_request("not-an-ip", "INVITE", 0.0), "source ip"),
    ],
)
def test_bad_settings_and_input_are_refused(make: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()  # type: ignore[operator]


def test_defaults_let_a_phone_register_but_stop_a_scanner() -> None:
    rl = RateLimiter()
    phone, scanner = "192.168.1.20", "203.0.113.50"
    # A phone: REGISTER, 401, REGISTER with credentials, every few minutes, for a day.
    now = 0.0
    for _ in range(300):
        assert rl.check_request(phone, "REGISTER", now).allowed
        assert rl.check_request(phone, "REGISTER", now + 0.05).allowed
        now += 300.0
    # A scanner trying passwords as fast as it can is locked out after the burst of five.
    allowed_tries = 0
    t = 0.0
    for _ in range(1000):
        if rl.check_request(scanner, "REGISTER", t).allowed:
            allowed_tries += 1
            rl.record_auth_failure(scanner, t)
        t += 0.01
    assert allowed_tries == RateLimits().auth_failure.burst
    assert AUTH_FAILURE == "auth-failure" and REQUEST == "request"


# --- what `branchline security` lists and lifts ------------------------------------------


def test_locked_out_source_is_listed_with_time_left_and_failures() -> None:
    rl = RateLimiter(small_limits())
    for _ in range(3):
        rl.record_auth_failure(ATTACKER, 100.0)
    rl.check_request(OTHER, "OPTIONS", 100.0)
    [entry] = rl.blocked(110.0)
    assert entry.source == ATTACKER and entry.bucket == AUTH_FAILURE
    assert entry.failures == 3
    # Empty after three failures; one token back takes 60 s, 10 s of it have passed.
    assert entry.seconds_left == pytest.approx(50.0)
    # Looking does not refill anything: the same answer a second later, minus a second.
    assert rl.blocked(111.0)[0].seconds_left == pytest.approx(49.0)
    assert rl.check_request(ATTACKER, "REGISTER", 111.0).limited


def test_lock_out_ends_by_itself_and_then_is_not_listed() -> None:
    rl = RateLimiter(small_limits())
    for _ in range(3):
        rl.record_auth_failure(ATTACKER, 0.0)
    assert rl.blocked(59.0)
    assert rl.blocked(61.0) == []


def test_unblock_lifts_the_lock_out_at_once() -> None:
    rl = RateLimiter(small_limits())
    for _ in range(3):
        rl.record_auth_failure(ATTACKER, 0.0)
    assert rl.check_request(ATTACKER, "REGISTER", 1.0).limited
    assert rl.unblock(ATTACKER) is True
    assert rl.blocked(1.0) == []
    assert rl.check_request(ATTACKER, "REGISTER", 1.0).allowed
    assert rl.unblock(OTHER) is False  # never seen: nothing to lift
    assert rl.unblock("not-an-address") is False


def test_ipv6_lock_out_is_listed_by_prefix_and_lifted_by_prefix_or_address() -> None:
    rl = RateLimiter(small_limits())
    for _ in range(3):
        rl.record_auth_failure("2001:db8:1:2::7", 0.0)
    [entry] = rl.blocked(1.0)
    assert entry.source == "2001:db8:1:2::/64"
    assert rl.unblock(entry.source)
    for _ in range(3):
        rl.record_auth_failure("2001:db8:1:2::7", 2.0)
    assert rl.unblock("2001:db8:1:2::99")  # another host in the same /64
    assert rl.blocked(3.0) == []


def test_request_flood_is_listed_under_its_own_bucket() -> None:
    rl = RateLimiter(small_limits())
    while rl.check_request(ATTACKER, "OPTIONS", 0.0).allowed:
        pass
    [entry] = rl.blocked(0.0)
    assert entry.bucket == REQUEST and entry.failures == 0
    assert entry.seconds_left == pytest.approx(0.1)
