"""The drift engine: the same verdict by every route, scipy's figures on the same samples, discrete
columns (a 0/1 flag), old stored profiles, and the policy's rule per spec and per column."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from pipeflow.governance.profile import reference_profile
from pipeflow.monitoring.drift import compare_tables, feature_drift, outcome_drift, prediction_drift
from pipeflow.monitoring.engine import ColumnPolicy, DriftPolicy, compare_samples
from pipeflow.monitoring.scale import compare_numeric, compare_to_profile

HERE = Path(__file__).parent
OLD = json.loads((HERE / "profile_format1.json").read_text())["profile"]


def table(
    n: int,
    seed: int,
    *,
    shift: float = 0.0,
    scale: float = 1.0,
    flag: float = 0.44,
    counts: float = 3.0,
    mix: float = 0.0,
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    p = np.array([0.5, 0.3, 0.2]) * (1 - mix) + np.array([0.1, 0.3, 0.6]) * mix
    return pd.DataFrame(
        {
            "x": rng.normal(shift, scale, n),
            "count": rng.poisson(counts, n),
            "flag": (rng.random(n) < flag).astype(int),
            "region": rng.choice(["north", "south", "east"], n, p=p),
        }
    )


ROLES = {"x": "numeric", "count": "numeric", "flag": "numeric", "region": "categorical"}


def test_a_flag_whose_live_rows_all_hold_one_value_is_drift() -> None:
    reference = table(20_000, 1)
    profile = reference_profile(reference, ROLES)
    assert profile["features"]["flag"]["discrete"]["values"] == [0.0, 1.0]
    live = table(5000, 2).assign(flag=1)
    found = feature_drift(profile, live)["flag"]
    assert found["kind"] == "discrete" and found["test"] == "chi2" and found["drifted"]
    assert found["p_value"] < 1e-12 and found["wasserstein"] > 1.0 and found["psi"] > 1.0
    assert found["rule"].startswith("chi2 p=")
    same = feature_drift(profile, table(5000, 3))["flag"]
    assert not same["drifted"] and same["p_value"] > 0.01


def test_a_profile_written_before_the_engine_is_still_monitored() -> None:
    # flag's edges collapsed to [0, 1], one bin of 20,000: the previous code's PSI was 0.0 here
    assert OLD["features"]["flag"]["edges"] == [0.0, 1.0] and "format" not in OLD
    rng = np.random.default_rng(8)
    live = pd.DataFrame(
        {
            "amount": rng.lognormal(8, 0.5, 5000),
            "flag": np.ones(5000, dtype=int),
            "region": rng.choice(["north", "south", "east"], 5000, p=[0.5, 0.3, 0.2]),
        }
    )
    found = feature_drift(OLD, live)
    assert found["flag"]["drifted"] and found["flag"]["kind"] == "discrete"
    assert found["flag"]["values"] == {"0": 0.0, "1": 1.0}
    assert not found["amount"]["drifted"] and found["amount"]["kind"] == "continuous"
    assert not found["region"]["drifted"]
    live["flag"] = (rng.random(5000) < 0.44).astype(int)
    live["amount"] = rng.lognormal(8.5, 0.5, 5000)
    found = feature_drift(OLD, live)
    assert not found["flag"]["drifted"] and found["amount"]["drifted"]


def test_statistics_agree_with_scipy_on_the_same_samples() -> None:
    ref, cur = table(3000, 4), table(2500, 5, shift=0.1, flag=0.5, counts=3.2, mix=0.1)
    cur.loc[::50, "x"] = np.nan  # missing values are counted, not compared
    report = compare_tables(ref, cur)
    assert report["exact"]
    x, kept = report["features"]["x"], cur["x"].dropna()
    scipy_ks = stats.ks_2samp(ref["x"], kept)
    assert x["statistic"] == pytest.approx(scipy_ks.statistic, abs=1e-9)
    assert x["p_value"] == pytest.approx(scipy_ks.pvalue, abs=1e-9)
    w = stats.wasserstein_distance(ref["x"], kept) / ref["x"].std(ddof=0)
    assert x["wasserstein"] == pytest.approx(w, abs=1e-9)
    assert x["missing_rate"] == pytest.approx(50 / 2500)
    for name in ("count", "flag", "region"):
        crosstab = pd.crosstab(
            np.r_[np.zeros(len(ref)), np.ones(len(cur))], np.r_[ref[name], cur[name]].astype(str)
        )
        chi2 = stats.chi2_contingency(crosstab.to_numpy(), correction=False)
        found = report["features"][name]
        assert found["test"] == "chi2"
        assert found["statistic"] == pytest.approx(chi2.statistic, abs=1e-9)
        assert found["p_value"] == pytest.approx(chi2.pvalue, abs=1e-9)
        assert found["dof"] == chi2.dof
    for name in ("count", "flag"):  # discrete numbers: Wasserstein is exact from the counts
        w = stats.wasserstein_distance(ref[name], cur[name]) / ref[name].std(ddof=0)
        assert report["features"][name]["wasserstein"] == pytest.approx(w, abs=1e-9)
    js = report["features"]["region"]["js"]
    p = ref["region"].value_counts(normalize=True).sort_index()
    q = cur["region"].value_counts(normalize=True).sort_index()
    from scipy.spatial.distance import jensenshannon

    assert js == pytest.approx(jensenshannon(p, q, base=2), abs=1e-9)


def test_the_profile_sketch_stays_within_one_bin_of_the_exact_statistics() -> None:
    ref, cur = table(50_000, 6), table(20_000, 7, shift=0.05, scale=1.1)
    profile = reference_profile(ref, ROLES)
    sketched = feature_drift(profile, cur)["x"]
    exact = compare_samples(ref["x"], cur["x"], profile["features"]["x"])
    assert abs(sketched["statistic"] - exact["statistic"]) <= 1 / 200
    assert sketched["wasserstein"] == pytest.approx(exact["wasserstein"], abs=0.01)


def test_the_cluster_route_reads_only_the_stored_profile() -> None:
    import dask
    import dask.dataframe as dd

    reference = table(30_000, 8)
    profile = json.loads(json.dumps(reference_profile(reference, ROLES)))  # as stored
    del reference
    live = table(12_000, 9, shift=0.3, flag=0.5)
    numeric = ["x", "count", "flag"]
    with dask.config.set(scheduler="sync"):
        scaled = compare_to_profile(profile, dd.from_pandas(live[numeric], npartitions=5))
    in_memory = feature_drift(profile, live)
    for name in numeric:
        for key in ("statistic", "p_value", "wasserstein", "psi"):
            assert scaled[name][key] == pytest.approx(in_memory[name][key], rel=1e-9, abs=1e-12)
        assert scaled[name]["drifted"] == in_memory[name]["drifted"]
        assert scaled[name]["reference_rows"] == 30_000
    assert scaled["x"]["drifted"] and scaled["flag"]["drifted"] and not scaled["count"]["drifted"]


SHIFTS = st.sampled_from(["none", "mean", "variance", "mix", "flag", "counts"])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=SHIFTS, size=st.sampled_from([1500, 6000]), seed=st.integers(0, 10_000))
def test_every_route_gives_the_same_verdict(kind: str, size: int, seed: int) -> None:
    """Two tables sample to sample, two tables through the reference's profile (what ``monitor``
    does with a stored one), and the cluster route on dask partitions: one verdict per column.
    The shifts are clear ones (or none), and alpha is 0.001 so that an unchanged column is not
    one of the 5% that a 0.05 test flags: the routes' statistics differ within one sketch bin, so
    a column placed on the threshold itself could fall either way."""
    import dask
    import dask.dataframe as dd

    change = {
        "none": {},
        "mean": {"shift": 0.6},
        "variance": {"scale": 1.8},
        "mix": {"mix": 0.8},
        "flag": {"flag": 0.75},
        "counts": {"counts": 4.5},
    }[kind]
    ref, cur = table(8000, seed), table(size, seed + 1, **change)
    policy = DriftPolicy(alpha=0.001)
    exact = compare_tables(ref, cur, policy=policy)["features"]
    profiled = compare_tables(ref, cur, policy=DriftPolicy(alpha=0.001, exact_rows=0))["features"]
    monitored = feature_drift(reference_profile(ref, ROLES), cur, policy)
    numeric = ["x", "count", "flag"]
    with dask.config.set(scheduler="sync"):
        clustered = compare_numeric(
            dd.from_pandas(ref[numeric], npartitions=3),
            dd.from_pandas(cur[numeric], npartitions=2),
            policy=policy,
        )
    expected = {
        "x": kind in ("mean", "variance"),
        "count": kind == "counts",
        "flag": kind == "flag",
        "region": kind == "mix",
    }
    for name, drifted in expected.items():
        routes = [exact[name], profiled[name], monitored[name]]
        if name in numeric:
            routes.append(clustered[name])
        assert [r["drifted"] for r in routes] == [drifted] * len(routes), (name, routes)


def test_the_rule_is_set_per_spec_and_per_column() -> None:
    ref, cur = table(4000, 10), table(4000, 11, shift=0.08)
    default = compare_tables(ref, cur)["features"]["x"]
    assert default["p_value"] < 0.05 and default["wasserstein"] >= 0.05 and default["drifted"]
    strict = DriftPolicy(wasserstein=0.2)
    assert not compare_tables(ref, cur, policy=strict)["features"]["x"]["drifted"]
    per_column = DriftPolicy(per_column={"x": ColumnPolicy(method="psi", psi=0.5)})
    found = compare_tables(ref, cur, policy=per_column)["features"]
    assert not found["x"]["drifted"] and found["x"]["rule"].startswith("psi ")
    assert found["count"]["rule"].startswith("chi2 p=")  # the other columns keep the default
    tests_only = compare_tables(ref, cur, policy=DriftPolicy(method="test"))["features"]["x"]
    assert tests_only["drifted"] and tests_only["rule"].startswith("ks p=")
    with pytest.raises(ValueError, match="alpha"):
        DriftPolicy(alpha=2)


def test_a_large_window_needs_an_effect_not_only_a_small_p_value() -> None:
    # 200k rows: a 0.02 sd shift is "significant" but smaller than the 0.05 sd that matters
    ref, cur = table(200_000, 12), table(200_000, 13, shift=0.02)
    x = compare_tables(ref, cur, columns=["x"])["features"]["x"]
    assert x["p_value"] < 0.05 and x["wasserstein"] < 0.05 and not x["drifted"]


def test_predictions_and_outcomes_are_compared_with_the_training_target() -> None:
    rng = np.random.default_rng(14)
    y = pd.Series(rng.choice(["fire", "theft", "water"], 10_000, p=[0.2, 0.3, 0.5]))
    record = {
        "reference": reference_profile(
            pd.DataFrame({"a": y}), {"a": "categorical"}, target=y, target_role="categorical"
        )
    }
    shifted = rng.choice(["fire", "theft", "water"], 3000, p=[0.5, 0.3, 0.2])
    prior = outcome_drift(record, list(shifted))
    assert prior["drifted"] and prior["against"] == "training target" and prior["test"] == "chi2"
    same = prediction_drift(
        record, list(rng.choice(["fire", "theft", "water"], 3000, p=[0.2, 0.3, 0.5]))
    )
    assert not same["drifted"] and same["distribution"]["water"] == pytest.approx(0.5, abs=0.03)
    # a version registered before: the evaluation's confusion matrix is the reference
    old = {"metrics": {"confusion_matrix": {"labels": ["a", "b"], "matrix": [[80, 20], [10, 90]]}}}
    assert prediction_drift(old, ["a"] * 50 + ["b"] * 50)["against"] == "evaluation predictions"
    assert outcome_drift(old, ["a"] * 90 + ["b"] * 10)["drifted"]
    regression = {
        "reference": {
            "target": reference_profile(
                pd.DataFrame({"t": rng.normal(100, 10, 5000)}), {"t": "numeric"}
            )["features"]["t"]
        }
    }
    assert outcome_drift(regression, list(rng.normal(110, 10, 2000)))["drifted"]
    assert not outcome_drift(regression, list(rng.normal(100, 10, 2000)))["drifted"]


def test_large_samples_agree_with_scipys_asymptotic_test() -> None:
    rng = np.random.default_rng(15)
    a, b = rng.normal(0, 1, 30_000), np.round(rng.normal(0.03, 1, 25_000), 2)  # ties in b
    found = compare_samples(a, b)
    scipy_ks = stats.ks_2samp(a, b)
    assert found["statistic"] == pytest.approx(scipy_ks.statistic, abs=1e-12)
    assert found["p_value"] == pytest.approx(scipy_ks.pvalue, abs=1e-9)
    w = stats.wasserstein_distance(a, b) / a.std()
    assert found["wasserstein"] == pytest.approx(w, abs=1e-9)


_FLOATS = st.floats(allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=300, deadline=None)
@given(
    edges=st.lists(
        st.one_of(_FLOATS, st.floats(-10, 10), st.sampled_from([0.0, 1.0, -1.0])),
        min_size=2,
        max_size=60,
    ),
    values=st.lists(st.one_of(_FLOATS, st.floats(-12, 12)), min_size=1, max_size=300),
    near=st.integers(0, 3),
)
def test_the_cell_table_counts_the_edges_below_each_value_as_a_binary_search_does(
    edges: list[float], values: list[float], near: int
) -> None:
    """Any sorted edges (repeated ones, far outliers, a huge range), any finite values (the
    edges themselves and their neighbouring floats too): the same counts as np.searchsorted."""
    from pipeflow.monitoring.engine import _edges_at_or_below

    e = np.sort(np.asarray(edges, dtype=float))
    on = e[:: max(1, near)]
    with np.errstate(over="ignore"):  # the largest float's neighbour is inf, filtered out
        up, down = np.nextafter(on, np.inf), np.nextafter(on, -np.inf)
    x = np.concatenate([np.asarray(values), on, up, down])
    x = x[np.isfinite(x)]  # what summarize() counts
    expected = np.searchsorted(e, x, side="right")
    assert np.array_equal(_edges_at_or_below(x, e), expected)
    assert np.array_equal(_edges_at_or_below(x, e, most=1), expected)  # the fallback too


def test_bin_counts_are_numpys_histogram_with_the_tails() -> None:
    from pipeflow.monitoring.engine import _bin_counts

    rng = np.random.default_rng(4)
    edges = np.quantile(rng.normal(size=5000), np.linspace(0, 1, 201))
    x = np.concatenate([rng.normal(0.2, 1.3, 50_000), edges, [edges[-1]] * 3])
    counts = _bin_counts(x, edges)
    inside, _ = np.histogram(x, bins=edges)
    assert counts[1:-1].tolist() == inside.tolist()
    assert counts[0] == np.sum(x < edges[0]) and counts[-1] == np.sum(x > edges[-1])
