"""The statistics of an A/B comparison, in plain Python (checked against scipy in the tests).

Which test, and why:

- **A proportion's interval: Wilson's score interval.** Unlike the textbook ``p ± z·√(p(1-p)/n)``
  it stays inside [0, 1] and is not degenerate at 0 or n successes (an error rate of 0 of 50 is
  "0 to 7 %", not "exactly 0").
- **Two proportions (accuracy, error rate): the pooled two-proportion z-test**, two-sided, when
  every expected cell of the 2x2 table is at least 5 (the usual rule for the normal
  approximation); **Fisher's exact test** otherwise (small counts: the first minutes of a canary).
- **The same rows scored by both (a shadow and the version that answered): McNemar's exact
  test** on the discordant pairs (one right, the other wrong), which is the right test for
  paired outcomes and more powerful than treating the samples as independent.
- **Latency: the mean with a normal-approximation interval** (many requests; latency is skewed,
  so the percentiles are reported too) and Welch's z-test for the difference of means.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

_NORMAL = NormalDist()


def z_for(alpha: float) -> float:
    """The two-sided critical value: 1.96 for ``alpha`` 0.05."""
    return _NORMAL.inv_cdf(1 - alpha / 2)


def wilson(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float] | None:
    """Wilson's score interval of ``successes / n`` at level ``1 - alpha``; None when n is 0."""
    if n <= 0:
        return None
    z = z_for(alpha)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportion_z(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float]:
    """(z, two-sided p) of the pooled two-proportion z-test of k1/n1 against k2/n2."""
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0, 1.0
    z = (k1 / n1 - k2 / n2) / se
    return z, 2 * _NORMAL.cdf(-abs(z))


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_exact(a: int, b: int, c: int, d: int) -> float:
    """The two-sided p-value of Fisher's exact test of the table [[a, b], [c, d]]: the
    probability, under the hypergeometric law with the table's margins, of a table at most as
    likely as this one (scipy's definition, with its relative tolerance)."""
    row1, col1, n = a + b, a + c, a + b + c + d
    low, high = max(0, col1 - (n - row1)), min(row1, col1)

    def log_p(x: int) -> float:
        return _log_choose(row1, x) + _log_choose(n - row1, col1 - x) - _log_choose(n, col1)

    observed = log_p(a)
    total = 0.0
    for x in range(low, high + 1):
        lp = log_p(x)
        if lp <= observed + math.log1p(1e-7):
            total += math.exp(lp)
    return min(1.0, total)


def compare_proportions(k1: int, n1: int, k2: int, n2: int) -> dict[str, Any]:
    """The test of two proportions: Fisher's exact when an expected cell is under 5, else the
    z-test; ``{"test", "p_value"}`` (and ``z`` for the z-test)."""
    n = n1 + n2
    successes, failures = k1 + k2, n - k1 - k2
    expected = [r * c / n for r in (n1, n2) for c in (successes, failures)]
    if min(expected) < 5:
        return {"test": "Fisher's exact test", "p_value": fisher_exact(k1, n1 - k1, k2, n2 - k2)}
    z, p = two_proportion_z(k1, n1, k2, n2)
    return {"test": "two-proportion z-test", "z": z, "p_value": p}


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """The two-sided p-value of McNemar's exact test: of the pairs where exactly one of two
    classifiers was right, ``only_first`` went to the first; binomial(n, 1/2)."""
    n = only_first + only_second
    if n == 0:
        return 1.0
    k = min(only_first, only_second)
    tail = sum(math.exp(_log_choose(n, i) - n * math.log(2)) for i in range(k + 1))
    return min(1.0, 2 * tail)


def mean_interval(values: Sequence[float], alpha: float = 0.05) -> dict[str, Any] | None:
    """The mean, its standard error and a normal-approximation interval; None when empty."""
    n = len(values)
    if n == 0:
        return None
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "se": None, "ci": None}
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    se = math.sqrt(variance / n)
    z = z_for(alpha)
    return {"mean": mean, "se": se, "ci": (mean - z * se, mean + z * se)}


def welch_z(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any] | None:
    """Welch's z-test of two means (:func:`mean_interval` results); None without both errors."""
    if first.get("se") is None or second.get("se") is None:
        return None
    se = math.sqrt(first["se"] ** 2 + second["se"] ** 2)
    if se == 0:
        return {"test": "Welch's z-test", "z": 0.0, "p_value": 1.0}
    z = (first["mean"] - second["mean"]) / se
    return {"test": "Welch's z-test", "z": z, "p_value": 2 * _NORMAL.cdf(-abs(z))}


def quantile(ordered: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile of sorted values, interpolated linearly (numpy's default)."""
    if not ordered:
        return None
    rank = q * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
