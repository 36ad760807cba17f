"""The reference profile of a training table: what "normal input" looked like for a model version.

Computed once, when the model is trained (the ``train`` stage puts it in its ``info`` output and the
registry keeps it with the version), so serving can flag inputs outside what the model has seen and
monitoring can measure drift without ever re-reading the training data.

Per feature, by role (the same roles the training preprocessing uses):

- ``numeric``: min, max, mean, std, missing, quantiles, and a histogram on 10 quantile edges
  (``edges``/``counts``: PSI); a finer histogram on ``SKETCH_BINS`` quantile edges (``sketch``:
  the reference CDF the drift engine's KS and Wasserstein read, accurate to one bin's mass,
  0.5%); and, for a column with at most ``DISCRETE_MAX`` distinct values (a 0/1 flag, a small
  count), its exact value counts (``discrete``: compared category by category, as quantile
  edges would collapse onto those few values);
- ``categorical``: counts of the most frequent values (up to ``max_categories``) and of the rest;
- ``text``: length quantiles and histogram, empty count, and the most frequent tokens (from a
  sample) for vocabulary shift;
- ``date``: the earliest and latest value.

With ``target`` given, the profile also holds the target's entry (``target``: categorical for a
classifier, numeric for a regressor), so monitoring can set live predictions and outcomes beside
the distribution the model learnt from (prior shift).

``format`` is 2 since ``sketch`` and ``discrete`` exist; a profile without them (format 1, stored
with versions registered before) is still read by :mod:`pipeflow.monitoring.engine`.
"""

from __future__ import annotations

from typing import Any

PROFILE_FORMAT = 2
SKETCH_BINS = 200
DISCRETE_MAX = 20


def reference_profile(
    X: Any,
    roles: dict[str, str],
    *,
    target: Any = None,
    target_role: str | None = None,
    bins: int = 10,
    max_categories: int = 200,
    vocabulary: int = 300,
    seed: int = 0,
) -> dict[str, Any]:
    import os
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    def one(item: tuple[int, tuple[Any, str]]) -> dict[str, Any]:
        i, (column, role) = item
        # a generator of its own per column: the same samples whichever thread profiles it
        return _profile_column(
            X[column], role, bins, max_categories, vocabulary, np.random.default_rng([seed, i])
        )

    items = list(enumerate(roles.items()))
    workers = min(os.cpu_count() or 1, len(items), 4)
    if len(X) >= 100_000 and workers > 1:  # numpy sorts and reductions run without the GIL
        with ThreadPoolExecutor(workers, thread_name_prefix="pipeflow-profile") as pool:
            entries = list(pool.map(one, items))
    else:
        entries = [one(item) for item in items]
    features = {
        str(column): entry for (column, _), entry in zip(roles.items(), entries, strict=True)
    }
    out: dict[str, Any] = {"format": PROFILE_FORMAT, "rows": int(len(X)), "features": features}
    if target is not None:
        import pandas as pd

        role = target_role or (
            "numeric"
            if pd.api.types.is_float_dtype(getattr(target, "dtype", None))
            else "categorical"
        )
        out["target"] = _profile_column(
            pd.Series(target), role, bins, max_categories, vocabulary, np.random.default_rng(seed)
        )
    return out


def numeric_entry(values: Any, bins: int = 10) -> dict[str, Any]:
    """The profile entry of a numeric column (finite values; missing ones are the caller's).

    One sort of the column gives everything: exact quantiles, the counts on both sets of edges
    (binary searches of the edges in the sorted values) and, for a column of few values, their
    exact counts (the runs of equal values)."""
    import numpy as np

    ordered = np.sort(np.asarray(values, dtype=float))
    n = ordered.size
    if not n:
        return {}
    low, high = float(ordered[0]), float(ordered[-1])
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    entry: dict[str, Any] = {
        "rows": int(n),
        "min": low,
        "max": high,
        "mean": float(ordered.mean()),
        "std": float(ordered.std()),
        "quantiles": {
            k: float(v)
            for k, v in zip(
                ("p01", "p50", "p99"), _quantiles(ordered, [0.01, 0.5, 0.99]), strict=True
            )
        },
    }
    entry["edges"], entry["counts"] = _histogram(ordered, bins)
    if starts.size <= DISCRETE_MAX:
        entry["discrete"] = {
            "values": [float(v) for v in ordered[starts]],
            "counts": [int(c) for c in np.diff(np.r_[starts, n])],
        }
    else:
        edges, counts = _histogram(ordered, SKETCH_BINS)
        entry["sketch"] = {"edges": edges, "counts": counts}
    return entry


def _quantiles(ordered: Any, levels: Any) -> Any:
    """np.quantile's default (linear) quantiles of already sorted values."""
    import numpy as np

    position = np.asarray(levels, dtype=float) * (ordered.size - 1)
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, ordered.size - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def _histogram(ordered: Any, bins: int) -> tuple[list[float], list[int]]:
    """Counts on the sorted values' quantile edges (np.histogram's bins: the last one closed)."""
    import numpy as np

    edges = np.unique(_quantiles(ordered, np.linspace(0, 1, bins + 1)))
    if edges.size < 2:
        return [float(e) for e in edges], [int(ordered.size)]
    cuts = np.searchsorted(ordered, edges[1:-1], side="left")
    counts = np.diff(np.r_[0, cuts, ordered.size])
    return [float(e) for e in edges], [int(c) for c in counts]


def _profile_column(
    series: Any, role: str, bins: int, max_categories: int, vocabulary: int, rng: Any
) -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    missing = int(series.isna().sum())
    entry: dict[str, Any] = {"role": role, "missing": missing}
    if role == "numeric":
        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        usable = np.isfinite(values)
        finite = values if usable.all() else values[usable]  # no copy when all are numbers
        if finite.size:
            entry.update(numeric_entry(finite, bins))
    elif role == "text":
        text = series.dropna().astype(str)
        lengths = text.str.len().to_numpy()
        entry["empty"] = int((text.str.strip() == "").sum())
        if lengths.size:
            edges = np.unique(np.quantile(lengths, np.linspace(0, 1, bins + 1)))
            entry["length"] = {
                "min": int(lengths.min()),
                "max": int(lengths.max()),
                "mean": float(lengths.mean()),
                "p01": float(np.quantile(lengths, 0.01)),
                "p99": float(np.quantile(lengths, 0.99)),
                "edges": [float(e) for e in edges],
                "counts": [int(c) for c in np.histogram(lengths, bins=edges)[0]]
                if edges.size > 1
                else [int(lengths.size)],
            }
            sample = text.sample(min(len(text), 20000), random_state=rng)
            tokens = sample.str.lower().str.findall(r"[a-z0-9]+").explode().dropna()
            entry["tokens"] = {
                str(k): int(v) for k, v in tokens.value_counts().head(vocabulary).items()
            }
            entry["token_total"] = int(len(tokens))
            entry["sampled_rows"] = int(len(sample))
    elif role == "date":
        dates = pd.to_datetime(series, errors="coerce").dropna()
        if len(dates):
            entry.update(min=dates.min().isoformat(), max=dates.max().isoformat())
    else:
        counts = series.dropna().astype(str).value_counts()
        top = counts.head(max_categories)
        entry["categories"] = {str(k): int(v) for k, v in top.items()}
        entry["other"] = int(counts.iloc[max_categories:].sum())
        entry["distinct"] = int(len(counts))
    return entry
