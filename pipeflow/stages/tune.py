"""The ``tune`` stage: search a parameter space with cross-validation, trials in parallel on Dask.

::

    tuned:
      type: tune
      inputs: {train: split.train}
      with:
        estimator: sklearn.linear_model.LogisticRegression
        target: category
        task: classification
        params: {max_iter: 2000}               # fixed for every trial
        search: random                         # grid | random
        space:
          C: {low: 0.01, high: 100, log: true} # random: a range (log scale) ...
          class_weight: [null, balanced]       # ... or a list to choose from (grid: lists only)
        trials: 12                             # random search only
        cv: 3
        scoring: accuracy                      # any scikit-learn scorer name
        seed: 42

Every trial is one Dask task: on the distributed executor the trials of a tune stage spread over
the cluster's workers (submitted from the worker running the stage), on the local executors they
run on a thread pool. A stage with ``resources`` (``{GPU: 1}``) runs its trials itself, one after
the other, on the worker that offers them. Each trial is cross-validated on the training rows only; the best
parameters are then refitted on all of them. Outputs: ``model`` (as ``train`` makes it), ``info``
(the train record plus the search: best params and score), and ``trials``, a table of every
trial's params, the mean and spread of its score and its error if it failed, so the search itself
is tracked (durations go to the log: outputs stay byte-identical for the same inputs).

**xgboost searches** (``xgboost.XGBClassifier`` / ``XGBRegressor`` themselves) score every trial
exactly as scikit-learn's ``GridSearchCV`` / ``cross_val_score`` would (same folds, same
preprocessing fitted on each fold, same fits, bit for bit), doing less work for it:

- *one binned matrix per fold*: xgboost's ``hist`` fit spends a large part of its time binning
  the rows (the quantile sketch of a ``QuantileDMatrix``); the cuts depend on the fold's rows
  and on a few params (``max_bin``, ``missing``, device, ...: :func:`_matrix_key`), not on the
  rest, so the trials of a fold share one matrix, built by xgboost's own sklearn code the first
  time a trial needs it (one per process: on a cluster each worker builds the folds it sees).
  Matrices are never shared across folds: each fold's cuts come from its own training rows.
- *shared boosting rounds*: trials that differ only in ``n_estimators`` are one fit with the
  most rounds, each scored on its first n rounds (a sliced booster): round n sees only the
  rounds before it, and row and column sampling draw the same numbers round by round, so the
  first n rounds of a longer fit are the n-round model (gbtree without early stopping or
  callbacks; dart and the rest fit each trial on its own).
- *every core busy*: the work items are (fold, group of trials), costliest first; locally a
  lane per core takes the next one (Dask tasks on the thread pool), each fit with one thread
  unless ``n_jobs`` is set (two one-thread fits at once beat one two-thread fit on two cores;
  the thread count changes no result); on a cluster each item is a task of its own
  (``trials_on_fold``), and the workers let go of the search's matrices when it ends.

Same data, config and seed: same trials, same best model.

Tracking (:mod:`pipeflow.core.tracking`): each trial's mean score is logged as metric
``trial_score`` at step = the trial's number (a failed trial leaves a gap), then ``best_score``,
and, as ``train`` logs them, the refitted model's estimator, params (the fixed ones and the best
ones) and ``train_score``.
"""

from __future__ import annotations

import itertools
import json
import math
import threading
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, cast

from pydantic import Field, model_validator

from pipeflow.core.stage import Port, StageConfig, StageContext
from pipeflow.execute.cluster import completed, compute, delayed, worker_client
from pipeflow.stages.train import (
    TrainConfig,
    TrainStage,
    fit,
    make_model,
    training_rows,
)
from pipeflow.stages.training_log import log_training


