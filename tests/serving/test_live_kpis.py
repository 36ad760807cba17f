"""Live bias and business metrics: declared at promotion, measured by `pipeflow monitor` on a real
server's traffic with feedback, equal to the governance functions computed on the same rows; a
business gate passes or refuses a promotion; alert rules on them fire or are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from helpers import docs_example, pipeflow, start_server, tumours_project

from pipeflow.governance.business import business_metrics
from pipeflow.governance.fairness import bias_metrics
from pipeflow.monitoring.history import load_alerts
from pipeflow.registry import Registry
from pipeflow.store.artifacts import ArtifactStore

COST = {"malignant": {"benign": 500}, "benign": {"malignant": 20}}
DECLARED = {"cost": COST, "value_per_correct": 12.5, "sla_latency_ms": 0.001}


def _spec(
    features: list[str], *, cost: str = "{malignant: {benign: 500}, benign: {malignant: 20}}"
) -> str:
    return f"""\
pipeline: kpis
params: {{max_cost: 50.0}}
stages:
  raw: {{type: ingest, with: {{path: data.csv}}}}
  split:
    type: split
    inputs: {{data: raw}}
    with: {{method: stratified, by: diagnosis, test_size: 0.3, seed: 3}}
  model:
    type: train
    inputs: {{train: split.train}}
    with:
      estimator: sklearn.linear_model.LogisticRegression
      params: {{max_iter: 5000}}
      target: diagnosis
      features: [{", ".join(features)}]
  scores:
    type: evaluate
    inputs: {{model: model, data: split.test}}
    with: {{target: diagnosis}}
  promote:
    type: promote
    inputs: {{model: model, metrics: scores, info: model.info, data: split.test}}
    with:
      name: tumours
      alias: production
      gates: {{accuracy: ">= 0.9", business.cost_per_prediction: "<= ${{params.max_cost}}"}}
      bias: {{sensitive: region, max: {{accuracy_difference: 0.2}}, min_rows: 5}}
      business:
        cost: {cost}
        value_per_correct: 12.5
        sla_latency_ms: 0.001
      importance: false
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tumours with a `region` column that is not a model input: the sensitive attribute, sent
    with the feedback. Promoted to production with bias and business declared."""
    where = tmp_path_factory.mktemp("kpis") / "project"
    frame = tumours_project(where)
    frame["region"] = ["north" if i % 2 else "south" for i in range(len(frame))]
    frame.to_csv(where / "data.csv", index=False)
    features = [c for c in frame.columns if c not in ("diagnosis", "region")]
    (where / "kpis.yaml").write_text(_spec(features))
    (where / "wrong.yaml").write_text(
        _spec(features, cost="{malignant: {begnin: 500}, benign: {malignant: 20}}")
    )
    run = pipeflow(["run", "kpis.yaml", "--quiet"], cwd=where, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    return where


def test_a_business_gate_is_recorded_like_a_metric_and_refuses_a_costly_model(
    project: Path,
) -> None:
    record = Registry(ArtifactStore(str(project / ".pipeflow"))).resolve("tumours", "production")
    assert record["business"] == DECLARED
    business = record["metrics"]["business"]
    assert business["rows"] == record["metrics"]["rows"] and business["sla_breach_rate"] is None
    assert business["cost_per_prediction"] <= 50
    gate = next(g for g in record["gates"] if g["metric"] == "business.cost_per_prediction")
    assert gate["passed"] and gate["value"] == business["cost_per_prediction"]
    card = pipeflow(["models", "card", "tumours@production"], cwd=project)
    assert "### Business metrics" in card.stdout and "| cost_per_prediction |" in card.stdout
    refused = pipeflow(
        ["run", "kpis.yaml", "--quiet", "--set", "params.max_cost=0.0"], cwd=project, timeout=300
    )
    assert refused.returncode == 1
    assert "business.cost_per_prediction" in refused.stdout + refused.stderr
    # the same gate on the recorded metric, by hand
    by_hand = pipeflow(
        ["models", "promote", "tumours", "production", "--to", "staging",
         "--gate", "business.cost_per_prediction<=0"],
        cwd=project,
    )  # fmt: skip
    assert by_hand.returncode == 1
    assert "gate 'business.cost_per_prediction <= 0' failed" in by_hand.stderr


def test_a_changed_declaration_for_the_same_model_makes_a_new_version_that_carries_it(
    project: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "project"
    shutil.copytree(project, copy)  # the module's other tests keep their production version
    store = Registry(ArtifactStore(str(copy / ".pipeflow")))
    before = store.resolve("tumours", "production")
    spec = (
        (copy / "kpis.yaml")
        .read_text()
        .replace("benign: {malignant: 20}", "benign: {malignant: 30}")
    )
    (copy / "dearer.yaml").write_text(spec.replace("pipeline: kpis", "pipeline: dearer"))
    run = pipeflow(["run", "dearer.yaml", "--quiet"], cwd=copy, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    after = store.resolve("tumours", "production")
    assert after["model"]["digest"] == before["model"]["digest"]  # the same model file
    assert after["version"] == before["version"] + 1
    assert after["business"]["cost"]["benign"] == {"malignant": 30}
    assert store.version("tumours", before["version"])["business"] == DECLARED
    again = pipeflow(["run", "dearer.yaml", "--quiet", "--force"], cwd=copy, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert [v["version"] for v in store.versions("tumours")][-1] == after["version"]


def test_a_cost_matrix_naming_no_class_of_the_model_fails_the_promotion_naming_it(
    project: Path,
) -> None:
    run = pipeflow(["run", "wrong.yaml", "--quiet"], cwd=project, timeout=300)
    assert run.returncode == 1
    assert "business.cost.malignant.begnin: no such class" in run.stdout + run.stderr


def test_a_business_gate_without_a_declaration_is_refused_naming_the_field(
    project: Path,
) -> None:
    spec = (project / "kpis.yaml").read_text()
    start = spec.index("      business:\n")
    (project / "undeclared.yaml").write_text(spec[:start])
    run = pipeflow(["check", "undeclared.yaml"], cwd=project)
    assert run.returncode != 0
    out = run.stdout + run.stderr
    assert "gates.business.cost_per_prediction" in out and "business:" in out


def _traffic(served: Any, project: Path, n: int = 120) -> list[dict[str, Any]]:
    """n answered rows with feedback: region sent with the outcome, and in `south` every other
    outcome wrong (so the groups' accuracy differs). The docs' own script
    (docs/examples/kpi_traffic.py), so docs/monitoring.md shows what this test measures."""
    rows, answer = docs_example("kpi_traffic").traffic(served.url, str(project / "data.csv"), n)
    assert answer.status_code == 200 and answer.json() == {"recorded": n}, answer.text
    return rows


def test_monitor_measures_bias_and_business_on_labelled_traffic_and_alerts(
    project: Path, tmp_path: Path
) -> None:
    store = project / ".pipeflow"
    served = start_server(project, "tumours@production", store=store)
    try:
        rows = _traffic(served, project)
    finally:
        served.stop()
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "alerts:\n"
        "  - {metric: business.cost_per_prediction, threshold: '> 1', severity: critical}\n"
        "  - {metric: bias.accuracy_difference, threshold: '> 0.2'}\n"
        "  - {metric: business.net_value_per_prediction, threshold: '> 1000000'}\n"
        "sinks: [{type: log}]\n"
    )
    html = tmp_path / "report.html"
    run = pipeflow(
        ["monitor", "tumours@production", "--window", "10m", "--rules", str(rules),
         "--html", str(html), "--json"],
        cwd=project,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    y_true = [r["outcome"] for r in rows]
    y_pred = [r["prediction"] for r in rows]
    expected = bias_metrics(
        y_true, y_pred, [r["region"] for r in rows], attribute="region", min_rows=5
    )
    bias = report["bias"]
    assert bias["source"] == "feedback" and bias["rows"] == len(rows)
    assert {k: bias[k] for k in expected} == expected  # the gate's function, the same rows
    assert expected["accuracy_difference"] > 0.2  # south's outcomes were half flipped
    assert bias["breaches"] == [
        {"metric": "accuracy_difference", "value": bias["accuracy_difference"], "limit": 0.2}
    ]
    business = business_metrics(y_true, y_pred, DECLARED, latency_ms=None)
    assert {**report["business"], "sla_breach_rate": None} == business
    assert report["business"]["sla_breach_rate"] == 1.0  # nothing is answered within 1 µs
    fired = {a["metric"] for a in report["alerts"]}
    assert fired == {"business.cost_per_prediction", "bias.accuracy_difference"}
    assert fired <= {a["metric"] for a in load_alerts(store)}
    text = html.read_text()
    assert "Bias across region" in text and "cost_per_prediction" in text
    # the declared limit alerts with no rule written (a rule on the metric replaces it, above)
    bare = pipeflow(["monitor", "tumours@production", "--window", "10m", "--json"], cwd=project)
    assert bare.returncode == 0, bare.stderr
    alerts = json.loads(bare.stdout)["alerts"]
    assert [(a["rule"], a["metric"], a["suppressed"]) for a in alerts] == [
        ("declared bias limit accuracy_difference", "bias.accuracy_difference", False)
    ]
    assert "declared bias limit accuracy_difference" in {a["rule"] for a in load_alerts(store)}
    # the words a person reads
    plain = pipeflow(["monitor", "tumours@production", "--window", "10m", "--no-save"], cwd=project)
    assert "bias limit breached: accuracy_difference" in plain.stdout
    assert "business on 120 labelled: cost_total" in plain.stdout


def test_a_rule_the_version_cannot_answer_is_refused_naming_it(
    project: Path, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("alerts:\n  - {metric: business.profit, threshold: '> 1'}\n")
    run = pipeflow(
        ["monitor", "tumours@production", "--window", "10m", "--rules", str(rules), "--no-save"],
        cwd=project,
    )
    assert run.returncode == 2
    assert f"{rules}: alerts[0].metric 'business.profit': no business metric 'profit'" in run.stderr
