"""train and evaluate: real fits on generated data, safe model storage, quality gates."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeflow.core.stage import StageContext
from pipeflow.stages.evaluate import EvaluateStage
from pipeflow.stages.train import TrainStage, _make_estimator
from pipeflow.store import codecs
from pipeflow.store.artifacts import ArtifactStore
from pipeflow.testing import StageContract

WORDS = {
    "fire": "smoke flames burnt kitchen",
    "theft": "stolen missing taken burglar",
    "water": "leak flood pipe damp",
}


def claims(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    labels = rng.choice(sorted(WORDS), size=n)
    truth = labels.copy()
    noisy = rng.random(n) < 0.08  # mislabelled claims: no model gets everything right
    truth[noisy] = rng.choice(sorted(WORDS), size=int(noisy.sum()))
    return pd.DataFrame(
        {
            "description": [
                f"report: {' '.join(rng.choice(WORDS[lab].split(), size=3))} at the property yesterday"
                for lab in labels
            ],
            "amount": [float(rng.lognormal(8 if lab == "fire" else 6, 0.5)) for lab in labels],
            "region": rng.choice(["north", "south", None], size=n),
            "label": truth,
        }
    )


TRAIN, TEST = claims(300, 1), claims(120, 2)


def ctx(**resources: float) -> StageContext:
    return StageContext(run_id="t", stage="model", params={}, base_dir=None, resources=resources)  # type: ignore[arg-type]


BASE_TRAIN = {"estimator": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 500}}


def train(**config) -> dict:
    config = {
        "estimator": "sklearn.linear_model.LogisticRegression",
        "target": "label",
        "params": {"max_iter": 500},
        **config,
    }
    return dict(TrainStage(TrainStage.Config(**config)).run(ctx(), {"train": TRAIN}))


class TestTrainContract(StageContract):
    stage_cls = TrainStage
    entry_point = "train"
    config = {
        "estimator": "sklearn.linear_model.LogisticRegression",
        "target": "label",
        "task": "classification",
    }
    sample_inputs = {"train": TRAIN}


def test_text_numbers_and_categories_are_prepared_automatically() -> None:
    out = train()
    info = out["info"]
    assert [f["name"] for f in info["signature"]["features"]] == ["description", "amount", "region"]
    assert info["signature"]["classes"] == ["fire", "theft", "water"]
    steps = {name: step for name, step, _ in out["model"].named_steps["prepare"].transformers}
    assert set(steps) == {"text_description", "numeric", "categorical"}
    assert (out["model"].predict(TEST.drop(columns="label")) == TEST["label"]).mean() > 0.8


def test_model_round_trips_through_the_store_byte_identically(tmp_path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    model = train()["model"]
    ref = store.save(model, kind="model[classifier]")
    assert ref.codec == "skops" and store.save(train()["model"]).digest == ref.digest
    back = store.load(ref)
    X = TEST.drop(columns="label")
    assert (back.predict(X) == model.predict(X)).all()


def test_xgboost_keeps_the_original_labels_and_asks_for_cuda_on_gpu_stages(tmp_path) -> None:
    out = train(estimator="xgboost.XGBClassifier", params={"n_estimators": 20, "max_depth": 3})
    predicted = out["model"].predict(TEST.drop(columns="label"))
    assert set(predicted) <= set(WORDS) and (predicted == TEST["label"]).mean() > 0.8
    back = ArtifactStore(str(tmp_path)).load(ArtifactStore(str(tmp_path)).save(out["model"]))
    assert (back.predict(TEST.drop(columns="label")) == predicted).all()
    config = TrainStage.Config(estimator="xgboost.XGBClassifier", target="label")
    assert _make_estimator(config, ctx(GPU=1)).get_params()["device"] == "cuda"
    assert _make_estimator(config, ctx()).get_params().get("device") in (None, "cpu")


def test_a_model_trained_on_a_gpu_is_stored_to_predict_on_the_cpu(tmp_path) -> None:
    import json
    import warnings

    params = {"n_estimators": 20, "max_depth": 3}
    config = TrainStage.Config(estimator="xgboost.XGBClassifier", target="label", params=params)
    with warnings.catch_warnings():  # without a GPU xgboost warns and trains on the CPU
        warnings.simplefilter("ignore")
        out = TrainStage(config).run(ctx(GPU=1), {"train": TRAIN})
    assert out["info"]["device"] == "cuda" and out["info"]["params"]["device"] == "cuda"
    store = ArtifactStore(str(tmp_path))
    back = store.load(store.save(out["model"], kind="model[classifier]"))
    xgb = back.pipeline.steps[-1][1]
    assert xgb.get_params()["device"] == "cpu"
    booster = json.loads(xgb.get_booster().save_config())["learner"]["generic_param"]
    assert booster["device"] == "cpu"
    with warnings.catch_warnings(record=True) as caught:  # no "No visible GPU" on CPU hosts
        warnings.simplefilter("always")
        predicted = back.predict(TEST.drop(columns="label"))
    assert not [w for w in caught if "GPU" in str(w.message) or "device" in str(w.message)]
    cpu = train(estimator="xgboost.XGBClassifier", params=params)["model"]
    assert (predicted == cpu.predict(TEST.drop(columns="label"))).all()


def test_text_columns_with_missing_values_as_pandas_strings_train_and_predict() -> None:
    # CSV and Parquet text arrives as pandas' Arrow strings, whose missing value is pd.NA
    table = TRAIN.copy()
    table["note"] = pd.array(
        [
            None if i % 5 == 0 else f"{w} reported at the front desk"
            for i, w in enumerate(table["label"])
        ],
        dtype="string[pyarrow]",
    )
    config = TrainStage.Config(
        estimator="sklearn.linear_model.LogisticRegression", target="label", text=["note"]
    )
    out = TrainStage(config).run(ctx(), {"train": table})
    X = table.drop(columns="label")
    as_objects = X.assign(note=X["note"].astype(object).where(X["note"].notna(), None))
    assert (out["model"].predict(X) == out["model"].predict(as_objects)).all()
    assert out["info"]["train_score"] > 0.9


def test_a_model_file_with_untrusted_types_is_refused(tmp_path) -> None:
    import os

    import skops.io
    from sklearn.preprocessing import FunctionTransformer

    evil = FunctionTransformer(func=os.system)
    data = skops.io.dumps(evil)
    with pytest.raises(codecs.UnsupportedOutput, match="untrusted types: .*(posix|os).system"):
        codecs.decode("skops", data)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"estimator": "sklearn.linear_model.NoSuchModel"}, "has no estimator class"),
        ({"estimator": "nosuchpackage.Model"}, "cannot import nosuchpackage"),
        ({"params": {"bogus": 1}}, "bad params"),
        ({"target": "nope"}, "target column 'nope' not found"),
        ({"features": ["amount", "nope"]}, r"feature column\(s\) nope not found"),
    ],
)
def test_training_errors_are_clear(config: dict, message: str) -> None:
    with pytest.raises((ValueError, ImportError), match=message):
        train(**config)


def evaluate(model, **config) -> dict:
    stage = EvaluateStage(EvaluateStage.Config(target="label", **config))
    return dict(stage.run(ctx(), {"model": model, "data": TEST}))["metrics"]


def test_evaluate_reports_overall_per_class_and_slices() -> None:
    metrics = evaluate(train()["model"], slices=["region"])
    assert metrics["task"] == "classification" and metrics["rows"] == 120
    assert 0.8 < metrics["accuracy"] < 1.0
    assert set(metrics["per_class"]) == set(WORDS)
    cm = metrics["confusion_matrix"]
    assert cm["labels"] == sorted(WORDS) and sum(map(sum, cm["matrix"])) == 120
    assert set(metrics["slices"]["region"]) == {"north", "south", "<missing>"}
    assert sum(s["rows"] for s in metrics["slices"]["region"].values()) == 120


def test_quality_gate_fails_the_stage_with_the_numbers() -> None:
    model = train()["model"]
    with pytest.raises(ValueError, match=r"model below the quality gate: accuracy 0\.\d+ < 0\.999"):
        evaluate(model, min={"accuracy": 0.999})
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        evaluate(model, min={"auc": 0.5})


def test_regression_metrics() -> None:
    out = dict(
        TrainStage(
            TrainStage.Config(
                estimator="sklearn.linear_model.Ridge", target="amount", task="regression"
            )
        ).run(ctx(), {"train": TRAIN})
    )
    assert (
        TrainStage.output_ports(
            TrainStage.Config(
                estimator="sklearn.linear_model.Ridge", target="amount", task="regression"
            )
        )["model"].kind
        == "model[regressor]"
    )
    stage = EvaluateStage(EvaluateStage.Config(target="amount"))
    metrics = dict(stage.run(ctx(), {"model": out["model"], "data": TEST}))["metrics"]
    assert metrics["task"] == "regression" and metrics["r2"] > 0.3 and metrics["mae"] > 0


def test_calibration_and_the_html_report_escape_what_the_data_says() -> None:
    from html.parser import HTMLParser

    data = TRAIN.assign(label=TRAIN["label"].replace({"fire": "<script>alert(1)</script>"}))
    model = TrainStage(TrainStage.Config(**{**BASE_TRAIN, "target": "label"})).run(
        ctx(), {"train": data}
    )["model"]
    test = TEST.assign(label=TEST["label"].replace({"fire": "<script>alert(1)</script>"}))
    stage = EvaluateStage(
        EvaluateStage.Config(target="label", slices=["region"], min={"accuracy": 0.5})
    )
    out = dict(stage.run(ctx(), {"model": model, "data": test}))
    cal = out["metrics"]["calibration"]
    assert 0 <= cal["ece"] <= 1 and sum(b["rows"] for b in cal["bins"]) == len(test)
    page = out["report"].decode()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    for heading in ("Quality gate", "By class", "Confusion matrix", "Calibration", "By region"):
        assert heading in page

    class Tags(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tags: list[str] = []

        def handle_starttag(self, tag, attrs) -> None:
            self.tags.append(tag)

    parser = Tags()
    parser.feed(page)
    assert (
        parser.tags.count("svg") >= 2 and "script" not in parser.tags and "link" not in parser.tags
    )


def test_distributed_always_needs_the_distributed_executor() -> None:
    with pytest.raises(ValueError, match="needs the distributed executor"):
        train(estimator="xgboost.XGBClassifier", distributed="always", params={"n_estimators": 5})
    with pytest.raises(ValueError, match="needs xgboost.XGBClassifier or XGBRegressor"):
        train(distributed="always")


@pytest.mark.cluster
def test_xgboost_trains_across_the_workers_of_a_cluster(tmp_path) -> None:
    from distributed import Client, LocalCluster

    import pipeflow
    from pipeflow.execute.dask_executor import DaskExecutor
    from pipeflow.testing import write_spec

    TRAIN.to_parquet(tmp_path / "train.parquet")
    TEST.to_parquet(tmp_path / "test.parquet")
    spec = write_spec(
        tmp_path,
        """
        pipeline: xgb-dask
        stages:
          train_rows: {type: ingest, with: {path: train.parquet}}
          test_rows: {type: ingest, with: {path: test.parquet}}
          model:
            type: train
            inputs: {train: train_rows}
            with:
              estimator: xgboost.XGBClassifier
              params: {n_estimators: 30, max_depth: 3, tree_method: hist}
              target: label
              task: classification
              distributed: always
          scores:
            type: evaluate
            inputs: {model: model, data: test_rows}
            with: {target: label}
        """,
    )
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        report = pipeflow.run(spec, executor=DaskExecutor("distributed", client=client))
    assert str(report.state) == "done", report.stages["model"].error
    info = report.load("model", "info")
    assert info["distributed"] == {"workers": 2, "partitions": 2, "rows": len(TRAIN)}
    assert report.load("scores", "metrics")["accuracy"] > 0.8
    predicted = report.load("model", "model").predict(TEST.drop(columns="label"))
    assert set(predicted) <= set(WORDS)  # an ordinary model with the original labels


@contextlib.contextmanager
def mixed_cluster(**workers: dict[str, float]) -> Iterator[Any]:
    """A client of a real cluster whose worker processes offer different resources:
    ``mixed_cluster(a={"FAST": 1}, b={})``."""
    from distributed import Client, Nanny, Scheduler, SpecCluster

    spec = {
        name: {"cls": Nanny, "options": {"nthreads": 1, "resources": resources}}
        for name, resources in workers.items()
    }
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": ":0"}}
    with SpecCluster(scheduler=scheduler, workers=spec) as cluster, Client(cluster) as client:
        client.wait_for_workers(len(workers))
        yield client


@pytest.mark.cluster
def test_xgboost_trains_across_only_the_workers_that_offer_the_stages_resources(tmp_path) -> None:
    """A mixed cluster: two workers offer FAST, one does not (think GPU and CPU workers). A stage
    asking for FAST spreads its rows over the two; asking for what one worker alone offers, it
    trains there without xgboost.dask (distributed: auto)."""
    import pipeflow
    from pipeflow.execute.dask_executor import DaskExecutor
    from pipeflow.testing import write_spec

    TRAIN.to_parquet(tmp_path / "train.parquet")
    spec = write_spec(
        tmp_path,
        """
        pipeline: xgb-resources
        stages:
          rows: {type: ingest, with: {path: train.parquet}}
          fast:
            type: train
            inputs: {train: rows}
            resources: {FAST: 1}
            with:
              estimator: xgboost.XGBClassifier
              params: {n_estimators: 10, max_depth: 3, tree_method: hist}
              target: label
              distributed: always
          solo:
            type: train
            inputs: {train: rows}
            resources: {SOLO: 1}
            with:
              estimator: xgboost.XGBClassifier
              params: {n_estimators: 10, max_depth: 3, tree_method: hist}
              target: label
              distributed_min_rows: 10
        """,
    )
    with mixed_cluster(a={"FAST": 1}, b={"FAST": 1}, c={"SOLO": 1}) as client:
        report = pipeflow.run(spec, executor=DaskExecutor("distributed", client=client))
    assert str(report.state) == "done", {n: s.error for n, s in report.stages.items()}
    assert report.load("fast", "info")["distributed"] == {
        "workers": 2,
        "partitions": 2,
        "rows": len(TRAIN),
    }
    assert "distributed" not in report.load("solo", "info")  # one worker offers SOLO


def test_xgboost_on_numbers_alone_is_the_model_xgboost_trains_on_the_array(tmp_path) -> None:
    """Numbers pass to a tree ensemble as they are (NumericColumns: no ColumnTransformer, no
    copies): the stage's model predicts exactly what XGBClassifier fitted on the array does."""
    import xgboost

    from pipeflow.models import NumericColumns

    rng = np.random.default_rng(5)
    X = rng.normal(size=(2000, 5))
    X[::11, 2] = np.nan  # missing values reach xgboost as missing
    y = np.where(X[:, 0] + np.nan_to_num(X[:, 2]) * X[:, 1] > 0, "yes", "no")
    table = pd.DataFrame(X, columns=[f"x{i}" for i in range(5)]).assign(label=y)
    params = {"n_estimators": 15, "max_depth": 3, "n_jobs": 1}
    out = TrainStage(
        TrainStage.Config(estimator="xgboost.XGBClassifier", target="label", params=params)
    ).run(ctx(), {"train": table})
    model = out["model"]
    assert isinstance(model.pipeline.named_steps["prepare"], NumericColumns)
    assert model.pipeline.feature_names_in_.tolist() == [f"x{i}" for i in range(5)]
    direct = xgboost.XGBClassifier(**params).fit(X, (y == "yes").astype(int))
    np.testing.assert_array_equal(
        model.predict_proba(table.drop(columns="label"))[:, 1], direct.predict_proba(X)[:, 1]
    )
    store = ArtifactStore(str(tmp_path))
    back = store.load(store.save(model, kind="model[classifier]"))  # skops: a trusted type
    assert (back.predict(table.drop(columns="label")) == model.predict(table)).all()
    assert out["info"]["signature"]["classes"] == ["no", "yes"]


