"""The generated Grafana dashboard: its queries parse and read only metrics that exist."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.monitoring import dashboard, rules
from pipelines.params import MonitorParams, RegisterParams, load_paths, load_section
from pipelines.schema import load_schema
from tests.support.promtool import check_rules, exported_names, metric_names, needs_promtool

ROOT = Path(__file__).resolve().parents[2]
PARAMS = load_section("monitor", MonitorParams, ROOT / "params.yaml")
MODEL = load_section("register", RegisterParams, ROOT / "params.yaml").model_name
SCHEMA = load_schema(ROOT / load_paths(ROOT / "params.yaml").schema_)
FEATURES = len(SCHEMA.features)
TASK = SCHEMA.target.task  # a multiclass model's dashboard and rules watch its predicted class
# Grafana fills these in before a query reaches Prometheus
VARIABLES = {"$namespace": "prod", "$model_version": "v1"}


@pytest.fixture(scope="module")
def document() -> dict:
    return json.loads((ROOT / "deploy" / "monitoring" / "dashboard.json").read_text())


def queries(document: dict) -> list[tuple[str, str]]:
    found = list(dashboard.queries(document))
    assert found, "the dashboard has no queries"
    return [(title, _filled(expr)) for title, expr in found]


def _filled(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unknown variable in {expr}"
    return expr


def test_the_committed_dashboard_is_the_generators():
    expected = dashboard.dashboard(PARAMS, MODEL, TASK)
    committed = json.loads((ROOT / "deploy" / "monitoring" / "dashboard.json").read_text())
    assert committed == expected


@needs_promtool
def test_every_panel_query_parses(document, tmp_path):
    panels = queries(document)
    group = {
        "name": "dashboard",
        "rules": [
            {"record": f"panel:query_{i}:check", "expr": e} for i, (_, e) in enumerate(panels)
        ],
    }
    done = check_rules({"groups": [group]}, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    # ... and promtool does reject a query that does not parse
    group["rules"].append({"record": "panel:broken:check", "expr": "sum by (bin (x)"})
    assert check_rules({"groups": [group]}, tmp_path).returncode != 0


def test_every_metric_is_exported_or_recorded(document):
    groups = rules.rule_groups(PARAMS, MODEL, FEATURES, TASK)
    recorded = {r["record"] for g in groups["groups"] for r in g["rules"] if "record" in r}
    known = recorded | exported_names()
    for title, expr in queries(document):
        unknown = metric_names(expr) - known
        assert not unknown, f"panel {title!r} reads {unknown}, which nothing exports or records"


def test_the_dashboard_shows_what_the_service_is_judged_by(document):
    titles = {p["title"] for p in document["panels"]}
    text = json.dumps(document)
    for needed in ("Traffic", "Errors by outcome", "Latency p50 and p99", "Model version"):
        assert needed in titles
    assert "model:score_bin_served:fraction" in text
    assert "model:score_bin_reference:fraction" in text
    assert f"topk(10, model:feature_psi:{PARAMS.window}" in text
    # each panel reads one model, in one namespace
    for _, expr in dashboard.queries(document):
        assert f'model="{MODEL}", namespace="$namespace"' in expr
    variables = {v["name"] for v in document["templating"]["list"]}
    assert variables == {"datasource", "namespace", "model_version"}
    assert len({p["id"] for p in document["panels"]}) == len(document["panels"])


def test_a_multiclass_dashboard_shows_the_predicted_class_shares():
    document = dashboard.dashboard(PARAMS, MODEL, "multiclass")
    groups = rules.rule_groups(PARAMS, MODEL, FEATURES, "multiclass")
    recorded = {r["record"] for g in groups["groups"] for r in g["rules"] if "record" in r}
    extra = [p for p in document["panels"] if "Predicted class" in p["title"]]
    assert len(extra) == 2
    read = set().union(*(metric_names(_filled(t["expr"])) for p in extra for t in p["targets"]))
    assert read == {
        f"model:predicted_class_bin_served:fraction{PARAMS.window}",
        "model:predicted_class_bin_reference:fraction",
        f"model:predicted_class_psi:{PARAMS.window}",
        f"model:predicted_class_psi_threshold:{PARAMS.window}",
    }
    assert read <= recorded
    # the other panels are the binary dashboard's but its selection rates by group (a binary
    # model's decision), and no two panels overlap
    binary = dashboard.dashboard(PARAMS, MODEL)

    def unnumbered(panels: list[dict]) -> list[dict]:
        return [{k: v for k, v in p.items() if k != "id"} for p in panels]

    shared = [p for p in binary["panels"] if not p["title"].startswith("Selection rate")]
    assert unnumbered([p for p in document["panels"] if p not in extra]) == unnumbered(shared)
    places = [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in document["panels"]]
    assert len(set(places)) == len(places)
    assert "predicted_class" not in json.dumps(binary)
