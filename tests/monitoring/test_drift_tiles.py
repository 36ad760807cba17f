"""The tiled live pass (pipeflow.monitoring.tiles) gives the engine's column-by-column summaries:
the same counts, rows and values exactly, the same sums to rounding, so the same verdicts."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeflow.governance.profile import numeric_entry
from pipeflow.monitoring.engine import compare, merge, summarize
from pipeflow.monitoring.tiles import merge_summaries, pack_block, plan_block


def summarize_block(entries: list, block: object, **options: object) -> list:
    """One summary per column, as the engine's ``summarize`` gives them."""
    return pack_block(entries, block, **options).columns()  # type: ignore[arg-type]


def entries_of(columns: int, seed: int) -> list[dict[str, Any]]:
    """Profile entries of every kind the live pass meets, in turn: continuous, discrete (a
    count), continuous with a far outlier (its edges crowd one cell: the engine's own path),
    constant (one value)."""
    rng = np.random.default_rng(seed)
    out = []
    for j in range(columns):
        kind = j % 4
        if kind == 0:
            ref = rng.normal(0, 1, 3000)
        elif kind == 1:
            ref = rng.poisson(2.0, 3000).astype(float)
        elif kind == 2:
            ref = np.r_[rng.normal(0, 1, 2999), 1e9]
        else:
            ref = np.full(50, 3.0)
        out.append({"role": "numeric", **numeric_entry(ref)})
    return out


def live_block(
    rows: int, columns: int, seed: int, missing: float, entries: list[dict[str, Any]]
) -> np.ndarray:
    """Live values, a tenth of them a sketch edge itself or its neighbouring float (where a
    count is decided by one comparison), some beyond the last edge, some missing."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.3, 1.4, size=(rows, columns))
    x[:, 1::4] = rng.poisson(2.5, size=x[:, 1::4].shape)
    for j, entry in enumerate(entries):
        edges = np.asarray((entry.get("sketch") or {}).get("edges") or [], dtype=float)
        if edges.size:
            at = rng.random(rows) < 0.1
            on = rng.choice(edges, size=int(at.sum()))
            x[at, j] = np.nextafter(on, on + rng.choice([-1.0, 0.0, 1.0], size=on.size))
    x[rng.random(x.shape) < 0.02] = 8.0  # beyond the continuous columns' last edges
    gone = rng.random(x.shape) < missing
    x[gone] = rng.choice([np.nan, np.inf, -np.inf], size=int(gone.sum()))
    return x


def assert_same_summary(tiled: dict[str, Any], engine: dict[str, Any]) -> None:
    assert tiled.keys() == engine.keys()
    for key, value in engine.items():
        if key in ("counts", "values"):
            assert np.array_equal(tiled[key], value), key
        elif key in ("rows", "n"):
            assert tiled[key] == value, key
        else:  # sums: added tile by tile, so equal to rounding
            assert tiled[key] == pytest.approx(value, rel=1e-12, abs=1e-9), key


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.integers(1, 300),
    columns=st.integers(1, 11),
    tile_rows=st.integers(1, 64),
    tile_columns=st.integers(1, 6),
    missing=st.sampled_from([0.0, 0.01, 0.3, 1.0]),
    seed=st.integers(0, 10_000),
)
def test_tiles_give_the_engines_summary_of_every_column(
    rows: int, columns: int, tile_rows: int, tile_columns: int, missing: float, seed: int
) -> None:
    """Any shape and tile (a tile edge inside the block, a tile wider or taller than it), NaN and
    infinities anywhere, every kind of entry: column by column, the engine's summary."""
    entries = entries_of(columns, seed)
    x = live_block(rows, columns, seed + 1, missing, entries)
    tiled = summarize_block(entries, x, rows=tile_rows, columns=tile_columns)
    for j, entry in enumerate(entries):
        assert_same_summary(tiled[j], summarize(entry, x[:, j]))


@pytest.mark.parametrize(
    ("shape", "tile"),
    [((1, 1), (1024, 32)), ((1, 9), (4, 4)), ((1000, 1), (7, 32)), ((257, 33), (128, 32))],
    ids=["one value", "one row", "one column", "a tile edge in the middle both ways"],
)
def test_odd_shapes_with_missing_values_summarise_as_the_engine_does(
    shape: tuple[int, int], tile: tuple[int, int]
) -> None:
    rows, columns = shape
    entries = entries_of(columns, 3)
    x = live_block(rows, columns, 4, 0.05, entries)
    x[0, 0] = np.nan
    tiled = summarize_block(entries, x, rows=tile[0], columns=tile[1])
    for j, entry in enumerate(entries):
        assert_same_summary(tiled[j], summarize(entry, x[:, j]))
    assert tiled[0]["n"] == int(np.isfinite(x[:, 0]).sum()) < rows  # x[0, 0] is missing


