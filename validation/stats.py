"""Confidence bounds the gate decides on. Every function is deterministic for a given seed."""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "clopper_pearson_lower",
    "examples_needed",
    "median_interval",
    "paired_bootstrap_upper",
    "percentile_upper_bound",
    "ratio_interval",
    "runs_needed_for_percentile_bound",
]


def percentile_upper_bound(
    samples: np.ndarray | list[float], percentile: float, confidence: float
) -> float | None:
    """One-sided upper confidence bound on a latency percentile, from order statistics.

    The k-th smallest of n samples bounds the q-quantile from above with probability
    P(Binomial(n, q) < k); this picks the smallest such k, as MLPerf does for its p90/p99
    bounds. Returns None when n is too small for any sample to be a bound.
    """
    from scipy.stats import binom

    values = np.sort(np.asarray(samples, dtype=float))
    n = values.size
    q = percentile / 100.0
    if n == 0:
        return None
    # smallest k (1-based) with P(X <= k-1) >= confidence, X ~ Binomial(n, q)
    k = int(binom.ppf(confidence, n, q)) + 1
    if k > n:
        return None
    return float(values[k - 1])


def runs_needed_for_percentile_bound(percentile: float, confidence: float) -> int:
    """Fewest samples for which :func:`percentile_upper_bound` exists (the maximum is a bound)."""
    q = percentile / 100.0
    # the maximum bounds the q-quantile with probability 1 - q**n
    return math.ceil(math.log(1.0 - confidence) / math.log(q))


def paired_bootstrap_upper(
    baseline_correct: np.ndarray,
    candidate_correct: np.ndarray,
    confidence: float,
    *,
    resamples: int = 4000,
    seed: int = 0,
) -> float:
    """Upper confidence bound on the accuracy drop (baseline minus candidate), paired by example.

    Both models are scored on the same examples, so resampling examples (not models) keeps
    the pairing and gives a much tighter bound than comparing two independent accuracies.
    """
    b = np.asarray(baseline_correct, dtype=np.float64)
    c = np.asarray(candidate_correct, dtype=np.float64)
    if b.shape != c.shape or b.ndim != 1 or b.size == 0:
        raise ValueError(
            f"per-example outcomes must be two 1-D arrays of one length, got {b.shape} and {c.shape}"
        )
    diff = b - c
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, diff.size, size=(resamples, diff.size))
    drops = diff[idx].mean(axis=1)
    return float(np.quantile(drops, confidence, method="higher"))


def clopper_pearson_lower(successes: int, trials: int, confidence: float) -> float:
    """Exact one-sided lower confidence bound on a proportion."""
    from scipy.stats import beta

    if trials <= 0:
        raise ValueError(f"trials must be positive, got {trials}")
    if successes <= 0:
        return 0.0
    return float(beta.ppf(1.0 - confidence, successes, trials - successes + 1))


def examples_needed(n: int, point: float, bound: float, limit: float) -> int | None:
    """Examples for the bound to reach ``limit`` if the point estimate held still.

    A bound's distance from its point estimate shrinks as 1/sqrt(n). Returns None when the
    point estimate itself misses the limit, since no amount of data would help.
    """
    spread = abs(bound - point)
    margin = abs(limit - point)
    if margin == 0 or (bound - point) * (limit - point) <= 0:
        return None
    return math.ceil(n * (spread / margin) ** 2)


def median_interval(
    samples: np.ndarray | list[float], confidence: float
) -> tuple[float, float] | None:
    """Distribution-free two-sided confidence interval of the median, from order statistics."""
    from scipy.stats import binom

    values = np.sort(np.asarray(samples, dtype=float))
    n = values.size
    alpha = 1.0 - confidence
    lo = int(binom.ppf(alpha / 2, n, 0.5))  # P(X <= lo) ~ alpha/2
    hi = n - lo - 1
    if n == 0 or lo < 1 or hi >= n:
        return None
    return float(values[lo - 1]), float(values[hi])


