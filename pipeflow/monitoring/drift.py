"""Drift of a table (live inputs, or any current table) against a reference profile, feature by
feature; and of a model's predictions and outcomes against its training target.

The reference is the version's profile, computed once at training (:mod:`pipeflow.governance.
profile`), so monitoring never re-reads training data. Numeric and categorical features go
through the drift engine (:mod:`pipeflow.monitoring.engine`: KS or chi-squared with p-values,
Wasserstein / Jensen-Shannon / PSI as effect sizes, and the policy's rule); text features keep
their own measures: PSI of text lengths, Jensen-Shannon distance between token distributions
over the reference vocabulary (plus an "other" bucket), and the out-of-vocabulary rate; a text
feature drifted when its length PSI exceeds the policy's ``psi`` (0.2) or its token JS distance
exceeds ``TEXT_JS`` (0.2; the token counts come from samples).

:func:`compare_tables` is the two-table route (``pipeflow drift``, the ``drift`` stage): the
reference table is profiled as training profiles it, and while both tables are small
(``exact_rows``) continuous columns are compared sample to sample.
"""

from __future__ import annotations

from typing import Any

from pipeflow.monitoring.engine import (
    EPS,
    DriftPolicy,
    _props,
    compare,
    js_distance,
    psi,
    summarize,
)

PSI_THRESHOLD = 0.2
TEXT_JS = 0.2

__all__ = [
    "EPS",
    "PSI_THRESHOLD",
    "compare_tables",
    "feature_drift",
    "numeric_drift",
    "outcome_drift",
    "prediction_drift",
    "psi",
    "text_drift",
]


def numeric_drift(
    ref: dict[str, Any], values: Any, policy: DriftPolicy | None = None
) -> dict[str, Any]:
    """A numeric feature's live values against its profile entry."""
    return compare(
        {"role": "numeric", **ref}, summarize({"role": "numeric", **ref}, values), policy
    )


def categorical_drift(
    ref: dict[str, Any], values: Any, policy: DriftPolicy | None = None
) -> dict[str, Any]:
    entry = {"role": "categorical", **ref}
    return compare(entry, summarize(entry, _series(values)), policy)


def _js(p: Any, q: Any) -> float:
    """Smoothed JS distance (the text vocabulary's: counts from a sample)."""
    return js_distance(_props(p), _props(q))


def text_drift(
    ref: dict[str, Any],
    values: Any,
    *,
    sample: int = 20000,
    seed: int = 0,
    policy: DriftPolicy | None = None,
) -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    series = _series(values)
    n = len(series)
    text = series.dropna()
    if not (isinstance(text.dtype, pd.ArrowDtype) or pd.api.types.is_string_dtype(text.dtype)):
        text = text.astype(str)
    out: dict[str, Any] = {
        "role": "text",
        "rows": int(n),
        "missing_rate": float(1 - len(text) / n) if n else 0.0,
    }
    length = ref.get("length") or {}
    if not len(text):
        return {
            **out,
            "length_psi": None,
            "vocabulary_js": None,
            "oov_rate": None,
            "drifted": False,
        }
    lengths = text.str.len().to_numpy(dtype=float)
    result: dict[str, Any] = {**out, "empty_rate": float((text.str.strip() == "").mean())}
    if length.get("edges") and length.get("counts"):
        inner = np.asarray(length["edges"][1:-1], dtype=float)
        live = np.bincount(
            np.searchsorted(inner, lengths, side="right"), minlength=len(length["counts"])
        )
        result["length_psi"] = psi(length["counts"], live[: len(length["counts"])])
    else:
        result["length_psi"] = None
    tokens_ref = ref.get("tokens") or {}
    if tokens_ref:
        picked = (
            text.sample(min(len(text), sample), random_state=seed) if len(text) > sample else text
        )
        picked = picked.astype(object).astype(str)
        tokens = picked.str.lower().str.findall(r"[a-z0-9]+").explode().dropna()
        counts = tokens.value_counts()
        vocab = list(tokens_ref)
        in_vocab = counts.reindex(vocab).fillna(0).to_numpy()
        total = float(counts.sum())
        live = np.r_[in_vocab, max(total - in_vocab.sum(), 0.0)]
        ref_total = float(ref.get("token_total") or sum(tokens_ref.values()))
        expected = np.r_[
            np.array(list(tokens_ref.values()), dtype=float),
            max(ref_total - sum(tokens_ref.values()), 0.0),
        ]
        result["vocabulary_js"] = _js(expected, live)
        result["oov_rate"] = float(live[-1] / total) if total else None
        result["reference_oov_rate"] = float(expected[-1] / ref_total) if ref_total else None
    else:
        result["vocabulary_js"] = result["oov_rate"] = None
    limit = (policy or DriftPolicy()).psi
    result["drifted"] = bool(
        (result["length_psi"] or 0) > limit or (result["vocabulary_js"] or 0) > TEXT_JS
    )
    result["rule"] = f"length psi > {limit:g} or vocabulary js > {TEXT_JS:g}"
    return result


