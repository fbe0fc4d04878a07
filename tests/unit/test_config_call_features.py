"""lines[].features call_waiting / three_way / transfer_on_hangup: read, checked, round-
tripped, in the JSON Schema, and handed to the line's FxsLine by the runtime."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from gateway.config import ConfigError, load_config_text
from gateway.config.jsonschema import export_json_schema
from gateway.dsp.tones import get_profile
from gateway.lines.events import IncomingResult
from gateway.lines.fxs import FxsLine
from gateway.routing.dialplan import DigitMap
from gateway.runtime.line_calls import line_features

BASE = """\
lines:
  - name: desk
    backend: sim
    number: "101"
"""


def load(extra: str):  # type: ignore[no-untyped-def]
    text = BASE + textwrap.indent(textwrap.dedent(extra), "    ")
    return load_config_text(text, "office.yaml", route_probe=lambda toward: None)


def test_on_by_default() -> None:
    features = load("").lines[0].features
    assert (features.call_waiting, features.three_way, features.transfer_on_hangup) == (
        True, True, True)


def test_set_off_reaches_the_line() -> None:
    config = load("""\
        features: {call_waiting: false, three_way: false, transfer_on_hangup: false}
    """)
    lc = config.lines[0]
    kwargs = line_features(lc, get_profile("US"))
    assert kwargs == {"call_waiting": False, "three_way": False, "transfer_on_hangup": False,
                      "call_waiting_repeat": 10.0}  # US: 0.3 s on, 9.7 s off
    line = FxsLine("desk", digit_map=DigitMap("911"), **kwargs)
    line.hook(True, 0.0)
    for i, d in enumerate("911"):
        line.dtmf_digit(d, 1.0 + 0.3 * i)
    line.set_call_id("out-1")
    line.call_answered(3.0)
    assert line.incoming_call("in-2", "200", None, 4.0) is IncomingResult.BUSY
    dumped = yaml.safe_load(yaml.safe_dump(config.to_dict()))
    assert dumped["lines"][0]["features"]["call_waiting"] is False


def test_bad_value_names_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        load("""\
            features: {call_waiting: sometimes}
        """)
    messages = [f"{e.path}: {e.message}" for e in err.value.errors]
    assert any("features.call_waiting" in m for m in messages), messages


def test_json_schema_lists_them() -> None:
    line = export_json_schema()["properties"]["lines"]["anyOf"][0]["items"]
    props = line["properties"]["features"]["properties"]
    for key in ("call_waiting", "three_way", "transfer_on_hangup"):
        assert props[key]["type"] == "boolean" and props[key]["default"] is True
