"""Choosing a modem in a GSM route group: strategies, skips, the monthly cap and its rollover."""

from __future__ import annotations

from datetime import datetime

from gateway.config.modems import GsmGroup, ModemAudio, ModemConfig
from gateway.routing.gsm_groups import (
    CAUSE_NO_CHANNEL,
    CAUSE_NO_ROUTE,
    GsmGroupRouter,
    MinuteLedger,
    ModemChosen,
    ModemState,
    NoModem,
    billed_minutes,
)

NOW = datetime(2026, 12, 6, 20, 0)


def modem(name: str, group: str = "mobile", cap: int | None = None) -> ModemConfig:
    return ModemConfig(name, "sim", ModemAudio("sim"), port=f"/dev/{name}", group=group,
                       minute_cap=cap)


def up(*names: str) -> dict[str, ModemState]:
    return {n: ModemState(n, up=True) for n in names}


def chosen(choice: object) -> str:
    assert isinstance(choice, ModemChosen), choice
    return choice.modem


def test_round_robin_takes_turns_and_skips_down_and_busy() -> None:
    router = GsmGroupRouter([GsmGroup("mobile")], [modem("a"), modem("b"), modem("c")])
    states = up("a", "b", "c")
    assert [chosen(router.choose("mobile", "0170", states, NOW)) for _ in range(4)] == [
        "a", "b", "c", "a"]
    states["b"] = ModemState("b", up=False)
    states["c"] = ModemState("c", up=True, active_calls=1)
    assert chosen(router.choose("mobile", "0170", states, NOW)) == "a"
    states["b"] = ModemState("b", up=True)
    assert chosen(router.choose("mobile", "0170", states, NOW)) == "b"


def test_round_robin_keeps_a_turn_when_nothing_was_chosen() -> None:
    router = GsmGroupRouter([GsmGroup("mobile")], [modem("a"), modem("b")])
    assert chosen(router.choose("mobile", "1", up("a", "b"), NOW)) == "a"
    assert isinstance(router.choose("mobile", "1", {}, NOW), NoModem)
    assert chosen(router.choose("mobile", "1", up("a", "b"), NOW)) == "b"


def test_least_used_by_minutes_then_by_active_calls() -> None:
    router = GsmGroupRouter([GsmGroup("mobile", "least-used")],
                            [modem("a"), modem("b"), modem("c")])
    router.record_call("a", 600, NOW)
    router.record_call("b", 60, NOW)
    router.record_call("c", 60, NOW)
    states = {
        "a": ModemState("a", up=True),
        "b": ModemState("b", up=True, active_calls=1, max_calls=2),
        "c": ModemState("c", up=True),
    }
    assert chosen(router.choose("mobile", "1", states, NOW)) == "c"  # b and c tie on minutes
    router.record_call("c", 600, NOW)
    assert chosen(router.choose("mobile", "1", states, NOW)) == "b"
    # minutes from last month do not count
    router2 = GsmGroupRouter([GsmGroup("mobile", "least-used")], [modem("a"), modem("b")])
    router2.record_call("a", 6000, datetime(2026, 11, 30, 23, 0))
    router2.record_call("b", 60, NOW)
    assert chosen(router2.choose("mobile", "1", up("a", "b"), NOW)) == "a"


def test_prefix_longest_match_then_shorter_when_the_best_is_down() -> None:
    group = GsmGroup("cheap", "prefix", {"a": ("017",), "b": ("0171",), "c": ("016",)})
    router = GsmGroupRouter([group], [modem(n, "cheap") for n in "abc"])
    states = up("a", "b", "c")
    assert chosen(router.choose("cheap", "01711234", states, NOW)) == "b"
    assert chosen(router.choose("cheap", "01721234", states, NOW)) == "a"
    assert chosen(router.choose("cheap", "0161", states, NOW)) == "c"
    states["b"] = ModemState("b", up=False)
    assert chosen(router.choose("cheap", "01711234", states, NOW)) == "a"
    none = router.choose("cheap", "0301234", states, NOW)
    assert isinstance(none, NoModem)
    assert (none.q850_cause, none.sip_status) == (CAUSE_NO_ROUTE, 404)
    assert "carries '0301234'" in none.reason


def test_cap_reached_mid_month_skips_the_sim_until_the_first() -> None:
    router = GsmGroupRouter([GsmGroup("mobile")], [modem("a", cap=10), modem("b")])
    mid = datetime(2026, 12, 15, 12, 0)
    router.record_call("a", 9 * 60, mid)
    assert router.minutes_left("a", mid) == 1
    assert chosen(router.choose("mobile", "1", up("a"), mid)) == "a"
    router.record_call("a", 1, mid)  # one started minute: the cap is reached
    assert router.minutes_left("a", mid) == 0
    refused = router.choose("mobile", "1", up("a"), mid)
    assert isinstance(refused, NoModem)
    assert dict(refused.skipped) == {"a": "over its monthly minute cap", "b": "down"}
    assert chosen(router.choose("mobile", "1", up("a", "b"), mid)) == "b"
    # the last evening of the month, local time: still capped
    assert isinstance(router.choose("mobile", "1", up("a"), datetime(2026, 12, 31, 23, 59)),
                      NoModem)
    # midnight on the 1st: a fresh month
    new_year = datetime(2027, 1, 1, 0, 0)
    assert router.minutes_left("a", new_year) == 10
    assert chosen(router.choose("mobile", "1", up("a"), new_year)) == "a"


def test_all_down_gives_a_reason_and_a_cause() -> None:
    router = GsmGroupRouter([GsmGroup("mobile")], [modem("a"), modem("b")])
    states = {"a": ModemState("a", up=False)}  # b has no state at all: not attached
    none = router.choose("mobile", "1", states, NOW)
    assert isinstance(none, NoModem)
    assert none.reason == "every modem in 'mobile' is down"
    assert (none.q850_cause, none.sip_status) == (CAUSE_NO_CHANNEL, 503)
    assert none.skipped == (("a", "down"), ("b", "down"))
    busy = router.choose("mobile", "1", {"a": ModemState("a", True, 1),
                                         "b": ModemState("b", False)}, NOW)
    assert isinstance(busy, NoModem)
    assert busy.reason == "no modem in 'mobile' is free (a busy, b down)"


def test_unknown_and_empty_groups() -> None:
    router = GsmGroupRouter([GsmGroup("empty")], [modem("a", group="other")])
    unknown = router.choose("nope", "1", up("a"), NOW)
    assert isinstance(unknown, NoModem) and unknown.sip_status == 404
    empty = router.choose("empty", "1", up("a"), NOW)
    assert isinstance(empty, NoModem) and empty.reason == "GSM group 'empty' has no modems"


def test_billing_counts_every_started_minute() -> None:
    assert [billed_minutes(s) for s in (0, 0.5, 59.9, 60, 60.01, 119, 120, 121)] == [
        0, 1, 1, 1, 2, 2, 2, 3]
    ledger = MinuteLedger()
    ledger.record_call("a", 61, NOW)
    ledger.record_call("a", 0, NOW)  # unanswered
    assert ledger.minutes("a", NOW) == 2
    assert ledger.minutes("b", NOW) == 0
