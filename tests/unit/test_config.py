"""Config loading: defaults, derived values, and every kind of error with its line and column."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import yaml

from gateway.config import (
    Config,
    ConfigError,
    ConfigIssue,
    HostPort,
    load_config,
    load_config_text,
    load_default,
)
from gateway.config import schema as s
from gateway.config.jsonschema import export_json_schema

GOOD = """\
gateway:
  name: office
  country: UK
sip:
  listen: 0.0.0.0:5070
trunks:
  - name: main
    registrar: sip.example.net
  - name: backup
    registrar: 192.0.2.10:5080
    proxy: 192.0.2.11
    domain: example.org
    expires: 300
    keepalive_interval: 2.5
    codecs: [PCMA]
lines:
  - name: "1"
    backend: sim
    number: 0101
    options: {shk_pin: 17, rm_pin: 27, ring_hz: 25}
    trunk:
      name: main
      username: alice
      password: s3cret-Pa55
"""


def load(text: str, probe: Any = None) -> Config:
    return load_config_text(textwrap.dedent(text), "office.yaml",
                            route_probe=probe or (lambda toward: None))


def issues(text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as err:
        load(text)
    return err.value.errors


def at(text: str, line: int, token: str) -> tuple[int, int]:
    """(line, column) of `token` on a 1-based line of the dedented text, as editors count."""
    return line, textwrap.dedent(text).splitlines()[line - 1].index(token) + 1


def only(text: str) -> ConfigIssue:
    found = issues(text)
    assert len(found) == 1, found
    return found[0]


# --- good configs ------------------------------------------------------------------------


def test_embedded_default_has_two_sim_phones_on_loopback() -> None:
    config = load_default()
    assert [(line.name, line.number, line.backend) for line in config.lines] == [
        ("1", "101", "sim"),
        ("2", "102", "sim"),
    ]
    assert config.trunks == ()
    assert config.sip.listen == HostPort("127.0.0.1", 5060)
    assert config.sip.public_host == "127.0.0.1"
    assert config.gateway.control_socket == s.DEFAULT_CONTROL_SOCKET
    assert [(r.pattern, r.to) for r in config.dialplan.routes] == [(r"1\d\d", "local")]
    assert config.dialplan.digit_map == "(1xx)"  # local extensions dial at once


def test_defaults_and_derived_values() -> None:
    config = load(GOOD, probe=lambda toward: "198.51.100.7")
    main, backup = config.trunks
    assert main.registrar == HostPort("sip.example.net", 5060)
    assert main.proxy == main.registrar and main.domain == "sip.example.net"
    assert (main.expires, main.keepalive_interval, main.transport) == (600, 5.0, "udp")
    assert main.effective_codecs(config.sip) == ("PCMU", "PCMA")
    assert backup.proxy == HostPort("192.0.2.11", 5060) and backup.domain == "example.org"
    assert (backup.expires, backup.keepalive_interval) == (300, 2.5)
    assert backup.effective_codecs(config.sip) == ("PCMA",)
    line = config.line("1")
    assert line.number == "0101"  # never read as an octal integer
    assert line.trunk is not None and line.trunk.auth_user == "alice"
    assert config.aor(line) == "sip:alice@sip.example.net"
    assert config.sip.public_host == "198.51.100.7"
    assert config.gateway.country == "UK"
    # No routes written + trunks present: local extensions, then everything to the first trunk.
    assert [(r.pattern, r.to) for r in config.dialplan.routes] == [
        (r"1\d\d", "local"),
        (".+", "trunk:main"),
    ]
    route = config.dialplan.route_for("0044123")
    assert route is not None and route.trunk == "main" and route.rewrite("0044123") == "0044123"


def test_public_host_probe_is_asked_toward_first_trunk_and_falls_back_to_loopback() -> None:
    asked: list[str | None] = []

    def probe(toward: str | None) -> str | None:
        asked.append(toward)
        return None

    assert load(GOOD, probe=probe).sip.public_host == "127.0.0.1"
    assert asked == ["sip.example.net"]
    explicit = load("sip: {listen: 0.0.0.0:5060, public_host: gw.example.net}")
    assert explicit.sip.public_host == "gw.example.net"
    bound = load("sip: {listen: 10.1.2.3:5060}")
    assert bound.sip.public_host == "10.1.2.3"


def test_routes_rewrite_and_order() -> None:
    config = load(GOOD + textwrap.dedent("""\
        dialplan:
          routes:
            - {pattern: '9(\\d+)', to: 'trunk:backup', strip: 1, prepend: '+44'}
            - {pattern: '1\\d\\d', to: local}
        """))
    first = config.dialplan.route_for("90201234")
    assert first is not None and first.trunk == "backup"
    assert first.rewrite("90201234") == "+440201234"
    assert config.dialplan.route_for("101") is config.dialplan.routes[1]
    assert config.dialplan.route_for("5") is None


def test_merge_keys_share_settings() -> None:
    config = load("""\
        lines:
          - &phone {name: a, backend: sim, number: "201", options: {ring_hz: 25}}
          - {<<: *phone, name: b, number: "202"}
        """)
    assert [(line.name, line.number, line.options["ring_hz"]) for line in config.lines] == [
        ("a", "201", 25),
        ("b", "202", 25),
    ]


def test_empty_file_gives_defaults() -> None:
    config = load("")
    assert config.lines == () and config.sip.listen == HostPort("0.0.0.0", 5060)
    assert config.sip.rtp_ports.first == 10000 and config.sip.rtp_ports.last == 10999


def test_to_dict_round_trips_through_the_loader() -> None:
    config = load(GOOD)
    again = load_config_text(yaml.safe_dump(config.to_dict()), "again.yaml")
    assert again == config


# --- redaction ---------------------------------------------------------------------------


def test_redacted_hides_passwords_and_secret_options() -> None:
    config = load(GOOD)
    # No FXS backend has a secret option yet (the loader would refuse one); modems will.
    secret = MappingProxyType({**config.lines[0].options, "pin": "4711"})
    config = dataclasses.replace(
        config, lines=(dataclasses.replace(config.lines[0], options=secret),))
    data = config.redacted()
    dumped = json.dumps(data)
    assert "s3cret-Pa55" not in dumped and "4711" not in dumped
    line = data["lines"][0]
    assert line["trunk"]["password"] == "***"
    assert line["options"] == {"shk_pin": 17, "rm_pin": 27, "ring_hz": 25, "pin": "***"}
    assert line["trunk"]["username"] == "alice"
    assert "s3cret-Pa55" not in repr(config) and "s3cret-Pa55" not in str(config.lines[0])
    assert config.to_dict()["lines"][0]["trunk"]["password"] == "s3cret-Pa55"


# --- errors, each with its exact position ------------------------------------------------


def test_yaml_syntax_error_has_line_and_column() -> None:
    issue = only("gateway:\n  name: [unclosed\nsip: {}\n")
    assert (issue.line, issue.column) == (3, 4)
    assert issue.message.startswith("YAML syntax error")


def test_unknown_key_suggests_the_right_one() -> None:
    issue = only("gateway:\n  contry: US\n")
    assert (issue.line, issue.column, issue.path) == (2, 3, "gateway.contry")
    assert "did you mean 'country'?" in issue.message
    assert "country" in issue.expected


def test_unknown_top_level_key() -> None:
    issue = only("sip: {}\ntrunk: []\n")
    assert (issue.line, issue.column, issue.path) == (2, 1, "trunk")
    assert "did you mean 'trunks'?" in issue.message


def test_wrong_type_says_what_was_expected() -> None:
    issue = only("trunks:\n  - name: t\n    registrar: pbx\n    expires: '600'\n")
    assert (issue.line, issue.column, issue.path) == (4, 14, "trunks[0].expires")
    assert issue.message == "expected an integer, got the string '600'"
    assert issue.expected == "an integer from 60 to 86400"


def test_section_of_wrong_shape() -> None:
    issue = only("lines: {name: a}\n")
    assert (issue.line, issue.column, issue.path) == (1, 8, "lines")
    assert issue.expected == "a list"


def test_out_of_range_and_bad_choice() -> None:
    text = """\
        gateway: {country: us, log_level: verbose}
        trunks:
          - {name: t, registrar: pbx, keepalive_interval: 0.5, transport: wss}
        """
    found = issues(text)
    assert [(i.line, i.column, i.path) for i in found] == [
        (*at(text, 1, "us"), "gateway.country"),
        (*at(text, 1, "verbose"), "gateway.log_level"),
        (*at(text, 3, "0.5"), "trunks[0].keepalive_interval"),
        (*at(text, 3, "wss"), "trunks[0].transport"),
    ]
    assert "did you mean 'US'?" in found[0].message
    assert "not supported" in found[3].message
    assert found[3].expected == "one of 'udp', 'tcp', 'tls'"


def test_missing_required_key_points_at_the_mapping() -> None:
    issue = only("trunks:\n  - name: t\n    proxy: pbx\n")
    assert (issue.line, issue.column, issue.path) == (2, 5, "trunks[0].registrar")
    assert issue.message == "missing required key 'registrar'"


def test_duplicate_key() -> None:
    issue = only("sip:\n  dtmf: inband\n  dtmf: rfc4733\n")
    assert (issue.line, issue.column, issue.path) == (3, 3, "sip.dtmf")
    assert "first written on line 2" in issue.message


def test_listen_and_rtp_ports() -> None:
    found = issues("sip:\n  listen: pbx.local:5060\n  rtp_ports: 10001-10999\n")
    assert [(i.line, i.column, i.path) for i in found] == [
        (2, 11, "sip.listen"),
        (3, 14, "sip.rtp_ports"),
    ]
    assert "odd" in found[1].message
    clash = only("sip:\n  listen: 127.0.0.1:10002\n  rtp_ports: 10000-10999\n")
    assert (clash.line, clash.column, clash.path) == (3, 14, "sip.rtp_ports")
    assert "SIP port 10002" in clash.message


def test_codecs_must_be_known_and_distinct() -> None:
    text = "sip:\n  codecs: [PCMU, g729]\ntrunks:\n  - {name: t, registrar: pbx, codecs: [PCMA, PCMA]}\n"
    found = issues(text)
    assert [(i.line, i.column, i.path) for i in found] == [
        (*at(text, 2, "g729"), "sip.codecs[1]"),
        (*at(text, 4, "PCMA]"), "trunks[0].codecs"),  # the second PCMA
    ]
    assert "twice" in found[1].message


def test_cross_references_and_uniqueness() -> None:
    text = """\
        trunks:
          - {name: main, registrar: pbx}
          - {name: main, registrar: pbx2}
        lines:
          - {name: "1", backend: sim, number: "101",
             trunk: {name: mian, username: a, password: Good-one-1}}
          - {name: "1", backend: sim, number: "101"}
        dialplan:
          routes:
            - {pattern: '9\\d+', to: 'trunk:nope'}
        """
    found = issues(text)
    assert [(i.line, i.column, i.path) for i in found] == [
        (*at(text, 3, "main"), "trunks[1].name"),
        (*at(text, 6, "mian"), "lines[0].trunk.name"),
        (*at(text, 7, '"1"'), "lines[1].name"),
        (*at(text, 7, '"101"'), "lines[1].number"),
        (*at(text, 10, "'trunk:nope'"), "dialplan.routes[0].to"),
    ]
    assert "already used on line 2" in found[0].message
    assert "did you mean 'main'?" in found[1].message
    assert "already used on line 5" in found[3].message
    assert "no trunk named 'nope'" in found[4].message


def test_same_account_twice_on_a_trunk() -> None:
    text = """\
        trunks: [{name: t, registrar: pbx}]
        lines:
          - {name: a, backend: sim, number: "1", trunk: {name: t, username: u, password: Xy-93k}}
          - {name: b, backend: sim, number: "2", trunk: {name: t, username: u, password: Xy-93k}}
        """
    issue = only(text)
    assert (issue.line, issue.column) == at(text, 4, "u,")
    assert issue.path == "lines[1].trunk.username"
    assert "account 'u' on trunk 't' is already used on line 3" in issue.message


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ('""', "password is empty"),
        ("", "password is empty"),
        ("password", "password is a well-known default"),
        ("Admin", "password is a well-known default"),
        ("1234", "password is a well-known default"),
        ("0000", "password is a well-known default"),
        ("alice", "password is the same as the user name"),
    ],
)
def test_weak_passwords_are_refused(password: str, message: str) -> None:
    issue = only(f"""\
        trunks: [{{name: t, registrar: pbx}}]
        lines:
          - name: a
            backend: sim
            number: "1"
            trunk:
              name: t
              username: alice
              password: {password}
        """)
    assert issue.path == "lines[0].trunk.password"
    assert issue.line == 9 and issue.message == message


def test_route_strip_longer_than_pattern() -> None:
    text = "dialplan:\n  routes:\n    - {pattern: '1\\d\\d', to: local, strip: 4}\n"
    issue = only(text)
    assert (issue.line, issue.column) == at(text, 3, "4}")
    assert issue.path == "dialplan.routes[0].strip"
    assert "shortest number the pattern matches (3 digits)" in issue.message
    assert issue.expected == "0..3"


def test_bad_regex_points_at_the_character() -> None:
    issue = only("dialplan:\n  routes:\n    - pattern: '12('\n      to: local\n")
    # the quote is column 16, '1' 17, '2' 18, '(' 19
    assert (issue.line, issue.column) == (3, 19)
    assert issue.message.startswith("invalid regular expression")


def test_bad_digit_map_points_into_the_map() -> None:
    issue = only("dialplan:\n  digit_map: '(1xx|[2-'\n")
    assert issue.path == "dialplan.digit_map"
    assert (issue.line, issue.column) == (2, 23)  # just after '-', where a digit was expected
    assert issue.message.startswith("invalid digit map")


def test_all_errors_are_collected_in_file_order_and_formatted() -> None:
    text = "gateway:\n  log_level: loud\nsip:\n  dtmf: rfc2833\nlines: 5\n"
    with pytest.raises(ConfigError) as err:
        load(text)
    assert str(err.value).splitlines() == [
        "office.yaml:2:14: gateway.log_level: unknown value 'loud' "
        "(expected: one of 'debug', 'info', 'warning', 'error')",
        "office.yaml:4:9: sip.dtmf: unknown value 'rfc2833' (did you mean 'rfc4733'?) "
        "(expected: one of 'rfc4733', 'inband', 'info')",
        "office.yaml:5:8: lines: expected a list, got the integer 5 (expected: a list)",
    ]


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as err:
        load_config(missing)
    assert str(err.value) == f"{missing}: cannot read file: No such file or directory"


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(GOOD)
    config = load_config(path, route_probe=lambda toward: None)
    assert config.source == str(path) and config.gateway.name == "office"


# --- JSON Schema ---------------------------------------------------------------------------


def test_json_schema_keys_match_the_loader() -> None:
    schema = export_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    props = schema["properties"]
    assert tuple(props) == s.TOP_KEYS
    assert tuple(props["gateway"]["properties"]) == s.GATEWAY_KEYS
    assert tuple(props["sip"]["properties"]) == s.SIP_KEYS
    trunk = props["trunks"]["anyOf"][0]["items"]
    assert tuple(trunk["properties"]) == s.TRUNK_KEYS
    line = props["lines"]["anyOf"][0]["items"]
    assert tuple(line["properties"]) == s.LINE_KEYS
    assert tuple(line["properties"]["trunk"]["anyOf"][0]["properties"]) == s.LINE_TRUNK_KEYS
    assert trunk["properties"]["expires"]["maximum"] == s.EXPIRES_MAX
    assert schema["additionalProperties"] is False


def test_json_schema_accepts_good_configs_and_rejects_unknown_keys() -> None:
    import jsonschema  # a test dependency (pyproject [test]): missing means a broken install
    validator = jsonschema.Draft202012Validator(export_json_schema())
    jsonschema.Draft202012Validator.check_schema(export_json_schema())
    validator.validate(load(GOOD).to_dict())
    validator.validate(yaml.safe_load(GOOD))
    errors = list(validator.iter_errors({"gateway": {"contry": "US"}}))
    assert errors and "contry" in errors[0].message
