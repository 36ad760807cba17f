"""tune: grid and random search, trials on Dask (threads and a real LocalCluster), best refit;
xgboost searches (one binned matrix per fold, shared boosting rounds) score as GridSearchCV does."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pydantic
import pytest
from test_train_evaluate_stages import TEST, TRAIN, mixed_cluster

from pipeflow.core.stage import StageContext
from pipeflow.stages.tune import TuneStage
from pipeflow.testing import StageContract, write_spec

BASE = {
    "estimator": "sklearn.linear_model.LogisticRegression",
    "target": "label",
    "task": "classification",
    "params": {"max_iter": 300},
}


class TestTuneContract(StageContract):
    stage_cls = TuneStage
    entry_point = "tune"
    config = {**BASE, "space": {"C": [0.1, 1.0]}, "cv": 2}
    sample_inputs = {"train": TRAIN}


def tune(**config) -> dict:
    stage = TuneStage(TuneStage.Config(**{**BASE, **config}))
    return dict(stage.run(StageContext("r", "tuned", {}, base_dir=None), {"train": TRAIN}))  # type: ignore[arg-type]


def test_grid_search_tries_every_combination_and_refits_the_best() -> None:
    out = tune(space={"C": [0.001, 1.0, 10.0], "fit_intercept": [True, False]}, cv=3)
    trials = out["trials"]
    assert len(trials) == 6 and trials["error"].isna().all()
    best = trials.sort_values(["score_mean", "trial"], ascending=[False, True]).iloc[
        0
    ]  # ties: first trial
    search = out["info"]["search"]
    assert search["best_params"] == json.loads(best["params"]) and search[
        "best_score"
    ] == pytest.approx(best["score_mean"])
    assert out["info"]["params"]["C"] == search["best_params"]["C"]
    assert search["best_params"]["C"] != 0.001  # a tiny C underfits; the search must see it
    assert (out["model"].predict(TEST.drop(columns="label")) == TEST["label"]).mean() > 0.8


def test_a_gpu_tune_scores_its_folds_on_the_cpu_with_the_same_results() -> None:
    import warnings

    config = {
        **BASE,
        "estimator": "xgboost.XGBClassifier",
        "params": {"n_estimators": 10, "max_depth": 3},
        "space": {"learning_rate": [0.1, 0.3]},
        "cv": 2,
    }
    stage = TuneStage(TuneStage.Config(**config))
    with warnings.catch_warnings():  # without a GPU xgboost warns and fits on the CPU
        warnings.simplefilter("ignore")
        on_gpu = stage.run(StageContext("r", "t", {}, None, resources={"GPU": 1}), {"train": TRAIN})  # type: ignore[arg-type]
    plain = stage.run(StageContext("r", "t", {}, None), {"train": TRAIN})  # type: ignore[arg-type]
    assert on_gpu["trials"]["error"].isna().all()
    assert on_gpu["trials"]["score_mean"].tolist() == plain["trials"]["score_mean"].tolist()
    assert on_gpu["info"]["device"] == "cuda" and plain["info"]["device"] == "cpu"


def numeric_rows(n: int = 900, seed: int = 0) -> tuple[Any, Any, pd.DataFrame]:
    """A binary problem on 6 numeric features: the array, the 0/1 target, and the table."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    y = (X[:, 0] + np.sin(2 * X[:, 1]) * X[:, 2] + rng.normal(scale=0.7, size=n) > 0).astype(int)
    table = pd.DataFrame(X, columns=[f"f{i}" for i in range(6)])
    table["label"] = np.where(y == 1, "yes", "no")  # codes 0/1, as y
    return X, y, table


XGB_GRID = {"max_depth": [2, 4], "learning_rate": [0.1, 0.5], "n_estimators": [5, 20, 40]}


