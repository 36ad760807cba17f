"""data_summary: counts, numeric ranges and the target's distribution, as strict JSON."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeflow.governance import data_summary


def test_columns_are_described_with_numeric_ranges_for_numbers_only():
    frame = pd.DataFrame(
        {
            "amount": [1.0, 3.0, np.nan, 8.0],
            "count": [1, 2, 2, 3],
            "region": ["n", None, "s", "n"],
            "flag": [True, False, True, True],
            "category": ["fire", "fire", "theft", None],
        }
    )
    summary = data_summary(frame, "category")
    assert summary["rows"] == 4
    columns = {c["name"]: c for c in summary["columns"]}
    assert list(columns) == ["amount", "count", "region", "flag", "category"]
    assert columns["amount"] == {
        "name": "amount",
        "dtype": "float64",
        "missing": 1,
        "distinct": 3,
        "min": 1.0,
        "max": 8.0,
        "mean": 4.0,
    }
    assert columns["count"]["min"] == 1.0 and columns["count"]["max"] == 3.0
    assert columns["region"]["missing"] == 1 and columns["region"]["distinct"] == 2
    assert "min" not in columns["region"] and "min" not in columns["flag"]
    assert summary["target"]["name"] == "category"
    assert summary["target"]["distribution"] == {"fire": 2, "<missing>": 1, "theft": 1}
    json.dumps(summary, allow_nan=False)


def test_non_finite_numbers_become_none():
    summary = data_summary(pd.DataFrame({"x": [np.nan, np.nan], "y": [1.0, np.inf]}), None)
    x, y = summary["columns"]
    assert x["min"] is None and x["mean"] is None
    assert y["max"] is None and y["min"] == 1.0
    assert summary["target"] is None
    json.dumps(summary, allow_nan=False)


def test_target_distribution_keeps_the_50_largest_and_sums_the_rest():
    values = [f"c{i:03d}" for i in range(60) for _ in range(100 - i)]
    summary = data_summary(pd.DataFrame({"t": values}), "t")
    distribution = summary["target"]["distribution"]
    assert len(distribution) == 51
    assert list(distribution)[:2] == ["c000", "c001"]
    assert distribution["c000"] == 100
    assert distribution["other"] == sum(100 - i for i in range(50, 60))
    assert sum(distribution.values()) == len(values)


def test_unknown_target_is_an_error():
    with pytest.raises(ValueError, match="target column 'nope' not found"):
        data_summary(pd.DataFrame({"a": [1]}), "nope")
