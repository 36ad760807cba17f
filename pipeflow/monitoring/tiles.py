"""The live pass of drift at scale: every column of a partition summarised against its profile
entry, tile by tile, so each value is read from memory once.

A partition of a live window is a row-major block (a dask Array's chunk: 50,000 rows x 1,000
columns is 400 MB). Summarising it column by column reads each column several times (the finite
mask, the sum, the cells, the table look-ups, the comparisons, the count), so the column has to
be contiguous and cache-resident for that to be cheap: the pass used to copy the whole block to
column-major order first (one more write and read of 400 MB), and each column's passes made
their own 400 kB temporaries. On a Dask worker those temporaries cost more than the arithmetic:
the nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which pins glibc's threshold
for serving an allocation from a fresh ``mmap`` at 128 kB, so every temporary was a new mapping,
zero-filled page by page and unmapped again (390,000 page faults and 0.8 s of system time per
partition, against 80,000 and 0.1 s in a plain process: a chunk cost more on a worker than in
the one-process baseline, whatever the memory bandwidth).

Here the block is cut into tiles of ``ROWS`` rows x ``COLUMNS`` columns, each read once from
the block as it lies (row-major or column-major) into a small ``columns x rows`` buffer, so
that a column's values in the tile are contiguous and its parameters one number per buffer row;
every step after that reads and writes buffers allocated once per partition (six of 256 kB,
with the group's cell tables about a core's 2 MB L2 cache): nothing of the partition's size is
copied and nothing is allocated per column. A tile's counts are added to its columns' totals,
so the result is the sum over tiles of what :func:`pipeflow.monitoring.engine.summarize` counts
column by column:

- **counts on each column's sketch bins** by the engine's cell-table method
  (:func:`pipeflow.monitoring.engine._edges_at_or_below`), with one table for the tile's
  columns side by side: a value's cell is ``clip(v * scale_j + shift_j)`` into its column's
  range of cells, the table holds, per cell, the column's bin offset plus its edges in earlier
  cells, and each cell's few edges are compared one by one. Values and edges are put in cells
  by the same arithmetic, which never decreases in ``v``, so the counts are exactly a binary
  search's, and so the engine's. A column whose edges crowd more than ``MOST`` into a cell,
  a discrete column (value counts), or one with fewer than two edges is summarised by the
  engine column by column, as before.
- **rows, values, sums**: missing values (NaN, +-inf) are counted, not compared, as the engine
  does; a tile whose column sums are all finite holds none, so the finite mask is only made
  for a tile that has some. The sums (the mean, and the tails' sums that Wasserstein reads)
  are added tile by tile, so they can differ from a column-by-column sum in the last bits
  (as they already do between two partitionings of one window); the counts are exact.

Both sides of ``bench_drift_scale.py`` (one process, and the workers) run this pass. On one
50,000 x 1,000 block it takes 0.56 CPU s in a plain process, in a worker's environment, and
with two processes at once (the column-by-column pass: 0.80 s, 1.40 s and 1.41 s).
"""

from __future__ import annotations

from typing import Any, NamedTuple

ROWS = 1024  # rows per tile
COLUMNS = 32  # columns per tile: 32 x 1,024 float64 is 256 kB
MOST = 4  # edges in one cell beyond which a column is summarised column by column
CELLS_PER_EDGE = 8


def summarize_block(
    entries: list[dict[str, Any]], block: Any, *, rows: int = ROWS, columns: int = COLUMNS
) -> list[dict[str, Any]]:
    """The engine's summary of every column of a 2-D float block against its entry
    (``entries[j]`` for column ``j``), in tiles of ``rows`` x ``columns``."""
    import numpy as np

    from pipeflow.errors import UsageError
    from pipeflow.monitoring.engine import summarize

    x = np.asarray(block, dtype="float64")
    if x.ndim != 2 or x.shape[1] != len(entries):
        raise UsageError(
            f"a block of {len(entries)} columns (one per profile entry) expected, "
            f"got shape {x.shape}"
        )
    plans = [_plan(entry) for entry in entries]
    out: list[dict[str, Any] | None] = [None] * len(entries)
    width = max(1, min(columns, x.shape[1]))
    height = max(1, min(rows, x.shape[0]))
    buffers = _Buffers(height * width)
    for start in range(0, x.shape[1], width):
        stop = min(start + width, x.shape[1])
        group = plans[start:stop]
        if any(plan is not None for plan in group):
            for j, summary in _group(x[:, start:stop], group, height, buffers).items():
                out[start + j] = summary
    for j, entry in enumerate(entries):
        if out[j] is None:
            out[j] = summarize(entry, x[:, j])
    return out  # type: ignore[return-value]


