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

from typing import Any, TypedDict, Unpack

PROFILE_FORMAT = 2
SKETCH_BINS = 200
DISCRETE_MAX = 20


class ProfileOptions(TypedDict, total=False):
    """What a profile is of and how fine it is: the keyword arguments :func:`reference_profile`
    hands on to :class:`BackgroundProfile`, whose signature holds their defaults (one place, so
    the two cannot disagree on them)."""

    target: Any
    target_role: str | None
    seed: int
    bins: int
    max_categories: int
    vocabulary: int


def reference_profile(
    X: Any, roles: dict[str, str], **options: Unpack[ProfileOptions]
) -> dict[str, Any]:
    """The profile of ``X`` (and ``target``), computed now: for 100,000 rows or more, its columns
    on up to four threads (numpy's sorts and reductions run without the GIL)."""
    return BackgroundProfile(X, roles, threads=0, **options).result()


class BackgroundProfile:
    """A reference profile whose columns are profiled on ``threads`` background threads of the
    lowest priority from the moment it is made, while the caller does something else; then
    :meth:`result` profiles every column not done yet, on the calling thread and, for 100,000
    rows or more, helper threads of normal priority (up to four threads in all, as
    :func:`reference_profile`).

    Why: the train stage profiles the training table (1,000,000 x 28 cost 1.5 CPU seconds on the
    project's 2-core VM when each numeric column was sorted, a third of the fit; with
    :func:`numeric_entry`'s ranks: about half) and nothing in the
    profile depends on the model, so it is started before the fit. At the lowest priority (on
    Linux: the thread's nice value 19) the background threads take the CPU time the fit leaves
    idle (its serial parts, its threads waiting for each other, the cores it does not use) and
    next to nothing from the fit itself; and ``result`` never waits for one of them (a column
    one still holds is profiled again, at normal priority), so a starved low-priority thread
    cannot hold the stage up. Each column has its own random generator (seed, position) and its
    own slot, the first result written wins, so the profile is the same whichever thread profiles
    which column, and the same as :func:`reference_profile`'s. :meth:`cancel` (the fit failed)
    lets the background threads stop after their current column."""

    def __init__(
        self,
        X: Any,
        roles: dict[str, str],
        *,
        target: Any = None,
        target_role: str | None = None,
        threads: int = 1,
        seed: int = 0,
        bins: int = 10,
        max_categories: int = 200,
        vocabulary: int = 300,
    ) -> None:
        import threading

        import numpy as np

        self._rows = int(len(X))
        self._names = [str(column) for column in roles]
        # (the column's values, its role, its seed): the target last, with the seed alone
        self._work: list[tuple[Any, str, Any]] = [
            (lambda column=column: X[column], role, [seed, i])
            for i, (column, role) in enumerate(roles.items())
        ]
        if target is not None:
            role = target_role or _target_role(target)
            self._work.append((lambda: _as_series(target), role, seed))
        self._options = (bins, max_categories, vocabulary)
        self._rng = np.random.default_rng
        self._entries: list[dict[str, Any] | None] = [None] * len(self._work)
        self._next = 0
        self._lock = threading.Lock()
        self._stopped = False
        self._error: BaseException | None = None
        for i in range(max(0, min(threads, len(self._work)))):
            name = f"pipeflow-profile-{i}"
            threading.Thread(target=self._background, name=name, daemon=True).start()

    def _claim(self) -> int | None:
        with self._lock:
            if self._stopped or self._next >= len(self._work):
                return None
            self._next += 1
            return self._next - 1

    def _background(self) -> None:
        _lowest_priority()
        while (i := self._claim()) is not None:
            try:
                self._profile(i)
            except BaseException as err:  # re-raised by result(), in the caller's thread
                self._error = err
                self._stopped = True

    def _profile(self, i: int) -> None:
        values, role, seed = self._work[i]
        entry = _profile_column(values(), role, *self._options, self._rng(seed))
        with self._lock:
            if self._entries[i] is None:
                self._entries[i] = entry

    def cancel(self) -> None:
        """Stop taking columns (each background thread finishes the one it has); :meth:`result`
        is not to be asked after this. Leaving a ``with`` block on an exception cancels."""
        self._stopped = True

    def __enter__(self) -> BackgroundProfile:
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        if kind is not None:
            self.cancel()

    def result(self) -> dict[str, Any]:
        """The profile (``format``, ``rows``, ``features`` and, with a target, ``target``)."""
        import os
        from concurrent.futures import ThreadPoolExecutor

        self._stopped = True  # the background threads take no more columns
        if self._error is not None:
            raise self._error
        left = [i for i, entry in enumerate(self._entries) if entry is None]
        workers = min(os.cpu_count() or 1, len(left), 4)
        if self._rows >= 100_000 and workers > 1:
            with ThreadPoolExecutor(workers, thread_name_prefix="pipeflow-profile-now") as pool:
                list(pool.map(self._profile, left))
        else:
            for i in left:
                self._profile(i)
        entries = self._entries
        features = dict(zip(self._names, entries[: len(self._names)], strict=True))
        out: dict[str, Any] = {"format": PROFILE_FORMAT, "rows": self._rows, "features": features}
        if len(entries) > len(self._names):  # the target's
            out["target"] = entries[-1]
        return out


