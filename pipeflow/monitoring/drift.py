"""Drift of live inputs against a model version's training reference.

The reference is the version's profile, computed once at training (histograms on quantile edges,
category counts, text length histograms and token counts; :mod:`pipeflow.governance.profile`), so
monitoring never re-reads training data. Live inputs come from the serving audit log.

Per feature, by role:

- numeric: PSI over the reference's bins (outer bins open-ended) and a binned Kolmogorov-Smirnov
  statistic (largest gap between the two cumulative distributions at the reference's edges);
- categorical: PSI over the reference's categories plus one bucket for everything else, Pearson's
  chi-squared against the reference proportions (with its p-value), and the share of unseen values;
- text: PSI of text lengths, Jensen-Shannon distance between token distributions over the
  reference vocabulary (plus an "other" bucket), and the out-of-vocabulary rate.

A feature is *drifted* when PSI (numeric, categorical, text length) exceeds ``psi_threshold``
(0.2, the usual "significant shift") or the token JS distance exceeds ``js_threshold`` (0.2).
Proportions are smoothed with ``EPS`` so an empty bin does not make PSI infinite. Everything is
vectorised with numpy: one ``searchsorted`` + ``bincount`` per numeric feature.
"""

from __future__ import annotations

import math
from typing import Any

EPS = 1e-4
PSI_THRESHOLD = 0.2
JS_THRESHOLD = 0.2


def _props(counts: Any) -> Any:
    import numpy as np

    counts = np.asarray(counts, dtype=float)
    total = counts.sum()
    p = counts / total if total > 0 else np.full(len(counts), 1.0 / max(len(counts), 1))
    p = np.clip(p, EPS, None)
    return p / p.sum()


def psi(expected: Any, actual: Any) -> float:
    """Population stability index between two count vectors over the same bins."""
    import numpy as np

    e, a = _props(expected), _props(actual)
    return float(np.sum((a - e) * np.log(a / e)))


def _js(p: Any, q: Any) -> float:
    import numpy as np

    p, q = _props(p), _props(q)
    m = 0.5 * (p + q)
    value = 0.5 * np.sum(p * np.log2(p / m)) + 0.5 * np.sum(q * np.log2(q / m))
    return float(math.sqrt(max(value, 0.0)))


def numeric_drift(ref: dict[str, Any], values: Any) -> dict[str, Any]:
    import numpy as np

    x = np.asarray(values, dtype=float)
    n = x.size
    finite = x[np.isfinite(x)]
    out: dict[str, Any] = {
        "role": "numeric",
        "rows": int(n),
        "missing_rate": float(1 - finite.size / n) if n else 0.0,
    }
    edges, counts = ref.get("edges"), ref.get("counts")
    if not edges or not counts or not finite.size:
        return {**out, "psi": None, "ks": None, "drifted": False}
    inner = np.asarray(edges[1:-1], dtype=float)
    bins = np.searchsorted(inner, finite, side="right")
    live = np.bincount(bins, minlength=len(counts))[: len(counts)]
    e, a = _props(counts), _props(live)
    value = psi(counts, live)
    ks = float(np.max(np.abs(np.cumsum(e) - np.cumsum(a))))
    return {
        **out,
        "psi": value,
        "ks": ks,
        "mean": float(finite.mean()),
        "reference_mean": ref.get("mean"),
        "drifted": value > PSI_THRESHOLD,
    }


def categorical_drift(ref: dict[str, Any], values: Any) -> dict[str, Any]:
    import numpy as np
    from scipy import stats

    series = _series(values)
    n = len(series)
    counted = series.value_counts(dropna=True)  # Arrow-backed columns count in C++
    live_counts: dict[str, int] = {}
    for key, count in zip(counted.index, counted.to_numpy(), strict=True):
        live_counts[str(key)] = live_counts.get(str(key), 0) + int(count)
    present = sum(live_counts.values())
    out: dict[str, Any] = {
        "role": "categorical",
        "rows": int(n),
        "missing_rate": float(1 - present / n) if n else 0.0,
    }
    known = ref.get("categories") or {}
    if not known or not present:
        return {
            **out,
            "psi": None,
            "chi2": None,
            "p_value": None,
            "unseen_rate": None,
            "drifted": False,
        }
    names = list(known)
    inside = [live_counts.get(k, 0) for k in names]
    live = np.array([*inside, present - sum(inside)])
    expected = np.array([known[k] for k in names] + [int(ref.get("other") or 0)], dtype=float)
    value = psi(expected, live)
    scaled = _props(expected) * live.sum()
    chi2, p_value = stats.chisquare(live, scaled)
    unseen = float(live[-1] / live.sum()) if not ref.get("other") else None
    return {
        **out,
        "psi": value,
        "chi2": float(chi2),
        "p_value": float(p_value),
        "unseen_rate": unseen,
        "drifted": value > PSI_THRESHOLD,
    }


def text_drift(
    ref: dict[str, Any], values: Any, *, sample: int = 20000, seed: int = 0
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
    result["drifted"] = bool(
        (result["length_psi"] or 0) > PSI_THRESHOLD or (result["vocabulary_js"] or 0) > JS_THRESHOLD
    )
    return result


def _series(values: Any) -> Any:
    import pandas as pd

    return values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)


def feature_drift(reference: dict[str, Any], frame: Any) -> dict[str, dict[str, Any]]:
    """Drift of every referenced feature present in ``frame`` (missing columns are reported)."""
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
        if role == "numeric":
            import pandas as pd

            out[name] = numeric_drift(
                ref,
                pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=float("nan")),
            )
        elif role == "text":
            out[name] = text_drift(ref, values)
        elif role == "categorical":
            out[name] = categorical_drift(ref, values)
        else:
            out[name] = {
                "role": role,
                "rows": int(len(values)),
                "drifted": False,
                "note": f"no drift measure for {role} features",
            }
    return out


def prediction_drift(record: dict[str, Any], outputs: Any) -> dict[str, Any] | None:
    """Predicted-class distribution now against the one on the evaluation set."""
    import numpy as np
    import pandas as pd

    cm = (record.get("metrics") or {}).get("confusion_matrix")
    if not cm or not len(outputs):
        return None
    labels = [str(label) for label in cm["labels"]]
    expected = np.asarray(cm["matrix"], dtype=float).sum(axis=0)
    counts = pd.Series(outputs, dtype=object).astype(str).value_counts()
    live = np.array(
        [int(counts.get(k, 0)) for k in labels]
        + [int(counts.sum() - counts.reindex(labels).fillna(0).sum())]
    )
    expected = np.r_[expected, 0.0]
    live_p, ref_p = live / max(live.sum(), 1), expected / max(expected.sum(), 1)
    return {
        "psi": psi(expected, live),
        "distribution": {k: float(v) for k, v in zip([*labels, "<other>"], live_p, strict=True)},
        "reference": {k: float(v) for k, v in zip([*labels, "<other>"], ref_p, strict=True)},
    }
