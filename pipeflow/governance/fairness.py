"""Group fairness of a classifier's predictions: who gets which prediction, and how often rightly.

Definitions (one pass of counting, then ratios; everything is per class, so binary and multiclass
share one code path):

- ``selection_rate[k]`` of a group: P(pred = k | group);
- ``tpr[k]``: P(pred = k | true = k, group), ``None`` when the group has no rows of class k;
- ``fpr[k]``: P(pred = k | true != k, group), ``None`` when every row of the group is class k;
- ``demographic_parity_difference``: the largest, over classes, of (max - min) selection rate
  across groups;
- ``equalized_odds_difference``: the largest, over classes, of max(TPR range, FPR range) across
  groups, ``None`` rates left out of the ranges;
- ``accuracy_difference``: (max - min) group accuracy.

For a binary classifier these equal fairlearn's ``demographic_parity_difference`` and
``equalized_odds_difference`` (``agg="worst_case"``) for the positive class, whichever class that
is: P(pred = neg) = 1 - P(pred = pos), TPR(neg) = 1 - FPR(pos) and FPR(neg) = 1 - TPR(pos), so
both classes have the same ranges and the maximum over classes is the positive class's value.

Labels are compared as text (as the evaluate stage does), so ``1`` and ``"1"`` are one class.
Missing sensitive values form the group ``"<missing>"``. Groups with fewer than ``min_rows`` rows
are listed (``"excluded": true``) but left out of the differences: a group of three rows says
little about disparity. With fewer than two groups compared, every difference is 0.0.
"""

from __future__ import annotations

from typing import Any

MISSING = "<missing>"


def bias_metrics(
    y_true: Any, y_pred: Any, sensitive: Any, *, attribute: str, min_rows: int = 1
) -> dict[str, Any]:
    """Per-group rates and the disparities between groups (see the module docstring).

    ``y_true``, ``y_pred`` and ``sensitive`` are equally long sequences (lists, numpy arrays or
    pandas Series; positions are matched, indexes ignored). The result is plain JSON-ready
    Python. Missing true or predicted labels are an error: drop unlabelled rows first.
    """
    import numpy as np

    if min_rows < 1:
        raise ValueError(f"min_rows must be at least 1, got {min_rows}")
    lengths = {len(y_true), len(y_pred), len(sensitive)}
    if len(lengths) != 1:
        raise ValueError(
            f"y_true, y_pred and sensitive must be equally long, got "
            f"{len(y_true)}, {len(y_pred)} and {len(sensitive)}"
        )
    t_codes, t_names = _codes(y_true)
    p_codes, p_names = _codes(y_pred)
    for what, codes in (("y_true", t_codes), ("y_pred", p_codes)):
        if (codes < 0).any():
            raise ValueError(
                f"{what} has {int((codes < 0).sum())} missing label(s): drop unlabelled rows first"
            )
    classes = sorted(set(t_names) | set(p_names))
    t = _recode(t_codes, t_names, classes)
    p = _recode(p_codes, p_names, classes)
    g_codes, g_names = _codes(sensitive)
    g_names = [*g_names, MISSING]  # code -1 (missing) becomes the last name
    groups = sorted(set(g_names[:-1]) | ({MISSING} if (g_codes < 0).any() else set()))
    g = _recode(np.where(g_codes < 0, len(g_names) - 1, g_codes), g_names, groups)

    n_groups, n_classes = len(groups), len(classes)
    correct = t == p
    rows = np.bincount(g, minlength=n_groups)
    right = np.bincount(g, weights=correct, minlength=n_groups)
    cell = n_groups * n_classes
    predicted = np.bincount(g * n_classes + p, minlength=cell).reshape(n_groups, n_classes)
    actual = np.bincount(g * n_classes + t, minlength=cell).reshape(n_groups, n_classes)
    hits = np.bincount(g * n_classes + t, weights=correct, minlength=cell).reshape(
        n_groups, n_classes
    )
    negatives = rows[:, None] - actual
    with np.errstate(divide="ignore", invalid="ignore"):
        accuracy = right / rows
        selection = predicted / rows[:, None]
        tpr = np.where(actual > 0, hits / actual, np.nan)
        fpr = np.where(negatives > 0, (predicted - hits) / negatives, np.nan)

    included = rows >= min_rows
    out_groups: dict[str, Any] = {}
    for i, name in enumerate(groups):
        entry: dict[str, Any] = {
            "rows": int(rows[i]),
            "accuracy": float(accuracy[i]),
            "selection_rate": {c: float(selection[i, k]) for k, c in enumerate(classes)},
            "tpr": {c: _rate(tpr[i, k]) for k, c in enumerate(classes)},
            "fpr": {c: _rate(fpr[i, k]) for k, c in enumerate(classes)},
        }
        if not included[i]:
            entry["excluded"] = True
        out_groups[name] = entry
    return {
        "attribute": attribute,
        "rows": int(len(t)),
        "min_rows": int(min_rows),
        "classes": classes,
        "groups": out_groups,
        "demographic_parity_difference": _worst_range(selection[included]),
        "equalized_odds_difference": max(_worst_range(tpr[included]), _worst_range(fpr[included])),
        "accuracy_difference": _worst_range(accuracy[included][:, None]),
    }


def _codes(values: Any) -> tuple[Any, list[str]]:
    """Integer codes (-1 = missing) and the text of each code; vectorised (pd.factorize)."""
    import numpy as np
    import pandas as pd

    if not isinstance(values, pd.Series | pd.Index | np.ndarray | pd.Categorical):
        values = np.asarray(values, dtype=object)
    if isinstance(values, pd.Series):
        values = values.reset_index(drop=True)
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    return np.asarray(codes), [str(v) for v in uniques]


def _recode(codes: Any, names: list[str], order: list[str]) -> Any:
    """Codes into positions of ``order`` (values with the same text merge into one)."""
    import numpy as np

    position = {name: i for i, name in enumerate(order)}
    mapping = np.asarray([position.get(name, -1) for name in names], dtype=np.int64)
    return mapping[codes] if len(mapping) else np.zeros(len(codes), dtype=np.int64)


def _rate(value: float) -> float | None:
    return None if value != value else float(value)


def _worst_range(rates: Any) -> float:
    """max over columns of (max - min over rows), NaN ignored; 0.0 with nothing to compare."""
    import numpy as np

    if rates.shape[0] == 0 or rates.shape[1] == 0:
        return 0.0
    present = ~np.isnan(rates)
    high = np.where(present, rates, -np.inf).max(axis=0)
    low = np.where(present, rates, np.inf).min(axis=0)
    return float(np.where(present.any(axis=0), high - low, 0.0).max())