def _series(values: Any) -> Any:
    import pandas as pd

    return values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)


def feature_drift(
    reference: dict[str, Any], frame: Any, policy: DriftPolicy | None = None
) -> dict[str, dict[str, Any]]:
    """Drift of every referenced feature present in ``frame`` (missing columns are reported)."""
    policy = policy or DriftPolicy()
    out: dict[str, dict[str, Any]] = {}
    for name, ref in (reference.get("features") or {}).items():
        role = ref.get("role")
        if name not in frame.columns:
            out[name] = {
                "role": role,
                "rows": 0,
                "drifted": False,
                "note": "not in the live inputs",
            }
            continue
        values = frame[name]
        rule = policy.for_column(name)
        if role == "numeric":
            out[name] = numeric_drift(ref, _numbers(values), rule)
        elif role == "text":
            out[name] = text_drift(ref, values, policy=rule)
        elif role == "categorical":
            out[name] = categorical_drift(ref, values, rule)
        else:
            out[name] = {
                "role": role,
                "rows": int(len(values)),
                "drifted": False,
                "note": f"no drift measure for {role} features",
            }
    return out


def _numbers(values: Any) -> Any:
    import pandas as pd

    if pd.api.types.is_bool_dtype(values.dtype):
        values = values.astype("float64")
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=float("nan"))


def table_roles(frame: Any, columns: list[str] | None = None) -> dict[str, str]:
    """numeric for numbers and booleans, categorical for anything else."""
    import pandas as pd

    roles = {}
    for name in columns or list(frame.columns):
        dtype = frame[name].dtype
        numeric = pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)
        roles[str(name)] = "numeric" if numeric else "categorical"
    return roles


def compare_tables(
    reference: Any,
    current: Any,
    *,
    columns: list[str] | None = None,
    policy: DriftPolicy | None = None,
) -> dict[str, Any]:
    """Drift of ``current`` against ``reference`` (two DataFrames), column by column: the
    reference profiled as training profiles it, the comparison the monitor's. Both tables at most
    ``policy.exact_rows`` rows: continuous columns compared sample to sample (scipy's KS and
    Wasserstein)."""
    from pipeflow.errors import UsageError
    from pipeflow.governance.profile import reference_profile
    from pipeflow.monitoring.engine import compare_samples

    policy = policy or DriftPolicy()
    wanted = list(columns) if columns else [c for c in reference.columns if c in current.columns]
    for side, frame in (("reference", reference), ("current", current)):
        absent = [c for c in wanted if c not in frame.columns]
        if absent:
            raise UsageError(
                f"the {side} table has no column {', '.join(map(repr, absent))} "
                f"(it has: {', '.join(map(str, frame.columns))})"
            )
    if not wanted:
        raise UsageError("the two tables have no column in common")
    roles = table_roles(reference, wanted)
    profile = reference_profile(reference[wanted], roles)
    exact = max(len(reference), len(current)) <= policy.exact_rows

    def one(name: str) -> dict[str, Any]:
        entry, rule = profile["features"][name], policy.for_column(name)
        if roles[name] != "numeric":
            return categorical_drift(entry, current[name], rule)
        if exact:
            return compare_samples(_numbers(reference[name]), _numbers(current[name]), entry, rule)
        return numeric_drift(entry, _numbers(current[name]), rule)

    features = dict(zip(wanted, _map(one, wanted, len(current)), strict=True))
    return summary_report(features, policy) | {
        "reference_rows": int(len(reference)),
        "rows": int(len(current)),
        "exact": exact,
    }


