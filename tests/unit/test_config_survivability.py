"""Config keys for survivability (issue 8): `trunks[].health`, `dialplan.routes[].to` as an
ordered list, `emergency`, `sip.media_timeout`, `registrar` and `sip_phones`.

For each key: accepted values, the defaults, and every refusal with its message at the line
and column where the bad value is written; the JSON Schema agrees on good files and on
structural refusals; secrets stay out of repr() and redacted output.
"""

from __future__ import annotations

import textwrap

import jsonschema
import pytest
import yaml

from gateway.config import ConfigError, ConfigIssue, load_config_text
from gateway.config import survivable as sv
from gateway.config.jsonschema import export_json_schema
from gateway.config.schema import (
    Config,
    EmergencySettings,
    HealthSettings,
    PhoneConfig,
    RegistrarSettings,
)
from gateway.routing.emergency import DEFAULT_NUMBERS, EMERGENCY_PLANS, emergency_numbers

BASE = """\
gateway: {country: US}
trunks:
  - {name: main, registrar: 192.0.2.1}
  - {name: backup, registrar: 192.0.2.2}
lines:
  - {name: desk, backend: sim, number: "101", trunk: {name: main, username: desk, password: "d-pass-101"}}
gsm_groups: [{name: cell}]
modems: [{name: emu, profile: sim, port: /dev/ttyUSB2, group: cell}]
"""


def load(text: str) -> Config:
    return load_config_text(textwrap.dedent(text), "office.yaml", route_probe=lambda t: None)


