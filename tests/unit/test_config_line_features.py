"""lines[].timers and lines[].features: read, checked with positions, round-tripped, and
listed in the JSON Schema."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from gateway.config import ConfigError, load_config_text
from gateway.config.jsonschema import export_json_schema
from gateway.config.line_features import LineTimers
from gateway.lines.features import ForwardState, StarCodes

BASE = """\
lines:
  - name: desk
    backend: sim
    number: "101"
"""


def load(extra: str):  # type: ignore[no-untyped-def]
    text = BASE + textwrap.indent(textwrap.dedent(extra), "    ")
    return load_config_text(text, "office.yaml", route_probe=lambda toward: None)


def problems(extra: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load(extra)
    return [f"{e.line}:{e.path}: {e.message}" for e in err.value.errors]


def test_defaults_without_the_keys() -> None:
    line = load("").lines[0]
    assert line.timers == LineTimers()
    assert line.features.forward == ForwardState()
    assert line.features.star_codes == StarCodes()


def test_timers_and_features_are_read() -> None:
    line = load("""\
        timers: {first_digit: 8, long_inter_digit: 4, short_inter_digit: 1.5,
                 offhook_warning: 12, ring_no_answer: 60, flash_min_ms: 200, flash_max_ms: 600}
        features:
          forward_busy: "2001"
          forward_no_answer: +4930123
          forward_no_answer_after: 15
          dnd: true
          star_codes: {dnd_on: "*55", dnd_off: "*56"}
        """).lines[0]
    t = line.timers
    assert (t.first_digit, t.long_inter_digit, t.short_inter_digit, t.offhook_warning,
            t.ring_no_answer) == (8, 4, 1.5, 12, 60)
    assert (t.flash_min, t.flash_max) == (0.2, 0.6)
    hs = t.hook_settings()
    assert (hs.flash_min, hs.flash_max) == (0.2, 0.6)
    f = line.features.forward
    assert (f.busy, f.no_answer, f.no_answer_after, f.dnd, f.always) == \
        ("2001", "+4930123", 15.0, True, None)
    assert line.features.star_codes.dnd_on == "*55"
    assert line.features.star_codes.forward_always_on == "*72"


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ("timers: {long_inter_digit: 0}", "lines[0].timers.long_inter_digit: 0 is out of range"),
        ("timers: {flash_min_ms: 500, flash_max_ms: 400}",
         "lines[0].timers.flash_max_ms: flash window 500-400 ms is empty"),
        ("timers: {flash_min_ms: 20}", "lines[0].timers.flash_min_ms: 20 is out of range"),
        ("timers: {howler: 5}", "lines[0].timers.howler"),
        ("features: {forward_busy: '20a1'}", "lines[0].features.forward_busy: invalid value"),
        ("features: {dnd: maybe}", "lines[0].features.dnd: expected true or false"),
        ("features: {forward_no_answer_after: 0}", "forward_no_answer_after: 0 is out of range"),
        ("features: {star_codes: {dnd_on: '78'}}", "star_codes.dnd_on: invalid value"),
        ("features: {star_codes: {dnd_on: '*7'}}", "lines[0].features.star_codes: star codes"),
        ("features: {star_codes: {forward_on: '*7'}}", "star_codes.forward_on"),
        ("features: {forwarded_caller_id: caller}", "lines[0].features.forwarded_caller_id"),
    ],
)
def test_bad_values_are_refused_by_name_and_line(extra: str, words: str) -> None:
    found = problems(extra)
    assert len(found) == 1, found
    assert words in found[0], found
    assert found[0].startswith("5:"), found  # the line of the key in the file


def test_round_trip_and_json_schema() -> None:
    config = load("""\
        timers: {flash_min_ms: 150, flash_max_ms: 700}
        features: {forward_always: "555", dnd: true, forwarded_caller_id: line}
        """)
    assert config.lines[0].features.forwarded_caller_id == "line"
    assert load("").lines[0].features.forwarded_caller_id == "original"
    again = load_config_text(yaml.safe_dump(config.to_dict()), "again.yaml")
    assert again == config
    line_schema = export_json_schema()["properties"]["lines"]["anyOf"][0]["items"]
    props = line_schema["properties"]
    assert props["timers"]["properties"]["flash_max_ms"]["maximum"] == 2000
    assert props["features"]["properties"]["star_codes"]["properties"]["dnd_on"]["default"] \
        == "*78"
    assert props["features"]["properties"]["forwarded_caller_id"]["enum"] == \
        ["original", "line"]
