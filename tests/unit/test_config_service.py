"""Service config keys: call_records, push, metrics, reload, gateway.log, and `!secret` values
read from a secrets file (mode and owner checked; values never shown)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import yaml

from gateway.config import ConfigError, load_config, load_config_text
from gateway.config import schema as s
from gateway.config.jsonschema import export_json_schema
from gateway.config.service import (
    CallRecordSettings,
    MetricsSettings,
    PushSettings,
    ReloadSettings,
)

BASE = """\
sip:
  listen: 127.0.0.1:5070
trunks:
  - name: main
    registrar: 192.0.2.10
lines:
  - name: "1"
    backend: sim
    number: "101"
    trunk: {name: main, username: alice, password: PW}
"""


def load(text: str) -> s.Config:
    return load_config_text(textwrap.dedent(text), "gw.yaml", route_probe=lambda toward: None)


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text)
    return [issue.format("gw.yaml") for issue in info.value.errors]


def secrets_file(tmp_path: Path, body: str, mode: int = 0o600) -> Path:
    path = tmp_path / "secrets.yaml"
    path.write_text(body)
    os.chmod(path, mode)
    return path


def with_secrets(path: Path, text: str) -> str:
    return f"gateway:\n  secrets_file: {path}\n" + text


def test_defaults_when_the_sections_are_absent() -> None:
    config = load(BASE.replace("PW", "s3cret-Pa55"))
    assert config.call_records == CallRecordSettings(90, 100_000)
    assert config.push is None and config.metrics is None
    assert config.reload == ReloadSettings(0.0)
    assert config.gateway.log == "auto" and config.gateway.secrets_file is None


def test_every_section_read() -> None:
    config = load(BASE.replace("PW", "s3cret-Pa55") + """\
call_records: {max_age_days: 30, max_rows: 5000}
push:
  url: https://crm.example.net/hooks/calls
  token: tok-abcdef-123
  timeout: 2.5
  max_queue: 50
metrics:
  listen: 127.0.0.1:9467
reload:
  confirm_within: 45
""")
    assert config.call_records == CallRecordSettings(30, 5000)
    assert config.push == PushSettings("https://crm.example.net/hooks/calls", "tok-abcdef-123",
                                       2.5, 50)
    assert config.metrics == MetricsSettings(s.HostPort("127.0.0.1", 9467))
    assert config.reload.confirm_within == 45.0
    assert "tok-abcdef-123" not in repr(config)
    assert config.redacted()["push"]["token"] == "***"
    assert config.to_dict()["push"]["token"] == "tok-abcdef-123"
    # what to_dict() gives loads back to the same config
    again = load_config_text(yaml.safe_dump(config.to_dict()), "x",
                             route_probe=lambda toward: None)
    assert again == config


def test_bad_values_are_all_listed_with_positions() -> None:
    found = errors(BASE.replace("PW", "s3cret-Pa55") + """\
gateway_typo: 1
call_records: {max_age_days: 0, max_rows: 50}
push:
  url: ftp://x.example/
  timeout: 0
metrics:
  listen: localhost
reload:
  confirm_within: -1
