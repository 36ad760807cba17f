"""The drift engine: one comparison of a column's reference against its current values, used by
every route (the ``monitor`` pass over served traffic, the ``drift`` stage and ``pipeflow drift``
over two tables, and :mod:`pipeflow.monitoring.scale` partition by partition on a cluster).

**The reference is a profile entry** (:mod:`pipeflow.governance.profile`, what ``train`` stores
with a model version), so monitoring never re-reads training data; **the current side is a
mergeable summary** of the live values made against that entry (:func:`summarize`: counts on the
reference's bins or values, plus the sums the tails need), so a cluster can build it partition by
partition and add the pieces (:func:`merge`). :func:`compare` turns (entry, summary) into the
column's verdict. Two raw tables go the same way (the reference is profiled exactly as training
profiles it); while both are small (``exact_rows``), the continuous statistics are computed on
the samples themselves (:func:`compare_samples`, scipy's ``ks_2samp`` and
``wasserstein_distance``), so they are the figures a reviewer recomputes.

Per column kind:

- **continuous** numeric (more than ``DISCRETE_MAX`` distinct reference values): two-sample
  Kolmogorov-Smirnov (statistic and p-value; against a profile, on the reference's 200-bin
  quantile sketch: the statistic is within one bin's mass, 0.5%, of the exact one, the p-value
  is scipy's asymptotic one for it), Wasserstein-1 distance divided by the reference's standard
  deviation (``wasserstein``: "how many sds the mass moved"; exact in the tails, linear within a
  bin), and PSI over the reference's deciles;
- **discrete** numeric (a 0/1 flag, a small count: the profile kept its exact value counts):
  Pearson's chi-squared test of homogeneity over the union of values (the 2 x k contingency
  table, no continuity correction: ``scipy.stats.chi2_contingency(..., correction=False)``), the
  normalised Wasserstein distance (exact: the values are ordered) and PSI;
- **categorical**: the same chi-squared test over the reference's categories, the pooled rest
  and the unseen values, Jensen-Shannon distance (base 2, 0 to 1) and PSI.

**The rule** (:class:`DriftPolicy`, per spec and per column): with ``method: auto`` a column
drifted when its test's p-value is below ``alpha`` (0.05) *and* its effect size reaches the
threshold (``wasserstein`` 0.05 for numeric columns, ``js`` 0.05 for categorical ones). The test
guards small windows (where an effect size alone is noise: a 1,000-row window of an unchanged
column has a normalised Wasserstein of about 0.04); the effect size guards large ones (where
at a million rows a p-value flags shifts nobody cares about). The peers switch from one to the
other at a row count (Evidently: tests up to 1,000 rows, Wasserstein > 0.1 and Jensen-Shannon >
0.1 above); requiring both needs no switch and holds at every size. ``method`` may instead be
``test`` (p-value only), ``effect`` (effect size only) or ``psi`` (PSI above ``psi``, the old
rule). Each verdict names the rule that decided it (``rule``).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

EPS = 1e-4
DECILES = 10
KS_EXACT_N = 10_000  # scipy's ks_2samp computes exact p-values up to this many rows

Method = Literal["auto", "test", "effect", "psi"]


class ColumnPolicy(BaseModel):
    """A column's own rule: anything left out is the policy's."""

    model_config = ConfigDict(extra="forbid")

    method: Method | None = None
    alpha: float | None = Field(None, gt=0, lt=1)
    wasserstein: float | None = Field(None, ge=0)
    js: float | None = Field(None, ge=0, le=1)
    psi: float | None = Field(None, ge=0)


class DriftPolicy(BaseModel):
    """When a column, and a table, counts as drifted."""

    model_config = ConfigDict(extra="forbid")

    method: Method = Field(
        "auto",
        description="auto: test p-value below alpha and effect size at its threshold; "
        "test: p-value only; effect: effect size only; psi: PSI only",
    )
    alpha: float = Field(0.05, gt=0, lt=1, description="p-value threshold (KS, chi-squared)")
    wasserstein: float = Field(
        0.05, ge=0, description="numeric effect size: Wasserstein distance / reference sd"
    )
    js: float = Field(
        0.05, ge=0, le=1, description="categorical effect size: Jensen-Shannon distance"
    )
    psi: float = Field(0.2, ge=0, description="PSI threshold (method psi; text lengths)")
    share: float = Field(
        0.3, gt=0, le=1, description="share of drifted columns that makes the table drifted"
    )
    exact_rows: int = Field(
        200_000,
        ge=0,
        description="two tables up to this many rows each: KS and Wasserstein on the samples",
    )
    per_column: dict[str, ColumnPolicy] = Field(
        default_factory=dict, description="per-column method and thresholds"
    )

    def for_column(self, name: str) -> DriftPolicy:
        own = self.per_column.get(name)
        if own is None:
            return self
        return self.model_copy(update=own.model_dump(exclude_none=True))


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


def js_distance(p: Any, q: Any) -> float:
    """Jensen-Shannon distance (base 2, 0 to 1) between two count vectors (unsmoothed)."""
    import numpy as np

    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    p, q = p / max(p.sum(), 1e-300), q / max(q.sum(), 1e-300)
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0)
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0)
    return float(math.sqrt(max(0.5 * kl_p.sum() + 0.5 * kl_q.sum(), 0.0)))


def chi2_homogeneity(reference: Any, current: Any) -> tuple[float, float, int]:
    """Pearson's chi-squared test that two count vectors over the same buckets come from one
    distribution (scipy's ``chi2_contingency`` on the 2 x k table, no continuity correction);
    buckets empty on both sides are dropped. (statistic, p-value, degrees of freedom)."""
    import numpy as np
    from scipy import stats

    table = np.vstack([np.asarray(reference, float), np.asarray(current, float)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0, 0
    result = stats.chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue), int(result.dof)


def ks_pvalue(statistic: float, n: int, m: int) -> float:
    """The two-sided two-sample KS p-value scipy's ``ks_2samp`` gives in its asymptotic mode."""
    from scipy import stats

    if not n or not m:
        return 1.0
    big, small = sorted([float(n), float(m)], reverse=True)
    return float(min(1.0, max(0.0, stats.kstwo.sf(statistic, round(big * small / (big + small))))))


# ---------------------------------------------------------------------------- reference entries


def column_kind(entry: dict[str, Any]) -> str | None:
    """continuous | discrete | categorical | None (nothing to compare), reading old profiles too."""
    role = entry.get("role")
    if role == "numeric":
        if entry.get("discrete") or _legacy_discrete(entry):
            return "discrete"
        if entry.get("sketch") or (entry.get("edges") and entry.get("counts")):
            return "continuous"
        return None
    if role == "categorical":
        return "categorical" if entry.get("categories") else None
    return None


def _legacy_discrete(entry: dict[str, Any]) -> dict[str, Any] | None:
    """A format-1 profile of a column with one or two values: its quantile edges collapsed to
    ``[min, max]`` (or ``[v]``), one bin holding every row. Its mean gives the two counts (exact
    for a 0/1 flag)."""
    if entry.get("sketch") or entry.get("discrete"):
        return None
    edges, counts = entry.get("edges") or [], entry.get("counts") or []
    if len(edges) == 1 and counts:
        return {"values": [float(edges[0])], "counts": [int(sum(counts))]}
    if len(edges) == 2 and len(counts) == 1 and entry.get("mean") is not None:
        low, high, total = float(edges[0]), float(edges[1]), int(counts[0])
        share = min(1.0, max(0.0, (float(entry["mean"]) - low) / (high - low)))
        top = int(round(total * share))
        return {"values": [low, high], "counts": [total - top, top]}
    return None


def _discrete(entry: dict[str, Any]) -> dict[str, Any]:
    return entry.get("discrete") or _legacy_discrete(entry) or {"values": [], "counts": []}


def _sketch(entry: dict[str, Any]) -> dict[str, Any]:
    return entry.get("sketch") or {"edges": entry["edges"], "counts": entry["counts"]}


# ---------------------------------------------------------------------------- current summaries


def _bin_counts(finite: Any, edges: Any) -> Any:
    """How many of ``finite`` fall below ``edges[0]``, in each bin, and above ``edges[-1]``
    (``len(edges) + 1`` counts; the last bin closed, np.histogram's way)."""
    import numpy as np

    if len(edges) < 2:
        index = np.searchsorted(edges, finite, side="right")
        index[finite == edges[-1]] = 1
        return np.bincount(index, minlength=2)[:2]
    # the last edge moved up by one float: a value equal to it is in the last bin, a greater one
    # above it
    closed = edges.copy()
    closed[-1] = np.nextafter(edges[-1], np.inf)
    return np.bincount(_edges_at_or_below(finite, closed), minlength=len(edges) + 1)


def _edges_at_or_below(x: Any, edges: Any, most: int = 4) -> Any:
    """``np.searchsorted(edges, x, side="right")`` (how many of the sorted ``edges`` are <= each
    of the finite values ``x``), the same numbers several times faster: a binary search per
    value stalls on branches the processor cannot predict, for every value of every column of
    every partition.

    The range of the edges is cut into equal cells, and each value and each edge is put in its
    cell by the same arithmetic, ``floor((v - lo) * cells / (hi - lo))`` clipped to the cells.
    Rounding keeps that non-decreasing in ``v``, so an edge in an earlier cell than a value's is
    below it and one in a later cell above it: a value's count is the edges of the earlier cells
    (a table) plus, for the few edges in its own cell, one comparison each. Where more than
    ``most`` edges share a cell (a distribution with far outliers), the binary search."""
    import numpy as np

    lo, hi = float(edges[0]), float(edges[-1])
    cells = 8 * len(edges)
    scale = cells / (hi - lo) if hi > lo else 0.0
    if not (np.isfinite(scale) and scale > 0):
        return np.searchsorted(edges, x, side="right")

    def cell_of(v: Any) -> Any:
        c = np.subtract(v, lo)
        with np.errstate(over="ignore"):  # a far outlier's cell: +inf, clipped to the last
            c *= scale
        np.clip(c, 0, cells - 1, out=c)
        return c.astype(np.intp)

    per_cell = np.bincount(cell_of(edges), minlength=cells)
    if per_cell.max() > most:
        return np.searchsorted(edges, x, side="right")
    first = np.cumsum(per_cell) - per_cell  # the edges of the earlier cells
    at = cell_of(x)
    count = first.take(at)
    for k in range(int(per_cell.max())):  # the k-th edge of each cell (+inf: none)
        kth = np.full(cells, np.inf)
        has = per_cell > k
        kth[has] = edges[first[has] + k]
        count += x >= kth.take(at)
    return count


def summarize(entry: dict[str, Any], values: Any) -> dict[str, Any]:
    """A mergeable summary of current values against a reference entry (numbers for numeric
    entries, anything for categorical ones). Missing values are counted, not compared."""
    import numpy as np

    kind = column_kind(entry)
    if kind in ("continuous", "discrete"):
        x = np.asarray(values, dtype=float)
        mask = np.isfinite(x)
        finite = x if mask.all() else x[mask]  # no copy of a column with nothing missing
        out: dict[str, Any] = {
            "rows": int(x.size),
            "n": int(finite.size),
            "sum": float(finite.sum()),
        }
        if kind == "discrete":
            distinct, counts = np.unique(finite, return_counts=True)
            out["values"], out["counts"] = distinct, counts
            return out
        edges = np.asarray(_sketch(entry)["edges"], dtype=float)
        counts = out["counts"] = _bin_counts(finite, edges)
        # the tails' sums (Wasserstein's), read only when a value lies there (rarely)
        out["sum_below"] = float(finite[finite < edges[0]].sum()) if counts[0] else 0.0
        out["sum_above"] = float(finite[finite > edges[-1]].sum()) if counts[-1] else 0.0
        return out
    import pandas as pd

    series = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
    counted = series.value_counts(dropna=True)  # Arrow-backed columns count in C++
    found: dict[str, int] = {}
    for key, count in zip(counted.index, counted.to_numpy(), strict=True):
        found[str(key)] = found.get(str(key), 0) + int(count)
    return {"rows": int(len(series)), "n": int(sum(found.values())), "categories": found}


def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two summaries of the same reference entry as one (partitions of one window)."""
    import numpy as np

    out = {"rows": a["rows"] + b["rows"], "n": a["n"] + b["n"]}
    if "categories" in a:
        found = dict(a["categories"])
        for k, v in b["categories"].items():
            found[k] = found.get(k, 0) + v
        return {**out, "categories": found}
    out["sum"] = a["sum"] + b["sum"]
    if "values" in a:
        values = np.r_[a["values"], b["values"]]
        counts = np.r_[a["counts"], b["counts"]]
        distinct, where = np.unique(values, return_inverse=True)
        return {**out, "values": distinct, "counts": np.bincount(where, weights=counts)}
    return {
        **out,
        "counts": np.asarray(a["counts"]) + np.asarray(b["counts"]),
        "sum_below": a["sum_below"] + b["sum_below"],
        "sum_above": a["sum_above"] + b["sum_above"],
    }


# ---------------------------------------------------------------------------- comparisons


def compare(
    entry: dict[str, Any], summary: dict[str, Any], policy: DriftPolicy | None = None
) -> dict[str, Any]:
    """The verdict on one column: statistics, p-value, effect sizes and the deciding rule."""
    policy = policy or DriftPolicy()
    kind = column_kind(entry)
    rows, n = summary["rows"], summary["n"]
    out: dict[str, Any] = {
        "role": entry.get("role"),
        "kind": kind,
        "rows": int(rows),
        "missing_rate": float(1 - n / rows) if rows else 0.0,
    }
    if kind is None or not n:
        empty = dict.fromkeys(("test", "statistic", "p_value", "psi"))
        effect = "js" if kind == "categorical" else "wasserstein"
        return {**out, **empty, effect: None, "drifted": False, "rule": "no values to compare"}
    if kind == "categorical":
        stats = _categorical(entry, summary)
    elif kind == "discrete":
        stats = _discrete_stats(entry, summary)
    else:
        stats = _continuous(entry, summary)
    if kind != "categorical":
        stats["mean"] = summary["sum"] / n
        stats["reference_mean"] = entry.get("mean")
    return decide({**out, **stats}, policy)


def _scale(entry: dict[str, Any], distance: float) -> float | None:
    sd = float(entry.get("std") or 0.0)
    if sd > 0:
        return distance / sd
    return 0.0 if distance == 0 else None  # a constant reference: any move is infinitely far


def _continuous(entry: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    sketch = _sketch(entry)
    edges = np.asarray(sketch["edges"], dtype=float)
    ref = np.r_[0.0, np.asarray(sketch["counts"], dtype=float), 0.0]
    cur = np.asarray(summary["counts"], dtype=float)
    big, n = ref.sum(), cur.sum()
    # both CDFs at e_0 (below the reference) and at the end of every bin
    f, g = np.cumsum(ref) / big, np.cumsum(cur) / n
    ks = float(np.max(np.abs(f - g)))
    # Wasserstein-1: integral of |F - G|, linear within a bin, exact beyond the reference range
    d0, d1 = (f - g)[:-2], (f - g)[1:-1]
    width = np.diff(edges)
    same = d0 * d1 >= 0
    total = np.abs(d0) + np.abs(d1)
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing = np.where(total > 0, (d0**2 + d1**2) / (2 * total), 0.0)
    inside = np.sum(width * np.where(same, total / 2, crossing))
    below = (cur[0] * edges[0] - summary["sum_below"]) / n
    above = (summary["sum_above"] - cur[-1] * edges[-1]) / n
    distance = float(inside + below + above)
    return {
        "test": "ks",
        "statistic": ks,
        "ks": ks,
        "p_value": ks_pvalue(ks, int(big), int(n)),
        "wasserstein": _scale(entry, distance),
        "wasserstein_raw": distance,
        "psi": psi(*_deciles(ref, cur)),
    }


def _deciles(ref: Any, cur: Any) -> tuple[Any, Any]:
    """Reference and current counts over (about) the reference's deciles, from the sketch's bins
    (with below/above slots at the ends, merged into the outer deciles)."""
    import numpy as np

    cdf = np.cumsum(ref) / ref.sum()
    cuts = np.unique(np.searchsorted(cdf, np.linspace(0, 1, DECILES + 1)[1:-1], side="left") + 1)
    cuts = cuts[(cuts > 0) & (cuts < len(ref))]
    starts = np.r_[0, cuts]
    return np.add.reduceat(ref, starts), np.add.reduceat(cur, starts)


def _discrete_stats(entry: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    known = _discrete(entry)
    values = np.union1d(np.asarray(known["values"], float), np.asarray(summary["values"], float))
    ref = _on(values, known["values"], known["counts"])
    cur = _on(values, summary["values"], summary["counts"])
    return {**_chi2_test(ref, cur), **_discrete_effects(entry, values, ref, cur)}


def _chi2_test(ref: Any, cur: Any) -> dict[str, Any]:
    """The chi-squared test's fields of a discrete or categorical column's result."""
    chi2, p_value, dof = chi2_homogeneity(ref, cur)
    return {"test": "chi2", "statistic": chi2, "chi2": chi2, "dof": dof, "p_value": p_value}


def _discrete_effects(entry: dict[str, Any], values: Any, ref: Any, cur: Any) -> dict[str, Any]:
    import numpy as np

    f, g = np.cumsum(ref) / ref.sum(), np.cumsum(cur) / cur.sum()
    distance = float(np.sum(np.abs(f - g)[:-1] * np.diff(values))) if len(values) > 1 else 0.0
    return {
        "wasserstein": _scale(entry, distance),
        "wasserstein_raw": distance,
        "psi": psi(ref, cur),
        "values": {_label(v): float(c / cur.sum()) for v, c in zip(values, cur, strict=True)},
    }


def _label(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _on(values: Any, keys: Any, counts: Any) -> Any:
    import numpy as np

    out = np.zeros(len(values))
    keys = np.asarray(keys, float)
    if keys.size:
        out[np.searchsorted(values, keys)] = np.asarray(counts, float)
    return out


def _categorical(entry: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    known = entry.get("categories") or {}
    pooled = int(entry.get("other") or 0)
    found = summary["categories"]
    names = list(known)
    unseen = sorted(k for k in found if k not in known)
    # the reference's pooled rest ("other") can hold any unseen value: pool them with it then
    if pooled:
        ref = np.array([*[known[k] for k in names], pooled], dtype=float)
        cur = np.array([*[found.get(k, 0) for k in names], sum(found[k] for k in unseen)], float)
    else:
        ref = np.array([*[known[k] for k in names], *[0] * len(unseen)], dtype=float)
        cur = np.array([*[found.get(k, 0) for k in names], *[found[k] for k in unseen]], float)
    n = cur.sum()
    return {
        **_chi2_test(ref, cur),
        "js": js_distance(ref, cur),
        "psi": psi(
            np.r_[[known[k] for k in names], pooled],
            np.r_[[found.get(k, 0) for k in names], sum(found[k] for k in unseen)],
        ),
        "unseen_rate": float(sum(found[k] for k in unseen) / n) if not pooled else None,
    }


def compare_samples(
    reference: Any,
    current: Any,
    entry: dict[str, Any] | None = None,
    policy: DriftPolicy | None = None,
) -> dict[str, Any]:
    """The verdict on two numeric samples, the continuous statistics computed on the samples
    themselves (scipy's ``ks_2samp`` and ``wasserstein_distance``); ``entry`` is the reference's
    profile entry (made here when not given): it decides the kind and gives the deciles."""
    import numpy as np
    from scipy import stats

    from pipeflow.governance.profile import numeric_entry

    policy = policy or DriftPolicy()
    ref = np.asarray(reference, dtype=float)
    ref = ref[np.isfinite(ref)]
    if entry is None:
        entry = {"role": "numeric", **numeric_entry(ref)}
    raw = np.asarray(current, dtype=float)
    if column_kind(entry) != "continuous" or not np.isfinite(raw).any() or not ref.size:
        return compare(entry, summarize(entry, raw), policy)
    cur = np.sort(raw[np.isfinite(raw)])
    ref = np.sort(ref)
    statistic, distance = ks_wasserstein(ref, cur, ordered=True)
    if max(ref.size, cur.size) <= KS_EXACT_N:  # scipy's exact distribution (its "auto" mode)
        statistic, p_value = (float(v) for v in stats.ks_2samp(ref, cur)[:2])
    else:  # scipy's asymptotic one, as its "auto" mode takes above 10,000 rows
        p_value = ks_pvalue(statistic, ref.size, cur.size)
    # PSI over the reference's deciles (the profile's 10-bin histogram; outer bins open-ended)
    edges = np.asarray(entry["edges"], dtype=float)
    cuts = np.searchsorted(cur, edges[1:-1], side="left")
    live = np.diff(np.r_[0, cuts, cur.size])
    result = {
        "role": "numeric",
        "kind": "continuous",
        "rows": int(raw.size),
        "missing_rate": float(1 - cur.size / raw.size) if raw.size else 0.0,
        "test": "ks",
        "statistic": statistic,
        "ks": statistic,
        "p_value": p_value,
        "wasserstein": _scale({"std": float(ref.std())}, distance),
        "wasserstein_raw": distance,
        "psi": psi(entry["counts"], live),
        "mean": float(cur.mean()),
        "reference_mean": entry.get("mean"),
        "exact": True,
    }
    return decide(result, policy)


def ks_wasserstein(a: Any, b: Any, *, ordered: bool = False) -> tuple[float, float]:
    """The two-sample KS statistic and Wasserstein-1 distance of two samples (finite values), from
    one merge of the sorted samples: the same figures as scipy's ``ks_2samp`` and
    ``wasserstein_distance``, with two sorts and a linear merge instead of their four binary
    searches over the pooled sample."""
    import numpy as np

    if not ordered:
        a, b = np.sort(a), np.sort(b)
    pooled = np.concatenate([a, b])
    order = np.argsort(pooled, kind="stable")  # two sorted runs: merged in linear time
    values = pooled[order]
    from_a = order < a.size
    gap = np.cumsum(from_a) / a.size - np.cumsum(~from_a) / b.size
    step = np.diff(values)
    ends = np.r_[step > 0, True]  # the CDFs are compared after each run of equal values
    return float(np.max(np.abs(gap[ends]))), float(np.sum(np.abs(gap[:-1]) * step))


def decide(result: dict[str, Any], policy: DriftPolicy) -> dict[str, Any]:
    """Apply the rule: ``drifted`` and the ``rule`` that decided it."""
    effect_name = "js" if result["kind"] == "categorical" else "wasserstein"
    effect, limit = result.get(effect_name), getattr(policy, effect_name)
    # effect None: a constant reference column, where any move at all is the whole effect
    effect_hit = (result.get(f"{effect_name}_raw") or 0) > 0 if effect is None else effect >= limit
    p = result.get("p_value")
    test_hit = p is not None and p < policy.alpha
    test_text = f"{result.get('test')} p={_fmt(p)} {'<' if test_hit else '>='} {policy.alpha:g}"
    effect_text = f"{effect_name} {_fmt(effect)} {'>=' if effect_hit else '<'} {limit:g}"
    if policy.method == "psi":
        value = result.get("psi")
        hit = value is not None and value > policy.psi
        text = f"psi {_fmt(value)} {'>' if hit else '<='} {policy.psi:g}"
    elif policy.method == "test":
        hit, text = test_hit, test_text
    elif policy.method == "effect":
        hit, text = effect_hit, effect_text
    else:
        hit, text = test_hit and effect_hit, f"{test_text} and {effect_text}"
    return {**result, "drifted": bool(hit), "rule": text, "method": policy.method}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}"