class Range(StageConfig):
    low: float
    high: float
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class TuneConfig(TrainConfig):
    search: Literal["grid", "random"] = Field(
        "grid", description="grid: every combination; random: `trials` samples"
    )
    space: dict[str, list[Any] | Range] = Field(
        min_length=1, description="param -> list of values, or {low, high, log, integer}"
    )
    trials: int = Field(10, ge=1, le=10_000, description="random search: how many trials")
    cv: int = Field(3, ge=2, le=20, description="cross-validation folds")
    scoring: str | None = Field(
        None, description="scikit-learn scorer name; default: the estimator's score"
    )
    seed: int = Field(0, description="seed for sampling and folds")

    @model_validator(mode="after")
    def _grid_lists(self) -> TuneConfig:
        if self.search == "grid":
            ranges = [k for k, v in self.space.items() if isinstance(v, Range)]
            if ranges:
                raise ValueError(
                    f"grid search needs lists of values; {', '.join(ranges)} given as ranges (use search: random)"
                )
            size = math.prod(len(v) for v in self.space.values())  # type: ignore[arg-type]
            if size > 10_000:
                raise ValueError(
                    f"the grid has {size} combinations; use search: random with `trials`"
                )
        for name, values in self.space.items():
            if isinstance(values, list) and not values:
                raise ValueError(f"space.{name} is an empty list")
        return self


class TuneStage(TrainStage):
    """Search a parameter space with cross-validation (trials on Dask); refit the best."""

    version: ClassVar[str] = "1"
    Config = TuneConfig
    description = (
        "Grid or random search with cross-validation, trials in parallel on Dask; refits the best."
    )

    @classmethod
    def output_ports(cls, config: TuneConfig) -> Mapping[str, Port]:  # type: ignore[override]
        return {
            **TrainStage.output_ports(config),
            "trials": Port("table", description="every trial: params, score, duration"),
        }

    def run(self, ctx: StageContext, inputs: dict[str, Any]) -> Mapping[str, Any]:
        import pandas as pd

        config = cast(TuneConfig, self.config)  # a TrainStage whose Config is the wider TuneConfig
        X, y = training_rows(config, inputs["train"])
        candidates = _candidates(config)
        results = _run_trials(config, X, y, ctx, candidates)
        trials = pd.DataFrame(
            [
                {
                    "trial": i,
                    "params": json.dumps(p, sort_keys=True, default=str),
                    "score_mean": mean,
                    "score_std": std,
                    "error": err,
                }
                for i, (p, (mean, std, secs, err)) in enumerate(
                    zip(candidates, results, strict=True)
                )
            ]
        )
        ok = trials[trials["error"].isna()]
        if ok.empty:
            raise ValueError(f"every trial failed; first error: {trials['error'].iloc[0]}")
        best = int(
            ok.sort_values(["score_mean", "trial"], ascending=[False, True]).iloc[0]["trial"]
        )
        best_params = candidates[best]
        for i, (mean, _std, _secs, _err) in enumerate(results):
            if mean is not None and math.isfinite(mean):
                ctx.log_metric("trial_score", mean, step=i)  # one step per trial, in order
        n = len(candidates)  # progress: n trials, then the refit's two phases
        model, info = fit(config, X, y, ctx, {**config.params, **best_params}, phases=(n, n + 2))
        log_training(ctx, info, model, {**config.params, **best_params})
        info["search"] = {
            "method": config.search,
            "trials": len(candidates),
            "failed_trials": int(trials["error"].notna().sum()),
            "cv": config.cv,
            "scoring": config.scoring or "estimator default",
            "best_params": best_params,
            "best_score": float(trials.loc[best, "score_mean"]),
        }
        ctx.log_metric("best_score", info["search"]["best_score"])
        ctx.log_param("search", config.search)
        ctx.logger.info(
            "tune: best of %d trials %s scored %.4f",
            len(candidates),
            best_params,
            info["search"]["best_score"],
        )
        # trial durations are logged, not stored: outputs stay byte-identical for the same inputs
        ctx.logger.info("tune: trial seconds %s", [round(r[2], 2) for r in results])
        return {"model": model, "info": info, "trials": trials}


