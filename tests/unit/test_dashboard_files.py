"""The Grafana files are self-consistent: every panel reads the data-source selector and uses only
variables its dashboard defines; the provisioning files point at the dashboards and at Prometheus.
(Every panel's query is run against a real Prometheus in tests/integration/test_dashboards.py.)"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from streams.settings import project_dir

GRAFANA = project_dir() / "deploy" / "grafana"
BOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
GRAFANA_VARIABLES = {"__rate_interval", "__interval", "__range"}


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    top = [p for p in board["panels"] if p["type"] != "row"]
    return top + [n for p in board["panels"] if p["type"] == "row" for n in p.get("panels", [])]


def test_three_dashboards_with_distinct_uids() -> None:
    boards = [json.loads(path.read_text()) for path in BOARDS]
    assert {path.name for path in BOARDS} == {
        "streams-pipeline-health.json",
        "streams-ctr.json",
        "streams-fraud.json",
    }
    assert len({b["uid"] for b in boards}) == len({b["title"] for b in boards}) == 3


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.stem)
def test_every_panel_queries_prometheus_through_the_selector(path: Path) -> None:
    board = json.loads(path.read_text())
    defined = {v["name"] for v in board["templating"]["list"]} | GRAFANA_VARIABLES
    assert {"datasource", "version", "instance"} <= defined
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels(board):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and panel.get("description"), panel["title"]
        for target in panel["targets"]:
            used = {a or b for a, b in re.findall(r"\$(?:\{(\w+)\}|(\w+))", target["expr"])}
            assert used <= defined, (panel["title"], used - defined)
            assert 'instance=~"$instance"' in target["expr"], panel["title"]


def test_provisioning_points_at_prometheus_and_the_dashboards() -> None:
    datasource = (GRAFANA / "provisioning" / "datasources" / "streams.yml").read_text()
    provider = (GRAFANA / "provisioning" / "dashboards" / "streams.yml").read_text()
    assert re.search(r"^\s+type: prometheus$", datasource, re.MULTILINE)
    assert re.search(r"^\s+url: \$\{STREAMS_PROMETHEUS_URL\}$", datasource, re.MULTILINE)
    assert re.search(r"^\s+type: file$", provider, re.MULTILINE)
    assert re.search(r"^\s+path: \$\{STREAMS_GRAFANA_DASHBOARDS\}$", provider, re.MULTILINE)
