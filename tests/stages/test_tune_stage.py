"""tune: grid and random search, trials on Dask (threads and a real LocalCluster), best refit."""

from __future__ import annotations

import json

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


def test_random_search_is_seeded_and_respects_ranges() -> None:
    space = {"C": {"low": 0.01, "high": 100, "log": True}, "class_weight": [None, "balanced"]}
    first = tune(search="random", space=space, trials=5, seed=3, cv=2)["trials"]
    again = tune(search="random", space=space, trials=5, seed=3, cv=2)["trials"]
    assert first["params"].tolist() == again["params"].tolist()
    for params in map(json.loads, first["params"]):
        assert 0.01 <= params["C"] <= 100 and params["class_weight"] in (None, "balanced")


def test_a_failing_combination_is_a_failed_trial_not_a_failed_search() -> None:
    out = tune(space={"C": [1.0], "penalty": ["l2", "bogus"]}, cv=2)
    assert out["trials"]["error"].notna().sum() == 1
    assert out["info"]["search"]["best_params"]["penalty"] == "l2"


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
