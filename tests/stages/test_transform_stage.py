"""transform: every step on messy values, joins, and errors that name the step and column."""

from __future__ import annotations

import pandas as pd
import pydantic
import pytest

from pipeflow.core.stage import StageContext
from pipeflow.stages.transform import TransformStage
from pipeflow.testing import StageContract

LISTINGS = pd.DataFrame(
    {
        "Listing": ["L1", "L2", "L2", "L3", "L4"],
        "Price": ["$12,400.50", "(300)", "(300)", "n/a", " 7 "],
        "Rating": ["87%", "0.5", "0.5", "x%", None],
        "Garage": ["yes", "F", "F", "maybe", None],
        "Kind": [" Flat ", "house", "house", "HOUSE", None],
        "agent": [1, 2, 2, 2, 3],
        "rooms": ["3", "2", "2", "4", "1"],
    }
)
AGENTS = pd.DataFrame({"agent": [1, 2, 3], "agency": ["north", "south", "north"]})


class TestTransformContract(StageContract):
    stage_cls = TransformStage
    entry_point = "transform"
    config = {
        "steps": [{"parse_currency": ["Price"]}, {"join": {"input": "agents", "on": "agent"}}]
    }
    sample_inputs = {"data": LISTINGS, "agents": AGENTS}


def transform(
    steps: list[dict], data: pd.DataFrame = LISTINGS, **others: pd.DataFrame
) -> pd.DataFrame:
    stage = TransformStage(TransformStage.Config(steps=steps))
    return stage.run(StageContext("r", "tidy", {}, base_dir=None), {"data": data, **others})["out"]  # type: ignore[arg-type]


def test_a_full_cleaning_recipe() -> None:
    out = transform(
        [
            {
                "rename": {
                    "Listing": "listing",
                    "Price": "price",
                    "Rating": "rating",
                    "Garage": "garage",
                    "Kind": "kind",
                }
            },
            {"dedupe": ["listing"]},
            {"strings": {"kind": ["strip", "lower"]}},
            {"parse_currency": ["price"]},
            {"parse_percent": ["rating"]},
            {"parse_bool": ["garage"]},
            {"map": {"kind": {"flat": "apartment"}}},
            {"cast": {"rooms": "int"}},
            {"fill": {"kind": "unknown"}},
            {"derive": {"price_per_room": "price / rooms"}},
            {"join": {"input": "agents", "on": "agent"}},
            {"drop": ["agent"]},
        ],
        agents=AGENTS,
    )
    assert out["listing"].tolist() == ["L1", "L2", "L3", "L4"]
    assert (
        out["price"].tolist()[:2] == [12400.5, -300.0]
        and pd.isna(out["price"].iloc[2])
        and out["price"].iloc[3] == 7
    )
    assert (
        out["rating"].iloc[0] == pytest.approx(0.87)
        and out["rating"].iloc[1] == 0.5
        and pd.isna(out["rating"].iloc[2])
    )
    assert out["garage"].tolist()[:2] == [True, False] and pd.isna(out["garage"].iloc[2])
    assert out["kind"].tolist() == ["apartment", "house", "house", "unknown"]
    assert out["price_per_room"].iloc[0] == pytest.approx(4133.5)
    assert out["agency"].tolist() == ["north", "south", "south", "north"]
    assert "agent" not in out.columns


def test_unparseable_values_become_missing_and_are_counted(caplog) -> None:
    with caplog.at_level("WARNING"):
        out = transform([{"parse_currency": ["Price"]}])
    assert int(out["Price"].isna().sum()) == 1
    assert "1 value(s) of 'Price' are not an amount" in caplog.text


def test_filter_select_dropna() -> None:
    out = transform(
        [
            {"parse_currency": ["Price"]},
            {"dropna": ["Price"]},
            {"filter": "Price > 0"},
            {"select": ["Listing", "Price"]},
        ]
    )
    assert out.to_dict("records") == [
        {"Listing": "L1", "Price": 12400.5},
        {"Listing": "L4", "Price": 7.0},
    ]


@pytest.mark.parametrize(
    "steps, message",
    [
        ([{"drop": ["nope"]}], r"step 1 \(drop\): column 'nope' not found"),
        (
            [{"cast": {"Price": "float"}}],
            r"step 1 \(cast\): column 'Price': '\$12,400.50' is not a number",
        ),
        ([{"derive": {"x": "__import__('os').system('true')"}}], "may use column names"),
        ([{"derive": {"x": "Price +* 2"}}], "cannot compute 'x'"),
        ([{"join": {"input": "ghost", "on": "agent"}}], "no input named 'ghost'"),
        ([{"join": {"input": "data", "on": "agent"}}], "several rows per"),
    ],
)
def test_errors_name_the_step_and_what_is_wrong(steps: list[dict], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        transform(steps)


def test_a_step_is_exactly_one_known_operation() -> None:
    with pytest.raises(pydantic.ValidationError, match="exactly one operation"):
        TransformStage.Config(steps=[{"rename": {"a": "b"}, "drop": ["c"]}])
    with pytest.raises(pydantic.ValidationError, match="extra"):
        TransformStage.Config(steps=[{"renam": {"a": "b"}}])
