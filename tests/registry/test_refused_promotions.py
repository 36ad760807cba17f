"""A promotion the gates refuse leaves a record with every gate's verdict: a version the champion
rejected reads "not promoted: champion gate ... failed" in ``pipeflow models show`` and on the
dashboard, not "passed" (the version record alone holds only the thresholds and bias, judged at
registration). Refusals by ``pipeflow models promote`` are recorded too, and on S3 they are
numbered with conditional writes like alias moves."""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from helpers import pipeflow

from pipeflow.errors import GateFailed
from pipeflow.registry import Registry
from pipeflow.registry.gates import champion_check, threshold_gates
from pipeflow.store.artifacts import ArtifactRef, ArtifactStore


@pytest.fixture(scope="module")
def rejected(tmp_path_factory: pytest.TempPathFactory, tumours_v1: Callable[[Path], Path]) -> Path:
    """tumours v1 in production, then v2 (a much weaker model: C=0.001) that passes its
    threshold and bias gates and fails the champion gate: the run fails, v2 stays registered."""
    project = tumours_v1(tmp_path_factory.mktemp("refused") / "tumours")
    out = pipeflow(
        ["run", "pipeline.yaml", "--quiet", "--set", "params.C=0.001"]
        + ["--set", "params.min_accuracy=0.5"],
        cwd=project,
        timeout=300,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    text = out.stdout + out.stderr
    assert "champion gate" in text and "tumours@2 registered but not promoted" in text, text
    return project


def _show(project: Path) -> dict:
    out = pipeflow(["models", "show", "tumours", "--json"], cwd=project)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_version_the_champion_rejected_is_shown_not_promoted_with_every_verdict(
    rejected: Path,
) -> None:
    data = _show(rejected)
    v1, v2 = data["versions"]
    assert v2["verdict"]["promoted"] is False
    assert v2["verdict"]["status"].startswith("not promoted: champion gate 'accuracy >= v1's")
    verdicts = {g["kind"]: g["passed"] for g in v2["verdict"]["gates"]}
    assert verdicts == {"threshold": True, "bias": True, "champion": False}
    (refusal,) = data["refusals"]
    assert (refusal["version"], refusal["alias"], refusal["holder"]) == (2, "production", 1)
    assert refusal["run_id"] == v2["run"]["run_id"]
    assert v1["verdict"]["status"] == "promoted"

    table = pipeflow(["models", "show", "tumours"], cwd=rejected).stdout
    rows = [
        [cell for cell in line.split() if cell != "│"]
        for line in table.splitlines()
        if line.lstrip().startswith("v2 ")
    ]
    assert "not promoted: champion failed" in " ".join(rows[0]), table
    assert [r[1:3] for r in rows[1:]] == [["✓", "threshold"], ["✓", "bias"], ["✗", "champion"]]


def test_models_promote_refused_by_its_gates_is_recorded(rejected: Path) -> None:
    gate = pipeflow(
        ["models", "promote", "tumours", "2", "--to", "staging", "--gate", "accuracy>=0.999"],
        cwd=rejected,
    )
    assert gate.returncode == 1 and "tumours@2 not promoted: threshold gate" in gate.stderr
    champion = pipeflow(
        ["models", "promote", "tumours", "2", "--to", "production", "--champion", "accuracy"],
        cwd=rejected,
    )
    assert champion.returncode == 1 and "champion gate" in champion.stderr
    data = _show(rejected)
    assert [(r["alias"], r["version"]) for r in data["refusals"]][-2:] == [
        ("staging", 2),
        ("production", 2),
    ]
    staged = data["refusals"][-2]
    assert [(g["kind"], g["passed"]) for g in staged["gates"]] == [("threshold", False)]
    assert data["aliases"] == {"production": 1}
    assert data["versions"][1]["verdict"]["status"].startswith("not promoted: champion gate")


def test_the_dashboard_shows_the_same_verdicts(rejected: Path) -> None:
    from pipeflow.ui.app import create_app

    store = rejected / ".pipeflow"
    model = TestClient(create_app(str(store), store / "pipeflow.db")).get("/api/models/tumours")
    v1, v2 = model.json()["versions"]
    assert v2["status"].startswith("not promoted: champion gate")
    assert [g["kind"] for g in v2["gates"] if not g["passed"]] == ["champion"]
    assert v1["status"] == "promoted"


def _refuse(root: str, n: int, barrier) -> None:  # noqa: ANN001 (a multiprocessing barrier)
    registry = Registry(ArtifactStore(root))
    barrier.wait()
    gates = threshold_gates({"accuracy": 0.5}, {"accuracy": ">= 0.9"})
    check = champion_check(registry, "m", {"accuracy": 0.5}, gates, metric="accuracy", margin=0)
    with pytest.raises(GateFailed):
        registry.move_alias("m", "production", 2, reason=f"try {n}", check=check)


@pytest.mark.slow
def test_refusals_on_s3_are_numbered_once_each_by_conditional_writes(s3, monkeypatch) -> None:
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    root = f"{s3.bucket()}/refusals"
    store = ArtifactStore(root)
    registry = Registry(store)
    for n, accuracy in ((1, 0.95), (2, 0.5)):
        data = f"model {n}".encode()
        ref = ArtifactRef(store.put(data), "bytes", "model", len(data))
        registry.register("m", ref, metrics={"accuracy": accuracy})
    registry.move_alias("m", "production", 1)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_refuse, args=(root, n, barrier)) for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    refusals = registry.refusals("m")
    assert [r["seq"] for r in refusals] == [1, 2, 3, 4]
    assert sorted(r["reason"] for r in refusals) == [f"try {n}" for n in range(4)]
    for r in refusals:
        assert [(g["kind"], g["passed"]) for g in r["gates"]] == [
            ("threshold", False),
            ("champion", False),
        ]
    assert registry.holder("m", "production") == 1
    from pipeflow.registry import verdicts

    judged = verdicts(registry.versions("m"), registry.history("m"), refusals)
    assert judged[2]["status"] == (
        "not promoted: threshold gate 'accuracy >= 0.9' failed; "
        "champion gate 'accuracy >= v1's 0.95 - 0' failed"
    )