class _Plan(NamedTuple):
    closed: Any  # the sketch's edges, the last moved up by one float (a value equal to it is
    # in the last bin, np.histogram's way, and a greater one above it)
    cells: int
    scale: float  # cells per unit of the column's values
    last: float  # the last edge itself


def _plan(entry: dict[str, Any]) -> _Plan | None:
    """A continuous column's edges and cells; None where the engine's own path applies."""
    import numpy as np

    from pipeflow.monitoring.engine import _sketch, column_kind

    if column_kind(entry) != "continuous":
        return None
    edges = np.asarray(_sketch(entry)["edges"], dtype="float64")
    if edges.size < 2:
        return None
    closed = edges.copy()
    closed[-1] = np.nextafter(edges[-1], np.inf)
    lo, hi = float(closed[0]), float(closed[-1])
    cells = CELLS_PER_EDGE * closed.size
    scale = cells / (hi - lo) if hi > lo else 0.0
    if not (np.isfinite(scale) and scale > 0):
        return None
    return _Plan(closed, cells, scale, float(edges[-1]))


class _Buffers:
    """The tile's working arrays, made once per partition and reused by every tile."""

    def __init__(self, size: int) -> None:
        import numpy as np

        self.values = np.empty(size)
        self.cell = np.empty(size)
        self.index = np.empty(size, dtype=np.intp)
        self.count = np.empty(size, dtype=np.intp)
        self.edge = np.empty(size)
        self.hit = np.empty(size, dtype=bool)

    def shaped(self, cols: int, rows: int) -> tuple[Any, ...]:
        """(values, cell, index, count, edge, hit), each ``cols`` x ``rows``, contiguous."""
        n = rows * cols
        return tuple(
            b[:n].reshape(cols, rows)
            for b in (self.values, self.cell, self.index, self.count, self.edge, self.hit)
        )


def _table(plan: _Plan, base: int, total: int) -> tuple[Any, ...] | None:
    """A column's part of the group's cell table, its cells numbered from ``base`` and its bins
    from ``total``: (scale, shift, cells, first, kth) or None where its edges crowd a cell."""
    import numpy as np

    closed, cells, scale, _ = plan
    shift = base - closed[0] * scale
    per_cell = np.bincount(
        _cells(closed, scale, shift, base, base + cells - 1) - base, minlength=cells
    )
    if per_cell.max() > MOST:
        return None
    before = np.cumsum(per_cell) - per_cell  # the column's edges in earlier cells
    kth = np.full((int(per_cell.max()), cells), np.nan)  # each cell's k-th edge (NaN: none)
    for k in range(kth.shape[0]):
        has = per_cell > k
        kth[k, has] = closed[before[has] + k]
    return scale, shift, cells, total + before, kth


