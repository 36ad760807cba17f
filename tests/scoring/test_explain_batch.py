"""``pipeflow predict --explain``: batch output with ``explain_class``, ``explain_base`` and a
``contrib_<feature>`` column per input column that add up to the model's own margin, the same
in this process and on Dask (a process pool), from the CLI too, with the method in the job's
audit record; a forest registered beside it is explained by the kernel fallback on Dask."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import pipeflow, tumour_table

from pipeflow.governance.explain import BACKGROUND_ROWS, MAX_COALITIONS
from pipeflow.governance.importance import final_estimator
from pipeflow.registry import Registry
from pipeflow.scoring.batch import predict_file
from pipeflow.store import journal as audit
from pipeflow.store.artifacts import ArtifactStore


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tumours_v1: Callable[[Path], Path]) -> Path:
    """The tumours project after one run (tumours v1, production), plus patients.csv: its
    first 60 rows without the diagnosis, with an id."""
    where = tumours_v1(tmp_path_factory.mktemp("explain") / "tumours")
    frame = tumour_table().head(60)
    patients = frame.drop(columns=["diagnosis"])
    patients.insert(0, "patient_id", [f"P{i:03d}" for i in range(len(patients))])
    patients.to_csv(where / "patients.csv", index=False)
    return where


@pytest.fixture(scope="module")
def registry(project: Path) -> Registry:
    return Registry(ArtifactStore(str(project / ".pipeflow")))


def features_and_margin(registry: Registry, which: str | int, frame: pd.DataFrame) -> tuple:
    model, record = registry.load_model("tumours", which)
    features = [f["name"] for f in record["signature"]["features"]]
    return features, model, frame[features]


def test_explain_columns_add_up_to_the_margin_here_and_on_dask_alike(
    project: Path, registry: Registry, tmp_path: Path
) -> None:
    source = str(project / "patients.csv")
    here, there = tmp_path / "here.parquet", tmp_path / "there.parquet"
    common = {"id_column": "patient_id", "explain": True, "audit_folder": tmp_path / "audit"}
    summary = predict_file(
        registry, "tumours", "production", source, str(here), scheduler="threads", **common
    )
    on_dask = predict_file(
        registry, "tumours", "production", source, str(there), scheduler="processes",
        partition_rows=25, **common,
    )  # fmt: skip
    assert summary["explain"] == on_dask["explain"] == "linear" and on_dask["partitions"] > 1
    scored = pd.read_parquet(here)
    pd.testing.assert_frame_equal(
        scored.drop(columns="prediction_id"),
        pd.read_parquet(there).drop(columns="prediction_id"),
    )
    frame = pd.read_csv(source)
    features, model, X = features_and_margin(registry, "production", frame)
    prepare, estimator = final_estimator(model)
    margin = estimator.decision_function(prepare.transform(X))
    contrib = [f"contrib_{f}" for f in features]
    assert list(scored.columns) == [
        "prediction_id", "patient_id", "prediction",
        *[f"proba_{c}" for c in model.classes_], "explain_class", "explain_base", *contrib,
    ]  # fmt: skip
    total = scored["explain_base"] + scored[contrib].sum(axis=1)
    assert np.allclose(total, margin, rtol=0, atol=1e-9)
    assert (scored["explain_class"] == model.classes_[1]).all()
    audited = [r for r in audit.read(tmp_path / "audit", "batches") if r["id"] == summary["id"]]
    assert audited[0]["explain"] == "linear"


def test_cli_explain_writes_the_columns_and_without_it_none(project: Path, tmp_path: Path) -> None:
    plain, explained = tmp_path / "plain.csv", tmp_path / "explained.csv"
    for out, extra in ((plain, []), (explained, ["--explain"])):
        done = pipeflow(
            ["predict", "tumours@production", "-i", "patients.csv", "-o", str(out), *extra],
            cwd=project,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
    a, b = pd.read_csv(plain), pd.read_csv(explained)
    assert not [c for c in a.columns if c.startswith(("contrib_", "explain_"))]
    assert "explain_base" in b.columns and "contrib_size_band" in b.columns
    pd.testing.assert_frame_equal(
        a.drop(columns="prediction_id"), b[a.columns].drop(columns="prediction_id")
    )


def test_a_forest_is_explained_by_the_kernel_method_on_dask(
    project: Path, registry: Registry, tmp_path: Path
) -> None:
    from sklearn.compose import make_column_transformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    frame = pd.read_csv(project / "data.csv")
    first = registry.version("tumours", 1)
    features = [f["name"] for f in first["signature"]["features"]]
    numeric = [f for f in features if f != "size_band"]
    forest = make_pipeline(
        make_column_transformer(
            ("passthrough", numeric), (OneHotEncoder(handle_unknown="ignore"), ["size_band"])
        ),
        RandomForestClassifier(20, random_state=0),
    ).fit(frame[features], frame["diagnosis"])
    store = registry.store
    version = registry.register(
        "tumours",
        store.save(forest, "model"),
        metrics={"accuracy": 0.9},
        signature=first["signature"],
        reference=first.get("reference"),
    )["version"]
    source = project / "patients.csv"
    few = tmp_path / "few.csv"
    pd.read_csv(source).head(12).to_csv(few, index=False)
    out = tmp_path / "forest.parquet"
    summary = predict_file(
        registry, "tumours", version, str(few), str(out), scheduler="processes",
        partition_rows=5, explain=True,
    )  # fmt: skip
    assert summary["explain"] == "kernel" and summary["partitions"] >= 2
    scored = pd.read_parquet(out)
    proba = forest.predict_proba(pd.read_csv(few)[features])[:, 1]
    total = scored["explain_base"] + scored[[f"contrib_{f}" for f in features]].sum(axis=1)
    assert np.allclose(total, proba, rtol=0, atol=1e-9)
    assert len(features) > 8  # so the coalitions were sampled, within the budget
    assert MAX_COALITIONS * BACKGROUND_ROWS == 2560
