"""What the built-in stages log through ``ctx`` (:mod:`pipeflow.stages.training_log`): real fits on
the claims table of the train/evaluate tests; the values logged are the ones the outputs hold."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_train_evaluate_stages import TEST, TRAIN

from pipeflow.core.stage import StageContext
from pipeflow.stages.evaluate import EvaluateStage
from pipeflow.stages.train import TrainStage
from pipeflow.stages.tune import TuneStage


def _ctx(stage: str) -> StageContext:
    return StageContext(run_id="r", stage=stage, params={}, base_dir=Path("."))


def _metrics(ctx: StageContext) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for m in ctx.tracker.metrics():
        out.setdefault(m.name, []).append((m.step, m.value))
    return out


def test_train_logs_its_estimator_chosen_params_and_training_score() -> None:
    ctx = _ctx("model")
    config = TrainStage.Config(
        estimator="sklearn.linear_model.LogisticRegression",
        target="label",
        params={"C": 2.0, "max_iter": 500},
    )
    out = TrainStage(config).run(ctx, {"train": TRAIN})
    assert ctx.tracker.params() == {
        "estimator": "sklearn.linear_model.LogisticRegression",
        "C": "2.0",
        "max_iter": "500",
    }
    assert _metrics(ctx) == {"train_score": [(0, out["info"]["train_score"])]}


def test_train_logs_the_loss_curve_a_neural_net_keeps_as_steps() -> None:
    ctx = _ctx("model")
    config = TrainStage.Config(
        estimator="sklearn.neural_network.MLPClassifier",
        target="label",
        params={"hidden_layer_sizes": [8], "max_iter": 30, "random_state": 0},
    )
    with pytest.warns(Warning):  # 30 iterations do not converge: the curve is what matters
        out = TrainStage(config).run(ctx, {"train": TRAIN})
    curve = out["model"].steps[-1][1].loss_curve_
    assert _metrics(ctx)["loss"] == list(enumerate(curve)) and len(curve) == 30


def test_tune_logs_each_trials_score_as_a_step_and_the_best() -> None:
    ctx = _ctx("tuned")
    config = TuneStage.Config(
        estimator="sklearn.linear_model.LogisticRegression",
        target="label",
        task="classification",
        params={"max_iter": 300},
        space={"C": [0.001, 1.0, "bad"]},  # the third trial fails: a gap at step 2
        cv=2,
    )
    out = TuneStage(config).run(ctx, {"train": TRAIN})
    trials = out["trials"]
    logged = _metrics(ctx)
    assert logged["trial_score"] == [
        (0, pytest.approx(trials["score_mean"][0])),
        (1, pytest.approx(trials["score_mean"][1])),
    ]
    assert logged["best_score"] == [(0, out["info"]["search"]["best_score"])]
    assert ctx.tracker.params()["C"] == "1.0" and ctx.tracker.params()["search"] == "grid"


def test_evaluate_logs_its_headline_scores_even_when_its_gate_fails() -> None:
    model = TrainStage(
        TrainStage.Config(
            estimator="sklearn.linear_model.LogisticRegression",
            target="label",
            params={"max_iter": 500},
        )
    ).run(_ctx("model"), {"train": TRAIN})["model"]
    ctx = _ctx("scores")
    config = EvaluateStage.Config(target="label", min={"accuracy": 0.999})
    with pytest.raises(ValueError, match="below the quality gate"):
        EvaluateStage(config).run(ctx, {"model": model, "data": TEST})
    logged = _metrics(ctx)
    assert set(logged) == {
        "accuracy",
        "balanced_accuracy",
        "f1_macro",
        "precision_macro",
        "recall_macro",
    }
    assert 0.8 < logged["accuracy"][0][1] < 0.999


def test_tune_reports_its_trials_then_the_refit_as_progress() -> None:
    from pipeflow.core.progress import StageMonitor, Update

    updates: list[Update] = []
    ctx = _ctx("tuned")
    ctx.monitor = StageMonitor("tuned", lambda message: updates.append(Update.from_list(message)))
    config = TuneStage.Config(
        estimator="sklearn.linear_model.LogisticRegression",
        target="label",
        task="classification",
        params={"max_iter": 300},
        space={"C": [0.1, 1.0, 10.0]},
        cv=2,
    )
    TuneStage(config).run(ctx, {"train": TRAIN})
    assert {u.total for u in updates} == {5.0}  # 3 trials, then fitting and scoring the best
    assert updates[0].done == 0 and updates[0].message == "3 trials"
    assert (updates[-1].done, updates[-1].message) == (5.0, "trained")
