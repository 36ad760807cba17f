"""Every example spec under specs/ compiles, runs end to end, and a second run is all cached."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import ExampleRun, pipeflow

from pipeflow.testing import serve

SPECS = sorted((Path(__file__).resolve().parents[1] / "specs").glob("*/pipeline.yaml"))

#: the examples that train a model but register none, with the promote stage docs/serving.md
#: adds with --set to serve them ("Serving an example that has no promote stage"); the target
#: column each predicts
PROMOTE = {
    "breast-cancer": (
        "stages.promote={type: promote, inputs: {model: model, metrics: scores, info: model.info,"
        " data: split.test}, with: {name: breast-cancer, alias: production}}",
        "breast-cancer",
        "diagnosis",
    ),
    "houses": (
        "stages.promote={type: promote, inputs: {model: model, metrics: scores, info: model.info,"
        " data: split.test}, with: {name: houses, alias: production}}",
        "houses",
        "price",
    ),
}


def test_there_are_example_specs() -> None:
    assert SPECS, "specs/ holds no example pipelines"


@pytest.mark.parametrize("spec", SPECS, ids=[p.parent.name for p in SPECS])
def test_example_spec_runs_end_to_end_then_is_cached(
    spec: Path, example_run: Callable[[Path], ExampleRun]
) -> None:
    ran = example_run(spec)  # `pipeflow run` on a copy (the session's: other tests compare with it)
    check = pipeflow(["check", ran.spec])
    assert check.returncode == 0, check.stdout + check.stderr
    first = ran.first
    assert first.returncode == 0, first.stdout + first.stderr
    assert (ran.spec.parent / ".pipeflow" / "pipeflow.db").is_file()

    second = pipeflow(["run", ran.spec], timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert " 0 failed" in second.stdout, second.stdout

    shown = pipeflow(["runs", "show", "latest", "--json"], cwd=ran.spec.parent, timeout=60)
    assert shown.returncode == 0, shown.stderr
    stages = json.loads(shown.stdout)["stages"]
    # everything is reused but stages that act rather than compute (monitor, serve: never cached)
    acting = {"monitor", "serve"}
    assert stages and all(s["state"] == "cached" for s in stages if s["type"] not in acting), stages
    assert all(s["state"] == "done" for s in stages if s["type"] in acting), stages

    # every example that trains a model goes all the way: registered (by its own promote stage,
    # or the one docs/serving.md adds with --set), served, answering a held-out row
    has_promote = any(s["type"] == "promote" for s in stages)
    trains = any(s["type"] in ("train", "tune") for s in stages)
    assert has_promote or not trains or spec.parent.name in PROMOTE, "add it to PROMOTE"
    if spec.parent.name not in PROMOTE:
        return
    override, model, target = PROMOTE[spec.parent.name]
    third = pipeflow(["run", ran.spec, "--set", override], timeout=300)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "1 done" in third.stdout and f"{len(stages)} cached" in third.stdout, third.stdout
    project = ran.spec.parent
    test = pipeflow(["runs", "output", "latest", "split.test", "--format", "json"], cwd=project)
    row = {k: v for k, v in json.loads(test.stdout)[0].items() if k != target}
    server = serve(project, f"{model}@production", "--spec", str(ran.spec))
    try:
        with server.client() as client:
            described = client.get(f"/v1/models/{model}").json()
            features = {f["name"] for f in described["signature"]["features"]}
            answer = client.post(f"/v1/models/{model}/predict", json={k: row[k] for k in features})
        assert answer.status_code == 200, answer.text
        assert answer.json()["version"] == 1 and len(answer.json()["predictions"]) == 1
    finally:
        server.stop()


def test_claims_example_separates_clean_and_rejected_claims(tmp_path: Path) -> None:
    import pipeflow

    project = tmp_path / "claims"
    shutil.copytree(
        SPECS[0].parents[1] / "claims",
        project,
        ignore=shutil.ignore_patterns(".pipeflow", "__pycache__"),
    )
    report = pipeflow.run(
        project / "pipeline.yaml", overrides={"params.n_claims": 800}, executor="sync"
    )
    assert str(report.state) == "done"
    clean, rejected = report.load("cleaned", "clean"), report.load("cleaned", "rejected")
    summary = report.load("report")
    # nothing silently dropped: every incoming row is either clean or rejected with a reason
    assert len(clean) + len(rejected) == len(report.load("raw")) == summary["claims_received"]
    assert rejected["reason"].str.len().gt(0).all()
    assert clean["claim_id"].is_unique
    assert clean["amount"].between(0, 250000, inclusive="right").all()
    assert set(clean["category"]) <= {
        "collision",
        "theft",
        "water_damage",
        "fire",
        "liability",
        "medical",
    }
    assert sum(r["claims"] for r in summary["by_category"]) == len(clean)


def test_claims_example_ends_with_a_gated_production_model_and_its_card(tmp_path: Path) -> None:
    project = tmp_path / "claims"
    shutil.copytree(
        SPECS[0].parents[1] / "claims",
        project,
        ignore=shutil.ignore_patterns(".pipeflow", "__pycache__"),
    )
    run = pipeflow(["run", "pipeline.yaml", "--quiet"], cwd=project, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    shown = pipeflow(["models", "show", "claims-categoriser", "--json"], cwd=project, timeout=60)
    assert shown.returncode == 0, shown.stderr
    model = json.loads(shown.stdout)
    holder = model["aliases"]["production"]
    (promotion,) = [e for e in model["history"] if e["alias"] == "production"]
    assert promotion["to_version"] == holder
    assert promotion["gates"] and all(g["passed"] for g in promotion["gates"])
    assert {g["kind"] for g in promotion["gates"]} == {"threshold", "bias", "champion"}
    record = model["versions"][holder - 1]
    assert record["metrics"]["accuracy"] >= 0.94
    card = project / "card.html"
    rendered = pipeflow(
        ["models", "card", "claims-categoriser@production", "--format", "html", "-o", card],
        cwd=project,
        timeout=60,
    )
    assert rendered.returncode == 0, rendered.stderr
    text = card.read_text()
    assert "claims-categoriser@" in text and "Intended use" in text and "region" in text


def test_claims_closed_loop_retrains_on_drift_and_recovers(tmp_path: Path) -> None:
    """specs/claims/loop.py: serve, replay drifting months, alert, retrain, promote, recover."""
    project = tmp_path / "claims"
    shutil.copytree(
        SPECS[0].parents[1] / "claims",
        project,
        ignore=shutil.ignore_patterns(".pipeflow", "__pycache__"),
    )
    out = subprocess.run(
        [sys.executable, str(project / "loop.py"), "--workdir", str(project), "--months", "3"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    months = json.loads((project / ".pipeflow" / "loop-summary.json").read_text())
    assert [m["month"] for m in months] == [1, 2, 3]
    first_retrain = next(i for i, m in enumerate(months) if m["retrained"])
    before = months[first_retrain]
    assert before["live_accuracy"] < 0.9 and before["now_serving"] > before["served_by"]
    after = months[first_retrain + 1]
    assert after["served_by"] == before["now_serving"] and after["live_accuracy"] >= 0.94
