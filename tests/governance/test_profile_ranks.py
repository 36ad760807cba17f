"""A numeric column's profile entry from its ranks (``_Ranks``: equal-width cells, only the cells
holding a quantile's rank sorted) is the entry sorting the whole column gives, key for key, on
every kind of column: smooth, skewed, tied, integer, outliers far out, few values, any bins."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pipeflow.governance import profile
from pipeflow.governance.profile import numeric_entry


def _sorted_entry(values: Any, bins: int) -> dict[str, Any]:
    """The entry the whole column's sort gives (the way every column went before)."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(profile, "_RANKS_FROM", 10**12)
        return numeric_entry(values, bins)


def _ranked_entry(values: Any, bins: int) -> dict[str, Any]:
    """The entry from the ranks wherever :meth:`_Ranks.of` takes the column, however small."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(profile, "_RANKS_FROM", 1)
        return numeric_entry(values, bins)


COLUMNS = {
    "normal": lambda rng, n: rng.normal(size=n),
    "lognormal": lambda rng, n: rng.lognormal(sigma=2, size=n),
    "rounded": lambda rng, n: np.round(rng.normal(size=n), 1),
    "integers": lambda rng, n: rng.integers(-300, 300, size=n).astype(float),
    "far outliers": lambda rng, n: np.r_[rng.normal(size=n - 3), [-1e9, 1e9, 3e12]],
    "cubed": lambda rng, n: rng.exponential(size=n) ** 3,
    "two values": lambda rng, n: rng.integers(0, 2, size=n).astype(float),
    "a spike of zeros": lambda rng, n: np.where(rng.random(n) < 0.3, 0.0, rng.lognormal(size=n)),
    "one value": lambda rng, n: np.full(n, 2.5),
}


@pytest.mark.parametrize("kind", sorted(COLUMNS))
@pytest.mark.parametrize("bins", [10, 7])
def test_a_large_column_profiled_from_its_ranks_is_the_sorted_ones_entry(
    kind: str, bins: int
) -> None:
    values = COLUMNS[kind](np.random.default_rng(len(kind) * bins), 200_000)
    ranked = numeric_entry(values, bins)  # 200,000 values: from the ranks where it can
    assert ranked == _sorted_entry(values, bins)
    if kind in ("normal", "lognormal", "integers", "cubed", "a spike of zeros"):
        assert profile._Ranks.of(values, bins) is not None  # the ranks' way was taken


def test_a_skewed_column_keeps_a_small_share_of_its_values() -> None:
    """A skewed column crowds the first equal-width cells: they are cut finest, so the cells
    kept for the quantiles hold a small share of the values, not most of them."""
    rng = np.random.default_rng(5)
    for values in (rng.exponential(size=200_000) ** 3, rng.lognormal(sigma=2, size=200_000)):
        ranks = profile._Ranks.of(values, 10)
        assert ranks is not None and ranks._sorted.size < values.size // 5


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=300, deadline=None)
@given(
    values=hnp.arrays(
        np.float64,
        st.integers(1, 400),
        elements=st.one_of(finite, st.sampled_from([0.0, -0.0, 1.0, 1e-300, -7.5, 1e300])),
    ),
    bins=st.integers(1, 12),
    cells=st.sampled_from([(4, 48), (16, 256), (1 << 10, 1 << 16)]),
)
def test_any_column_profiled_from_its_ranks_is_the_sorted_ones_entry(
    values: Any, bins: int, cells: tuple[int, int]
) -> None:
    """Small columns are sorted in use; here every column goes the ranks' way where it can
    (extreme magnitudes, ties, signed zeros, subnormal steps, a single value), with few cells
    too, so that they crowd and are cut again."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(profile, "_COARSE", cells[0])
        m.setattr(profile, "_CELLS", cells[1])
        ranked = _ranked_entry(values, bins)
    assert ranked.keys() == _sorted_entry(values, bins).keys()
    expected = _sorted_entry(values, bins)
    for key in expected:
        if key in ("mean", "std") and not np.isfinite(expected[key]):
            continue  # an overflowing mean is nan or inf either way
        assert ranked[key] == expected[key], key
