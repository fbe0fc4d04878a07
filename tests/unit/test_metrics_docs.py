"""docs/metrics.md agrees with the collector, and its alert rules are valid Prometheus rules
(checked and exercised with promtool, from Debian's `prometheus` package)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.runtime.metrics import build_registry, render
from tests.unit.test_metrics import stand_in

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def yaml_blocks(section: str) -> list[str]:
    text = DOC.read_text()
    part = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```yaml\n(.*?)```", part, re.S)


def emitted() -> set[str]:
    loop = asyncio.new_event_loop()
    try:
        gw = stand_in(loop)
        text = render(build_registry(gw, process=False)).decode()
        gw.trunk_health.stop()
    finally:
        loop.close()
    assert list(text_string_to_metric_families(text))
    return set(re.findall(r"^# TYPE (\S+) ", text, re.M))  # families, with or without samples


def test_every_metric_is_documented_and_every_documented_metric_exists() -> None:
    documented = set(re.findall(r"^\| `(branchline_\w+)`", DOC.read_text(), re.M))
    names = emitted()
    assert names - documented == set(), "emitted but not in docs/metrics.md"
    assert documented - names == set(), "in docs/metrics.md but never emitted"
    used = set(re.findall(r"branchline_\w+", "".join(yaml_blocks("Alert rules"))))
    assert used - names == set(), "alert rules use metrics the daemon does not emit"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("BRANCHLINE_REQUIRE_PEERS") == "1":
            pytest.fail("promtool not installed (apt-get install prometheus)")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return found


RULE_TESTS = """
rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'branchline_trunk_health_state{instance="b1",job="branchline",trunk="main",state="down"}'
        values: '0 0 1 1 1 1 1'
      - series: 'branchline_registration_registered{instance="b1",job="branchline",account="1",trunk="main"}'
        values: '1 1 0 0 0 0 0 0 0'
      - series: 'branchline_push_queue_depth{instance="b1",job="branchline"}'
        values: '50+10x60'
    alert_rule_test:
      - eval_time: 5m
        alertname: BranchlineTrunkDown
        exp_alerts:
          - exp_labels: {severity: critical, instance: b1, job: branchline, trunk: main, state: down}
            exp_annotations:
              summary: "Trunk main on b1 is down"
              description: "Calls go to the next route target (GSM, FXO) while it is down; see branchline status."
      - eval_time: 3m
        alertname: BranchlineTrunkDown
        exp_alerts: []
      - eval_time: 8m
        alertname: BranchlineRegistrationLost
        exp_alerts:
          - exp_labels: {severity: warning, instance: b1, job: branchline, account: "1", trunk: main}
            exp_annotations:
              summary: "1 on b1 is not registered with main"
              description: "Incoming calls from the trunk cannot reach it; branchline status shows the reason."
      - eval_time: 40m
        alertname: BranchlinePushQueueGrowing
        exp_alerts:
          - exp_labels: {severity: warning, instance: b1, job: branchline}
            exp_annotations:
              summary: "450 call records waiting for the CRM endpoint on b1"
              description: "The endpoint is slow or down (status shows the last error); records are kept, the oldest beyond push.max_queue are dropped."
"""


def test_alert_rules_pass_promtool(tmp_path: Path) -> None:
    tool = promtool()
    (block,) = yaml_blocks("Alert rules")
    rules = tmp_path / "rules.yml"
    rules.write_text(block)
    checked = subprocess.run([tool, "check", "rules", str(rules)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 8 rules found" in checked.stdout + checked.stderr
    (tmp_path / "tests.yml").write_text(RULE_TESTS)
    tested = subprocess.run([tool, "test", "rules", "tests.yml"], capture_output=True,
                            text=True, timeout=60, cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_scrape_config_blocks_are_yaml() -> None:
    import yaml

    for block in yaml_blocks("Scrape config"):
        assert yaml.safe_load(block)
