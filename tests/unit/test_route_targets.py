"""Route targets: typed parsing, the router's typed answers, and check-config's line/column
errors for names that are not configured."""

from __future__ import annotations

import textwrap
from typing import Any

import jsonschema
import pytest

from gateway.config import ConfigError, ConfigIssue, load_config_text
from gateway.config.jsonschema import export_json_schema
from gateway.config.schema import DialPlan
from gateway.config.schema import Route as R
from gateway.routing.router import Router
from gateway.routing.targets import (
    FxoTarget,
    GsmTarget,
    LineTarget,
    LocalTarget,
    TargetError,
    TrunkTarget,
    parse_target,
)

BASE = """\
trunks:
  - {name: main, registrar: 192.0.2.1}
lines:
  - {name: desk, backend: sim, number: "101"}
  - {name: lobby, backend: sim, number: "102"}
dialplan:
  routes:
"""


def load(text: str) -> Any:
    return load_config_text(textwrap.dedent(text), "office.yaml", route_probe=lambda t: None)


def issues(text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as err:
        load(text)
    return err.value.errors


def at(text: str, line: int, token: str) -> tuple[int, int]:
    return line, textwrap.dedent(text).splitlines()[line - 1].index(token) + 1


@pytest.mark.parametrize(("text", "target"), [
    ("local", LocalTarget()),
    ("line:desk", LineTarget("desk")),
    ("line:Front.Desk-2", LineTarget("Front.Desk-2")),
    ("trunk:main", TrunkTarget("main")),
    ("gsm:mobiles", GsmTarget("mobiles")),
    ("fxo:pstn1", FxoTarget("pstn1")),
])
def test_each_spelling_parses_to_its_type_and_prints_back(text: str, target: object) -> None:
    assert parse_target(text) == target
    assert str(target) == text


@pytest.mark.parametrize("text", ["", "locale", "line:", "trunk:Main", "sip:x", "gsm:a b",
                                  "line:desk:2", "LOCAL"])
def test_other_spellings_are_refused_naming_what_is_expected(text: str) -> None:
    with pytest.raises(TargetError, match="'line:<name>'"):
        parse_target(text)


def test_router_returns_typed_targets_and_rewritten_numbers() -> None:
    router = Router(DialPlan(routes=(
        R(r"0", "line:desk"), R(r"1\d\d", "local"), R(r"8(\d+)", "gsm:mobiles", strip=1),
        R(r"7(\d+)", "fxo:pstn1", strip=1), R(r"9(\d+)", "trunk:main", strip=1, prepend="+1"),
    )))
    assert router.route("0").target == LineTarget("desk")
    assert router.route("0").kind == "line"
    assert router.route("101").target == LocalTarget()
    d = router.route("8555")
    assert (d.target, d.number, d.kind, d.trunk) == (GsmTarget("mobiles"), "555", "gsm", None)
    assert router.route("7555").target == FxoTarget("pstn1")
    d = router.route("9555")
    assert (d.target, d.kind, d.trunk, d.number) == (TrunkTarget("main"), "trunk", "main", "+1555")


def test_check_config_accepts_every_target_kind_that_names_something() -> None:
    text = BASE + """\
    - {pattern: '0', to: 'line:lobby'}
    - {pattern: '1\\d\\d', to: local}
    - {pattern: '8\\d+', to: 'gsm:mobiles'}
    - {pattern: '9\\d+', to: 'trunk:main'}
"""
    config = load(text)
    assert [r.to for r in config.dialplan.routes] == ["line:lobby", "local", "gsm:mobiles",
                                                      "trunk:main"]
    jsonschema.Draft202012Validator(export_json_schema()).validate(config.to_dict())


def test_unknown_names_are_errors_at_the_target_with_what_exists() -> None:
    text = BASE + """\
    - {pattern: '0', to: 'line:lobbby'}
    - {pattern: '1', to: 'line:nobody'}
    - {pattern: '2', to: 'fxo:pstn1'}
    - {pattern: '3', to: 'trunk:mian'}
"""
    found = issues(text)
    assert [(i.line, i.column, i.path) for i in found] == [
        (*at(text, 8, "'line:lobbby'"), "dialplan.routes[0].to"),
        (*at(text, 9, "'line:nobody'"), "dialplan.routes[1].to"),
        (*at(text, 10, "'fxo:pstn1'"), "dialplan.routes[2].to"),
        (*at(text, 11, "'trunk:mian'"), "dialplan.routes[3].to"),
    ]
    assert "no line named 'lobbby'" in found[0].message
    assert "did you mean 'lobby'?" in found[0].message
    assert "desk, lobby" in found[1].expected
    assert "no FXO line named 'pstn1'" in found[2].message
    assert "none are defined" in found[2].expected
    assert "did you mean 'main'?" in found[3].message


def test_a_misspelt_target_is_an_error_naming_every_spelling() -> None:
    text = BASE + """\
    - {pattern: '0', to: 'phone:desk'}
"""
    (issue,) = issues(text)
    assert (issue.line, issue.column) == at(text, 8, "'phone:desk'")
    assert "'gsm:<group>'" in issue.expected and "'fxo:<name>'" in issue.expected
