"""gateway.runtime.forwarding's state file and line setup, without a daemon: the handset's
settings survive a restart, a config change wins over them, a bad file falls back to the
config, and each line's digit map carries its star codes."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from gateway.config import load_config_text
from gateway.lines.features import FeatureRequest, ForwardState
from gateway.routing.dialplan import DigitMap, MatchResult
from gateway.runtime import forwarding


def gateway(tmp: Path, features: str = "") -> Any:
    text = textwrap.dedent(f"""\
        gateway: {{name: office, state_dir: {tmp}}}
        lines:
          - name: desk
            backend: sim
            number: "101"
        """) + "".join(f"    {line}\n" for line in features.splitlines())
    config = load_config_text(text, "office.yaml", route_probe=lambda toward: None)
    return SimpleNamespace(config=config)


def set_state(gw: Any, request: FeatureRequest) -> None:
    states = forwarding._states(gw)
    states["desk"] = states["desk"].apply(request)
    forwarding._save(gw)


def test_handset_settings_survive_a_restart(tmp_path: Path) -> None:
    gw = gateway(tmp_path)
    set_state(gw, FeatureRequest("forward_busy", True, "2001"))
    set_state(gw, FeatureRequest("dnd", True))
    again = gateway(tmp_path)  # a new process reads the file
    assert forwarding.forwarding_status(again, "desk") == ForwardState(
        busy="2001", dnd=True).to_json()
    assert (tmp_path / forwarding.STATE_FILE).stat().st_mode & 0o777 == 0o600


def test_a_changed_config_wins_over_the_stored_state(tmp_path: Path) -> None:
    set_state(gateway(tmp_path), FeatureRequest("dnd", True))
    changed = gateway(tmp_path, 'features: {forward_always: "555"}')
    assert forwarding._states(changed)["desk"] == ForwardState(always="555")


def test_a_bad_state_file_falls_back_to_the_config(tmp_path: Path) -> None:
    gw = gateway(tmp_path, "features: {dnd: true}")
    (tmp_path / forwarding.STATE_FILE).write_text("{not json")
    assert forwarding._states(gw)["desk"] == ForwardState(dnd=True)
    (tmp_path / forwarding.STATE_FILE).write_text(json.dumps({"lines": {"desk": {
        "config": ForwardState(dnd=True).to_json(), "state": {"dnd": "yes"}}}}))
    assert forwarding._states(gateway(tmp_path, "features: {dnd: true}"))["desk"] == \
        ForwardState(dnd=True)


def test_line_setup_adds_star_codes_timers_and_flash_window(tmp_path: Path) -> None:
    gw = gateway(tmp_path, "timers: {short_inter_digit: 1.5, flash_min_ms: 250}\n"
                           "features: {star_codes: {dnd_on: '*55'}}")
    kwargs = forwarding.line_setup(gw.config.lines[0], DigitMap("(1xx|[2-9]xxxxxx)"))
    assert kwargs["short_inter_digit_timeout"] == 1.5
    assert kwargs["hook_settings"].flash_min == 0.25
    m = kwargs["digit_map"]
    assert m.match("*55") is MatchResult.FULL
    assert m.match("*78") is MatchResult.NO_MATCH  # replaced by *55
    assert m.match("123") is MatchResult.FULL