@pytest.mark.parametrize(
    "estimator, labels",
    [
        ("sklearn.linear_model.LogisticRegression", "text"),
        ("xgboost.XGBClassifier", "text"),
        ("xgboost.XGBClassifier", "int"),
        ("sklearn.linear_model.Ridge", "number"),
    ],
)
def test_the_training_score_is_scikit_learns_score(estimator, labels) -> None:
    rng = np.random.default_rng(2)
    X = pd.DataFrame({"a": rng.normal(size=400), "b": rng.normal(size=400)})
    signal = X["a"] + rng.normal(scale=0.8, size=400)
    target = {
        "text": np.where(signal > 0, "high", "low"),
        "int": np.where(signal > 0.5, 2, np.where(signal < -0.5, 0, 1)),
        "number": signal.to_numpy(),
    }[labels]
    out = TrainStage(
        TrainStage.Config(
            estimator=estimator,
            target="y",
            params={"n_estimators": 10} if "xgb" in estimator else {},
        )
    ).run(ctx(), {"train": X.assign(y=target)})
    expected = out["model"].score(X, target)  # accuracy, or R² for the regressor
    assert 0.5 < out["info"]["train_score"] == pytest.approx(expected, abs=1e-12)


def test_the_drift_reference_profiled_while_the_model_fits_is_the_tables_profile() -> None:
    """From 100,000 rows the reference is profiled on a thread beside the fit: the same profile,
    target included, as profiling the rows after it."""
    from pipeflow.governance.profile import reference_profile

    rng = np.random.default_rng(7)
    n = 120_000
    table = pd.DataFrame(
        {
            "amount": rng.lognormal(6, 0.5, size=n),
            "flag": rng.integers(0, 2, size=n).astype(float),  # discrete: exact value counts
            "region": rng.choice(["north", "south", None], size=n),
        }
    )
    table["label"] = np.where(table["amount"] > 400, "big", "small")
    config = {"estimator": "xgboost.XGBClassifier", "target": "label"}
    params = {"n_estimators": 5, "max_depth": 3, "n_jobs": 1}
    info = TrainStage(TrainStage.Config(**config, params=params)).run(ctx(), {"train": table})[
        "info"
    ]
    roles = {"amount": "numeric", "flag": "numeric", "region": "categorical"}
    expected = reference_profile(
        table.drop(columns="label"), roles, target=table["label"], target_role="categorical"
    )
    assert info["reference"] == expected
    assert info["reference"]["features"]["flag"]["discrete"]["values"] == [0.0, 1.0]
