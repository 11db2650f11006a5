"""The Prometheus rules: valid (`promtool check rules`), behaving as specified (`promtool test rules`
on deploy/prometheus/tests), every alert tested firing and not firing, and the local runtime's
Prometheus configuration loading them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from streams.metrics import FraudMetrics, PipelineMetrics
from streams.runtime.services import Prometheus
from streams.settings import Settings, project_dir

PROMETHEUS = project_dir() / "deploy" / "prometheus"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
TEST_FILES = sorted((PROMETHEUS / "tests").glob("*.yml"))
DOC = project_dir() / "docs" / "observability.md"


def promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is installed by `make deps` (Debian's prometheus package)"
    return subprocess.run(
        [binary, *map(str, args)], capture_output=True, text=True, check=False, cwd=cwd, timeout=120
    )


def alerts() -> dict[str, dict[str, Any]]:
    """Alert name -> its rule, from every rule file."""
    return {
        rule["alert"]: rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def test_the_rule_files_are_valid() -> None:
    assert RULE_FILES and TEST_FILES
    result = promtool("check", "rules", *RULE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_pass_their_promtool_unit_tests() -> None:
    result = promtool("test", "rules", *(path.name for path in TEST_FILES), cwd=PROMETHEUS / "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    cases: dict[str, set[bool]] = {}
    for path in TEST_FILES:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                cases.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    assert len(alerts()) >= 10
    assert {name: cases.get(name, set()) for name in alerts()} == {name: {True, False} for name in alerts()}


@pytest.mark.parametrize("name", sorted(alerts()))
def test_every_alert_waits_has_a_severity_and_a_runbook(name: str) -> None:
    rule = alerts()[name]
    assert re.fullmatch(r"\d+[smh]", rule.get("for", "")), name
    assert rule["labels"]["severity"] in {"warning", "critical"}, name
    annotations = rule["annotations"]
    assert annotations["summary"].strip() and annotations["description"].strip(), name
    assert annotations["runbook"] == f"docs/observability.md#{name.lower()}", name
    assert re.search(rf"^#+ {name}$", DOC.read_text(), re.MULTILINE), f"{name} is not documented in {DOC}"


def test_the_rules_use_only_metrics_the_workers_export() -> None:
    registry = CollectorRegistry()
    PipelineMetrics(registry, "v1")
    FraudMetrics(registry)
    exported = set()
    for family in registry.collect():
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
            "info": ("_info",),
        }.get(family.type, ("",))
        exported |= {family.name + suffix for suffix in suffixes}
    exprs = [
        rule["expr"]
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]
    # Metric names, not the recording rules' level:metric:operation names.
    used = {name for expr in exprs for name in re.findall(r"(?<![\w:])(streams_\w+)\b(?!:)", expr)}
    assert used and used <= exported, sorted(used - exported)


def test_the_local_runtime_configuration_loads_the_rules(tmp_path: Path) -> None:
    settings = Settings().model_copy(
        update={"runtime": Settings().runtime.model_copy(update={"home": tmp_path})}
    )
    Prometheus("prometheus", settings).prepare()  # renders the configuration the runtime starts with
    config = tmp_path / "prometheus" / "prometheus.yml"
    result = promtool("check", "config", config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(RULE_FILES)} rule files found" in result.stdout, result.stdout
