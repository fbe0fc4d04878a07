"""`type: fxo` lines: backends, their options and the inbound target are checked at load."""

from __future__ import annotations

import textwrap

import pytest

from gateway.config import ConfigError, ConfigIssue, load_config_text
from gateway.config.jsonschema import export_json_schema

GOOD = """\
lines:
  - {name: kitchen, backend: sim, number: "101"}
  - name: pstn
    type: fxo
    backend: sim
    number: "5550100"
    options: {inbound: "line:kitchen", dial_mode: tone, answer: polarity,
              reverse_on_answer: true, loop_drop_ms: 300}
dialplan:
  routes:
    - {pattern: '9\\d+', strip: 1, to: ["fxo:pstn"]}
"""


def load(text: str) -> object:
    return load_config_text(textwrap.dedent(text), "office.yaml", route_probe=lambda t: None)


def issues(text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as err:
        load(text)
    return err.value.errors


def test_an_fxo_line_with_its_options_loads() -> None:
    config = load(GOOD)
    pstn = config.lines[1]  # type: ignore[attr-defined]
    assert (pstn.type, pstn.backend, pstn.options["inbound"]) == ("fxo", "sim", "line:kitchen")


def test_an_inbound_target_that_is_not_a_target_is_refused() -> None:
    [issue] = issues(GOOD.replace('"line:kitchen"', '"kitchen"'))
    assert issue.path == "lines[1].options.inbound" and "'kitchen'" in issue.message
    assert "line:<fxs line>" in issue.expected


def test_an_incoming_call_cannot_be_sent_out_on_a_gsm_group() -> None:
    [issue] = issues(GOOD.replace('"line:kitchen"', '"gsm:mobile"'))
    assert "cannot go out on gsm" in issue.message


def test_bad_choices_and_unknown_options_are_named() -> None:
    found = issues(GOOD.replace("dial_mode: tone", "dial_mode: pulse")
                   .replace("loop_drop_ms: 300", "loop_dorp_ms: 300"))
    messages = " | ".join(i.message for i in found)
    assert "option 'dial_mode': got 'pulse'" in messages
    assert "unknown option 'loop_dorp_ms' for FXO backend 'sim'" in messages
    assert "did you mean 'loop_drop_ms'?" in messages


def test_daa_needs_its_pins_and_fxs_backends_are_not_fxo_ones() -> None:
    found = issues(GOOD.replace("backend: sim\n    number: \"5550100\"",
                                "backend: daa\n    number: \"5550100\""))
    messages = " | ".join(i.message for i in found)
    assert "needs option(s) ring_pin, hook_pin" in messages
    assert "unknown option 'reverse_on_answer' for FXO backend 'daa'" in messages
    [issue] = issues(GOOD.replace("backend: sim\n    number: \"5550100\"",
                                  "backend: ag1171\n    number: \"5550100\""))
    assert "unknown FXO backend 'ag1171'" in issue.message


def test_json_schema_takes_fxo_options_only_on_fxo_lines() -> None:
    import jsonschema  # a declared dependency (pyproject): never skipped
    import yaml

    schema = export_json_schema()
    jsonschema.validate(yaml.safe_load(GOOD), schema)
    bad = yaml.safe_load(GOOD)
    del bad["lines"][1]["type"]  # now an FXS line with FXO options
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_status_lists_exchange_lines() -> None:
    from gateway.cli import format_fxo, format_status

    line = {"name": "pstn", "number": "5550100", "state": "connected", "hook": "off",
            "reversed": True, "loop": False, "call_id": "x",
            "last_caller_id": {"number": "5551234", "name": "ALICE"},
            "end_reason": "polarity reversal"}
    text = "\n".join(format_fxo({"fxo": [line]}))
    row = text.splitlines()[-1]
    for word in ("pstn", "connected", "off-hook", "reversed", "5551234", "polarity reversal"):
        assert word in row, row
    assert format_fxo({"fxo": []}) == []
    assert "Exchange lines" in format_status({"fxo": [line]})
