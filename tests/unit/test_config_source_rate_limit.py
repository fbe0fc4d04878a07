"""`security.rate_limit`: the budgets of every source that is not a trunk (phones behind one
NAT share one), loaded, exported, and wired to the daemon's edge; the default is what the
edge always used."""

from __future__ import annotations

import pytest
import yaml

from gateway.config.jsonschema import export_json_schema
from gateway.config.loader import ConfigError, load_config_text
from gateway.config.schema import Config
from gateway.runtime.trunk_trust import source_limiter
from gateway.security.ratelimit import Budget, RateLimits

BASE = "gateway: {name: g, state_dir: /tmp/x}\nsip: {listen: 127.0.0.1:5070, public_host: 127.0.0.1}\n"


def load(extra: str = "") -> Config:
    return load_config_text(BASE + extra, route_probe=lambda toward: None)


def test_default_is_the_edges_built_in_budget() -> None:
    limiter = source_limiter(load().security)
    assert limiter.limits == RateLimits()
    null = load("security:\n  rate_limit: null\n")
    assert source_limiter(null.security).limits == RateLimits()


def test_configured_budget_reaches_the_limiter_and_survives_a_round_trip() -> None:
    cfg = load("security:\n  rate_limit: {calls_per_second: 500, call_burst: 1000}\n")
    limits = source_limiter(cfg.security).limits
    assert limits.call == Budget(500.0, 1000.0)
    assert limits.request == RateLimits().request  # keys not written keep the default
    assert limits.auth_failure == RateLimits().auth_failure  # the lockout is not loosened
    again = load_config_text(yaml.safe_dump(cfg.to_dict()), route_probe=lambda toward: None)
    assert again == cfg


def test_a_bad_budget_is_refused_with_its_place() -> None:
    with pytest.raises(ConfigError) as err:
        load("security:\n  rate_limit: {calls_per_second: 0, speed: 3}\n")
    text = str(err.value)
    assert "calls_per_second" in text and "speed" in text


def test_json_schema_describes_it() -> None:
    prop = export_json_schema()["properties"]["security"]["properties"]["rate_limit"]
    body = next(p for p in prop["anyOf"] if p.get("type") == "object") if "anyOf" in prop \
        else prop
    assert set(body["properties"]) == {"requests_per_second", "request_burst",
                                       "calls_per_second", "call_burst"}
    assert body["properties"]["call_burst"]["default"] == 30.0
