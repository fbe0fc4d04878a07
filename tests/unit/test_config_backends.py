"""Backend names and backend options are checked when the config is loaded, not at start-up.

`backend: simm` used to pass `check-config` and then kill `branchline run` with a traceback
(HalError from hal/registry.py). The list of backends and their options lives in
hal/registry.py; the loader reads it without importing any driver.
"""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import ConfigError, ConfigIssue, load_config_text
from hal import registry

BAD_BACKEND = """\
lines:
  - name: "1"
    backend: simm
    number: "101"
"""


def issues(text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as err:
        load_config_text(textwrap.dedent(text), "office.yaml", route_probe=lambda toward: None)
    return err.value.errors


def test_unknown_backend_is_refused_with_position_and_suggestion() -> None:
    [issue] = issues(BAD_BACKEND)
    assert (issue.line, issue.column) == (3, 14)
    assert issue.path == "lines[0].backend"
    assert "unknown FXS backend 'simm'" in issue.message
    assert "did you mean 'sim'?" in issue.message
    assert "'ag1171'" in issue.expected and "'sim'" in issue.expected


def test_backend_without_near_miss_gets_no_suggestion() -> None:
    [issue] = issues(BAD_BACKEND.replace("simm", "si3215"))
    assert "did you mean" not in issue.message


def test_unknown_option_points_at_the_key_and_suggests() -> None:
    found = issues("""\
        lines:
          - name: "1"
            backend: sim
            number: "101"
            options:
              coutry: DE
        """)
    [issue] = found
    assert (issue.line, issue.column) == (6, 7)
    assert issue.path == "lines[0].options.coutry"
    assert "did you mean 'country'?" in issue.message


def test_wrong_option_types_point_at_the_value() -> None:
    found = issues("""\
        lines:
          - name: "1"
            backend: ag1171
            number: "101"
            options: {shk_pin: 17, rm_pin: [27], fr_pin: 22, ring_hz: fast, pin_factory: lgpoi}
        """)
    by_path = {i.path: i for i in found}
    assert set(by_path) == {
        "lines[0].options.rm_pin", "lines[0].options.ring_hz", "lines[0].options.pin_factory"}
    assert (by_path["lines[0].options.rm_pin"].line,
            by_path["lines[0].options.rm_pin"].column) == (5, 36)
    assert "a list" in by_path["lines[0].options.rm_pin"].message
    assert "'fast'" in by_path["lines[0].options.ring_hz"].message
    assert "did you mean 'lgpio'?" in by_path["lines[0].options.pin_factory"].message


def test_required_options_are_named() -> None:
    [issue] = issues("""\
        lines:
          - name: "1"
            backend: ag1171
            number: "101"
            options: {shk_pin: 17}
        """)
    assert issue.line == 5 and issue.path == "lines[0].options"
    assert "rm_pin" in issue.message and "fr_pin" in issue.message


def test_good_options_load() -> None:
    config = load_config_text(textwrap.dedent("""\
        lines:
          - {name: "1", backend: sim, number: "101", options: {country: DE, auto_answer_ms: null}}
          - name: "2"
            backend: ag1171
            number: "102"
            options: {shk_pin: 17, rm_pin: GPIO27, fr_pin: 22, ring_hz: 25.0}
        """), "office.yaml", route_probe=lambda toward: None)
    assert config.lines[1].options["rm_pin"] == "GPIO27"


def test_registry_lists_every_option_the_sim_driver_reads() -> None:
    from hal.sim import fxs

    assert set(registry.FXS_OPTIONS["sim"]) == fxs._KNOWN
    assert set(registry.FXS_OPTIONS) == set(registry.FXS_BACKENDS)


def test_check_config_prints_line_column_and_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "office.yaml"
    path.write_text(BAD_BACKEND)
    out, err = io.StringIO(), io.StringIO()
    assert main(["check-config", str(path)], stdout=out, stderr=err) != 0
    assert f"{path}:3:14: lines[0].backend: unknown FXS backend 'simm'" in err.getvalue()
    assert "did you mean 'sim'?" in err.getvalue()


def test_run_refuses_a_bad_backend_with_exit_2_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "office.yaml"
    path.write_text(BAD_BACKEND)
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(path),
         "--control", str(tmp_path / "c.sock")],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "did you mean 'sim'?" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "HalError" not in proc.stderr + proc.stdout


def test_json_schema_knows_the_backends_and_their_options() -> None:
    import jsonschema  # a test dependency (pyproject [test]): missing means a broken install

    from gateway.config.jsonschema import export_json_schema

    validator = jsonschema.Draft202012Validator(export_json_schema())

    def errors(line: dict[str, object]) -> list[str]:
        base = {"name": "1", "number": "101"}
        return [e.message for e in validator.iter_errors({"lines": [{**base, **line}]})]

    assert errors({"backend": "sim"}) == []
    assert errors({"backend": "sim", "options": {"country": "DE", "auto_answer_ms": None}}) == []
    assert errors({"backend": "ag1171",
                   "options": {"shk_pin": 17, "rm_pin": "GPIO27", "fr_pin": 22}}) == []
    assert errors({"backend": "simm"})
    assert errors({"backend": "sim", "options": {"coutry": "DE"}})
    assert errors({"backend": "sim", "options": {"clock": "frame"}})
    assert errors({"backend": "ag1171"})  # its pins are required
    assert errors({"backend": "ag1171", "options": {"shk_pin": 17, "rm_pin": [27], "fr_pin": 2}})
