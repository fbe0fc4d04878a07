"""The `modems:` and `gsm_groups:` sections: every problem found at its line and column.

The loader and the JSON Schema are checked against the same examples, so an editor and
`branchline check-config` agree on what is a good modem entry.
"""

from __future__ import annotations

import textwrap

import jsonschema
import pytest
import yaml

from gateway.config import ConfigError, ConfigIssue, load_config_text
from gateway.config.jsonschema import export_json_schema

GOOD = """\
gsm_groups:
  - name: mobile
    strategy: least-used
  - name: cheap
    strategy: prefix
    prefixes:
      sim7600: ["0170", "0171"]
      ec25: [0160]
modems:
  - name: ec25
    profile: quectel-ec25
    port: /dev/serial/by-id/usb-Quectel_EC25-if02-port0
    match: {imei: "866123456789012", usb: "2c7c:0125"}
    audio: {type: uac, device: "hw:CARD=Android,DEV=0"}
    pin: 0000
    group: cheap
    number: "+4915112345678"
    sms: {to_sip: "sip:sms@127.0.0.1", webhook: "https://hooks.example.com/sms"}
    minute_cap: 300
    power_gpio: {pin: 17, off_seconds: 5}
    probe_interval: 10
    unresponsive_after: 30
  - name: sim7600
    profile: simcom-sim7600
    port: /dev/ttyUSB2
    audio: {type: serial-pcm, pcm_port: /dev/ttyUSB4}
    group: cheap
  - name: sim800
    profile: simcom-sim800
    match: {usb: "1a86:7523"}
    audio: {type: usb-soundcard, device: "plughw:CARD=Device"}
    group: mobile
  - name: emu
    profile: sim
    port: socket://127.0.0.1:7000
"""


def load(text: str):  # type: ignore[no-untyped-def]
    return load_config_text(textwrap.dedent(text), "office.yaml", route_probe=lambda t: None)


