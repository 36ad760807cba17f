"""The A/B statistics of `pipeflow models compare --live` agree with scipy on the same counts."""

from __future__ import annotations

import math

import pytest
from scipy import stats as sp

from pipeflow.monitoring import stats

COUNTS = [(45, 50, 38, 50), (3, 10, 9, 12), (0, 40, 4, 40), (480, 500, 455, 500), (7, 7, 2, 9)]


@pytest.mark.parametrize("k, n", [(0, 50), (3, 10), (45, 50), (480, 500), (12, 12)])
@pytest.mark.parametrize("alpha", [0.05, 0.01, 0.1])
def test_the_wilson_interval_is_scipys(k: int, n: int, alpha: float) -> None:
    expected = sp.binomtest(k, n).proportion_ci(confidence_level=1 - alpha, method="wilson")
    low, high = stats.wilson(k, n, alpha)  # type: ignore[misc]
    assert (low, high) == pytest.approx((expected.low, expected.high), abs=1e-9)


@pytest.mark.parametrize("k1, n1, k2, n2", COUNTS)
def test_fishers_exact_test_is_scipys(k1: int, n1: int, k2: int, n2: int) -> None:
    table = [[k1, n1 - k1], [k2, n2 - k2]]
    assert stats.fisher_exact(k1, n1 - k1, k2, n2 - k2) == pytest.approx(
        sp.fisher_exact(table).pvalue, rel=1e-9
    )


@pytest.mark.parametrize("k1, n1, k2, n2", COUNTS)
def test_the_two_proportion_z_test_is_the_chi_square_test_without_correction(
    k1: int, n1: int, k2: int, n2: int
) -> None:
    if k1 + k2 in (0, n1 + n2):
        pytest.skip("a degenerate table")
    table = [[k1, n1 - k1], [k2, n2 - k2]]
    chi2 = sp.chi2_contingency(table, correction=False)
    z, p = stats.two_proportion_z(k1, n1, k2, n2)
    assert z * z == pytest.approx(chi2.statistic, rel=1e-9)
    assert p == pytest.approx(chi2.pvalue, rel=1e-9)


def test_small_counts_take_fishers_test_and_large_ones_the_z_test() -> None:
    assert stats.compare_proportions(3, 10, 9, 12)["test"] == "Fisher's exact test"
    assert stats.compare_proportions(480, 500, 455, 500)["test"] == "two-proportion z-test"


@pytest.mark.parametrize("b, c", [(0, 0), (1, 6), (5, 5), (12, 30), (40, 3)])
def test_mcnemars_exact_test_is_scipys_binomial_test(b: int, c: int) -> None:
    expected = 1.0 if b + c == 0 else sp.binomtest(min(b, c), b + c, 0.5).pvalue
    assert stats.mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9)


def test_the_mean_interval_and_welchs_test_are_scipys_with_the_normal_law() -> None:
    first = [3.1, 2.7, 4.0, 5.5, 3.3, 2.9, 3.8, 4.4, 3.0, 6.1] * 5
    second = [4.2, 3.9, 5.1, 6.0, 4.4, 4.8, 5.5, 4.1, 3.7, 7.0] * 5
    a, b = stats.mean_interval(first, 0.05), stats.mean_interval(second, 0.05)
    assert a is not None and b is not None
    low, high = sp.norm.interval(0.95, loc=sp.tmean(first), scale=sp.sem(first))
    assert a["ci"] == pytest.approx((low, high), rel=1e-9)
    test = stats.welch_z(a, b)
    assert test is not None
    z = (a["mean"] - b["mean"]) / math.sqrt(sp.sem(first) ** 2 + sp.sem(second) ** 2)
    assert test["p_value"] == pytest.approx(2 * sp.norm.sf(abs(z)), rel=1e-9)


def test_quantiles_interpolate_as_numpy_does() -> None:
    import numpy as np

    values = sorted([5.0, 1.0, 9.5, 3.2, 7.7, 2.2, 8.8])
    for q in (0.0, 0.5, 0.95, 1.0):
        assert stats.quantile(values, q) == pytest.approx(float(np.quantile(values, q)))
