"""The router's failover answers: ordered targets per route, emergency numbers that always get
a decision, the order to try targets in given trunk health, and the digit map that always
dials an emergency number."""

from __future__ import annotations

import textwrap

import pytest

from gateway.config import load_config_text
from gateway.config.schema import Config, DialPlan, EmergencySettings
from gateway.config.schema import Route as R
from gateway.routing.dialplan import DigitMap, MatchResult
from gateway.routing.emergency import emergency_numbers
from gateway.routing.health import HealthState
from gateway.routing.router import (
    NoRoute,
    RouteDecision,
    Router,
    attempt_order,
    effective_digit_map,
)
from gateway.routing.targets import FxoTarget, GsmTarget, LocalTarget, TrunkTarget

UP, DEGRADED, DOWN = HealthState.UP, HealthState.DEGRADED, HealthState.DOWN
MAIN, BACKUP, CELL, PSTN = (TrunkTarget("main"), TrunkTarget("backup"), GsmTarget("cell"),
                            FxoTarget("pstn"))
ROUTES = (
    R(r"2\d\d", "local"),
    R(r"9(\d+)", "", strip=1, prepend="+1",
      targets=("trunk:main", "trunk:backup", "gsm:cell", "fxo:pstn")),
    R(r"\d+", "trunk:main"),
)
SOS = EmergencySettings(("911", "112"), ("trunk:main", "trunk:backup", "gsm:cell"))


def test_a_list_route_decides_every_target_in_order_and_target_is_the_first() -> None:
    d = Router(DialPlan(routes=ROUTES)).route("95551234")
    assert d.targets == (MAIN, BACKUP, CELL, PSTN)
    assert (d.target, d.kind, d.trunk, d.number, d.emergency) == (
        MAIN, "trunk", "main", "+15551234", False)


def test_a_single_target_route_still_answers_as_before() -> None:
    router = Router(DialPlan(routes=ROUTES))
    d = router.route("201")
    assert (d.targets, d.target, d.kind, d.trunk, d.number) == (
        (LocalTarget(),), LocalTarget(), "local", None, "201")
    assert router.route("5555").targets == (MAIN,)


def test_route_to_stays_the_first_target_and_a_mismatch_is_refused() -> None:
    route = R(r"\d+", "", targets=("trunk:backup", "gsm:cell"))
    assert (route.to, route.trunk, route.targets) == ("trunk:backup", "backup",
                                                      ("trunk:backup", "gsm:cell"))
    assert R(r"\d+", "gsm:cell").targets == ("gsm:cell",)
    with pytest.raises(ValueError, match="not the first target"):
        R(r"\d+", "trunk:main", targets=("gsm:cell",))
    with pytest.raises(ValueError, match="needs a target"):
        RouteDecision((), "5")


def test_an_emergency_number_gets_a_decision_even_when_no_route_matches() -> None:
    router = Router(DialPlan(routes=(R(r"2\d\d", "local"),)), emergency=SOS)
    d = router.route("911")
    assert (d.targets, d.number, d.emergency, d.kind) == ((MAIN, BACKUP, CELL), "911", True,
                                                          "trunk")
    with pytest.raises(NoRoute):
        router.route("5555")
    assert router.is_emergency("112") and not router.is_emergency("1120")


def test_an_emergency_number_ignores_the_matching_routes_rewrite_and_targets() -> None:
    routes = (R(r"\d+", "trunk:main", prepend="+1"),)
    d = Router(DialPlan(routes=routes), emergency=SOS).route("911")
    assert (d.number, d.targets, d.emergency) == ("911", (MAIN, BACKUP, CELL), True)
    # the same digits without emergency settings are an ordinary call, rewritten
    d = Router(DialPlan(routes=routes)).route("911")
    assert (d.number, d.targets, d.emergency) == ("+1911", (MAIN,), False)


def test_with_no_way_out_an_emergency_number_takes_its_route_or_has_none() -> None:
    nowhere = EmergencySettings(("112",), ())
    d = Router(DialPlan(routes=(R(r"1\d\d", "local"),)), emergency=nowhere).route("112")
    assert (d.targets, d.emergency) == ((LocalTarget(),), True)
    with pytest.raises(NoRoute, match="emergency number '112' has no target"):
        Router(DialPlan(routes=()), emergency=nowhere).route("112")


# --- attempt_order ----------------------------------------------------------------------

