"""Drift at cluster scale: a live window of any size against a stored training profile (or a large
reference table), partition by partition, with nothing sampled and no partition held longer than
its task. The statistics are the drift engine's (:mod:`pipeflow.monitoring.engine`), so a column
gets the verdict here that ``monitor`` or ``pipeflow drift`` gives it.

The popular drift libraries load both tables into one process, so at ten million rows by a
thousand columns their users are told to sample. Here each Dask task turns one partition into
small, mergeable summaries, and only summaries travel:

- **Against a profile** (:func:`compare_to_profile`, what monitoring a registered version does):
  the profile is the reference, so the reference table is never read. Each live partition becomes
  the engine's summary of every column against its profile entry (counts on the entry's sketch
  bins, or value counts of a discrete column, plus the tail sums Wasserstein needs), packed
  (:class:`pipeflow.monitoring.tiles.Summaries`: a few arrays for the whole partition, not a
  dict per column); summaries are added pairwise up a tree
  (:func:`pipeflow.monitoring.tiles.merge_summaries`), and the engine compares the total with
  each entry on the client.
- **Two tables** (:func:`compare_numeric`): the reference is first profiled partition by
  partition (:func:`profile_at_scale`): a range pass (finite min and max of every column,
  merged), then one pass of per-partition fine histograms (``fine_bins`` equal-width bins over
  the reference's range, all columns in one ``bincount`` over ``column * fine_bins + bin``),
  moments (count, sum, sum of squares) and, for columns whose partition head shows at most
  ``DISCRETE_MAX`` values, exact value counts. Histograms and counts add up exactly. The profile's
  quantile edges come from the merged fine histogram (accurate to one fine bin, 1/1024 of the
  range by default). Then it is compared as above.

**A partition is made and summarised in one task** (:func:`pipeflow.execute.cluster.per_partition`):
the task that reads (or draws) it runs the pass too, so a worker holds one partition at a time
and frees it before it makes the next. As a task of its own after the partition's (what Dask
makes of ``delayed(pass)(partition, entries, plan)``: it fuses only chains of single inputs), the
partition stayed in the worker's memory until the scheduler released it, and the worker had
begun the next one by then: two or three 400 MB partitions per worker, and each new one fresh
pages from the kernel rather than those just freed (0.26 to 0.47 s of system time to draw a
partition on the 2-core VM's workers, 0.06 to 0.27 s fused: benchmarks/README.md, fifth pass).
What partitions share (a persisted collection, an upstream reduction) stays a task of its own.

Memory per task: one partition plus an int64 index of the same shape (reference pass), or a
few tile-sized buffers (live pass: :mod:`pipeflow.monitoring.tiles` summarises the partition in
tiles of rows x columns as it lies, each value read from memory once); the summaries are
``columns x fine_bins`` integers (reference) or counts on each entry's sketch bins (live: one
array of them, 1.6 MB at 1,000 columns, sent between workers as a handful of buffers). The
live pass's profile entries, and their cell tables, are one task each that every partition's
task depends on (a worker fetches them once), and the live window is read as it is when every
column is compared (no selection copying each partition). Numeric columns only (categorical
columns of a table this size are value counts per partition, left to
:mod:`pipeflow.monitoring.drift` for now).
"""

from __future__ import annotations

from typing import Any

from pipeflow.execute.cluster import compute, delayed, per_partition

HEAD_ROWS = 2000


def _block(part: Any) -> Any:
    import numpy as np

    values = part.to_numpy(dtype="float64", na_value=np.nan) if hasattr(part, "to_numpy") else part
    return np.asarray(values, dtype="float64")


def _range(part: Any) -> Any:
    import numpy as np

    x = _block(part)
    x = np.where(np.isfinite(x), x, np.nan)
    with np.errstate(all="ignore"):
        return np.stack([np.nanmin(x, axis=0), np.nanmax(x, axis=0)])


def _merge_range(a: Any, b: Any) -> Any:
    import numpy as np

    return np.stack([np.fmin(a[0], b[0]), np.fmax(a[1], b[1])])


def _fine_hist(part: Any, low: Any, high: Any, fine_bins: int) -> Any:
    import numpy as np

    x = _block(part)
    rows, cols = x.shape
    finite = np.isfinite(x)
    span = np.where(high > low, high - low, 1.0)
    scaled = (x - low) / span * fine_bins
    scaled = np.where(finite, scaled, 0.0)
    index = np.clip(scaled.astype(np.int64), 0, fine_bins - 1)
    index += np.arange(cols, dtype=np.int64) * fine_bins
    counts = np.bincount(index[finite], minlength=cols * fine_bins)
    return counts.reshape(cols, fine_bins)


