"""`trunks[].allow_fxo`: the narrow opt-in for calls from a trunk to leave on an exchange
line (a DID routed `fxo:<name>`, a PBX using the box as its PSTN gateway).

Off by default. The loader (line and column) and the JSON Schema agree on entries; only
lines of type fxo may be named; the guard opens only the listed lines and prefixes, keeps
international and premium-rate numbers closed, refuses every trunk that did not opt in,
and counts its refusals with the main guard's. The box's own lines keep using FXO through
the default policy (`fxo_policies`), also after a reload rebuilt the route guard.
"""

from __future__ import annotations

import logging
import textwrap

import jsonschema
import pytest
import yaml

from gateway.config import ConfigError, ConfigIssue, load_config_text
from gateway.config.jsonschema import export_json_schema
from gateway.config.schema import TrunkAllowFxo
from gateway.runtime.edge import build_route_guard
from gateway.runtime.fxo_calls import fxo_policies
from gateway.runtime.reload_plan import plan_reload
from gateway.security.permissions import Allowed, CallSource, Denied, Permissions, TargetPolicy
from gateway.security.routeguard import RouteGuard, trunk_fxo_guard

BASE = """\
trunks:
  - name: pbx
    registrar: 192.0.2.1
lines:
  - {name: kitchen, backend: sim, number: "101"}
  - {name: pstn, type: fxo, backend: sim, number: "5550100"}
dialplan:
  routes:
    - {pattern: '9(\\d+)', strip: 1, to: "fxo:pstn"}
"""


def load(text: str):  # type: ignore[no-untyped-def]
    return load_config_text(textwrap.dedent(text), "office.yaml", route_probe=lambda t: None)


def issues(text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as err:
        load(text)
    return err.value.errors


def schema_ok(text: str) -> bool:
    validator = jsonschema.Draft202012Validator(export_json_schema())
    return not list(validator.iter_errors(yaml.safe_load(textwrap.dedent(text))))


def with_allow(entry: str) -> str:
    return BASE.replace("    registrar: 192.0.2.1\n", "    registrar: 192.0.2.1\n" + entry)


def test_off_by_default_and_loads_when_written() -> None:
    assert load(BASE).trunks[0].allow_fxo is None
    text = with_allow('    allow_fxo: {lines: [pstn], prefixes: ["1", "0800"]}\n')
    config = load(text)
    assert config.trunks[0].allow_fxo == TrunkAllowFxo(("pstn",), ("1", "0800"))
    assert config.to_dict()["trunks"][0]["allow_fxo"] == {"lines": ["pstn"],
                                                         "prefixes": ["1", "0800"]}
    assert schema_ok(text) and schema_ok(BASE)


@pytest.mark.parametrize(("entry", "line", "column", "words"), [
    ('    allow_fxo: {lines: [kitchen], prefixes: ["1"]}\n', 4, 25,
     "no line of type fxo named 'kitchen'"),
    ('    allow_fxo: {lines: [pstn], prefixes: ["1x"]}\n', 4, 43, "invalid value '1x'"),
    ('    allow_fxo: {lines: [pstn]}\n', 4, 16, "missing required key 'prefixes'"),
    ('    allow_fxo: {lines: [], prefixes: ["1"]}\n', 4, 24, "non-empty list"),
    ('    allow_fxo: {lines: [pstn], prefixes: ["1"], max: 3}\n', 4, 49, "unknown key"),
])
def test_bad_entries_are_refused_at_their_line_and_column(
    entry: str, line: int, column: int, words: str,
) -> None:
    found = issues(with_allow(entry))
    assert [(i.line, i.column) for i in found] == [(line, column)], found
    assert words in found[0].message
    assert not schema_ok(with_allow(entry)) or "kitchen" in entry  # line types: the loader's


def test_only_listed_lines_and_prefixes_from_the_opted_in_trunk() -> None:
    main = RouteGuard(Permissions([TargetPolicy("fxo", sources=("kitchen",))]),
                      logger=logging.getLogger("test.guard"))
    g = trunk_fxo_guard({"pbx": (("pstn",), ("1", "0800"))}, like=main)
    pbx, other = CallSource.trunk("pbx"), CallSource.trunk("other")
    assert isinstance(g.check(pbx, "15551234", "fxo:pstn"), Allowed)
    assert isinstance(g.check(pbx, "08001234567", "fxo:pstn"), Allowed)
    refused = [
        g.check(pbx, "5551234", "fxo:pstn"),          # not a listed prefix
        g.check(pbx, "0044771234567", "fxo:pstn"),    # international stays denied
        g.check(pbx, "15551234", "fxo:other"),        # line not listed
        g.check(other, "15551234", "fxo:pstn"),       # trunk did not opt in
    ]
    assert all(isinstance(d, Denied) and d.status == 403 for d in refused), refused
    assert [d.code for d in refused if isinstance(d, Denied)] == [
        "number", "number", "no-policy", "no-policy"]
    assert main.denied == {"number": 2, "no-policy": 2}


def test_the_default_guard_lets_lines_and_phones_use_fxo_and_no_trunk() -> None:
    config = load(with_allow('    allow_fxo: {lines: [pstn], prefixes: ["1"]}\n'))
    guard = build_route_guard(config, extra=fxo_policies(config))
    assert isinstance(guard.check(CallSource.line("kitchen"), "5551234", "fxo"), Allowed)
    # a trunk's call is never judged by the main guard's fxo policy (allow_fxo or nothing)
    assert isinstance(guard.check(CallSource.trunk("pbx"), "15551234", "fxo"), Denied)


def test_a_changed_allow_fxo_is_a_routing_change_on_reload() -> None:
    old = load(BASE)
    new = load(with_allow('    allow_fxo: {lines: [pstn], prefixes: ["1"]}\n'))
    assert plan_reload(old, new).routing