def _lowest_priority() -> None:
    """This thread at the lowest CPU priority, on Linux (where a thread id names one thread, not
    the process as elsewhere); left as it is where that fails."""
    import contextlib
    import os
    import sys
    import threading

    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def spare_threads(busy: Any, rows: int) -> int:
    """How many threads are to profile ``rows`` rows beside work on ``busy`` threads (an ``n_jobs``:
    ``None`` or anything but a count below the cores is read as every core): none under 100,000
    rows (:meth:`BackgroundProfile.result` profiles them); else the cores left, at least one
    (it takes the time the work leaves idle), at most three."""
    import os

    if rows < 100_000:
        return 0
    cores = os.cpu_count() or 1
    used = busy if isinstance(busy, int) and 0 < busy < cores else cores
    return max(1, min(3, cores - used))


def _target_role(target: Any) -> str:
    import pandas as pd

    dtype = getattr(target, "dtype", None)
    return "numeric" if pd.api.types.is_float_dtype(dtype) else "categorical"


def _as_series(values: Any) -> Any:
    import pandas as pd

    return pd.Series(values)


def numeric_entry(values: Any, bins: int = 10) -> dict[str, Any]:
    """The profile entry of a numeric column (finite values; missing ones are the caller's).

    Everything comes from the column's order statistics: exact quantiles, the counts on both
    sets of edges and, for a column of few values, their exact counts (the runs of equal
    values). A large column of many values gets them without sorting it (:class:`_Ranks`: a
    sort costs ~50 ms a million values, three quarters of a training table's profile); the
    others are sorted. Both give the same entry."""
    import numpy as np

    values = np.asarray(values, dtype=float)
    n = values.size
    if not n:
        return {}
    ranks = _Ranks.of(values, bins) if n >= _RANKS_FROM else None
    ordered = None if ranks is not None else np.sort(values)
    order: _Sorted | _Ranks = ranks if ranks is not None else _Sorted(ordered)
    entry: dict[str, Any] = {
        "rows": int(n),
        "min": order.low,
        "max": order.high,
        "mean": float(values.mean()),
        "std": float(values.std()),
        "quantiles": {
            k: float(v)
            for k, v in zip(
                ("p01", "p50", "p99"), _quantiles(order, [0.01, 0.5, 0.99]), strict=True
            )
        },
    }
    entry["edges"], entry["counts"] = _histogram(order, bins)
    if ordered is not None:
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        if starts.size <= DISCRETE_MAX:
            entry["discrete"] = {
                "values": [float(v) for v in ordered[starts]],
                "counts": [int(c) for c in np.diff(np.r_[starts, n])],
            }
            return entry
    edges, counts = _histogram(order, SKETCH_BINS)
    entry["sketch"] = {"edges": edges, "counts": counts}
    return entry


#: columns of at least this many values are profiled from their ranks (:class:`_Ranks`)
_RANKS_FROM = 20_000


class _Sorted:
    """Order statistics of a sorted array (the small columns' way, and the reference)."""

    def __init__(self, ordered: Any):
        self.ordered = ordered
        self.rows = int(ordered.size)
        self.low, self.high = float(ordered[0]), float(ordered[-1])

    def at(self, ranks: Any) -> Any:
        return self.ordered[ranks]

    def below(self, edges: Any) -> Any:
        """How many values are below each edge."""
        import numpy as np

        return np.searchsorted(self.ordered, edges, side="left")


