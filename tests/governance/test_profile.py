"""The training reference profile: every value counted once, the same in threads or not, and
the same when profiled in the background while something else runs."""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeflow.governance.profile import BackgroundProfile, reference_profile, spare_threads


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


class Watched:
    """A table that records which thread reads each column, and can hold the first read until
    released (``hold``) or fail on one column (``broken``)."""

    def __init__(self, frame: pd.DataFrame, hold: bool = False, broken: str | None = None):
        self.frame, self.hold, self.broken = frame, hold, broken
        self.read_by: dict[str, str] = {}
        self.nice: dict[str, int] = {}  # the reading thread's nice value (Linux)
        self.first_read, self.release = threading.Event(), threading.Event()

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, column: str) -> Any:
        self.read_by[column] = threading.current_thread().name
        if sys.platform.startswith("linux"):
            self.nice[column] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        if column == self.broken:
            raise KeyError(f"column {column} is unreadable")
        if not self.first_read.is_set():
            self.first_read.set()
            if self.hold:
                assert self.release.wait(30)
        return self.frame[column]


def numbers(columns: int, rows: int = 1000) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame({f"c{i}": rng.normal(size=rows) for i in range(columns)})


def profile_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("pipeflow-profile")]


def test_a_background_profile_starts_before_its_result_is_asked_and_is_the_same_profile() -> None:
    table = numbers(4)
    target = pd.Series(np.where(table["c0"] > 0, "yes", "no"))
    roles = dict.fromkeys(table.columns, "numeric")
    watched = Watched(table)
    profile = BackgroundProfile(watched, roles, target=target, threads=1)
    assert watched.first_read.wait(30)  # nobody has asked for the result yet
    assert watched.read_by["c0"] == "pipeflow-profile-0"
    if sys.platform.startswith("linux"):  # the lowest priority: it takes what the fit leaves
        assert watched.nice["c0"] == 19
    assert profile.result() == reference_profile(table, roles, target=target)
    assert set(watched.read_by) == set(table.columns)


def test_the_result_never_waits_for_a_background_thread() -> None:
    """A low-priority thread may be starved on a busy machine: the column it holds is profiled
    again by the caller, and the first entry written is the one kept."""
    table = numbers(3)
    roles = dict.fromkeys(table.columns, "numeric")
    watched = Watched(table, hold=True)
    profile = BackgroundProfile(watched, roles, threads=1)
    assert watched.first_read.wait(30)  # the background thread holds c0 until released
    assert profile.result() == reference_profile(table, roles)
    watched.release.set()


def test_a_cancelled_background_profile_stops_after_the_column_it_has() -> None:
    table = numbers(6)
    watched = Watched(table, hold=True)
    roles = dict.fromkeys(table.columns, "numeric")
    with (
        pytest.raises(RuntimeError, match="the fit failed"),
        BackgroundProfile(watched, roles, threads=1),
    ):
        assert watched.first_read.wait(30)  # the thread holds its first column
        raise RuntimeError("the fit failed")  # leaving the block cancels the profile
    watched.release.set()
    for thread in profile_threads():
        thread.join(30)
    assert list(watched.read_by) == ["c0"]


def test_a_column_that_fails_on_a_background_thread_fails_the_result() -> None:
    table = numbers(5)
    watched = Watched(table, broken="c1")
    profile = BackgroundProfile(watched, dict.fromkeys(table.columns, "numeric"), threads=2)
    with pytest.raises(KeyError, match="column c1 is unreadable"):
        profile.result()


def test_large_tables_are_profiled_on_at_least_one_thread_beside_the_work() -> None:
    assert spare_threads(None, 99_999) == 0  # profiled by the caller, as reference_profile does
    assert spare_threads(None, 100_000) == 1  # every core busy: one takes what the work leaves
    assert 1 <= spare_threads(1, 1_000_000) <= 3