def issues(text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as err:
        load(text)
    return err.value.errors


def at(text: str, token: str) -> tuple[int, int]:
    """Line and column (1-based) of the last occurrence of `token` in the file (the part a
    test appends or changes comes after BASE)."""
    found: tuple[int, int] | None = None
    for number, line in enumerate(textwrap.dedent(text).splitlines(), 1):
        start = 0
        while (index := line.find(token, start)) >= 0:
            found = (number, index + 1)
            start = index + 1
    assert found is not None, f"{token!r} not in the text"
    return found


def one(text: str, token: str, path: str, words: str) -> ConfigIssue:
    """Exactly one issue, at `token`, under `path`, saying `words`."""
    found = issues(text)
    assert len(found) == 1, found
    issue = found[0]
    assert (issue.line, issue.column) == at(text, token), issue
    assert issue.path == path, issue
    assert words in issue.message, issue
    return issue


def schema_errors(text: str) -> list[str]:
    validator = jsonschema.Draft202012Validator(export_json_schema())
    data = yaml.safe_load(textwrap.dedent(text))
    return [e.message for e in validator.iter_errors(data)]


def round_trips(config: Config) -> None:
    """to_dict() validates against the JSON Schema and loads back to the same Config."""
    data = config.to_dict()
    jsonschema.Draft202012Validator(export_json_schema()).validate(data)
    assert load(yaml.safe_dump(data)) == config


# --- trunks[].health ----------------------------------------------------------------------


def test_health_defaults_when_not_written() -> None:
    config = load(BASE)
    assert config.trunks[0].health == HealthSettings()
    assert config.trunks[0].health == HealthSettings(0.25, 0.5, 5, 5.0, 0.4, 10.0)
    assert config.to_dict()["trunks"][0]["health"] == {
        "probe_interval": 0.25, "probe_timeout": 0.5, "misses": 5, "failback_after": 5.0,
        "degraded_loss": 0.4, "window": 10.0}


def test_health_accepts_sub_second_probing_and_every_key() -> None:
    text = BASE.replace(
        "{name: backup, registrar: 192.0.2.2}",
        "{name: backup, registrar: 192.0.2.2, health: {probe_interval: 0.1, probe_timeout: 0.2,"
        " misses: 3, failback_after: 2, degraded_loss: 0.25, window: 30}}")
    config = load(text)
    assert config.trunk("backup").health == HealthSettings(0.1, 0.2, 3, 2.0, 0.25, 30.0)
    assert config.trunk("main").health == HealthSettings()
    assert schema_errors(text) == []
    round_trips(config)


def test_health_ranges_are_the_ones_health_settings_checks() -> None:
    for key, (low, high) in sv.HEALTH_RANGES.items():
        for value in (low, high):
            number = int(value) if key == "misses" else float(value)
            HealthSettings(**{"window": 600.0, key: number})  # type: ignore[arg-type]


@pytest.mark.parametrize(("entry", "token", "key", "words"), [
    ("probe_interval: 0.01", "0.01", "probe_interval", "0.01 is out of range"),
    ("probe_timeout: 61", "61", "probe_timeout", "61 is out of range"),
    ("misses: 0", "0}", "misses", "0 is out of range"),
    ("misses: 2.5", "2.5", "misses", "expected an integer"),
    ("failback_after: -1", "-1}", "failback_after", "-1 is out of range"),
    ("degraded_loss: 1.5", "1.5", "degraded_loss", "1.5 is out of range"),
    ("window: 0.5", "0.5", "window", "0.5 is out of range"),
    ("window: '10'", "'10'", "window", "expected a number"),
    ("probe_timeout: 20, window: 5", "20", "probe_timeout", "longer than the loss window"),
    ("interval: 1", "interval", "interval", "unknown key 'interval'"),
])
def test_bad_health_values_are_refused_where_written(
    entry: str, token: str, key: str, words: str
) -> None:
    text = BASE.replace("{name: backup, registrar: 192.0.2.2}",
                        "{name: backup, registrar: 192.0.2.2, health: {" + entry + "}}")
    one(text, token, f"trunks[1].health.{key}", words)


def test_health_that_is_not_a_mapping_is_refused() -> None:
    text = BASE.replace("{name: main, registrar: 192.0.2.1}",
                        "{name: main, registrar: 192.0.2.1, health: fast}")
    one(text, "fast", "trunks[0].health", "expected a mapping")
    assert schema_errors(text)


# --- dialplan.routes[].to -----------------------------------------------------------------


def test_a_route_to_a_list_of_targets_is_its_failover_order() -> None:
    text = BASE + """\
dialplan:
  routes:
    - {pattern: '1\\d\\d', to: local}
    - pattern: '9\\d+'
      to: [trunk:main, trunk:backup, gsm:cell]
      strip: 1
"""
    config = load(text)
    local, out = config.dialplan.routes
    assert (local.to, local.targets) == ("local", ("local",))
    assert (out.to, out.trunk, out.targets) == ("trunk:main", "main",
                                                ("trunk:main", "trunk:backup", "gsm:cell"))
    assert config.to_dict()["dialplan"]["routes"][1]["to"] == [
        "trunk:main", "trunk:backup", "gsm:cell"]
    assert config.to_dict()["dialplan"]["routes"][0]["to"] == "local"
    assert schema_errors(text) == []
    round_trips(config)


@pytest.mark.parametrize(("to", "token", "path", "words"), [
    ("[trunk:main, trunk:mian]", "trunk:mian", "dialplan.routes[0].to[1]",
     "no trunk named 'mian' (did you mean 'main'?)"),
    ("[trunk:main, gsm:cel]", "gsm:cel", "dialplan.routes[0].to[1]", "no GSM group named 'cel'"),
    ("[gsm:cell, line:nobody]", "line:nobody", "dialplan.routes[0].to[1]",
     "no line named 'nobody'"),
    ("[trunk:main, 'sip:x']", "'sip:x'", "dialplan.routes[0].to[1]", "invalid value 'sip:x'"),
    ("[trunk:main, gsm:cell, trunk:main]", "trunk:main", "dialplan.routes[0].to[2]",
     "target 'trunk:main' is listed twice"),
    ("[]", "[]", "dialplan.routes[0].to", "the target list is empty"),
    ("{trunk: main}", "{trunk", "dialplan.routes[0].to", "expected a target, got a mapping"),
    ("trunk:nope", "trunk:nope", "dialplan.routes[0].to", "no trunk named 'nope'"),
])
def test_bad_route_targets_are_refused_each_at_its_own_position(
    to: str, token: str, path: str, words: str
) -> None:
    text = BASE + "dialplan:\n  routes:\n    - {pattern: '9\\d+', to: " + to + "}\n"
    one(text, token, path, words)


def test_every_bad_target_in_a_list_is_reported_at_once() -> None:
    text = BASE + "dialplan:\n  routes:\n    - {pattern: '9\\d+', to: [trunk:x, gsm:y]}\n"
    found = issues(text)
    assert [(i.path, i.line, i.column) for i in found] == [
        ("dialplan.routes[0].to[0]", *at(text, "trunk:x")),
        ("dialplan.routes[0].to[1]", *at(text, "gsm:y")),
    ]


def test_a_missing_to_is_still_refused() -> None:
    text = BASE + "dialplan:\n  routes:\n    - {pattern: '9\\d+'}\n"
    one(text, "{pattern", "dialplan.routes[0].to", "missing required key 'to'")


# --- emergency ----------------------------------------------------------------------------


@pytest.mark.parametrize(("country", "numbers"), [
    ("US", ("911",)), ("UK", ("999", "112")), ("DE", ("112", "110")),
    ("FR", ("112", "15", "17", "18", "114")),
])
def test_emergency_numbers_default_to_the_countrys(country: str, numbers: tuple[str, ...]
                                                    ) -> None:
    config = load(BASE.replace("country: US", f"country: {country}"))
    assert config.emergency.numbers == numbers == emergency_numbers(country)


def test_the_emergency_table_covers_the_listed_countries_and_defaults_to_112() -> None:
    for code in ("US", "UK", "GB", "DE", "FR", "NL", "IT", "ES", "AE", "SA", "IN", "AU"):
        numbers = emergency_numbers(code)
        assert numbers and all(n.isdigit() for n in numbers), code
    assert emergency_numbers("gb") == emergency_numbers("UK") == ("999", "112")
    assert emergency_numbers("AU")[0] == "000"
    assert emergency_numbers("XX") == DEFAULT_NUMBERS == ("112",)
    assert all(plan.source for plan in EMERGENCY_PLANS.values())


def test_emergency_targets_default_to_every_trunk_then_every_gsm_group() -> None:
    config = load(BASE)
    assert config.emergency == EmergencySettings(("911",), ("trunk:main", "trunk:backup",
                                                            "gsm:cell"))
    bare = load("gateway: {country: UK}\n")
    assert bare.emergency == EmergencySettings(("999", "112"), ())
    round_trips(bare)  # no way out: dumped as null, loaded back the same


def test_emergency_numbers_and_targets_as_written() -> None:
    text = BASE + """\
emergency:
  numbers: ["112", 911, "000"]
  targets: [gsm:cell, trunk:backup]
"""
    config = load(text)
    assert config.emergency == EmergencySettings(("112", "911", "000"),
                                                 ("gsm:cell", "trunk:backup"))
    assert schema_errors(text) == []
    round_trips(config)
    assert load(BASE + "emergency: {numbers: null, targets: null}\n").emergency == \
        load(BASE).emergency


@pytest.mark.parametrize(("entry", "token", "path", "words"), [
    ('numbers: ["+112"]', '"+112"', "emergency.numbers[0]", "invalid value '+112'"),
    ('numbers: ["112", "9*1"]', '"9*1"', "emergency.numbers[1]", "invalid value '9*1'"),
    ('numbers: ["112", 112]', "112]", "emergency.numbers[1]", "'112' is listed twice"),
    ("numbers: []", "[]", "emergency.numbers", "expected at least one number"),
    ("numbers: '112'", "'112'", "emergency.numbers", "expected at least one number"),
    ("targets: [trunk:main, trunk:nope]", "trunk:nope", "emergency.targets[1]",
     "no trunk named 'nope'"),
    ("targets: [gsm:nope]", "gsm:nope", "emergency.targets[0]", "no GSM group named 'nope'"),
    ("targets: []", "[]", "emergency.targets", "the target list is empty"),
    ("targets: trunk:main", "trunk:main", "emergency.targets", "expected a list"),
    ("number: ['112']", "number", "emergency.number", "unknown key 'number'"),
])
def test_bad_emergency_entries_are_refused_where_written(
    entry: str, token: str, path: str, words: str
) -> None:
    one(BASE + "emergency: {" + entry + "}\n", token, path, words)


def test_an_emergency_number_may_not_be_a_line_number() -> None:
    text = BASE + 'emergency: {numbers: ["112", "101"]}\n'
    one(text, '"101"', "emergency.numbers[1]",
        "emergency number '101' is also the number of line 'desk'")


def test_a_line_number_that_is_the_countrys_emergency_number_is_refused_at_the_line() -> None:
    text = BASE.replace('number: "101"', 'number: "110"').replace("country: US", "country: DE")
    one(text, '"110"', "lines[0].number", "number '110' is an emergency number in DE")
    # with the emergency numbers set explicitly, the same line is fine
    assert load(text + 'emergency: {numbers: ["112"]}\n').line("desk").number == "110"


def test_a_phone_number_that_is_an_emergency_number_is_refused() -> None:
    text = BASE + 'sip_phones: [{user: "911", password: "long-enough"}]\n'
    one(text, '"911"', "sip_phones[0].user", "number '911' is an emergency number in US")


# --- sip.media_timeout --------------------------------------------------------------------


def test_media_timeout_defaults_to_30_s_and_0_turns_it_off() -> None:
    assert load(BASE).sip.media_timeout == 30.0
    assert load(BASE + "sip: {media_timeout: 0}\n").sip.media_timeout == 0.0
    config = load(BASE + "sip: {media_timeout: 2.5}\n")
    assert config.sip.media_timeout == 2.5
    assert schema_errors(BASE + "sip: {media_timeout: 0}\n") == []
    round_trips(config)


@pytest.mark.parametrize(("value", "words"), [
    ("0.2", "0.2 s would end calls on a short gap"),
    ("4000", "4000 is out of range"),
    ("-1", "-1 is out of range"),
    ("off", "expected a number"),
])
def test_bad_media_timeouts_are_refused(value: str, words: str) -> None:
    text = BASE + f"sip: {{media_timeout: {value}}}\n"
    issue = one(text, value, "sip.media_timeout", words)
    assert "0 (off) or a number from 0.5 to 3600" in issue.expected
    assert schema_errors(text)


# --- registrar ----------------------------------------------------------------------------


def test_registrar_defaults_and_written_values() -> None:
    assert load(BASE).registrar == RegistrarSettings(60, 3600, 600, 3)
    text = BASE + "registrar: {min_expires: 30, max_expires: 7200, default_expires: 120," \
        " max_contacts: 1}\n"
    config = load(text)
    assert config.registrar == RegistrarSettings(30, 7200, 120, 1)
    assert schema_errors(text) == []
    round_trips(config)


@pytest.mark.parametrize(("entry", "token", "key", "words"), [
    ("min_expires: 900", "900", "min_expires", "default_expires 600 is outside"),
    ("min_expires: 600, max_expires: 300", "600", "min_expires",
     "min_expires 600 is above max_expires 300"),
    ("max_expires: 100", "100", "max_expires", "default_expires 600 is outside"),
    ("default_expires: 10", "10", "default_expires", "default_expires 10 is outside "
     "min_expires..max_expires (60..3600)"),
    ("max_contacts: 0", "0}", "max_contacts", "0 is out of range"),
    ("min_expires: 0", "0}", "min_expires", "0 is out of range"),
    ("max_expires: 100000", "100000", "max_expires", "100000 is out of range"),
    ("expires: 60", "expires", "expires", "unknown key 'expires'"),
])
def test_bad_registrar_values_are_refused_where_written(
    entry: str, token: str, key: str, words: str
) -> None:
    text = BASE + "registrar: {" + entry + "}\n"
    one(text, token, f"registrar.{key}", words)


# --- sip_phones ---------------------------------------------------------------------------

PHONES = BASE + """\
sip_phones:
  - user: "201"
    password: "alice-pass-201"
    display_name: Alice
  - user: bob
    password: "bob-pass-202"
    number: "202"
    trunk: {name: main, username: "4420202", password: "up-stream-202"}
"""


def test_phones_load_with_number_defaulting_to_the_user() -> None:
    config = load(PHONES)
    alice, bob = config.sip_phones
    assert alice == PhoneConfig("201", "alice-pass-201", "201", "Alice", None)
    assert (bob.user, bob.number, bob.display_name) == ("bob", "202", None)
    assert bob.trunk is not None and (bob.trunk.name, bob.trunk.username) == ("main", "4420202")
    assert config.phone("bob") is bob and config.phone_by_number("201") is alice
    assert config.phone_by_number("101") is None
    assert PhoneConfig("203", "long-enough").number == "203"
    assert schema_errors(PHONES) == []
    round_trips(config)


def test_phone_secrets_stay_out_of_repr_and_redacted_output() -> None:
    config = load(PHONES)
    assert "alice-pass-201" not in repr(config.sip_phones)
    assert "up-stream-202" not in repr(config.sip_phones)
    redacted = yaml.safe_dump(config.redacted())
    assert "alice-pass-201" not in redacted and "up-stream-202" not in redacted
    assert config.redacted()["sip_phones"][1]["trunk"]["password"] == "***"
    assert config.to_dict()["sip_phones"][0]["password"] == "alice-pass-201"


def test_no_phones_and_default_registrar_when_not_written() -> None:
    config = load(BASE)
    assert config.sip_phones == ()
    assert config.to_dict()["sip_phones"] == []


@pytest.mark.parametrize(("old", "new", "token", "path", "words"), [
    ('user: "201"', 'user: "2 01"', '"2 01"', "sip_phones[0].user", "invalid value '2 01'"),
    ('user: "201"', 'user: "a@b"', '"a@b"', "sip_phones[0].user", "invalid value 'a@b'"),
    ('password: "alice-pass-201"', 'password: "short7!"', '"short7!"', "sip_phones[0].password",
     "password has 7 characters; local phones need at least 8"),
    ('password: "bob-pass-202"', "password: bob", "bob\n", "sip_phones[1].password",
     "password has 3 characters"),
    ('user: bob\n    password: "bob-pass-202"', 'user: bobbybob\n    password: BobbyBob',
     "BobbyBob", "sip_phones[1].password", "password is the same as the user name"),
    ('password: "alice-pass-201"', "password: changeme", "changeme", "sip_phones[0].password",
     "password is a well-known default"),
    ('user: bob', 'user: "201"', '"201"', "sip_phones[1].user", "user '201' is already used"),
    ('number: "202"', 'number: "101"', '"101"', "sip_phones[1].number",
     "number '101' is already used on line 6"),
    ('number: "202"', 'number: "201"', '"201"', "sip_phones[1].number",
     "number '201' is already used"),
    ('number: "202"', 'number: "20a"', '"20a"', "sip_phones[1].number", "invalid value '20a'"),
    ('    number: "202"\n', "", "- user: bob", "sip_phones[1].number",
     "user 'bob' is not a number, so the phone needs one"),
    ('{name: main, username: "4420202"', '{name: mian, username: "4420202"', "mian",
     "sip_phones[1].trunk.name",
     "no trunk named 'mian' (did you mean 'main'?)"),
    ('username: "4420202"', "username: desk", "desk", "sip_phones[1].trunk.username",
     "account 'desk' on trunk 'main' is already used on line 6"),
    ('password: "up-stream-202"', "password: ''", "''", "sip_phones[1].trunk.password",
     "password is empty"),
    ("display_name: Alice", "display_nam: Alice", "display_nam", "sip_phones[0].display_nam",
     "unknown key 'display_nam' (did you mean 'display_name'?)"),
])
def test_bad_phones_are_refused_where_written(
    old: str, new: str, token: str, path: str, words: str
) -> None:
    assert old in PHONES
    text = PHONES.replace(old, new, 1)
    if token == "- user: bob":  # the issue is at the phone's mapping (the key is missing)
        found = issues(text)
        assert len(found) == 1 and found[0].path == path and words in found[0].message, found
        line, column = at(text, "user: bob")
        assert (found[0].line, found[0].column) == (line, column)
        return
    if token == "bob\n":
        found = issues(text)
        assert len(found) == 1 and found[0].path == path and words in found[0].message, found
        assert found[0].line == at(text, "password: bob")[0]
        return
    one(text, token, path, words)


def test_a_phone_needs_a_user_and_a_password() -> None:
    text = BASE + "sip_phones:\n  - {number: '205'}\n"
    found = issues(text)
    assert [(i.path, i.message) for i in found] == [
        ("sip_phones[0].user", "missing required key 'user'"),
        ("sip_phones[0].password", "missing required key 'password'"),
    ]
    assert all((i.line, i.column) == at(text, "{number") for i in found)
    assert schema_errors(text)


def test_every_problem_in_the_new_sections_is_reported_at_once() -> None:
    text = BASE + """\
sip: {media_timeout: 0.1}
registrar: {max_contacts: 0}
emergency: {numbers: ["+1"]}
sip_phones:
  - {user: "201", password: "short"}
  - {user: "201", password: "long-enough"}
dialplan:
  routes:
    - {pattern: '9\\d+', to: [trunk:main, trunk:gone]}
"""
    found = issues(text)
    assert [i.path for i in found] == [
        "sip.media_timeout", "registrar.max_contacts", "emergency.numbers[0]",
        "sip_phones[0].password", "sip_phones[1].user", "dialplan.routes[0].to[1]",
    ]
    assert [i.line for i in found] == sorted(i.line for i in found)


def test_json_schema_knows_the_new_sections_and_refuses_their_shapes() -> None:
    props = export_json_schema()["properties"]
    assert tuple(props["emergency"]["anyOf"][0]["properties"]) == sv.EMERGENCY_KEYS
    assert tuple(props["registrar"]["anyOf"][0]["properties"]) == sv.REGISTRAR_KEYS
    assert tuple(props["sip_phones"]["anyOf"][0]["items"]["properties"]) == sv.PHONE_KEYS
    trunk = props["trunks"]["anyOf"][0]["items"]["properties"]
    assert tuple(trunk["health"]["anyOf"][0]["properties"]) == sv.HEALTH_KEYS
    for bad in (
        "registrar: {max_contacts: 0}",
        "sip_phones: [{user: '201', password: short}]",
        "sip_phones: [{user: '201'}]",
        "emergency: {numbers: ['+112']}",
        "emergency: {targets: []}",
        "dialplan: {routes: [{pattern: '9', to: []}]}",
        "dialplan: {routes: [{pattern: '9', to: [trunk:a, trunk:a]}]}",
        "trunks: [{name: a, registrar: h, health: {misses: 0}}]",
        "sip: {media_timeout: 0.1}",
    ):
        assert schema_errors(bad), bad