""")
    text = "\n".join(found)
    assert "gw.yaml:11:1: gateway_typo: unknown key" in text
    assert "gw.yaml:12:30: call_records.max_age_days: 0 is out of range" in text
    assert "gw.yaml:12:43: call_records.max_rows: 50 is out of range" in text
    assert "gw.yaml:14:8: push.url: URL scheme 'ftp' is not http or https" in text
    assert "gw.yaml:15:12: push.timeout" in text
    assert "gw.yaml:17:11: metrics.listen" in text
    assert "gw.yaml:19:19: reload.confirm_within" in text


def test_push_needs_a_url_and_log_is_a_choice() -> None:
    found = errors("gateway: {log: syslog}\npush: {token: abc}\n")
    assert any("gateway.log: unknown value 'syslog'" in e for e in found)
    assert any("push.url: missing required key 'url'" in e for e in found)


def test_secret_values_come_from_the_file_and_never_show(tmp_path: Path) -> None:
    path = secrets_file(tmp_path, "trunk_pw: Very-Secret-77\npush_token: tok-XYZ-998877\n")
    text = with_secrets(path, BASE.replace("PW", "!secret trunk_pw")
                        + "push: {url: 'https://h.example/x', token: !secret push_token}\n")
    config = load(text)
    assert config.lines[0].trunk is not None
    assert config.lines[0].trunk.password == "Very-Secret-77"
    assert config.push is not None and config.push.token == "tok-XYZ-998877"
    shown = repr(config) + repr(config.redacted())
    assert "Very-Secret-77" not in shown and "tok-XYZ-998877" not in shown
    assert config.gateway.secrets_file == str(path)


def test_a_secret_in_a_field_that_is_not_a_password_is_masked_too(tmp_path: Path) -> None:
    path = secrets_file(tmp_path, "user: alice-hidden-name\n")
    config = load(with_secrets(path, BASE.replace("PW", "s3cret-Pa55")
                               .replace("username: alice", "username: !secret user")))
    assert config.lines[0].trunk is not None
    assert config.lines[0].trunk.username == "alice-hidden-name"
    assert "alice-hidden-name" not in repr(config.redacted())


def test_a_missing_secret_name_is_an_error_at_its_position(tmp_path: Path) -> None:
    path = secrets_file(tmp_path, "other: x-long-value\n")
    found = errors(with_secrets(path, BASE.replace("PW", "!secret trunk_pw")))
    assert found == [f"gw.yaml:12:52: lines[0].trunk.password: secret 'trunk_pw' is not in "
                     f"{path} (expected: a name defined in the secrets file)"]


def test_a_secret_without_a_secrets_file_is_an_error() -> None:
    found = errors(BASE.replace("PW", "!secret trunk_pw"))
    assert len(found) == 1 and "needs gateway.secrets_file" in found[0]
    assert found[0].startswith("gw.yaml:10:52: lines[0].trunk.password")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o700 | 0o020])
def test_a_secrets_file_others_can_read_or_write_is_refused(tmp_path: Path, mode: int) -> None:
    path = secrets_file(tmp_path, "trunk_pw: Very-Secret-77\n", mode)
    found = errors(with_secrets(path, BASE.replace("PW", "!secret trunk_pw")))
    assert len(found) == 1, found
    assert f"has mode {mode:04o}" in found[0] and "chmod 600" in found[0]
    assert found[0].startswith("gw.yaml:2:17: gateway.secrets_file:")
    assert "Very-Secret-77" not in found[0]


def test_a_secrets_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    path = secrets_file(tmp_path, "trunk_pw: Very-Secret-77\n")
    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")  # the CI container runs as root
    os.chown(path, os.geteuid() + 1, -1)
    found = errors(with_secrets(path, BASE.replace("PW", "!secret trunk_pw")))
    assert len(found) == 1 and f"owned by uid {os.geteuid() + 1}" in found[0]


def test_a_secrets_file_used_through_a_symlink_is_refused(tmp_path: Path) -> None:
    path = secrets_file(tmp_path, "trunk_pw: Very-Secret-77\n")
    link = tmp_path / "link.yaml"
    link.symlink_to(path)
    found = errors(with_secrets(link, BASE.replace("PW", "!secret trunk_pw")))
    assert len(found) == 1 and "cannot open secrets file" in found[0]


def test_a_secrets_file_is_checked_even_when_no_value_uses_it(tmp_path: Path) -> None:
    path = secrets_file(tmp_path, "a: b\n", 0o644)
    found = errors(with_secrets(path, BASE.replace("PW", "s3cret-Pa55")))
    assert len(found) == 1 and "has mode 0644" in found[0]


def test_an_invalid_value_from_a_secret_never_shows_it(tmp_path: Path) -> None:
    path = secrets_file(tmp_path, "num: not-digits-zz9\n")
    found = errors(with_secrets(path, BASE.replace("PW", "s3cret-Pa55")
                                .replace('number: "101"', "number: !secret num")))
    assert len(found) == 1 and "lines[0].number" in found[0]
    assert "not-digits-zz9" not in found[0]


def test_a_secrets_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = secrets_file(tmp_path, "- a\n- b\n")
    found = errors(with_secrets(path, BASE.replace("PW", "!secret trunk_pw")))
    assert len(found) == 1 and "must be a mapping" in found[0]


def test_load_config_reads_secrets_relative_to_nothing(tmp_path: Path) -> None:
    path = secrets_file(tmp_path, "trunk_pw: Very-Secret-77\n")
    config_file = tmp_path / "gw.yaml"
    config_file.write_text(with_secrets(path, BASE.replace("PW", "!secret trunk_pw")))
    config = load_config(config_file, route_probe=lambda toward: None)
    assert config.lines[0].trunk is not None
    assert config.lines[0].trunk.password == "Very-Secret-77"


def test_json_schema_knows_the_service_keys() -> None:
    import jsonschema

    schema = export_json_schema()
    props = schema["properties"]
    for key in ("call_records", "push", "metrics", "reload"):
        assert key in props
    assert tuple(props["gateway"]["properties"]) == s.GATEWAY_KEYS
    validator = jsonschema.Draft202012Validator(schema)
    config = load(BASE.replace("PW", "s3cret-Pa55") + """\
