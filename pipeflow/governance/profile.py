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


def numeric_entry(values: Any, bins: int = 10, rng: Any = None) -> dict[str, Any]:
    """The profile entry of a numeric column (finite values; missing ones are the caller's)."""
    import numpy as np

    rng = np.random.default_rng(0) if rng is None else rng
    finite = np.asarray(values, dtype=float)
    if not finite.size:
        return {}
    # quantiles from a sample (one sort of at most 100k values); counts, min and max from every row
    sample = finite if finite.size <= 100_000 else rng.choice(finite, 100_000)
    levels = np.linspace(0, 1, bins + 1)
    fine = np.linspace(0, 1, SKETCH_BINS + 1)
    found = np.quantile(sample, [*levels, 0.01, 0.5, 0.99, *fine])
    low, high = float(finite.min()), float(finite.max())
    edges = np.unique(np.clip(np.r_[low, found[1:bins], high], low, high))
    counts = np.histogram(finite, bins=edges)[0] if edges.size > 1 else np.array([finite.size])
    entry: dict[str, Any] = dict(
        rows=int(finite.size),
        min=low,
        max=high,
        mean=float(finite.mean()),
        std=float(finite.std()),
        quantiles={
            "p01": float(found[bins + 1]),
            "p50": float(found[bins + 2]),
            "p99": float(found[bins + 3]),
        },
        edges=[float(e) for e in edges],
        counts=[int(c) for c in counts],
    )
    if np.unique(sample[: 10 * DISCRETE_MAX * 50]).size <= DISCRETE_MAX:
        distinct, seen = np.unique(finite, return_counts=True)
        if distinct.size <= DISCRETE_MAX:
            entry["discrete"] = {
                "values": [float(v) for v in distinct],
                "counts": [int(c) for c in seen],
            }
            return entry
    fine_edges = np.unique(np.clip(np.r_[low, found[bins + 5 : -1], high], low, high))
    fine_counts = (
        np.histogram(finite, bins=fine_edges)[0] if fine_edges.size > 1 else np.array([finite.size])
    )
    entry["sketch"] = {
        "edges": [float(e) for e in fine_edges],
        "counts": [int(c) for c in fine_counts],
    }
    return entry


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
            entry.update(numeric_entry(finite, bins, rng))
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