def test_an_xgboost_search_scores_every_trial_as_gridsearchcv_does() -> None:
    """Same folds, same fits (the matrix binned once per fold, 5- and 20-round trials read off the
    40-round fit): the same 12 mean scores to the last bit, so the same best params and score."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from xgboost import XGBClassifier

    from pipeflow.stages import tune_shared as tune_module

    X, y, table = numeric_rows()
    fixed = {"subsample": 0.8, "colsample_bytree": 0.7, "random_state": 3}
    stage = TuneStage(
        TuneStage.Config(
            estimator="xgboost.XGBClassifier",
            target="label",
            task="classification",
            params=fixed,
            space=XGB_GRID,
            cv=3,
            seed=7,
        )
    )
    out = stage.run(StageContext("r", "t", {}, None), {"train": table})  # type: ignore[arg-type]
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=7)
    search = GridSearchCV(XGBClassifier(**fixed), XGB_GRID, cv=folds).fit(X, y)
    assert out["trials"]["score_mean"].tolist() == search.cv_results_["mean_test_score"].tolist()
    assert out["trials"]["score_std"].tolist() == search.cv_results_["std_test_score"].tolist()
    assert out["info"]["search"]["best_params"] == search.best_params_
    assert out["info"]["search"]["best_score"] == search.best_score_
    assert not tune_module._FOLDS  # the folds' matrices are let go when the search ends


def test_shared_xgboost_trials_score_as_separate_pipelines_on_mixed_columns() -> None:
    """Text, categories and numbers, three classes: each trial's folds score as a fresh
    preprocessing + xgboost pipeline cross-validated on its own (scikit-learn's
    cross_val_score) scores them, with trials that cannot share rounds (dart) or a matrix
    (another max_bin) among them."""
    from pipeflow.stages import tune as tune_module
    from pipeflow.stages.tune_shared import _run_shared

    config = TuneStage.Config(
        estimator="xgboost.XGBClassifier",
        target="label",
        task="classification",
        params={"max_depth": 3, "subsample": 0.9},
        space={"n_estimators": [4, 8], "max_bin": [16, 256], "booster": ["gbtree", "dart"]},
        cv=3,
        seed=1,
    )
    X, y = tune_module.training_rows(config, TRAIN)
    context = StageContext("r", "t", {}, None)  # type: ignore[arg-type]
    candidates = tune_module._candidates(config)
    shared = _run_shared(config, X, y, context, candidates)
    alone = [tune_module._trial(config, X, y, context, p) for p in candidates]
    assert [r[3] for r in shared] == [None] * 8
    assert [r[:2] for r in shared] == [r[:2] for r in alone]


def test_a_failing_xgboost_combination_is_a_failed_trial() -> None:
    _, _, table = numeric_rows(300)
    stage = TuneStage(
        TuneStage.Config(
            estimator="xgboost.XGBClassifier",
            target="label",
            params={"n_estimators": 5},
            space={"max_depth": [2, -3], "n_estimators": [3, 5]},
            cv=2,
        )
    )
    out = stage.run(StageContext("r", "t", {}, None), {"train": table})  # type: ignore[arg-type]
    trials = out["trials"]
    failed = trials[trials["error"].notna()]
    assert [json.loads(p)["max_depth"] for p in failed["params"]] == [-3, -3]
    assert failed["error"].str.contains("max_depth").all(), failed["error"].tolist()
    assert out["info"]["search"]["best_params"]["max_depth"] == 2


def test_random_search_is_seeded_and_respects_ranges() -> None:
    space = {"C": {"low": 0.01, "high": 100, "log": True}, "class_weight": [None, "balanced"]}
    first = tune(search="random", space=space, trials=5, seed=3, cv=2)["trials"]
    again = tune(search="random", space=space, trials=5, seed=3, cv=2)["trials"]
    assert first["params"].tolist() == again["params"].tolist()
    for params in map(json.loads, first["params"]):
        assert 0.01 <= params["C"] <= 100 and params["class_weight"] in (None, "balanced")


def test_a_failing_combination_is_a_failed_trial_not_a_failed_search() -> None:
    out = tune(space={"C": [1.0], "solver": ["lbfgs", "bogus"]}, cv=2)
    assert out["trials"]["error"].notna().sum() == 1
    assert out["info"]["search"]["best_params"]["solver"] == "lbfgs"


@pytest.mark.parametrize(
    "config, message",
    [
        ({"space": {"C": {"low": 1, "high": 2}}}, "grid search needs lists"),
        (
            {"search": "random", "space": {"C": {"low": 0, "high": 2, "log": True}}},
            "log range needs low > 0",
        ),
        ({"space": {"C": []}}, "empty list"),
        ({"space": {}}, "at least 1"),
    ],
)
def test_bad_spaces_are_config_errors(config: dict, message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        TuneStage.Config(**{**BASE, **config})


@pytest.mark.cluster
def test_trials_spread_over_a_distributed_cluster(tmp_path) -> None:
    from distributed import Client, LocalCluster

    import pipeflow
    from pipeflow.execute.dask_executor import DaskExecutor

    TRAIN.to_parquet(tmp_path / "train.parquet")
    spec = write_spec(
        tmp_path,
        """
        pipeline: tune-demo
        stages:
          data: {type: ingest, with: {path: train.parquet}}
          tuned:
            type: tune
            inputs: {train: data}
            with:
              estimator: sklearn.linear_model.LogisticRegression
              target: label
              params: {max_iter: 300}
              space: {C: [0.1, 1.0, 10.0, 100.0]}
              cv: 2
        """,
    )
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        report = pipeflow.run(spec, executor=DaskExecutor("distributed", client=client))
        assert str(report.state) == "done", report.stages["tuned"].error
        assert len(report.load("tuned", "trials")) == 4
        # the trials ran as tasks of their own on the workers
        prefixes = client.run_on_scheduler(
            lambda dask_scheduler: list(dask_scheduler.task_prefixes)
        )
        assert "trial" in prefixes, prefixes  # the _trial function, one task per trial


@pytest.mark.cluster
def test_a_stage_with_resources_runs_its_trials_itself_on_its_worker(tmp_path) -> None:
    """Asking for FAST (think GPU), only worker a offers it: the trials must not go to worker b
    (a cuda fit on a CPU worker) nor wait for the FAST the stage itself holds."""
    import pipeflow
    from pipeflow.execute.dask_executor import DaskExecutor

    TRAIN.to_parquet(tmp_path / "train.parquet")
    spec = write_spec(
        tmp_path,
        """
        pipeline: tune-resources
        stages:
          data: {type: ingest, with: {path: train.parquet}}
          tuned:
            type: tune
            inputs: {train: data}
            resources: {FAST: 1}
            with:
              estimator: sklearn.linear_model.LogisticRegression
              target: label
              params: {max_iter: 300}
              space: {C: [0.1, 1.0, 10.0]}
              cv: 2
        """,
    )
    with mixed_cluster(a={"FAST": 1}, b={}) as client:
        report = pipeflow.run(spec, executor=DaskExecutor("distributed", client=client))
        assert str(report.state) == "done", report.stages["tuned"].error
        assert len(report.load("tuned", "trials")) == 3
        prefixes = client.run_on_scheduler(
            lambda dask_scheduler: list(dask_scheduler.task_prefixes)
        )
        assert "trial" not in prefixes, prefixes  # no trial task of its own, on any worker


@pytest.mark.cluster
def test_xgboost_trials_spread_over_a_distributed_cluster_with_the_same_scores(tmp_path) -> None:
    from distributed import Client, LocalCluster

    import pipeflow
    from pipeflow.execute.dask_executor import DaskExecutor
    from pipeflow.stages import tune_shared as tune_module

    _, _, table = numeric_rows(400)
    table.to_parquet(tmp_path / "train.parquet")
    spec = write_spec(
        tmp_path,
        """
        pipeline: tune-xgb
        stages:
          data: {type: ingest, with: {path: train.parquet}}
          tuned:
            type: tune
            inputs: {train: data}
            with:
              estimator: xgboost.XGBClassifier
              target: label
              params: {n_jobs: 1}
              space: {max_depth: [2, 3], n_estimators: [4, 8]}
              cv: 2
        """,
    )
    local = TuneStage(
        TuneStage.Config(
            estimator="xgboost.XGBClassifier",
            target="label",
            params={"n_jobs": 1},
            space={"max_depth": [2, 3], "n_estimators": [4, 8]},
            cv=2,
        )
    ).run(StageContext("r", "t", {}, None), {"train": table})  # type: ignore[arg-type]
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        report = pipeflow.run(spec, executor=DaskExecutor("distributed", client=client))
        assert str(report.state) == "done", report.stages["tuned"].error
        trials = report.load("tuned", "trials")
        assert trials["score_mean"].tolist() == local["trials"]["score_mean"].tolist()
        prefixes = client.run_on_scheduler(
            lambda dask_scheduler: list(dask_scheduler.task_prefixes)
        )
        assert "trials_on_fold" in prefixes, prefixes  # a task per (fold, group of trials)
        # every worker let go of the search's folds
        assert set(client.run(lambda: len(tune_module._FOLDS)).values()) == {0}
