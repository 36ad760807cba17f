"""A short, JSON-ready description of a table: what a model card says about its data.

Per column: dtype, missing and distinct counts, and for numbers (booleans excluded) min, max and
mean; for the target, its value counts (the 50 most frequent, the rest summed as ``other``).
Non-finite figures (NaN, ±inf) are written as ``None`` so the result is strict JSON.
"""

from __future__ import annotations

import math
from typing import Any

MAX_DISTRIBUTION = 50
OTHER = "other"


def data_summary(frame: Any, target: str | None) -> dict[str, Any]:
    """Describe ``frame`` (a pandas DataFrame); ``target`` names the column to count values of."""
    import pandas as pd

    if target is not None and target not in frame.columns:
        raise ValueError(
            f"target column '{target}' not found (columns: {', '.join(map(str, frame.columns))})"
        )
    columns = []
    for name in frame.columns:
        series = frame[name]
        entry: dict[str, Any] = {
            "name": str(name),
            "dtype": str(series.dtype),
            "missing": int(series.isna().sum()),
            "distinct": int(series.nunique(dropna=True)),
        }
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            values = series.dropna()
            entry["min"] = _finite(values.min()) if len(values) else None
            entry["max"] = _finite(values.max()) if len(values) else None
            entry["mean"] = _finite(values.mean()) if len(values) else None
        columns.append(entry)
    return {
        "rows": int(len(frame)),
        "columns": columns,
        "target": None if target is None else {"name": target, **_distribution(frame[target])},
    }


def _distribution(series: Any) -> dict[str, Any]:
    counts = series.astype("string").fillna("<missing>").value_counts(sort=True)
    # value_counts sorts by count; equal counts keep first-seen order: sort them by value too
    pairs = sorted(((str(k), int(v)) for k, v in counts.items()), key=lambda kv: (-kv[1], kv[0]))
    distribution = dict(pairs[:MAX_DISTRIBUTION])
    rest = sum(v for _, v in pairs[MAX_DISTRIBUTION:])
    if rest:
        key = OTHER if OTHER not in distribution else f"<{OTHER}>"
        distribution[key] = rest
    return {"distribution": distribution, "distinct": len(pairs)}


def _finite(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None