def _reference_pass(part: Any, low: Any, high: Any, fine_bins: int) -> dict[str, Any]:
    """One reference partition: fine histograms, moments, and the exact value counts of the
    columns its head shows to be discrete (None for the others)."""
    import numpy as np

    from pipeflow.governance.profile import DISCRETE_MAX

    x = _block(part)
    finite = np.isfinite(x)
    zeroed = np.where(finite, x, 0.0)
    head = np.sort(np.where(finite[:HEAD_ROWS], x[:HEAD_ROWS], np.inf), axis=0)
    # distinct values of each column's head (inf stands for the missing ones: inf - inf is no step)
    steps = (head[1:] != head[:-1]).sum(axis=0) if len(head) else np.zeros(x.shape[1])
    distinct = 1 + steps
    values: list[Any] = []
    for j in range(x.shape[1]):
        found = None
        if distinct[j] <= DISCRETE_MAX:
            v, c = np.unique(x[finite[:, j], j], return_counts=True)
            found = (v, c) if v.size <= DISCRETE_MAX else None
        values.append(found)
    return {
        "hist": _fine_hist(x, low, high, fine_bins),
        "n": finite.sum(axis=0),
        "sum": zeroed.sum(axis=0),
        "sumsq": (zeroed**2).sum(axis=0),
        "values": values,
    }