def issues(text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as err:
        load(text)
    return err.value.errors


def schema_errors(text: str) -> list[str]:
    """The schema's complaints, each about something inside a section (not the top level)."""
    validator = jsonschema.Draft202012Validator(export_json_schema())
    errors = list(validator.iter_errors(yaml.safe_load(textwrap.dedent(text))))
    for error in errors:
        assert list(error.absolute_path), f"top-level complaint: {error.message}"
    return [e.message for e in errors]


def test_a_full_modems_section_loads() -> None:
    config = load(GOOD)
    ec25, sim7600, sim800, emu = config.modems
    assert ec25.profile == "quectel-ec25" and ec25.audio.type == "uac"
    assert ec25.audio.device == "hw:CARD=Android,DEV=0"
    assert ec25.pin == "0000"  # read from the YAML text: never an octal or integer 0
    assert ec25.match is not None and ec25.match.imei == "866123456789012"
    assert ec25.match.usb == "2c7c:0125"
    assert ec25.sms is not None and ec25.sms.to_sip == "sip:sms@127.0.0.1"
    assert ec25.minute_cap == 300
    assert ec25.power_gpio is not None and ec25.power_gpio.pin == 17
    assert ec25.power_gpio.off_seconds == 5.0
    assert (ec25.probe_interval, ec25.unresponsive_after) == (10.0, 30.0)
    assert sim7600.audio.pcm_port == "/dev/ttyUSB4"
    assert sim800.port is None and sim800.match is not None
    assert emu.audio.type == "sim" and emu.group is None  # the emulator's default audio
    mobile, cheap = config.gsm_groups
    assert mobile.strategy == "least-used" and mobile.members(config.modems) == ("sim800",)
    assert dict(cheap.prefixes) == {"sim7600": ("0170", "0171"), "ec25": ("0160",)}


def test_the_pin_is_never_in_repr_or_redacted_output() -> None:
    config = load(GOOD)
    assert "0000" not in repr(config.modems[0])
    redacted = config.redacted()["modems"][0]
    assert redacted["pin"] == "***"
    assert config.to_dict()["modems"][0]["pin"] == "0000"


def test_to_dict_loads_back_to_the_same_config() -> None:
    config = load(GOOD)
    again = load(yaml.safe_dump(config.to_dict()))
    assert again.modems == config.modems
    assert again.gsm_groups == config.gsm_groups


def test_a_config_without_modems_has_none() -> None:
    config = load("gateway: {name: x}\n")
    assert config.modems == () and config.gsm_groups == ()


def test_unknown_profile_is_reported_with_position_and_suggestion() -> None:
    [issue] = issues("""\
        modems:
          - name: a
            profile: quectel-ec52
            port: /dev/ttyUSB2
            audio: {type: uac, device: hw:1}
        """)
    assert (issue.line, issue.column) == (3, 14)
    assert issue.path == "modems[0].profile"
    assert "did you mean 'quectel-ec25'?" in issue.message
    assert "'simcom-sim800'" in issue.expected


def test_each_bad_key_is_reported_at_its_own_line_and_column() -> None:
    found = issues("""\
        modems:
          - name: Bad Name
            profile: sim
            port: ttyUSB2
            pin: 12ab
            minute_cap: 0
            power_gpio: {pin: 99}
            sms: {to_sip: "mailto:x@y", webhook: "ftp://x", queue: relative.db}
            match: {imei: "12345"}
            probe_intervall: 5
        """)
    where = {i.path: (i.line, i.column) for i in found}
    assert where == {
        "modems[0].name": (2, 11),
        "modems[0].port": (4, 11),
        "modems[0].match.imei": (9, 19),
        "modems[0].pin": (5, 10),
        "modems[0].sms.to_sip": (8, 19),
        "modems[0].sms.webhook": (8, 42),
        "modems[0].sms.queue": (8, 60),
        "modems[0].minute_cap": (6, 17),
        "modems[0].power_gpio.pin": (7, 23),
        "modems[0].probe_intervall": (10, 5),
    }
    typo = next(i for i in found if i.path == "modems[0].probe_intervall")
    assert "did you mean 'probe_interval'?" in typo.message


def test_audio_type_the_profile_cannot_carry() -> None:
    [issue] = issues("""\
        modems:
          - name: old
            profile: simcom-sim800
            port: /dev/ttyUSB0
            audio: {type: serial-pcm, pcm_port: /dev/ttyUSB1}
        """)
    assert (issue.line, issue.column) == (5, 19)
    assert issue.path == "modems[0].audio.type"
    assert "cannot carry audio type 'serial-pcm'" in issue.message
    assert issue.expected == "'usb-soundcard'"


def test_audio_needs_its_device_or_port_and_nothing_else() -> None:
    found = issues("""\
        modems:
          - name: a
            profile: quectel-ec25
            port: /dev/ttyUSB2
            audio: {type: serial-pcm, device: hw:1}
          - name: b
            profile: quectel-eg25-g
            port: /dev/ttyUSB6
            audio: {type: uac}
          - name: c
            profile: quectel-ec25
            port: /dev/ttyUSB9
        """)
    messages = {(i.path, i.line): i.message for i in found}
    assert "does not use a device" in messages[("modems[0].audio.device", 5)]
    assert "needs a pcm_port" in messages[("modems[0].audio.pcm_port", 5)]
    assert "needs a device" in messages[("modems[1].audio.device", 9)]
    assert "missing required key 'audio'" in messages[("modems[2].audio", 10)]


def test_duplicate_names_ports_and_imeis() -> None:
    found = issues("""\
        modems:
          - name: a
            profile: sim
            port: /dev/ttyUSB2
            match: {imei: "866123456789012"}
          - name: a
            profile: sim
            port: /dev/ttyUSB2
            match: {imei: "866123456789012"}
        """)
    messages = {i.path: (i.line, i.message) for i in found}
    assert messages["modems[1].name"] == (6, "modem name 'a' is already used on line 2")
    assert messages["modems[1].port"] == (8, "port '/dev/ttyUSB2' is already used on line 4")
    assert messages["modems[1].match.imei"][0] == 9
    assert "already used on line 5" in messages["modems[1].match.imei"][1]


def test_group_referenced_but_not_defined() -> None:
    [issue] = issues("""\
        gsm_groups: [{name: mobile}]
        modems:
          - name: a
            profile: sim
            port: /dev/ttyUSB2
            group: mobil
        """)
    assert (issue.line, issue.column) == (6, 12)
    assert "no GSM group named 'mobil' (did you mean 'mobile'?)" in issue.message
    assert "mobile" in issue.expected


def test_group_rules() -> None:
    found = issues("""\
        gsm_groups:
          - name: mobile
            strategy: round-robbin
          - name: mobile
          - name: pfx
            strategy: prefix
          - name: rr
            prefixes: {a: ["017"]}
        """)
    messages = {i.path: (i.line, i.column, i.message) for i in found}
    assert messages["gsm_groups[0].strategy"][:2] == (3, 15)
    assert "did you mean 'round-robin'?" in messages["gsm_groups[0].strategy"][2]
    assert messages["gsm_groups[1].name"][0] == 4
    assert "already used on line 2" in messages["gsm_groups[1].name"][2]
    assert "strategy prefix needs prefixes" in messages["gsm_groups[2].prefixes"][2]
    assert "only read with strategy prefix" in messages["gsm_groups[3].prefixes"][2]


def test_prefixes_name_modems_of_their_own_group_each_prefix_once() -> None:
    found = issues("""\
        gsm_groups:
          - name: pfx
            strategy: prefix
            prefixes:
              a: ["017", "0160"]
              b: ["017"]
              zz: ["015"]
          - name: other
        modems:
          - {name: a, profile: sim, port: /dev/ttyUSB2, group: pfx}
          - {name: b, profile: sim, port: /dev/ttyUSB3, group: other}
        """)
    messages = {(i.path, i.line): i.message for i in found}
    assert "prefix '017' is already given to 'a'" in messages[("gsm_groups[0].prefixes.b[0]", 6)]
    # the cross-check with modems runs once the groups themselves are good
    assert len(found) == 1
    found = issues("""\
        gsm_groups:
          - name: pfx
            strategy: prefix
            prefixes:
              a: ["017"]
              b: ["016"]
              aa: ["015"]
          - name: other
        modems:
          - {name: a, profile: sim, port: /dev/ttyUSB2, group: pfx}
          - {name: b, profile: sim, port: /dev/ttyUSB3, group: other}
        """)
    messages = {(i.path, i.line, i.column): i.message for i in found}
    assert messages[("gsm_groups[0].prefixes.b", 6, 7)] == "modem 'b' is not in group 'pfx'"
    assert "no modem named 'aa'" in messages[("gsm_groups[0].prefixes.aa", 7, 7)]


def test_a_modem_needs_a_port_or_a_match_and_sane_timers() -> None:
    found = issues("""\
        modems:
          - name: a
            profile: sim
          - name: b
            profile: sim
            port: /dev/ttyUSB1
            probe_interval: 30
            unresponsive_after: 10
          - name: c
            profile: sim
            port: rfc2218://host:1
        """)
    messages = {(i.path, i.line): i.message for i in found}
    assert "needs a port or a match" in messages[("modems[0].port", 2)]
    assert "shorter than probe_interval" in messages[("modems[1].unresponsive_after", 8)]
    assert "did you mean 'rfc2217'?" in messages[("modems[2].port", 11)]


# --- the JSON Schema agrees with the loader on the same examples -------------------------

BAD_FOR_BOTH = {
    "unknown profile": "modems: [{name: a, profile: quectel-ec52, port: /dev/x}]",
    "audio type for profile": (
        "modems: [{name: a, profile: simcom-sim800, port: /dev/x,"
        " audio: {type: serial-pcm, pcm_port: /dev/y}}]"
    ),
    "serial-pcm without port": (
        "modems: [{name: a, profile: quectel-ec25, port: /dev/x, audio: {type: serial-pcm}}]"
    ),
    "device on serial-pcm": (
        "modems: [{name: a, profile: quectel-ec25, port: /dev/x,"
        " audio: {type: serial-pcm, pcm_port: /dev/y, device: hw:1}}]"
    ),
    "missing audio": "modems: [{name: a, profile: quectel-ec25, port: /dev/x}]",
    "no port or match": "modems: [{name: a, profile: sim}]",
    "null port and match": "modems: [{name: a, profile: sim, port: null, match: null}]",
    "unknown key": "modems: [{name: a, profile: sim, port: /dev/x, baud: 115200}]",
    "bad pin": "modems: [{name: a, profile: sim, port: /dev/x, pin: '12'}]",
    "bad imei": "modems: [{name: a, profile: sim, match: {imei: '123'}}]",
    "empty match": "modems: [{name: a, profile: sim, match: {}}]",
    "cap 0": "modems: [{name: a, profile: sim, port: /dev/x, minute_cap: 0}]",
    "gpio pin": "modems: [{name: a, profile: sim, port: /dev/x, power_gpio: {pin: 99}}]",
    "relative port": "modems: [{name: a, profile: sim, port: ttyUSB0}]",
    "bad strategy": "gsm_groups: [{name: g, strategy: random}]",
    "prefix without prefixes": "gsm_groups: [{name: g, strategy: prefix}]",
    "prefixes without prefix": "gsm_groups: [{name: g, prefixes: {a: ['1']}}]",
    "bad webhook": "modems: [{name: a, profile: sim, port: /dev/x, sms: {webhook: 'ftp://h'}}]",
}


@pytest.mark.parametrize("case", sorted(BAD_FOR_BOTH))
def test_loader_and_json_schema_both_refuse(case: str) -> None:
    text = BAD_FOR_BOTH[case]
    found = issues(text)
    assert found, case
    assert all(i.path.startswith(("modems[", "gsm_groups[")) for i in found), found
    assert schema_errors(text), case


def test_json_schema_accepts_the_good_example_and_its_round_trip() -> None:
    jsonschema.Draft202012Validator.check_schema(export_json_schema())
    assert schema_errors(GOOD) == []
    validator = jsonschema.Draft202012Validator(export_json_schema())
    validator.validate(load(GOOD).to_dict())


def test_a_route_to_an_undefined_gsm_group_is_refused_once_groups_are_written() -> None:
    [issue] = issues("""\
        gsm_groups: [{name: mobile}]
        modems: [{name: a, profile: sim, port: /dev/ttyUSB2, group: mobile}]
        dialplan:
          routes:
            - {pattern: '0[0-9]+', to: 'gsm:mobil'}
        """)
    assert (issue.line, issue.column) == (5, 32)
    assert issue.path == "dialplan.routes[0].to"
    assert "no GSM group named 'mobil' (did you mean 'mobile'?)" in issue.message
    config = load("""\
        gsm_groups: [{name: mobile}]
        modems: [{name: a, profile: sim, port: /dev/ttyUSB2, group: mobile}]
        dialplan:
          routes:
            - {pattern: '0[0-9]+', to: 'gsm:mobile'}
        """)
    assert config.dialplan.routes[0].to == "gsm:mobile"


def test_config_profiles_agree_with_the_modem_profiles() -> None:
    from gateway.config import modems as m
    from gateway.modem.profiles import PROFILES

    assert set(m.MODEM_PROFILES) - {"sim"} == set(PROFILES)
    for name, profile in PROFILES.items():
        # profiles.py names the SIM800's path after the module ("analog"), config after the
        # device the installer plugs in ("usb-soundcard")
        names = {"usb-soundcard" if a == "analog" else a for a in profile.audio}
        assert set(m.PROFILE_AUDIO[name]) == names, name


def test_check_config_prints_modem_problems_with_line_and_column(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import io

    from gateway.cli import main

    path = tmp_path / "office.yaml"
    path.write_text("modems:\n  - name: a\n    profile: simcom-sim7660\n    port: /dev/ttyUSB2\n"
                    "    audio: {type: serial-pcm, pcm_port: /dev/ttyUSB4}\n")
    out, err = io.StringIO(), io.StringIO()
    assert main(["check-config", str(path)], stdout=out, stderr=err) != 0
    assert f"{path}:3:14: modems[0].profile: unknown value 'simcom-sim7660'" in err.getvalue()
    assert "did you mean 'simcom-sim7600'?" in err.getvalue()


def test_every_yaml_example_in_the_gsm_docs_loads() -> None:
    import re
    from pathlib import Path

    docs = Path(__file__).resolve().parents[2] / "docs"
    blocks = re.findall(r"```yaml\n(.*?)```", (docs / "gsm.md").read_text(), re.S)
    config_md = (docs / "config.md").read_text()
    modems_part = config_md[config_md.index("### `modems[]`"):config_md.index("## Secrets")]
    blocks += re.findall(r"```yaml\n(.*?)```", modems_part, re.S)
    assert len(blocks) >= 3
    for block in blocks:
        assert load(block).modems, block


def test_the_voice_port_is_not_the_at_port() -> None:
    [issue] = issues("""\
        modems:
          - name: a
            profile: quectel-ec25
            port: /dev/ttyUSB2
            audio: {type: serial-pcm, pcm_port: /dev/ttyUSB2}
        """)
    assert (issue.line, issue.path) == (5, "modems[0].audio.pcm_port")
    assert "is the AT port" in issue.message
