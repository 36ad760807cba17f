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

The cell tables depend on the entries only, so :func:`plan_block` makes them once (on the
cluster route, one task that every partition's task depends on: 76 ms at 1,000 columns) and
:func:`pack_block` reads them for every partition. A partition's summaries are packed
(:func:`pack_block` gives a :class:`Summaries`: the tiled columns' counts end to end in one
array, their rows, sums and tails' sums one array each, the engine's summaries of the other
columns beside them), since that is what a cluster sends between workers and merges: as a dict
and an array per column, a 1,000-column partition's summaries pickled to 1,000 buffers, and a
worker's event loop spent more on sending and receiving them (and its garbage collector on
their objects) than the merge took; packed they are 7 buffers and merge by adding arrays, with
the same results to the last bit (the same additions in the same order). Both sides of ``bench_drift_scale.py``
(one process, and the workers) run this pass. On one 50,000 x 1,000 block it takes 0.43 to
0.59 CPU s in a plain process, in a worker's environment, and with two processes at once alike
(the column-by-column pass: 0.80 s, 1.40 s and 1.41 s; benchmarks/README.md).
"""

from __future__ import annotations

from typing import Any, NamedTuple

ROWS = 1024  # rows per tile
COLUMNS = 32  # columns per tile: 32 x 1,024 float64 is 256 kB
MOST = 4  # edges in one cell beyond which a column is summarised column by column
CELLS_PER_EDGE = 8


class BlockPlan(NamedTuple):
    """The cell tables of a block's columns, group by group: made once per profile (a Dask task
    of its own on the cluster route), used for every partition."""

    columns: int  # the block's columns, one per entry
    width: int  # columns per group (per tile)
    groups: list[Any]  # a _Group per group with at least one tiled column, None for the others


def plan_block(entries: list[dict[str, Any]], *, columns: int = COLUMNS) -> BlockPlan:
    """The tables :func:`pack_block` reads, for blocks of ``len(entries)`` columns."""
    plans = [_plan(entry) for entry in entries]
    width = max(1, min(columns, len(entries)))
    groups = [_group_tables(plans[a : a + width]) for a in range(0, len(entries), width)]
    return BlockPlan(len(entries), width, groups)


class Summaries(NamedTuple):
    """Every column of a block (or of several blocks, merged) against its entry, packed: the
    columns summarised in tiles as a few arrays of one element per column (their counts end to
    end in one), the others as the engine's own summaries. This is what a partition's task
    returns and what travels between workers: a handful of buffers, not a dict and an array per
    column (at 1,000 columns those cost a worker's event loop more to send and receive than the
    merge itself). :func:`merge_summaries` adds two; :meth:`columns` unpacks them."""

    rows: int
    tiled: Any  # the columns summarised in tiles, ascending
    bounds: Any  # column tiled[i]'s counts are counts[bounds[i] : bounds[i + 1]]
    counts: Any
    n: Any
    sums: Any
    below: Any  # the sums of the values below the first edge (Wasserstein's tails)
    above: Any
    others: dict[int, dict[str, Any]]  # the engine's summaries of the other columns

    def columns(self) -> list[dict[str, Any]]:
        """The engine's summary of every column (:func:`pipeflow.monitoring.engine.summarize`'s
        fields), in the block's column order."""
        out: list[dict[str, Any] | None] = [None] * (len(self.tiled) + len(self.others))
        for j, summary in self.others.items():
            out[j] = summary
        rows = int(self.rows)
        for i, j in enumerate(self.tiled.tolist()):
            counts = self.counts[self.bounds[i] : self.bounds[i + 1]]
            out[j] = {
                "rows": rows,
                "n": int(self.n[i]),
                "sum": float(self.sums[i]),
                "counts": counts,
                "sum_below": float(self.below[i]) if counts[0] else 0.0,
                "sum_above": float(self.above[i]) if counts[-1] else 0.0,
            }
        return out  # type: ignore[return-value]


def merge_summaries(a: Summaries, b: Summaries) -> Summaries:
    """Two blocks' summaries of the same entries as one (partitions of one window): the arrays
    added, the engine's summaries merged (:func:`pipeflow.monitoring.engine.merge`)."""
    from pipeflow.monitoring.engine import merge

    others = {j: merge(x, b.others[j]) for j, x in a.others.items()}
    return Summaries(
        a.rows + b.rows,
        a.tiled,
        a.bounds,
        a.counts + b.counts,
        a.n + b.n,
        a.sums + b.sums,
        a.below + b.below,
        a.above + b.above,
        others,
    )


