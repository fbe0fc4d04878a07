"""`trunks[].allow_gsm`: the narrow opt-in for calls from a trunk to leave through a modem.

The loader (line and column) and the JSON Schema agree on good and bad entries; the route
guard built from it opens only the listed groups and prefixes, keeps international and
premium-rate numbers closed unless a listed prefix opens part of them, and refuses every
trunk that did not opt in.
"""

from __future__ import annotations

import logging
import textwrap

import jsonschema
import pytest
import yaml

from gateway.config import ConfigError, ConfigIssue, load_config_text
from gateway.config.jsonschema import export_json_schema
from gateway.security.permissions import Allowed, CallSource, Denied, Permissions, TargetPolicy
from gateway.security.routeguard import RouteGuard, trunk_gsm_guard

BASE = """\
gsm_groups:
  - name: mobile
  - name: intl
modems:
  - name: emu
    profile: sim
    port: socket://127.0.0.1:7000
    group: mobile
trunks:
  - name: pbx
    registrar: 192.0.2.1
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


def test_off_by_default_and_loads_when_written() -> None:
    assert load(BASE).trunks[0].allow_gsm is None
    text = BASE + '    allow_gsm: {groups: [mobile], prefixes: ["+447", "07"]}\n'
    config = load(text)
    allow = config.trunks[0].allow_gsm
    assert (allow.groups, allow.prefixes) == (("mobile",), ("+447", "07"))
    assert schema_ok(text)
    assert config.to_dict()["trunks"][0]["allow_gsm"] == {"groups": ["mobile"],
                                                          "prefixes": ["+447", "07"]}
    jsonschema.Draft202012Validator(export_json_schema()).validate(config.to_dict())


@pytest.mark.parametrize(("entry", "line", "column", "words"), [
    ('    allow_gsm: {groups: [nope], prefixes: ["07"]}\n', 12, 26, "no GSM group named 'nope'"),
    ('    allow_gsm: {groups: [mobile], prefixes: ["07x"]}\n', 12, 46, "invalid value '07x'"),
    ('    allow_gsm: {groups: [mobile]}\n', 12, 16, "missing required key 'prefixes'"),
    ('    allow_gsm: {groups: [], prefixes: ["07"]}\n', 12, 25, "non-empty list"),
    ('    allow_gsm: {groups: [mobile], prefixes: ["07"], max: 3}\n', 12, 53, "unknown key"),
])
def test_bad_entries_are_refused_at_their_line_and_column(
    entry: str, line: int, column: int, words: str,
) -> None:
    found = issues(BASE + entry)
    assert [(i.line, i.column) for i in found] == [(line, column)], found
    assert words in found[0].message
    assert not schema_ok(BASE + entry) or "nope" in entry  # group names are the loader's


def guard() -> tuple[RouteGuard, RouteGuard]:
    main = RouteGuard(Permissions([TargetPolicy("gsm", sources=("1",))]),
                      logger=logging.getLogger("test.guard"))
    return main, trunk_gsm_guard({"pbx": (("mobile",), ("+447", "07"))}, like=main)


def test_only_listed_groups_and_prefixes_from_the_opted_in_trunk() -> None:
    main, trunk_guard = guard()
    pbx, other = CallSource.trunk("pbx"), CallSource.trunk("other")
    assert isinstance(trunk_guard.check(pbx, "07700900123", "gsm:mobile"), Allowed)
    assert isinstance(trunk_guard.check(pbx, "+447700900123", "gsm:mobile"), Allowed)
    refused = [
        trunk_guard.check(pbx, "08001234567", "gsm:mobile"),     # not a listed prefix
        trunk_guard.check(pbx, "+442071234567", "gsm:mobile"),   # + stays denied
        trunk_guard.check(pbx, "0044771234567", "gsm:mobile"),   # 00 stays denied
        trunk_guard.check(pbx, "07700900123", "gsm:intl"),       # group not listed
        trunk_guard.check(other, "07700900123", "gsm:mobile"),   # trunk did not opt in
    ]
    assert all(isinstance(d, Denied) and d.status == 403 for d in refused), refused
    assert [d.code for d in refused if isinstance(d, Denied)] == [
        "number", "number", "number", "no-policy", "no-policy"]
    # Counted in the main guard's table (status and metrics read it).
    assert main.denied == {"number": 3, "no-policy": 2}


def test_a_listed_international_prefix_opens_only_itself() -> None:
    main = RouteGuard(Permissions([]))
    g = trunk_gsm_guard({"pbx": (("mobile",), ("0044",))}, like=main)
    assert isinstance(g.check(CallSource.trunk("pbx"), "00447700900123", "gsm:mobile"), Allowed)
    assert isinstance(g.check(CallSource.trunk("pbx"), "00497700900123", "gsm:mobile"), Denied)
