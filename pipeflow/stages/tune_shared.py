"""The ``tune`` stage's xgboost path: trials that share each fold's binned matrix and their
boosting rounds (the policy is in :mod:`pipeflow.stages.tune`'s docstring), and the scorer both
paths use (:func:`_scored_on_cpu`).
"""

from __future__ import annotations

import importlib
import json
import threading
import time
from typing import TYPE_CHECKING, Any

from pipeflow.core.stage import StageContext
from pipeflow.execute.cluster import compute, delayed, worker_client
from pipeflow.stages.train import predict_on_cpu

if TYPE_CHECKING:
    from pipeflow.stages.tune import TuneConfig


# -- xgboost: one binned matrix per fold, shared boosting rounds ---------------------------------


def _boosted_trees(config: TuneConfig) -> Any:
    """The estimator class when it is xgboost's ``XGBClassifier`` or ``XGBRegressor`` itself (not
    a subclass, whose ``fit`` may differ): their trials share each fold's binned matrix."""
    module_name, _, class_name = config.estimator.rpartition(".")
    if not module_name.startswith("xgboost") or class_name not in ("XGBClassifier", "XGBRegressor"):
        return None
    import xgboost

    cls = getattr(importlib.import_module(module_name), class_name, None)
    return cls if cls in (xgboost.XGBClassifier, xgboost.XGBRegressor) else None


