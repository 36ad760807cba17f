"""Partition-by-partition drift on a real Dask LocalCluster agrees with the in-memory measures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeflow.monitoring.scale import compare_numeric, compare_to_profile


def frames(rows: int, shift: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data = {f"c{i}": rng.normal(0, 1, rows) for i in range(6)}
    data["c0"] = data["c0"] + shift  # only c0 moves
    frame = pd.DataFrame(data)
    frame.loc[::97, "c3"] = np.nan
    return frame


@pytest.mark.cluster
def test_partitioned_drift_on_a_local_cluster_finds_the_shifted_column() -> None:
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    reference = dd.from_pandas(frames(200_000, 0.0, 1), npartitions=8)
    live = dd.from_pandas(frames(100_000, 0.8, 2), npartitions=5)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster),
    ):
        result = compare_numeric(reference, live)
    assert result["c0"]["drifted"] and result["c0"]["ks"] > 0.25
    assert result["c0"]["test"] == "ks" and result["c0"]["p_value"] < 1e-12
    assert all(
        not result[c]["drifted"] and result[c]["psi"] < 0.01 for c in ("c1", "c2", "c3", "c4", "c5")
    )
    assert result["c0"]["rows"] == 100_000 and result["c0"]["reference_rows"] == 200_000
    assert result["c3"]["rows"] == 100_000
    assert result["c3"]["missing_rate"] == pytest.approx(len(range(0, 100_000, 97)) / 100_000)


def test_partitioned_profile_matches_the_in_memory_one() -> None:
    import dask
    import dask.dataframe as dd

    from pipeflow.governance.profile import reference_profile
    from pipeflow.monitoring.drift import numeric_drift

    ref, now = frames(100_000, 0.0, 3), frames(50_000, 0.5, 4)
    with dask.config.set(scheduler="sync"):
        scaled = compare_numeric(
            dd.from_pandas(ref, npartitions=4), dd.from_pandas(now, npartitions=3)
        )
    profile = reference_profile(ref, {"c0": "numeric"})["features"]["c0"]
    exact = numeric_drift(profile, now["c0"].to_numpy())
    assert scaled["c0"]["psi"] == pytest.approx(exact["psi"], rel=0.1)
    assert scaled["c0"]["ks"] == pytest.approx(exact["ks"], abs=0.01)
    assert scaled["c0"]["wasserstein"] == pytest.approx(exact["wasserstein"], abs=0.01)
    assert scaled["c0"]["drifted"] and exact["drifted"]


def test_the_profile_route_gives_the_in_memory_verdicts_with_and_without_a_column_selection() -> (
    None
):
    """Every column read as it is (a row-major dask Array, a DataFrame), or a selection of them
    (a wider window than the profile): each compared column's result is the in-memory one."""
    import dask
    import dask.array as da
    import dask.dataframe as dd

    from pipeflow.governance.profile import reference_profile
    from pipeflow.monitoring.drift import feature_drift

    ref, now = frames(40_000, 0.0, 5), frames(30_000, 0.4, 6)
    names = list(ref.columns)
    profile = reference_profile(ref, dict.fromkeys(names, "numeric"))
    in_memory = feature_drift(profile, now)
    wider = now.assign(extra=np.arange(len(now), dtype=float))  # not in the profile
    picked = ["c4", "c0", "c3"]
    rows = da.from_array(now.to_numpy(), chunks=(7_000, len(names)))  # row-major blocks
    with dask.config.set(scheduler="sync"):
        routes = {
            "array": compare_to_profile(profile, rows, columns=names),
            "frame": compare_to_profile(profile, dd.from_pandas(now, npartitions=4)),
            "selection": compare_to_profile(
                profile, dd.from_pandas(wider, npartitions=4), columns=picked
            ),
        }
    assert list(routes["selection"]) == picked
    for route, result in routes.items():
        for name, verdict in result.items():
            for key in ("statistic", "p_value", "wasserstein", "psi", "missing_rate"):
                assert verdict[key] == pytest.approx(in_memory[name][key], rel=1e-9, abs=1e-12), (
                    route,
                    name,
                    key,
                )
            assert verdict["drifted"] == in_memory[name]["drifted"] == (name == "c0"), route
