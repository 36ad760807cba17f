"""bias_metrics: per-group rates and differences, checked against values computed by hand."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeflow.governance import bias_metrics


def test_binary_matches_the_fairlearn_definitions_for_the_positive_class():
    # group a: 4 rows, true 1,1,0,0 predicted 1,0,1,0 -> selection 2/4, TPR 1/2, FPR 1/2
    # group b: 4 rows, true 1,1,1,0 predicted 1,1,1,1 -> selection 4/4, TPR 3/3, FPR 1/1
    y_true = [1, 1, 0, 0, 1, 1, 1, 0]
    y_pred = [1, 0, 1, 0, 1, 1, 1, 1]
    sensitive = ["a", "a", "a", "a", "b", "b", "b", "b"]
    result = bias_metrics(y_true, y_pred, sensitive, attribute="region")

    assert result["attribute"] == "region"
    assert result["classes"] == ["0", "1"]
    a, b = result["groups"]["a"], result["groups"]["b"]
    assert a["rows"] == 4 and b["rows"] == 4
    assert a["selection_rate"]["1"] == 0.5 and b["selection_rate"]["1"] == 1.0
    assert a["tpr"]["1"] == 0.5 and b["tpr"]["1"] == 1.0
    assert a["fpr"]["1"] == 0.5 and b["fpr"]["1"] == 1.0
    assert a["accuracy"] == 0.5 and b["accuracy"] == 0.75
    # fairlearn: DPD = 1.0 - 0.5; EOD = max(TPR range 0.5, FPR range 0.5)
    assert result["demographic_parity_difference"] == pytest.approx(0.5)
    assert result["equalized_odds_difference"] == pytest.approx(0.5)
    assert result["accuracy_difference"] == pytest.approx(0.25)


def test_binary_difference_is_the_same_whichever_class_is_positive():
    y_true = np.array(["yes", "no", "no", "yes", "no", "yes"])
    y_pred = np.array(["yes", "yes", "no", "no", "no", "yes"])
    sensitive = np.array(["m", "m", "m", "f", "f", "f"])
    result = bias_metrics(y_true, y_pred, sensitive, attribute="sex")
    m, f = result["groups"]["m"], result["groups"]["f"]
    # m: true yes,no,no pred yes,yes,no; f: true yes,no,yes pred no,no,yes
    assert m["tpr"] == {"no": 0.5, "yes": 1.0}
    assert m["fpr"] == {"no": 0.0, "yes": 0.5}
    assert f["tpr"] == {"no": 1.0, "yes": 0.5}
    assert f["fpr"] == {"no": 0.5, "yes": 0.0}
    assert result["equalized_odds_difference"] == pytest.approx(0.5)
    assert result["demographic_parity_difference"] == pytest.approx(2 / 3 - 1 / 3)


def test_multiclass_string_labels_take_the_worst_class():
    y_true = ["fire", "fire", "theft", "water", "fire", "theft", "water", "water"]
    y_pred = ["fire", "theft", "theft", "water", "fire", "fire", "fire", "water"]
    region = ["n", "n", "n", "n", "s", "s", "s", "s"]
    result = bias_metrics(y_true, y_pred, region, attribute="region")

    assert result["classes"] == ["fire", "theft", "water"]
    n, s = result["groups"]["n"], result["groups"]["s"]
    assert n["selection_rate"] == {"fire": 0.25, "theft": 0.5, "water": 0.25}
    assert s["selection_rate"] == {"fire": 0.75, "theft": 0.0, "water": 0.25}
    # TPR: n fire 1/2, theft 1/1, water 1/1; s fire 1/1, theft 0/1, water 1/2
    assert n["tpr"] == {"fire": 0.5, "theft": 1.0, "water": 1.0}
    assert s["tpr"] == {"fire": 1.0, "theft": 0.0, "water": 0.5}
    # FPR: n fire 0/2, theft 1/3, water 0/3; s fire 2/3, theft 0/3, water 0/2
    assert n["fpr"]["theft"] == pytest.approx(1 / 3)
    assert s["fpr"]["fire"] == pytest.approx(2 / 3)
    assert result["demographic_parity_difference"] == pytest.approx(0.5)  # fire and theft
    assert result["equalized_odds_difference"] == pytest.approx(1.0)  # theft TPR 1 vs 0
    assert result["accuracy_difference"] == pytest.approx(0.75 - 0.5)


def test_rates_without_positives_or_negatives_are_none_and_ignored():
    # group b has no true "x": its TPR for x is None and must not count as 0
    y_true = ["x", "y", "y", "y"]
    y_pred = ["x", "y", "y", "x"]
    result = bias_metrics(y_true, y_pred, ["a", "a", "b", "b"], attribute="g")
    assert result["groups"]["b"]["tpr"]["x"] is None
    assert result["groups"]["a"]["fpr"]["x"] == 0.0
    assert result["groups"]["b"]["fpr"]["x"] == 0.5
    # x: TPR only in a (no range), FPR 0 vs 0.5; y: TPR 1 vs 0.5, FPR only in a (b is all y)
    assert result["groups"]["b"]["fpr"]["y"] is None
    assert result["equalized_odds_difference"] == pytest.approx(0.5)


def test_missing_sensitive_values_form_their_own_group():
    sensitive = pd.Series(["a", None, "a", np.nan], index=[10, 11, 12, 13])
    result = bias_metrics(pd.Series([1, 0, 1, 0]), np.array([1, 1, 1, 0]), sensitive, attribute="g")
    assert set(result["groups"]) == {"a", "<missing>"}
    assert result["groups"]["<missing>"]["rows"] == 2
    assert result["groups"]["<missing>"]["accuracy"] == 0.5
    assert result["groups"]["a"]["accuracy"] == 1.0


def test_labels_compare_as_text_across_types():
    result = bias_metrics([1, 0, 1], ["1", "0", "0"], ["a", "a", "a"], attribute="g")
    assert result["classes"] == ["0", "1"]
    assert result["groups"]["a"]["accuracy"] == pytest.approx(2 / 3)


def test_groups_below_min_rows_are_listed_but_not_compared():
    y_true = [1, 0, 1, 0, 1]
    y_pred = [1, 0, 1, 0, 0]
    sensitive = ["big", "big", "big", "big", "tiny"]
    result = bias_metrics(y_true, y_pred, sensitive, attribute="g", min_rows=2)
    assert result["groups"]["tiny"]["excluded"] is True
    assert "excluded" not in result["groups"]["big"]
    assert result["groups"]["tiny"]["accuracy"] == 0.0
    assert result["accuracy_difference"] == 0.0  # only one group left to compare
    assert result["demographic_parity_difference"] == 0.0
    assert result["equalized_odds_difference"] == 0.0

    everyone = bias_metrics(y_true, y_pred, sensitive, attribute="g")
    assert everyone["accuracy_difference"] == 1.0


def test_result_is_plain_json():
    result = bias_metrics(
        np.array([0, 1, 1]), np.array([0, 1, 0]), pd.Categorical(["u", "v", "v"]), attribute="g"
    )
    assert json.loads(json.dumps(result, allow_nan=False)) == result


def test_mismatched_lengths_and_missing_labels_are_errors():
    with pytest.raises(ValueError, match="equally long"):
        bias_metrics([1, 0], [1], ["a", "b"], attribute="g")
    with pytest.raises(ValueError, match="y_true has 1 missing"):
        bias_metrics([1, None], [1, 0], ["a", "b"], attribute="g")


def test_a_million_rows():
    rng = np.random.default_rng(0)
    n = 1_000_000
    labels = np.array(["fire", "theft", "water"], dtype=object)
    y_true = labels[rng.integers(0, 3, n)]
    y_pred = np.where(rng.random(n) < 0.8, y_true, labels[rng.integers(0, 3, n)])
    region = np.array(["north", "south", "east", None], dtype=object)[rng.integers(0, 4, n)]
    result = bias_metrics(y_true, y_pred, region, attribute="region")
    assert sum(g["rows"] for g in result["groups"].values()) == n
    assert set(result["groups"]) == {"east", "north", "south", "<missing>"}
    assert result["demographic_parity_difference"] < 0.01
