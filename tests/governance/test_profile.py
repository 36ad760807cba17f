"""The training reference profile: every value counted once, the same in threads or not."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeflow.governance.profile import reference_profile


def test_a_numeric_profile_counts_every_finite_value_once() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=250_000)  # above the 100,000-value quantile sample
    values[::1000] = np.nan
    values[1::1000] = np.inf
    entry = reference_profile(pd.DataFrame({"x": values}), {"x": "numeric"})["features"]["x"]
    assert sum(entry["counts"]) == 250_000 - 500
    assert entry["missing"] == 250
    assert entry["edges"][0] == np.nanmin(values[np.isfinite(values)])
    assert len(entry["counts"]) == len(entry["edges"]) - 1 == 10


def test_a_large_table_profiled_in_threads_is_the_one_profiled_column_by_column() -> None:
    rng = np.random.default_rng(1)
    n = 120_000  # threads from 100,000 rows
    table = pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.exponential(size=n),
            "kind": rng.choice(["x", "y", None], size=n),
            "note": rng.choice(["a long description of a claim", "water in the kitchen"], size=n),
        }
    )
    roles = {"a": "numeric", "b": "numeric", "kind": "categorical", "note": "text"}
    threaded = reference_profile(table, roles)
    # the first column alone is profiled inline, with the same generator (seed, position 0)
    alone = reference_profile(table[["a"]], {"a": "numeric"})
    assert threaded["features"]["a"] == alone["features"]["a"]
    assert threaded == reference_profile(table, roles)  # deterministic
    assert threaded["features"]["kind"]["missing"] == table["kind"].isna().sum()