def test_a_row_major_and_a_column_major_block_give_the_same_summaries() -> None:
    entries = entries_of(10, 5)
    x = live_block(2000, 10, 6, 0.01, entries)
    by_rows = summarize_block(entries, np.ascontiguousarray(x), rows=300, columns=4)
    by_columns = summarize_block(entries, np.asfortranarray(x), rows=300, columns=4)
    for a, b in zip(by_rows, by_columns, strict=True):
        assert_same_summary(a, b)


def test_partitions_summarised_in_tiles_and_merged_give_the_engines_verdicts() -> None:
    """A window cut into partitions, each summarised in tiles and the summaries merged: every
    column's verdict (statistic, p-value, effect sizes, drifted) is the one-column engine's."""
    rng = np.random.default_rng(7)
    reference = rng.normal(0, 1, size=(5000, 8))
    entries = [{"role": "numeric", **numeric_entry(reference[:, j])} for j in range(8)]
    window = rng.normal(0, 1, size=(9000, 8))
    window[:, 2] += 0.4  # the drifted column
    window[::50, 5] = np.nan
    plan = plan_block(entries, columns=3)  # made once, as the cluster route does
    pieces = [
        summarize_block(entries, part, rows=512, plan=plan) for part in np.array_split(window, 3)
    ]
    merged = [merge(merge(a, b), c) for a, b, c in zip(*pieces, strict=True)]
    for j, entry in enumerate(entries):
        tiled = compare(entry, merged[j])
        engine = compare(entry, summarize(entry, window[:, j]))
        for key in ("statistic", "p_value", "wasserstein", "psi", "missing_rate", "mean"):
            assert tiled[key] == pytest.approx(engine[key], rel=1e-9, abs=1e-12), (j, key)
        assert tiled["drifted"] == engine["drifted"] == (j == 2)


def test_packed_summaries_merged_are_the_engines_summaries_merged_exactly() -> None:
    """What the cluster route's tasks return and add (tiles.Summaries) unpacks to what merging
    every column's summary one by one gives: counts, rows and sums alike, to the last bit (the
    same additions in the same order), for every kind of entry, with missing values."""
    entries = entries_of(11, 8)
    window = live_block(3000, 11, 9, 0.02, entries)
    plan = plan_block(entries, columns=4)
    parts = np.array_split(window, 3)
    packed = [pack_block(entries, part, rows=256, plan=plan) for part in parts]
    total = merge_summaries(merge_summaries(packed[0], packed[1]), packed[2])
    one_by_one = [summarize_block(entries, part, rows=256, plan=plan) for part in parts]
    expected = [merge(merge(a, b), c) for a, b, c in zip(*one_by_one, strict=True)]
    assert sorted(total.others) == [j for j in range(11) if j % 4 in (1, 2, 3)]
    for got, want in zip(total.columns(), expected, strict=True):
        assert got.keys() == want.keys()
        for key, value in want.items():
            assert np.array_equal(got[key], value), key
            assert type(got[key]) is type(value) or key in ("counts", "values"), key


def test_a_partitions_summaries_travel_as_a_few_buffers_whatever_its_width() -> None:
    """A task's result pickles (Dask's protocol 5) to a handful of out-of-band buffers and a small
    in-band part, not an array and a dict per column: at 1,000 columns those cost a worker's
    event loop more to send and receive than the merge took."""
    import pickle

    rng = np.random.default_rng(3)
    for columns in (10, 400):
        reference = rng.normal(0, 1, size=(3000, columns))
        entries = [{"role": "numeric", **numeric_entry(reference[:, j])} for j in range(columns)]
        packed = pack_block(entries, rng.normal(0, 1, size=(500, columns)))
        buffers: list[Any] = []
        inband = pickle.dumps(packed, protocol=5, buffer_callback=buffers.append)
        assert len(buffers) <= 8 and len(inband) < 2000, (columns, len(buffers), len(inband))
        assert sum(b.raw().nbytes for b in buffers) < columns * 1700  # ~201 int64 counts each


def test_a_block_or_a_plan_whose_width_is_not_the_entries_is_refused() -> None:
    from pipeflow.errors import UsageError

    with pytest.raises(UsageError, match=r"a block of 3 columns .* got shape \(5, 4\)"):
        summarize_block(entries_of(3, 1), np.zeros((5, 4)))
    with pytest.raises(UsageError, match="a plan of 4 columns for 3 entries"):
        summarize_block(entries_of(3, 1), np.zeros((5, 3)), plan=plan_block(entries_of(4, 1)))
