"""The split stage: every method is reproducible and keeps its promise."""

from __future__ import annotations

import pandas as pd
import pydantic
import pytest

from pipeflow.core.stage import StageContext
from pipeflow.stages.split import SplitStage
from pipeflow.testing import StageContract

DATA = pd.DataFrame(
    {
        "label": ["a"] * 60 + ["b"] * 30 + ["c"] * 10,
        "customer": [f"u{i % 17}" for i in range(100)],
        "day": list(range(100, 0, -1)),
        "x": range(100),
    }
)


class TestSplitContract(StageContract):
    stage_cls = SplitStage
    entry_point = "split"
    config = {"method": "stratified", "by": "label", "seed": 3}
    sample_inputs = {"data": DATA}


def _split(**config) -> tuple[pd.DataFrame, pd.DataFrame]:
    out = SplitStage(SplitStage.Config(**config)).run(
        StageContext("r", "split", {}, base_dir=None), {"data": DATA}
    )  # type: ignore[arg-type]
    return out["train"], out["test"]


@pytest.mark.parametrize(
    "method, by",
    [("random", None), ("stratified", "label"), ("group", "customer"), ("time", "day")],
)
def test_parts_cover_every_row_once_and_repeat_with_the_seed(method: str, by: str | None) -> None:
    train, test = _split(method=method, by=by, seed=7, test_size=0.25)
    assert sorted([*train["x"], *test["x"]]) == list(range(100))
    assert len(test) > 0 and len(train) > 0
    again_train, again_test = _split(method=method, by=by, seed=7, test_size=0.25)
    assert again_test["x"].tolist() == test["x"].tolist()


def test_stratified_keeps_class_shares() -> None:
    _, test = _split(method="stratified", by="label", test_size=0.2, seed=1)
    assert test["label"].value_counts().to_dict() == {"a": 12, "b": 6, "c": 2}


def test_group_split_never_shares_a_group() -> None:
    train, test = _split(method="group", by="customer", test_size=0.3, seed=2)
    assert not set(train["customer"]) & set(test["customer"])


def test_time_split_tests_on_the_latest_rows() -> None:
    train, test = _split(method="time", by="day", test_size=0.1)
    assert test["day"].min() > train["day"].max()


def test_different_seeds_give_different_random_splits() -> None:
    assert _split(seed=1)[1]["x"].tolist() != _split(seed=2)[1]["x"].tolist()


def test_config_and_data_errors_are_clear() -> None:
    with pytest.raises(pydantic.ValidationError, match="needs `by:`"):
        SplitStage.Config(method="group")
    with pytest.raises(pydantic.ValidationError):
        SplitStage.Config(test_size=1.5)
    with pytest.raises(ValueError, match="split column 'nope' not found"):
        _split(method="stratified", by="nope")
