"""`security.digest_algorithms`: loaded, exported in the JSON Schema, and wired to the edge."""

from __future__ import annotations

import yaml

from gateway.config import schema as s
from gateway.config.jsonschema import export_json_schema
from gateway.config.loader import load_config_text
from gateway.config.schema import Config
from gateway.runtime.edge import build_edge
from gateway.sip import auth

BASE = "gateway: {name: g, state_dir: /tmp/x}\nsip: {listen: 127.0.0.1:5070, public_host: 127.0.0.1}\n"


def load(extra: str = "") -> Config:
    return load_config_text(BASE + extra, route_probe=lambda toward: None)


def test_default_offer_is_md5_then_sha256_and_reaches_the_edge() -> None:
    cfg = load()
    assert cfg.security.digest_algorithms == ("MD5", "SHA-256")
    assert build_edge(cfg).digest_algorithms == ("MD5", "SHA-256")


def test_configured_offer_reaches_the_edge_and_survives_a_round_trip() -> None:
    cfg = load("security:\n  digest_algorithms: [SHA-256]\n")
    assert build_edge(cfg).digest_algorithms == ("SHA-256",)
    again = load_config_text(yaml.safe_dump(cfg.to_dict()), route_probe=lambda toward: None)
    assert again == cfg and again.security.digest_algorithms == ("SHA-256",)


def test_every_configurable_algorithm_is_one_the_edge_can_check() -> None:
    assert set(s.DIGEST_ALGORITHMS) == set(auth.SERVER_SUPPORTED)
    for name in s.DIGEST_ALGORITHMS:
        cfg = load(f"security:\n  digest_algorithms: [{name}]\n")
        assert build_edge(cfg).digest_algorithms == (name,)


def test_json_schema_describes_the_security_section() -> None:
    prop = export_json_schema()["properties"]["security"]
    assert prop["additionalProperties"] is False
    algorithms = prop["properties"]["digest_algorithms"]
    assert algorithms["items"]["enum"] == list(s.DIGEST_ALGORITHMS)
    assert algorithms["default"] == ["MD5", "SHA-256"]
    assert algorithms["minItems"] == 1 and algorithms["uniqueItems"] is True