class _Ranks:
    """Order statistics of an unsorted column, for the few ranks a profile reads.

    The values go into about ``_CELLS`` cells in two steps: ``_COARSE`` equal-width cells
    between the minimum and the maximum, then each of those cut into equal-width cells in
    proportion to the values it holds (so a skewed column's crowded first cells are cut
    finest). Each step is a subtraction, a multiplication and a truncation, monotonic, so a
    smaller value never lands in a later cell: the cells are the sorted column cut in runs,
    and a cell's count says which ranks it holds. Only the values of the cells holding a wanted
    rank (a profile's quantiles: at most ~430 ranks) are kept, in cell order, and sorted. An
    edge drawn from those ranks lies in an empty cell or in a kept one, and every value of a
    cell before its own is below it. A column whose values crowd into a few cells (at most
    ``DISCRETE_MAX``: few distinct values, or a far outlier stretching the range) or whose kept
    cells would hold most of it is sorted instead (:meth:`of` returns None)."""

    def __init__(self, values: Any, low: float, high: float):
        import numpy as np

        self.rows = int(values.size)
        self.low, self.high = low, high
        self._scale = _COARSE / (high - low)
        coarse = self._coarse(values)
        per_coarse = np.bincount(coarse, minlength=_COARSE)
        fine = np.maximum(1, (per_coarse * (_CELLS / self.rows)).astype(np.intp))
        self._fine_from = np.cumsum(fine) - fine  # each coarse cell's first fine cell
        self._fine = fine
        self._fine_scale = self._scale * fine
        # where each coarse cell starts, as the coarse step computes it (see _cell)
        self._coarse_low = low + np.arange(_COARSE) / self._scale
        self.cells = self._cell(values, coarse)
        self.counts = np.bincount(self.cells, minlength=int(fine.sum()))

    @classmethod
    def of(cls, values: Any, bins: int) -> _Ranks | None:
        """The order statistics of ``values`` made ready for a profile's ranks, or None where
        the column is better sorted (see the class docstring). ``bins``: the histogram's."""
        import numpy as np

        low, high = float(values.min()), float(values.max())
        if not high > low or not np.isfinite(high - low) or not np.isfinite(_COARSE / (high - low)):
            return None
        out = cls(values, low, high)
        counts = out.counts
        if np.count_nonzero(counts) <= DISCRETE_MAX:
            return None
        out._before = np.cumsum(counts) - counts  # values in the cells before each cell
        out._wanted = np.zeros(counts.size, dtype=bool)
        out._wanted[out._cell_of_rank(_profile_ranks(values.size, bins))] = True
        held = np.where(out._wanted, counts, 0)
        if held.sum() * 2 > values.size:
            return None
        out._kept_from = np.cumsum(held) - held  # where a kept cell's values start
        out._sorted = np.sort(values[out._wanted[out.cells]])
        out.cells = None
        return out

    def _coarse(self, values: Any) -> Any:
        import numpy as np

        coarse = ((values - self.low) * self._scale).astype(np.intp)
        return np.clip(coarse, 0, _COARSE - 1, out=coarse)

    def _cell(self, values: Any, coarse: Any = None) -> Any:
        """The fine cell of each value (monotonic in the value)."""
        import numpy as np

        values = np.asarray(values, dtype=float)
        if coarse is None:
            coarse = self._coarse(values)
        within = ((values - self._coarse_low[coarse]) * self._fine_scale[coarse]).astype(np.intp)
        np.clip(within, 0, self._fine[coarse] - 1, out=within)
        return within + self._fine_from[coarse]

    def _cell_of_rank(self, ranks: Any) -> Any:
        import numpy as np

        return np.searchsorted(self._before + self.counts, ranks, side="right")

    def at(self, ranks: Any) -> Any:
        """The values of these ranks (0 the smallest; ranks :func:`_profile_ranks` named)."""
        import numpy as np

        ranks = np.asarray(ranks, dtype=np.int64)
        cells = self._cell_of_rank(ranks)
        if not self._wanted[cells].all():
            raise ValueError("a rank the profile did not ask for")  # a programming error
        return self._sorted[self._kept_from[cells] + ranks - self._before[cells]]

    def below(self, edges: Any) -> Any:
        """How many values are below each edge (edges drawn from the ranks asked for)."""
        import numpy as np

        edges = np.asarray(edges, dtype=float)
        cells = self._cell(edges)
        kept = self._wanted[cells]
        if (~kept & (self.counts[cells] > 0)).any():
            raise ValueError("an edge in a cell the profile did not keep")  # see the docstring
        out = self._before[cells]  # every value of the cells before the edge's
        # and those of its own cell below it: the kept values below it, less earlier cells'
        below = np.searchsorted(self._sorted, edges, side="left") - self._kept_from[cells]
        return out + np.where(kept, below, 0)


#: the equal-width cells :class:`_Ranks` cuts a column's range into first, and about how many
#: cells it cuts those into in all
_COARSE = 1 << 10
_CELLS = 1 << 16


def _profile_ranks(rows: int, bins: int) -> Any:
    """The ranks a profile of ``rows`` values reads: both sides of each quantile it takes (the
    three named ones, the edges of ``bins`` and of ``SKETCH_BINS`` bins)."""
    import numpy as np

    levels = np.r_[
        [0.01, 0.5, 0.99], np.linspace(0, 1, bins + 1), np.linspace(0, 1, SKETCH_BINS + 1)
    ]
    below = np.floor(levels * (rows - 1)).astype(np.int64)
    return np.unique(np.r_[below, np.minimum(below + 1, rows - 1)])


def _quantiles(order: Any, levels: Any) -> Any:
    """np.quantile's default (linear) quantiles from order statistics (:class:`_Sorted` or
    :class:`_Ranks`)."""
    import numpy as np

    n = order.rows
    position = np.asarray(levels, dtype=float) * (n - 1)
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, n - 1)
    low, high = order.at(below), order.at(above)
    return low + (high - low) * (position - below)


def _histogram(order: Any, bins: int) -> tuple[list[float], list[int]]:
    """Counts on the column's quantile edges (np.histogram's bins: the last one closed), from
    its order statistics (:class:`_Sorted` or :class:`_Ranks`)."""
    import numpy as np

    edges = np.unique(_quantiles(order, np.linspace(0, 1, bins + 1)))
    if edges.size < 2:
        return [float(e) for e in edges], [int(order.rows)]
    cuts = order.below(edges[1:-1])
    counts = np.diff(np.r_[0, cuts, order.rows])
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
