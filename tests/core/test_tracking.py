"""What a stage logs (``ctx.log_metric`` / ``ctx.log_param``), before it travels anywhere: steps,
replaced values, refused values with the metric's name, and a tracker that survives pickling (a
context sent to another process)."""

from __future__ import annotations

import math
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest

from pipeflow.core.stage import StageContext
from pipeflow.core.tracking import Metric, Tracker, from_manifest, to_manifest


def _ctx() -> StageContext:
    return StageContext(run_id="r", stage="s", params={}, base_dir=Path("."))


def _history(tracker: Tracker, name: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in tracker.metrics() if m.name == name]


def test_a_metric_logged_without_steps_gets_the_next_step_each_time() -> None:
    ctx = _ctx()
    for value in (0.9, 0.5, 0.25):
        ctx.log_metric("loss", value)
    ctx.log_metric("accuracy", 0.8)
    assert _history(ctx.tracker, "loss") == [(0, 0.9), (1, 0.5), (2, 0.25)]
    assert _history(ctx.tracker, "accuracy") == [(0, 0.8)]


def test_an_explicit_step_replaces_the_value_at_that_step_and_moves_the_next_one() -> None:
    ctx = _ctx()
    ctx.log_metric("loss", 1.0, step=10)
    ctx.log_metric("loss", 0.7, step=10)
    ctx.log_metric("loss", 0.5)  # after the highest step so far
    ctx.log_metric("loss", 2.0, step=3)
    assert _history(ctx.tracker, "loss") == [(3, 2.0), (10, 0.7), (11, 0.5)]


def test_numpy_numbers_and_steps_are_accepted() -> None:
    ctx = _ctx()
    ctx.log_metrics({"a": np.float32(0.5), "b": np.int64(3)}, step=np.int64(2))
    assert [(m.name, m.step, m.value) for m in ctx.tracker.metrics()] == [
        ("a", 2, 0.5),
        ("b", 2, 3.0),
    ]


@pytest.mark.parametrize(
    ("name", "value", "step", "message"),
    [
        ("loss", math.nan, None, "metric 'loss': value nan is not a finite number"),
        ("loss", math.inf, None, "metric 'loss': value inf is not a finite number"),
        ("loss", "high", None, "metric 'loss': value 'high' is not a number"),
        ("loss", True, None, "metric 'loss': value True is not a number"),
        ("loss", 1.0, 1.5, "metric 'loss': step must be a whole number"),
        ("", 1.0, None, "metric name '' is not allowed"),
        ("a;b", 1.0, None, "metric name 'a;b' is not allowed"),
        (" padded", 1.0, None, "metric name ' padded' is not allowed"),
        ("x" * 251, 1.0, None, "is not allowed: use 1 to 250"),
    ],
)
def test_bad_metrics_are_refused_naming_the_metric(
    name: str, value: object, step: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _ctx().log_metric(name, value, step=step)  # type: ignore[arg-type]


def test_params_are_text_and_logged_once() -> None:
    ctx = _ctx()
    ctx.log_params({"optimizer": "adam", "layers": [64, 32], "lr": 0.01})
    ctx.log_param("lr", 0.01)  # the same value again: fine
    assert ctx.tracker.params() == {"optimizer": "adam", "layers": "[64, 32]", "lr": "0.01"}
    with pytest.raises(ValueError, match="param 'lr' was already logged as '0.01'"):
        ctx.log_param("lr", 0.1)
    with pytest.raises(ValueError, match="more than 6000"):
        ctx.log_param("blob", "x" * 6001)


def test_a_tracker_survives_pickling_and_threads_log_into_it_safely() -> None:
    tracker = Tracker()

    def log(offset: int) -> None:
        for i in range(200):
            tracker.log_metric(f"m{offset}", float(i), step=i)

    threads = [threading.Thread(target=log, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(tracker.metrics()) == 800
    copy = pickle.loads(pickle.dumps(tracker))
    copy.log_metric("m0", 9.0)
    assert _history(copy, "m0")[-1] == (200, 9.0)
    assert len(tracker.metrics()) == 800  # the copy logs into itself only


def test_the_manifest_keeps_what_was_logged_and_skips_entries_that_do_not_parse() -> None:
    metrics = [Metric("loss", 0, 0.5, 1.0), Metric("loss", 1, 0.25, 2.0)]
    saved = to_manifest(metrics, {"optimizer": "adam"})
    assert from_manifest(saved) == (metrics, {"optimizer": "adam"})
    assert to_manifest([], {}) == {}  # a stage that logs nothing: manifests as before
    damaged = {"metrics": [["loss", 0, 0.5, 1.0], ["bad"], "x", ["loss", "one", 1, 1]]}
    assert from_manifest(damaged) == ([Metric("loss", 0, 0.5, 1.0)], {})