def _group(
    x: Any, plans: list[_Plan | None], height: int, buffers: _Buffers
) -> dict[int, dict[str, Any]]:
    """Summaries of a group of adjacent columns (a view of the block) that have a cell table;
    the others ride along (one cell of their own, no edge, counted in the spare bin) and are
    left out of the result."""
    import numpy as np

    width = len(plans)
    scale, shift = np.zeros(width), np.zeros(width)
    low, high = np.zeros(width), np.zeros(width)  # each column's range of cells
    bins = np.zeros((width, 2), dtype=np.intp)  # each column's first and last bin
    firsts: list[Any] = []
    kths: list[Any] = []
    used: list[int] = []
    base = total = 0
    for j, plan in enumerate(plans):
        made = _table(plan, base, total) if plan is not None else None
        if made is None:
            made = 0.0, float(base), 1, np.full(1, -1, dtype=np.intp), np.full((0, 1), np.nan)
        else:
            used.append(j)
            bins[j] = total, total + plan.closed.size
            total += plan.closed.size + 1
        scale[j], shift[j], cells, first, kth = made
        low[j], high[j] = base, base + cells - 1
        firsts.append(first)
        kths.append(kth)
        base += cells
    if not used:
        return {}
    spare = total  # missing values, and the columns riding along
    table = np.concatenate(firsts)
    table[table < 0] = spare
    edges = np.full((max(k.shape[0] for k in kths), base), np.nan)
    at = 0
    for kth in kths:
        edges[: kth.shape[0], at : at + kth.shape[1]] = kth
        at += kth.shape[1]
    cols = np.asarray(used)
    lows, highs = bins[cols, 0], bins[cols, 1]
    first_edge, last_edge = np.zeros(width), np.zeros(width)  # edges[0] and edges[-1]
    for j in used:
        first_edge[j], last_edge[j] = plans[j].closed[0], plans[j].last

    hist = np.zeros(spare + 1, dtype=np.int64)
    sums, below, above = np.zeros(width), np.zeros(width), np.zeros(width)
    missing = np.zeros(width, dtype=np.int64)
    # the tile is copied column by column into a (columns, rows) buffer: each column's rows
    # are then contiguous, and each column's parameters one number per row of the buffer
    scale, shift, low, high = (v[:, None] for v in (scale, shift, low, high))
    with np.errstate(over="ignore", invalid="ignore"):
        for r0 in range(0, x.shape[0], height):
            tile = x[r0 : r0 + height]
            values, cell, index, count, edge, hit = buffers.shaped(width, tile.shape[0])
            np.copyto(values, tile.T)
            part = values.sum(axis=1)
            gaps = None
            if not np.isfinite(part).all():  # some NaN or +-inf (or a sum past the largest float)
                gaps = ~np.isfinite(values)
                missing += gaps.sum(axis=1)
                part = np.where(gaps, 0.0, values).sum(axis=1)
            sums += part
            np.multiply(values, scale, out=cell)
            cell += shift
            if gaps is not None:
                np.copyto(cell, low, where=gaps)  # a cell for NaN; its count goes to the spare bin
            np.maximum(cell, low, out=cell)
            np.minimum(cell, high, out=cell)
            np.copyto(index, cell, casting="unsafe")
            np.take(table, index, out=count, mode="clip")
            for k in range(edges.shape[0]):
                np.take(edges[k], index, out=edge, mode="clip")
                np.greater_equal(values, edge, out=hit)
                count += hit
            if gaps is not None:
                np.copyto(count, spare, where=gaps)
            step = np.bincount(count.ravel(), minlength=spare + 1)
            hist += step
            # the values beyond the edges (Wasserstein's tails): summed for the few columns
            # with some in this tile, each a contiguous row of the buffer
            for j in cols[(step[lows] > 0) | (step[highs] > 0)]:
                row = values[j] if gaps is None else values[j][~gaps[j]]
                below[j] += row[row < first_edge[j]].sum()
                above[j] += row[row > last_edge[j]].sum()
    out: dict[int, dict[str, Any]] = {}
    for j in used:
        counts = hist[bins[j, 0] : bins[j, 1] + 1].copy()
        out[j] = {
            "rows": int(x.shape[0]),
            "n": int(x.shape[0] - missing[j]),
            "sum": float(sums[j]),
            "counts": counts,
            "sum_below": float(below[j]) if counts[0] else 0.0,
            "sum_above": float(above[j]) if counts[-1] else 0.0,
        }
    return out


def _cells(v: Any, scale: float, shift: float, low: float, high: float) -> Any:
    """The cells of values ``v``, by the arithmetic the tiles use (multiply, add, clip, truncate)."""
    import numpy as np

    c = np.multiply(v, scale)
    c += shift
    np.clip(c, low, high, out=c)
    return c.astype(np.intp)