push: {url: 'https://h.example/x', token: abc}
metrics: {listen: 127.0.0.1:9467}
reload: {confirm_within: 30}
""")
    validator.validate(config.to_dict())
    assert list(validator.iter_errors({"push": {"url": "ftp://x"}}))
    assert list(validator.iter_errors({"reload": {"confirm_within": -1}}))


def test_check_config_and_run_refuse_a_readable_secrets_file(tmp_path: Path) -> None:
    """The admin commands report the refused secrets file; `run` does not start (exit 2)."""
    import io

    from gateway.cli import main

    path = secrets_file(tmp_path, "trunk_pw: Very-Secret-77\n", 0o644)
    config_file = tmp_path / "gw.yaml"
    config_file.write_text(with_secrets(path, BASE.replace("PW", "!secret trunk_pw")))
    out, err = io.StringIO(), io.StringIO()
    assert main(["check-config", str(config_file)], stdout=out, stderr=err) == 1
    assert "has mode 0644" in err.getvalue() and "Very-Secret-77" not in err.getvalue()
    err = io.StringIO()
    assert main(["run", "--config", str(config_file)], stdout=out, stderr=err) == 2
    assert "has mode 0644" in err.getvalue()


def test_a_sim_pin_from_the_secrets_file(tmp_path: Path) -> None:
    from tests.unit.test_config_modems import GOOD as MODEMS

    path = secrets_file(tmp_path, "sim_pin: '0042'\n")
    text = MODEMS.replace("pin: 0000", "pin: !secret sim_pin")
    assert "!secret sim_pin" in text
    config = load(with_secrets(path, text))
    pins = [m.pin for m in config.modems if m.pin is not None]
    assert pins == ["0042"]
    assert "0042" not in repr(config) and "0042" not in repr(config.redacted())


def test_secret_values_keep_the_text_written(tmp_path: Path) -> None:
    """`0042` unquoted in the secrets file is the text "0042", not the octal number 34."""
    path = secrets_file(tmp_path, "trunk_pw: 00420042\nother: on\n")
    config = load(with_secrets(path, BASE.replace("PW", "!secret trunk_pw")))
    assert config.lines[0].trunk is not None
    assert config.lines[0].trunk.password == "00420042"


def test_a_name_written_twice_in_the_secrets_file_is_refused(tmp_path: Path) -> None:
    path = secrets_file(tmp_path, "a: one-value\na: two-value\n")
    found = errors(with_secrets(path, BASE.replace("PW", "!secret a")))
    assert len(found) == 1 and "line 2: 'a' is written twice" in found[0]
    assert "one-value" not in found[0] and "two-value" not in found[0]