def _candidates(config: TuneConfig) -> list[dict[str, Any]]:
    import numpy as np

    names = sorted(config.space)
    if config.search == "grid":
        return [
            dict(zip(names, combo, strict=True))
            for combo in itertools.product(*(config.space[n] for n in names))
        ]
    rng = np.random.default_rng(config.seed)
    out = []
    for _ in range(config.trials):
        params: dict[str, Any] = {}
        for name in names:
            space = config.space[name]
            if isinstance(space, list):
                params[name] = space[int(rng.integers(len(space)))]
                continue
            value = (
                float(np.exp(rng.uniform(np.log(space.low), np.log(space.high))))
                if space.log
                else float(rng.uniform(space.low, space.high))
            )
            params[name] = int(round(value)) if space.integer else round(value, 6)
        out.append(params)
    return out


def _trial(
    config: TuneConfig, X: Any, y: Any, ctx: StageContext, params: dict[str, Any]
) -> tuple[float | None, float | None, float, str | None]:
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score

    started = time.perf_counter()
    try:
        model, _, task = make_model(config, X, ctx, {**config.params, **params})
        folds = (StratifiedKFold if task == "classification" else KFold)(
            n_splits=config.cv, shuffle=True, random_state=config.seed
        )
        scoring: Any = config.scoring
        if ctx.resources.get("GPU"):  # score each cuda fold on the CPU, where its rows are
            from pipeflow.stages.tune_shared import _scored_on_cpu

            scoring = _scored_on_cpu(config.scoring)
        scores = cross_val_score(model, X, y, cv=folds, scoring=scoring, error_score="raise")
    except Exception as err:  # a bad combination is a failed trial, not a failed search
        return None, None, time.perf_counter() - started, f"{type(err).__name__}: {err}"
    return float(scores.mean()), float(scores.std()), time.perf_counter() - started, None


def _run_trials(
    config: TuneConfig, X: Any, y: Any, ctx: StageContext, candidates: list[dict[str, Any]]
) -> list[Any]:
    """Trials as Dask tasks: on the cluster when this stage runs on a distributed worker."""
    import dataclasses

    ctx = dataclasses.replace(ctx, store=None)  # trials need the resources, not the store handle
    from pipeflow.stages.tune_shared import _boosted_trees, _run_shared

    if _boosted_trees(config) is not None:  # (no live progress per trial on this path yet)
        return _run_shared(config, X, y, dataclasses.replace(ctx, monitor=None), candidates)
    # A stage that asked for worker resources (a GPU) runs its trials itself, one at a time: it
    # holds what it asked for until it ends, so trials asking for the same would wait for it for
    # ever on a one-GPU cluster, and trials asking for nothing would land on CPU workers with
    # device: cuda.
    total = len(candidates) + 2  # and the refit's two phases (train.fit)
    ctx.progress(0, total, f"{len(candidates)} trials")
    client = None if ctx.resources else worker_client()
    if client is not None:
        with client as c:
            X_future, y_future = c.scatter([X, y], broadcast=False)
            trial_ctx = dataclasses.replace(ctx, monitor=None)  # trials report through here
            futures = [
                c.submit(_trial, config, X_future, y_future, trial_ctx, p, pure=False)
                for p in candidates
            ]
            for done, _ in enumerate(completed(futures), start=1):
                ctx.progress(done, total, f"trial {done} of {len(candidates)} done")
            return c.gather(futures)
    counter = _Counter(ctx, total, len(candidates))
    tasks = [delayed(counter.trial, pure=False)(config, X, y, ctx, p) for p in candidates]
    return list(compute(*tasks, scheduler="sync" if ctx.resources else "threads"))


class _Counter:
    """Counts trials as they finish on this process's threads and reports them."""

    def __init__(self, ctx: StageContext, total: int, trials: int) -> None:
        self.ctx, self.total, self.trials = ctx, total, trials
        self.done = 0
        self._lock = threading.Lock()

    def trial(self, *args: Any) -> Any:
        result = _trial(*args)
        with self._lock:
            self.done += 1
            done = self.done
        self.ctx.progress(done, self.total, f"trial {done} of {self.trials} done")
        return result