def _merge_reference(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from pipeflow.governance.profile import DISCRETE_MAX

    values = []
    for x, y in zip(a["values"], b["values"], strict=True):
        if x is None or y is None:
            values.append(None)
            continue
        distinct, where = np.unique(np.r_[x[0], y[0]], return_inverse=True)
        counts = np.bincount(where, weights=np.r_[x[1], y[1]]).astype(np.int64)
        values.append((distinct, counts) if distinct.size <= DISCRETE_MAX else None)
    return {
        "hist": a["hist"] + b["hist"],
        "n": a["n"] + b["n"],
        "sum": a["sum"] + b["sum"],
        "sumsq": a["sumsq"] + b["sumsq"],
        "values": values,
    }


def _tree(items: list[Any], merge: Any) -> Any:
    """Pairwise merge of delayed summaries (depth log2(n), no single task sees them all)."""
    while len(items) > 1:
        items = [
            delayed(merge)(items[i], items[i + 1]) if i + 1 < len(items) else items[i]
            for i in range(0, len(items), 2)
        ]
    return items[0]


def _per_partition(fn: Any, data: Any, *args: Any) -> list[Any]:
    """``fn(partition, *args)`` of every partition, each in the task that makes the partition
    (:func:`pipeflow.execute.cluster.per_partition`)."""
    if not hasattr(data, "to_delayed"):
        raise TypeError("expected a dask DataFrame or dask Array")
    return per_partition(fn, data, *args)


def _names(data: Any) -> list[str]:
    if hasattr(data, "columns"):
        return [str(c) for c in data.columns]
    return [f"c{i}" for i in range(data.shape[1])]


def profile_at_scale(
    reference: Any, *, columns: list[str] | None = None, fine_bins: int = 1024
) -> dict[str, Any]:
    """The numeric profile (format 2 entries) of a dask DataFrame or Array, partition by
    partition; see the module docstring for what is exact and what is within one fine bin."""
    import numpy as np

    from pipeflow.governance.profile import PROFILE_FORMAT, SKETCH_BINS

    columns = columns or _names(reference)
    (span,) = compute(_tree(_per_partition(_range, reference), _merge_range))
    low, high = span[0], span[1]
    low = np.where(np.isfinite(low), low, 0.0)
    high = np.where(np.isfinite(high), high, low + 1.0)
    total = _tree(
        _per_partition(_reference_pass, reference, low, high, fine_bins), _merge_reference
    )
    (merged,) = compute(total)
    features: dict[str, Any] = {}
    rows = 0
    for i, name in enumerate(columns):
        n = int(merged["n"][i])
        entry: dict[str, Any] = {"role": "numeric", "rows": n}
        if not n:
            features[name] = entry
            continue
        mean = merged["sum"][i] / n
        std = float(np.sqrt(max(merged["sumsq"][i] / n - mean**2, 0.0)))
        lo, hi = float(span[0][i]), float(span[1][i])
        hist = merged["hist"][i].astype(float)

        edges, counts = _cut(hist, lo, hi, fine_bins, 10)
        entry.update(min=lo, max=hi, mean=float(mean), std=std, edges=edges, counts=counts)
        found = merged["values"][i]
        if found is not None:
            entry["discrete"] = {
                "values": [float(v) for v in found[0]],
                "counts": [int(c) for c in found[1]],
            }
        else:
            fine_edges, fine_counts = _cut(hist, lo, hi, fine_bins, SKETCH_BINS)
            entry["sketch"] = {"edges": fine_edges, "counts": fine_counts}
        features[name] = entry
        rows = max(rows, n)
    return {"format": PROFILE_FORMAT, "rows": rows, "features": features}


def _cut(hist: Any, lo: float, hi: float, fine_bins: int, bins: int) -> tuple[list, list]:
    """Edges at the fine-bin boundaries nearest the reference's 1/bins quantiles, and counts."""
    import numpy as np

    if not hi > lo:
        return [lo], [int(hist.sum())]
    cdf = np.cumsum(hist) / hist.sum()
    ends = np.unique(np.searchsorted(cdf, np.linspace(0, 1, bins + 1)[1:-1], side="left") + 1)
    ends = ends[(ends > 0) & (ends < fine_bins)]
    edges = np.r_[lo, lo + ends * (hi - lo) / fine_bins, hi]
    counts = np.add.reduceat(hist, np.r_[0, ends])
    return [float(e) for e in edges], [int(c) for c in counts]


def _live_pass(part: Any, entries: list[dict[str, Any]], plan: Any = None) -> Any:
    from pipeflow.monitoring.tiles import pack_block

    # tile by tile (rows x columns) in the block's own order: each value read from memory once,
    # no column-major copy of the partition, no allocation per column (see monitoring.tiles);
    # ``plan`` holds the entries' cell tables (plan_block), made once for every partition; the
    # summaries come back packed (tiles.Summaries: a few arrays, not a dict per column)
    return pack_block(entries, _block(part), plan=plan)


def compare_to_profile(
    profile: dict[str, Any],
    live: Any,
    *,
    columns: list[str] | None = None,
    policy: Any = None,  # a pipeflow.monitoring.engine.DriftPolicy
) -> dict[str, dict[str, Any]]:
    """Every numeric profiled column of ``live`` (a dask DataFrame, or a dask Array whose columns
    are ``columns``) against the profile, on the current scheduler. The reference table is not
    needed: only the profile stored with a model version."""
    from pipeflow.errors import UsageError
    from pipeflow.monitoring.engine import DriftPolicy, column_kind, compare
    from pipeflow.monitoring.tiles import merge_summaries, plan_block

    policy = policy or DriftPolicy()
    names = columns or _names(live)
    known = profile.get("features") or {}
    absent = [n for n in names if n not in known]
    if absent:
        raise UsageError(f"the profile has no column {', '.join(map(repr, absent))}")
    picked = [n for n in names if known[n].get("role") == "numeric" and column_kind(known[n])]
    data = live
    # every column of the window compared, in its order: read as it is; else a selection,
    # which copies every partition (an array's columns are named by ``columns``, positionally)
    named = _names(live) if hasattr(live, "columns") else names
    if picked != named or len(picked) != len(_names(live)):
        data = (
            live[picked] if hasattr(live, "columns") else live[:, [names.index(n) for n in picked]]
        )
    entries = [known[n] for n in picked]
    # one task holds the entries (plain data, nothing to look through), which every partition's
    # task depends on: passed to each task as a literal, Dask walked the thousands of nested
    # lists once per partition on the client before anything ran (0.5 s at 1,000 columns)
    shared = delayed(entries, traverse=False)
    # the cell tables of the tiled pass, one task too (76 ms at 1,000 columns: made once, not
    # once per partition)
    plan = delayed(plan_block)(shared)
    passes = _per_partition(_live_pass, data, shared, plan)
    (total,) = compute(_tree(passes, merge_summaries))
    summaries = total.columns()
    out: dict[str, dict[str, Any]] = {}
    for name, entry, summary in zip(picked, entries, summaries, strict=True):
        out[name] = compare(entry, summary, policy.for_column(name))
        out[name]["reference_rows"] = int(entry.get("rows") or sum(entry.get("counts") or []))
    return out


def compare_numeric(
    reference: Any,
    live: Any,
    *,
    columns: list[str] | None = None,
    fine_bins: int = 1024,
    policy: Any = None,
) -> dict[str, dict[str, Any]]:
    """Two dask tables (DataFrames with the same numeric columns, or Arrays): the reference
    profiled partition by partition (:func:`profile_at_scale`), then :func:`compare_to_profile`."""
    profile = profile_at_scale(reference, columns=columns, fine_bins=fine_bins)
    return compare_to_profile(profile, live, columns=columns or _names(reference), policy=policy)