ORDINARY = RouteDecision((MAIN, BACKUP, CELL, PSTN), "5551234")
EMERGENCY = RouteDecision((MAIN, BACKUP, CELL, PSTN), "911", emergency=True)


@pytest.mark.parametrize(("health", "order"), [
    ({"main": UP, "backup": UP}, (MAIN, BACKUP, CELL, PSTN)),
    ({"main": DOWN, "backup": UP}, (BACKUP, CELL, PSTN)),
    ({"main": DEGRADED, "backup": UP}, (MAIN, BACKUP, CELL, PSTN)),
    ({"main": DOWN, "backup": DOWN}, (CELL, PSTN)),
    ({}, (MAIN, BACKUP, CELL, PSTN)),
])
def test_ordinary_calls_keep_the_configured_order_and_skip_trunks_that_are_down(
    health: dict[str, HealthState], order: tuple[object, ...]
) -> None:
    assert attempt_order(ORDINARY, health) == order
    assert Router(DialPlan()).attempt_order(ORDINARY, health) == order


def test_ordinary_calls_with_every_target_down_get_nothing_to_try() -> None:
    only_trunks = RouteDecision((MAIN, BACKUP), "5551234")
    assert attempt_order(only_trunks, {"main": DOWN, "backup": DOWN}) == ()


@pytest.mark.parametrize(("health", "order"), [
    ({"main": UP, "backup": UP}, (MAIN, BACKUP, CELL, PSTN)),
    ({"main": DOWN, "backup": UP}, (BACKUP, CELL, PSTN, MAIN)),
    ({"main": DEGRADED, "backup": UP}, (BACKUP, CELL, PSTN, MAIN)),
    ({"main": DOWN, "backup": DEGRADED}, (CELL, PSTN, BACKUP, MAIN)),
    ({"main": DOWN, "backup": DOWN}, (CELL, PSTN, MAIN, BACKUP)),
    ({"main": DOWN}, (CELL, PSTN, MAIN, BACKUP)),  # backup unknown ranks with down
    ({}, (MAIN, BACKUP, CELL, PSTN)),  # nothing known: the configured order stands
])
def test_emergency_calls_try_every_target_best_health_first(
    health: dict[str, HealthState], order: tuple[object, ...]
) -> None:
    assert attempt_order(EMERGENCY, health) == order


def test_health_given_as_state_names_is_understood() -> None:
    health: dict[str, object] = {"main": "down", "backup": "up"}
    assert attempt_order(ORDINARY, health) == (BACKUP, CELL, PSTN)  # type: ignore[arg-type]


# --- the digit map ----------------------------------------------------------------------


def config(text: str) -> Config:
    return load_config_text(textwrap.dedent(text), "office.yaml", route_probe=lambda t: None)


def test_emergency_numbers_are_added_to_a_digit_map_that_would_not_dial_them() -> None:
    cfg = config("""\
        gateway: {country: UK}
        dialplan: {digit_map: "(2xx|9xxxxxxx)"}
        """)
    before = DigitMap(cfg.dialplan.digit_map)
    assert before.match("999") is MatchResult.PARTIAL
    assert before.match("112") is MatchResult.NO_MATCH
    after = DigitMap(effective_digit_map(cfg))
    assert after.match("999") is MatchResult.FULL_MAY_EXTEND  # 9xxxxxxx may still follow
    assert after.match("112") is MatchResult.FULL
    assert after.match("201") is MatchResult.FULL  # the configured map still works
    assert after.match("95551234") is MatchResult.FULL


def test_a_digit_map_without_parentheses_and_with_configured_numbers() -> None:
    cfg = config("""\
        dialplan: {digit_map: "2xx"}
        emergency: {numbers: ["911", "933"]}
        """)
    assert effective_digit_map(cfg) == "(911|933|2xx)"


def test_a_digit_map_that_already_dials_every_emergency_number_is_unchanged() -> None:
    cfg = config("""\
        dialplan: {digit_map: "(911|1xx)"}
        """)
    assert cfg.emergency.numbers == emergency_numbers("US") == ("911",)
    assert effective_digit_map(cfg) == "(911|1xx)"


def test_router_from_config_recognises_the_countrys_numbers() -> None:
    cfg = config("""\
        gateway: {country: DE}
        trunks: [{name: main, registrar: 192.0.2.1}]
        """)
    router = Router.from_config(cfg)
    assert [router.route(n).emergency for n in ("112", "110", "0301234")] == [True, True, False]
    assert router.route("110").targets == (MAIN,)
