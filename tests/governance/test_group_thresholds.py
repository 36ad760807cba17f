"""Bias mitigation by per-group decision thresholds, end to end: a real pipeline chooses them on
generated loans whose ``south`` group has a shifted score distribution, the registry records them,
and every place the version predicts applies them (a real ``pipeflow serve``, ``pipeflow predict``,
the ``predict`` stage); the card and ``models show`` give the before/after numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from helpers import one_line_error, pipeflow, pipeflow_ok, start_server

from pipeflow.governance import bias_metrics
from pipeflow.registry import Registry
from pipeflow.store.artifacts import ArtifactStore

LIMIT = 0.1
PIPELINE = """\
pipeline: loans
stages:
  raw:
    type: ingest
    with: {path: data.csv}
  split:
    type: split
    inputs: {data: raw}
    with: {method: stratified, by: approved, test_size: 0.5, seed: 7}
  model:
    type: train
    inputs: {train: split.train}
    with:
      estimator: sklearn.linear_model.LogisticRegression
      target: approved
      features: [income, debt]       # region is not a feature: requests carry it for the threshold
  scores:
    type: evaluate
    inputs: {model: model, data: split.test}
    with: {target: approved}
  promote:
    type: promote
    inputs: {model: model, metrics: scores, info: model.info, data: split.test}
    with:
      name: loans
      alias: production
      importance: false
      bias:
        sensitive: region
        max: {demographic_parity_difference: LIMIT}
        mitigate: {method: group_thresholds, objective: demographic_parity, validation: 0.5}
""".replace("LIMIT", str(LIMIT))


def loans(n: int, seed: int) -> pd.DataFrame:
    """Loan applications: the south's incomes are lower, so its scores are shifted down and the
    model approves it far less often (a real demographic disparity)."""
    rng = np.random.default_rng(seed)
    region = rng.choice(["north", "south"], n, p=[0.6, 0.4])
    income = rng.normal(np.where(region == "north", 55.0, 40.0), 10.0).round(2)
    debt = rng.normal(20.0, 5.0, n).round(2)
    logit = 0.15 * (income - 47.0) - 0.1 * (debt - 20.0)
    approved = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    return pd.DataFrame({"income": income, "debt": debt, "region": region, "approved": approved})


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("loans")
    loans(3000, seed=1).to_csv(where / "data.csv", index=False)
    (where / "pipeline.yaml").write_text(PIPELINE)
    pipeflow_ok(["run", "pipeline.yaml", "--quiet"], cwd=where, timeout=300)
    return where


@pytest.fixture(scope="module")
def version(project: Path) -> tuple[Any, dict[str, Any]]:
    return Registry(ArtifactStore(str(project / ".pipeflow"))).servable("loans", "production")


def by_hand(model: Any, record: dict[str, Any], rows: pd.DataFrame) -> np.ndarray:
    """The mitigated labels computed here from predict_proba and the recorded thresholds."""
    m = record["mitigation"]
    proba = model.predict_proba(rows[["income", "debt"]])
    classes = [str(c) for c in model.classes_]
    yes = proba[:, classes.index(m["positive"])]
    cut = np.asarray([m["thresholds"].get(g, m["default"]) for g in rows["region"]])
    other = classes[1 - classes.index(m["positive"])]
    return np.where(yes >= cut, m["positive"], other)