def pack_block(
    entries: list[dict[str, Any]],
    block: Any,
    *,
    rows: int = ROWS,
    columns: int = COLUMNS,
    plan: BlockPlan | None = None,
) -> Summaries:
    """The engine's summary of every column of a 2-D float block against its entry
    (``entries[j]`` for column ``j``), in tiles of ``rows`` x ``columns``, packed
    (:class:`Summaries`: what the cluster route's tasks return and merge; ``.columns()`` gives
    one summary per column); ``plan`` is :func:`plan_block` of the entries (made here when not
    given; then ``columns`` applies)."""
    import numpy as np

    from pipeflow.errors import UsageError
    from pipeflow.monitoring.engine import summarize

    x = np.asarray(block, dtype="float64")
    if x.ndim != 2 or x.shape[1] != len(entries):
        raise UsageError(
            f"a block of {len(entries)} columns (one per profile entry) expected, "
            f"got shape {x.shape}"
        )
    plan = plan or plan_block(entries, columns=columns)
    if plan.columns != len(entries):
        raise UsageError(f"a plan of {plan.columns} columns for {len(entries)} entries")
    height = max(1, min(rows, x.shape[0]))
    buffers = _Buffers(height * plan.width)
    parts: list[tuple[Any, ...]] = []
    for g, group in enumerate(plan.groups):
        if group is not None:
            start = g * plan.width
            view = x[:, start : start + plan.width]
            parts.append((start + group.used, *_summarize_group(view, group, height, buffers)))
    tiled = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=np.intp)
    sizes = [group.highs - group.lows + 1 for group in plan.groups if group is not None]
    bounds = np.r_[0, np.cumsum(np.concatenate(sizes))] if sizes else np.zeros(1, np.intp)
    packed = (
        [np.concatenate([p[k] for p in parts]) for k in range(1, 6)]
        if parts
        else [np.zeros(0, np.int64), np.zeros(0, np.int64), *(np.zeros(0) for _ in range(3))]
    )
    counts, missing, sums, below, above = packed
    done = set(tiled.tolist())
    others = {j: summarize(e, x[:, j]) for j, e in enumerate(entries) if j not in done}
    n = x.shape[0] - missing
    return Summaries(int(x.shape[0]), tiled, bounds, counts, n, sums, below, above, others)


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


class _Group(NamedTuple):
    """One group's cell table. Per column (arrays of the group's width, as a column so that
    they broadcast along a tile buffer's rows): ``scale`` and ``shift`` put a value in its
    cell, ``low``..``high`` is the column's range of cells; ``table`` holds, per cell, the
    column's first bin plus its edges in earlier cells, ``edges[k]`` the cell's k-th edge (NaN:
    none). ``used`` are the tiled columns, their bins ``lows``..``highs`` of the histogram,
    ``first``/``last`` their outer edges (the tails' bounds); ``spare`` is the histogram's bin
    for missing values and for the columns that ride along."""

    scale: Any
    shift: Any
    low: Any
    high: Any
    table: Any
    edges: Any
    used: Any
    lows: Any
    highs: Any
    first: Any
    last: Any
    spare: int


def _group_tables(plans: list[_Plan | None]) -> _Group | None:
    """The cell table of a group of adjacent columns; columns without one (None: the engine's
    path) ride along, one cell of their own and no edge, counted in the spare bin."""
    import numpy as np

    width = len(plans)
    scale, shift = np.zeros(width), np.zeros(width)
    low, high = np.zeros(width), np.zeros(width)
    first, last = np.zeros(width), np.zeros(width)
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
            first[j], last[j] = plan.closed[0], plan.last
            total += plan.closed.size + 1
        scale[j], shift[j], cells, starts, kth = made
        low[j], high[j] = base, base + cells - 1
        firsts.append(starts)
        kths.append(kth)
        base += cells
    if not used:
        return None
    table = np.concatenate(firsts)
    table[table < 0] = total  # the spare bin
    edges = np.full((max(k.shape[0] for k in kths), base), np.nan)
    at = 0
    for kth in kths:
        edges[: kth.shape[0], at : at + kth.shape[1]] = kth
        at += kth.shape[1]
    cols = np.asarray(used)
    scale, shift, low, high = (v[:, None] for v in (scale, shift, low, high))
    return _Group(
        scale,
        shift,
        low,
        high,
        table,
        edges,
        cols,
        bins[cols, 0],
        bins[cols, 1],
        first,
        last,
        total,
    )


def _summarize_group(x: Any, group: _Group, height: int, buffers: _Buffers) -> tuple[Any, ...]:
    """A group's tiled columns (``x``: the group's columns of the block) summarised: their
    counts end to end, and per column the missing values, the sum and the tails' sums."""
    import numpy as np

    width, spare, cols, lows, highs = x.shape[1], group.spare, group.used, group.lows, group.highs
    scale, shift, low, high = (v[:width] for v in (group.scale, group.shift, group.low, group.high))
    hist = np.zeros(spare + 1, dtype=np.int64)
    sums, below, above = np.zeros(width), np.zeros(width), np.zeros(width)
    missing = np.zeros(width, dtype=np.int64)
    # the tile is copied column by column into a (columns, rows) buffer: each column's rows
    # are then contiguous, and each column's parameters one number per row of the buffer
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
            np.take(group.table, index, out=count, mode="clip")
            for kth in group.edges:
                np.take(kth, index, out=edge, mode="clip")
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
                below[j] += row[row < group.first[j]].sum()
                above[j] += row[row > group.last[j]].sum()
    # the tiled columns' counts end to end (their bins are adjacent in the histogram, in
    # column order), their missing values, sums and tails' sums
    return hist[:spare], missing[cols], sums[cols], below[cols], above[cols]


def _cells(v: Any, scale: float, shift: float, low: float, high: float) -> Any:
    """The cells of values ``v``, by the tiles' arithmetic (multiply, add, clip, truncate)."""
    import numpy as np

    c = np.multiply(v, scale)
    c += shift
    np.clip(c, low, high, out=c)
    return c.astype(np.intp)