def _map(fn: Any, items: list[str], rows: int) -> list[Any]:
    """``fn`` over the columns, on a few threads for large tables (numpy's sorts and binary
    searches run without the GIL), in order."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    workers = min(os.cpu_count() or 1, len(items), 4)
    if rows < 100_000 or workers < 2:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(workers, thread_name_prefix="pipeflow-drift") as pool:
        return list(pool.map(fn, items))


def summary_report(features: dict[str, dict[str, Any]], policy: DriftPolicy) -> dict[str, Any]:
    """The table-level part of a report: drifted features, their share, the verdict."""
    measured = [f for f in features.values() if f.get("rows")]
    drifted = [n for n, f in features.items() if f.get("drifted")]
    share = (len(drifted) / len(measured)) if measured else None
    return {
        "features": features,
        "drifted_features": drifted,
        "drift_share": share,
        "drifted": share is not None and share >= policy.share,
        "policy": policy.model_dump(),
    }


def _series(values: Any) -> Any:
    import pandas as pd

    return values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)


def _class_entry(labels: list[str], counts: Any) -> dict[str, Any]:
    return {
        "role": "categorical",
        "categories": {k: int(v) for k, v in zip(labels, counts, strict=True) if v > 0},
        "other": 0,
    }


def prediction_drift(
    record: dict[str, Any], outputs: Any, policy: DriftPolicy | None = None
) -> dict[str, Any] | None:
    """The distribution of the model's answers now against the training target's (``reference.
    target`` of profiles from format 2), or, for a version registered before, against the
    classes it predicted on the evaluation set (the column sums of its confusion matrix)."""
    return _target_drift(record, outputs, policy, predicted=True)


def outcome_drift(
    record: dict[str, Any], outcomes: Any, policy: DriftPolicy | None = None
) -> dict[str, Any] | None:
    """Prior shift: the outcomes reported as feedback for the window's predictions against the
    training target (or, for a version registered before profiles held it, the true classes of
    the evaluation set: the row sums of its confusion matrix)."""
    return _target_drift(record, outcomes, policy, predicted=False)


def _target_drift(
    record: dict[str, Any], values: Any, policy: DriftPolicy | None, *, predicted: bool
) -> dict[str, Any] | None:
    """The drift of the model's answers (``predicted``) or of the true outcomes against the
    target's reference; for answers of a classifier, both distributions side by side too."""
    if not len(values):
        return None
    entry, against = _target_reference(record, predicted=predicted)
    if entry is None:
        return None
    if entry.get("role") == "numeric":
        result = numeric_drift(entry, _numbers(_series(values)), policy)
    else:
        result = categorical_drift(entry, _series(values).astype(str), policy)
        if predicted:
            result.update(_distributions(entry, values))
    result["against"] = against
    return result


def _distributions(entry: dict[str, Any], values: Any) -> dict[str, Any]:
    """The live and the reference share of each class (and ``<other>``: classes the reference
    does not know)."""
    import numpy as np

    labels = list(entry["categories"])
    counts = _series(values).astype(str).value_counts()
    live = np.array([int(counts.get(k, 0)) for k in labels] + [0], dtype=float)
    live[-1] = counts.sum() - live[:-1].sum()
    ref = np.array([entry["categories"][k] for k in labels] + [0], dtype=float)
    return {
        "distribution": {
            k: float(v)
            for k, v in zip([*labels, "<other>"], live / max(live.sum(), 1), strict=True)
        },
        "reference": {
            k: float(v) for k, v in zip([*labels, "<other>"], ref / max(ref.sum(), 1), strict=True)
        },
    }


def _target_reference(
    record: dict[str, Any], *, predicted: bool
) -> tuple[dict[str, Any] | None, str]:
    import numpy as np

    target = (record.get("reference") or {}).get("target")
    if target:
        return target, "training target"
    cm = (record.get("metrics") or {}).get("confusion_matrix")
    if not cm:
        return None, ""
    labels = [str(label) for label in cm["labels"]]
    matrix = np.asarray(cm["matrix"], dtype=float)
    if predicted:
        return _class_entry(labels, matrix.sum(axis=0)), "evaluation predictions"
    return _class_entry(labels, matrix.sum(axis=1)), "evaluation classes"