class _Fold:
    """One fold's training rows as the trials' estimators see them, built once per process: the
    preprocessing fitted on them, their features and target (label codes for a classifier), the
    fold's held-out rows, and the binned matrices xgboost built from the features (one per set of
    the params that shape a matrix, see :func:`_matrix_key`)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ready = False
        self.matrices: dict[str, Any] = {}
        self.prepare: Any = None
        self.features: Any = None
        self.target: Any = None
        self.classes: list[Any] | None = None
        self.X_test: Any = None
        self.y_test: Any = None


#: (search token, fold) -> _Fold, in every process that runs trials of a search (the stage's, or
#: a distributed worker's); a search forgets its folds when it ends (:func:`_forget`)
_FOLDS: dict[tuple[str, int], _Fold] = {}
_FOLDS_LOCK = threading.Lock()


def _fold(
    token: str, k: int, config: TuneConfig, X: Any, y: Any, split: Any, labels: bool
) -> _Fold:
    """Fold ``k`` of the search ``token``, prepared by the first trial that needs it here."""
    with _FOLDS_LOCK:
        fold = _FOLDS.setdefault((token, k), _Fold())
    with fold.lock:
        if not fold.ready:
            from pipeflow.models import LabelDecodedClassifier
            from pipeflow.stages.train import build_preprocessor

            train, test = split
            X_train, y_train = X.iloc[train], y.iloc[train]
            # as make_model builds it for every trial (from the whole table: column roles), and
            # as the trial's Pipeline fits it on the fold (with the target it fits the model on)
            target, classes = LabelDecodedClassifier.encode(y_train) if labels else (y_train, None)
            prepare = build_preprocessor(X, config, trees=True)
            fold.features = prepare.fit_transform(X_train, target)
            fold.prepare, fold.target, fold.classes = prepare, target, classes
            fold.X_test, fold.y_test = X.iloc[test], y.iloc[test]
            fold.ready = True
    return fold


def _forget(token: str) -> None:
    """Drop the folds (and binned matrices) of the search ``token`` from this process."""
    with _FOLDS_LOCK:
        for key in [key for key in _FOLDS if key[0] == token]:
            del _FOLDS[key]


def _matrix_key(estimator: Any) -> str:
    """What shapes the matrix xgboost's sklearn ``fit`` builds from given features and target:
    two trials with the same key bin the same rows into the same matrix. The thread count only
    changes how fast it is built (the quantile cuts are the same)."""
    names = (
        "tree_method",
        "device",
        "booster",
        "max_bin",
        "missing",
        "enable_categorical",
        "feature_types",
        "feature_weights",
    )
    params = estimator.get_params(deep=False)
    return repr([(name, params.get(name)) for name in names])


def _rounds_shared(params: dict[str, Any]) -> bool:
    """Whether a model of these params boosted for n rounds is the first n rounds of the same
    model boosted for more (gbtree without early stopping or callbacks: each round sees only the
    rounds before it, and sampling draws the same random numbers round by round)."""
    rounds = params.get("n_estimators")
    return (
        params.get("booster") in (None, "gbtree")
        and params.get("early_stopping_rounds") is None
        and params.get("callbacks") is None
        and (
            rounds is None
            or (isinstance(rounds, int) and not isinstance(rounds, bool) and rounds >= 1)
        )
    )


def _groups(
    config: TuneConfig, candidates: list[dict[str, Any]], default_rounds: int
) -> list[list[tuple[int, int | None]]]:
    """The candidates as fits: each group is one model per fold, boosted for the most rounds its
    members ask for, and each member (candidate index, rounds) is scored on its first rounds.
    Candidates that differ only in ``n_estimators`` share a group; a group's rounds are None when
    its one member cannot share (its fit is exactly the trial's). Costliest groups first."""
    groups: dict[str, list[tuple[int, int | None]]] = {}
    for i, params in enumerate(candidates):
        merged = {**config.params, **params}
        if _rounds_shared(merged):
            rest = {k: v for k, v in merged.items() if k != "n_estimators"}
            key = json.dumps(rest, sort_keys=True, default=repr)
            groups.setdefault(key, []).append((i, merged.get("n_estimators") or default_rounds))
        else:
            groups[f"#{i}"] = [(i, None)]

    def cost(group: list[tuple[int, int | None]]) -> float:  # a guess, for the order only
        depth = {**config.params, **candidates[group[0][0]]}.get("max_depth") or 6
        rounds = max(r or default_rounds for _, r in group)
        return rounds * 2.0 ** min(depth if isinstance(depth, int) else 6, 12)

    return sorted(groups.values(), key=cost, reverse=True)


def _trials_on_fold(
    config: TuneConfig,
    X: Any,
    y: Any,
    splits: list[Any],
    k: int,
    group: list[tuple[int, int | None]],
    candidates: list[dict[str, Any]],
    ctx: StageContext,
    token: str,
    n_jobs: int | None,
) -> list[tuple[int, float | None, float, str | None]]:
    """Fit one group's model on fold ``k`` and score each member on the fold's held-out rows:
    (candidate index, score, seconds, error) per member. The model sees the features and target
    a Pipeline would give it after fitting the same preprocessing on the fold, and the binned
    matrix xgboost builds from them is built once per fold (and matrix key) in this process."""
    import copy

    from sklearn.metrics import check_scoring
    from sklearn.pipeline import Pipeline

    from pipeflow.models import LabelDecodedClassifier
    from pipeflow.stages.train import _make_estimator

    started = time.perf_counter()
    first, rounds = group[0]
    try:
        params = {**config.params, **candidates[first]}
        if rounds is not None:
            params["n_estimators"] = max(r or 0 for _, r in group)
        if n_jobs is not None and "n_jobs" not in params and "nthread" not in params:
            params["n_jobs"] = n_jobs  # the thread count changes no result, only the speed
        estimator = _make_estimator(config, ctx, params)
        task = config.task or (
            "classification" if type(estimator).__name__ == "XGBClassifier" else "regression"
        )
        labels = task == "classification"  # as make_model: xgboost gets label codes
        fold = _fold(token, k, config, X, y, splits[k], labels)
        estimator._create_dmatrix = _shared_matrix(fold, estimator)
        try:
            estimator.fit(fold.features, fold.target)
        finally:
            del estimator._create_dmatrix
    except Exception as err:  # a bad combination is a failed trial, not a failed search
        failed = f"{type(err).__name__}: {err}"
        return [(i, None, time.perf_counter() - started, failed) for i, _ in group]
    fit_s = time.perf_counter() - started
    out = []
    for i, member_rounds in group:
        scored = time.perf_counter()
        try:
            model_of: Any = estimator
            if member_rounds is not None and member_rounds != estimator.n_estimators:
                model_of = copy.copy(estimator)  # the same model, its first rounds only
                model_of._Booster = estimator.get_booster()[:member_rounds]
                model_of.n_estimators = member_rounds
            model: Any = Pipeline([("prepare", fold.prepare), ("model", model_of)])
            if labels:
                model = LabelDecodedClassifier(model, fold.classes)
            scorer: Any = (
                _scored_on_cpu(config.scoring)
                if ctx.resources.get("GPU")
                else check_scoring(model, scoring=config.scoring)
            )
            score = float(scorer(model, fold.X_test, fold.y_test))
        except Exception as err:
            out.append((i, None, fit_s, f"{type(err).__name__}: {err}"))
            continue
        out.append((i, score, fit_s + time.perf_counter() - scored, None))
    return out


def _shared_matrix(fold: _Fold, estimator: Any) -> Any:
    """A stand-in for the estimator's ``_create_dmatrix`` (what its ``fit`` calls to bin the
    training rows): the fold's matrix for the estimator's matrix key, built by the estimator's
    own method the first time."""
    create = estimator._create_dmatrix
    key = _matrix_key(estimator)

    def shared(ref: Any, **kwargs: Any) -> Any:
        if ref is not None:  # an evaluation set's matrix (none in cross-validation)
            return create(ref=ref, **kwargs)
        with fold.lock:
            matrix = fold.matrices.get(key)
            if matrix is None:
                matrix = fold.matrices[key] = create(ref=None, **kwargs)
        return matrix

    return shared


def _run_shared(
    config: TuneConfig, X: Any, y: Any, ctx: StageContext, candidates: list[dict[str, Any]]
) -> list[tuple[float | None, float | None, float, str | None]]:
    """The trials of an xgboost search, as (fold, group) work items (see the module docstring)."""
    import os
    import uuid

    import numpy as np
    from sklearn.model_selection import KFold, StratifiedKFold

    cls = _boosted_trees(config)
    task = config.task or ("classification" if cls.__name__ == "XGBClassifier" else "regression")
    splitter = (StratifiedKFold if task == "classification" else KFold)(
        n_splits=config.cv, shuffle=True, random_state=config.seed
    )
    splits = list(splitter.split(X, y))  # as cross_val_score splits them
    groups = _groups(config, candidates, cls().get_num_boosting_rounds())
    items = [(k, g) for g in groups for k in range(config.cv)]
    token = uuid.uuid4().hex
    client = None if ctx.resources else worker_client()
    if client is not None:
        with client as c:
            X_f, y_f, splits_f = c.scatter([X, y, splits], broadcast=False)
            futures = [
                c.submit(
                    _trials_on_fold,
                    *(config, X_f, y_f, splits_f, k, g, candidates, ctx, token, None),
                    pure=False,
                    priority=len(items) - n,  # costliest first
                )
                for n, (k, g) in enumerate(items)
            ]
            try:
                done = c.gather(futures)
            finally:
                c.run(_forget, token)
    else:
        # a lane per core, each taking the next work item: costliest first, so no core is left
        # with the longest fit at the end; one thread per fit (two fits at once on two cores)
        lanes = 1 if ctx.resources else max(1, min(os.cpu_count() or 1, len(items)))
        n_jobs = None if ctx.resources else max(1, (os.cpu_count() or 1) // lanes)
        queue = iter(enumerate(items))
        taking = threading.Lock()

        def lane() -> list[tuple[int, Any]]:
            out = []
            while True:
                with taking:
                    item = next(queue, None)
                if item is None:
                    return out
                n, (k, g) = item
                results = _trials_on_fold(
                    config, X, y, splits, k, g, candidates, ctx, token, n_jobs
                )
                out.append((n, results))

        tasks = [delayed(lane, pure=False)() for _ in range(lanes)]
        try:
            parts = compute(*tasks, scheduler="sync" if lanes == 1 else "threads")
        finally:
            _forget(token)
        done = [results for _, results in sorted(r for part in parts for r in part)]
    scores: list[list[float | None]] = [[None] * config.cv for _ in candidates]
    seconds = [0.0] * len(candidates)
    errors: list[str | None] = [None] * len(candidates)
    for (k, _), results in zip(items, done, strict=True):
        for i, score, secs, err in results:
            scores[i][k] = score
            seconds[i] += secs
            errors[i] = errors[i] or err
    out: list[tuple[float | None, float | None, float, str | None]] = []
    for i in range(len(candidates)):
        if errors[i] is not None:
            out.append((None, None, seconds[i], errors[i]))
            continue
        fold_scores = np.asarray(scores[i], dtype=float)  # in fold order, as cross_val_score's
        out.append((float(fold_scores.mean()), float(fold_scores.std()), seconds[i], None))
    return out


def _scored_on_cpu(scoring: str | None) -> Any:
    """``scoring``'s scorer (the estimator's own ``score`` when None), after setting a fold's
    GPU-fitted model to predict on the CPU: the fold's rows are host arrays, which a cuda model
    copies through a DMatrix (xgboost warns of the cost). The predictions are the same."""
    from sklearn.metrics import check_scoring

    def score(estimator: Any, X: Any, y: Any) -> float:  # noqa: N803 (sklearn naming)
        predict_on_cpu(estimator)
        return check_scoring(estimator, scoring=scoring)(estimator, X, y)

    return score
