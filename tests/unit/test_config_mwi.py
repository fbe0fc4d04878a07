"""`lines[].mwi` (message waiting): defaults, a URI server, and clear errors for bad values."""

from __future__ import annotations

import json

import jsonschema
import yaml
from test_config import GOOD, issues, load

from gateway.config import load_config_text
from gateway.config.jsonschema import export_json_schema
from gateway.config.schema import MwiConfig

WITH_MWI = GOOD + "    mwi: {subscribe: true, server: trunk, expires: 1800}\n"
NO_ACCOUNT = """\
lines:
  - name: "1"
    backend: sim
    number: "0101"
    mwi: {server: %s}
"""


def test_mwi_defaults_and_values() -> None:
    assert load(GOOD).lines[0].mwi is None
    assert load(WITH_MWI).lines[0].mwi == MwiConfig(True, "trunk", 1800)
    assert load(GOOD + "    mwi: {}\n").lines[0].mwi == MwiConfig()
    uri = load(NO_ACCOUNT % "'sip:*97@192.0.2.5:5060'").lines[0].mwi
    assert uri == MwiConfig(True, "sip:*97@192.0.2.5:5060", 3600)
    config = load(WITH_MWI)
    again = load_config_text(yaml.safe_dump(config.to_dict()), "again.yaml")
    assert again == config


def test_mwi_bad_values_are_named() -> None:
    (bad,) = issues(GOOD + "    mwi: {expires: 5}\n")
    assert "mwi.expires" in bad.path
    (bad,) = issues(GOOD + "    mwi: {server: 'http://vm'}\n")
    assert "mwi.server" in bad.path and "trunk" in bad.expected
    (bad,) = issues(GOOD + "    mwi: {subscribe: maybe}\n")
    assert "mwi.subscribe" in bad.path
    (bad,) = issues(GOOD + "    mwi: {sever: trunk}\n")
    assert "server" in bad.message
    (bad,) = issues(NO_ACCOUNT % "trunk")
    assert "trunk account" in bad.message


def test_json_schema_takes_mwi() -> None:
    schema = json.loads(json.dumps(export_json_schema()))
    doc = yaml.safe_load(WITH_MWI)
    jsonschema.validate(doc, schema)
    doc["lines"][0]["mwi"]["expires"] = 5
    try:
        jsonschema.validate(doc, schema)
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("expires 5 accepted by the JSON schema")