def ratio_interval(
    baseline: np.ndarray | list[float], candidate: np.ndarray | list[float], confidence: float
) -> tuple[float, float | None, float | None]:
    """How many times faster the candidate is: baseline time / candidate time, with an interval.

    Each input holds one median per independent process. The estimate is the Hodges-Lehmann
    shift between log times, and the interval the Mann-Whitney one (normal approximation to
    its rank distribution), so one slow process moves neither. The interval is None when there
    are too few processes to give one at this confidence.
    """
    from scipy.stats import norm

    b = np.log(np.asarray(baseline, dtype=float))
    c = np.log(np.asarray(candidate, dtype=float))
    n, m = b.size, c.size
    if n == 0 or m == 0:
        raise ValueError("ratio_interval needs at least one measurement of each model")
    diffs = np.sort((b[:, None] - c[None, :]).ravel())
    estimate = float(np.exp(np.median(diffs)))
    z = norm.ppf(1.0 - (1.0 - confidence) / 2)
    k = int(np.floor(n * m / 2 - z * np.sqrt(n * m * (n + m + 1) / 12)))
    if k < 1:
        return estimate, None, None
    return estimate, float(np.exp(diffs[k - 1])), float(np.exp(diffs[n * m - k]))


def paired_bootstrap_error_upper(
    target: np.ndarray,
    baseline: np.ndarray | None,
    candidate: np.ndarray,
    metric: str,
    confidence: float,
    *,
    resamples: int = 4000,
    seed: int = 0,
) -> float:
    """One-sided upper confidence bound on a regression error (``mae`` or ``rmse``) of the
    candidate, or, with ``baseline``, on its increase over the baseline's, paired by example.
    """
    t = np.asarray(target, dtype=np.float64)
    c = np.asarray(candidate, dtype=np.float64)
    if t.shape != c.shape or t.ndim != 1 or t.size == 0:
        raise ValueError(
            f"targets and predictions must be 1-D of one length, got {t.shape} and {c.shape}"
        )
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, t.size, size=(resamples, t.size))

    def error(pred: np.ndarray) -> np.ndarray:
        diff = pred[idx] - t[idx]
        out = np.abs(diff).mean(axis=1) if metric == "mae" else np.sqrt((diff**2).mean(axis=1))
        return np.asarray(out, dtype=np.float64)

    values = error(c)
    if baseline is not None:
        values = values - error(np.asarray(baseline, dtype=np.float64))
    return float(np.quantile(values, confidence, method="higher"))


def regression_error(target: np.ndarray, prediction: np.ndarray, metric: str) -> float:
    diff = np.asarray(prediction, dtype=np.float64) - np.asarray(target, dtype=np.float64)
    return float(np.abs(diff).mean() if metric == "mae" else np.sqrt((diff**2).mean()))


def neighbour_overlap(candidate: np.ndarray, baseline: np.ndarray, k: int) -> np.ndarray:
    """Per row, the share of its ``k`` nearest rows (by cosine, itself excluded) under the
    baseline's embeddings that are also among its ``k`` nearest under the candidate's."""

    def neighbours(e: np.ndarray) -> np.ndarray:
        unit = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        sim = unit @ unit.T
        np.fill_diagonal(sim, -np.inf)
        return np.argsort(-sim, axis=1, kind="stable")[:, :k]

    if np.shape(candidate) != np.shape(baseline):
        raise ValueError(
            f"embeddings of one shape needed, got {np.shape(candidate)} and {np.shape(baseline)}"
        )
    a, b = (
        neighbours(np.asarray(candidate, np.float64)),
        neighbours(np.asarray(baseline, np.float64)),
    )
    return np.array([len(set(x) & set(y)) / k for x, y in zip(a, b, strict=True)])


def bootstrap_mean_lower(values: np.ndarray, confidence: float, *, resamples: int = 4000,
                         seed: int = 0) -> float:  # fmt: skip
    """One-sided lower confidence bound on the mean of per-row values (bootstrap over rows)."""
    v = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(resamples, v.size))].mean(axis=1)
    return float(np.quantile(means, 1 - confidence, method="lower"))


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine similarity of paired rows. Identical rows have a cosine of exactly 1 (two
    zero rows included), so that unchanged outputs meet ``min_cosine: 1``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    num = (a * b).sum(axis=1)
    # sqrt(x * x) == x in IEEE arithmetic, so a row against itself gives num == den
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    cos = num / np.where(den > 0, den, 1.0)  # a zero row: num is 0 as well
    cos[(a == b).all(axis=1)] = 1.0
    return float(np.mean(np.clip(cos, -1.0, 1.0)))


def rows_for_lower_bound(limit: float, confidence: float, cap: int = 10_000_000) -> int | None:
    """The fewest trials whose exact lower bound can reach ``limit`` at all: with every one a
    success. None if even ``cap`` trials cannot."""
    if clopper_pearson_lower(cap, cap, confidence) < limit:
        return None
    lo, hi = 1, cap
    while lo < hi:
        mid = (lo + hi) // 2
        if clopper_pearson_lower(mid, mid, confidence) >= limit:
            hi = mid
        else:
            lo = mid + 1
    return lo
