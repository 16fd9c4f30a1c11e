"""The statistics of validation/stats.py on inputs whose answer is known exactly: which order
statistic an interval takes, which inputs are refused, the edge cases of each formula."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from validation.stats import (
    bootstrap_mean_lower,
    clopper_pearson_lower,
    examples_needed,
    mean_cosine,
    median_interval,
    neighbour_overlap,
    paired_bootstrap_error_upper,
    paired_bootstrap_upper,
    ratio_interval,
    regression_error,
    rows_for_lower_bound,
)


@pytest.mark.parametrize(
    ("b", "c"),
    [
        (np.ones(3), np.ones(4)),  # other lengths
        (np.ones((2, 3)), np.ones((2, 3))),  # not one outcome per example
        (np.ones(0), np.ones(0)),  # no examples
    ],
)
def test_paired_bounds_refuse_unpaired_or_empty_outcomes(b: np.ndarray, c: np.ndarray) -> None:
    with pytest.raises(ValueError, match="1-D"):
        paired_bootstrap_upper(b, c, 0.95)
    with pytest.raises(ValueError, match="1-D"):
        paired_bootstrap_error_upper(b, None, c, "mae", 0.95)


def test_the_error_bound_is_the_bootstrap_quantile_of_that_error() -> None:
    target = np.zeros(50)
    pred = np.linspace(-3, 3, 50) ** 3
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 50, size=(4000, 50))
    diff = pred[idx]
    mae = np.quantile(np.abs(diff).mean(axis=1), 0.9, method="higher")
    rmse = np.quantile(np.sqrt((diff**2).mean(axis=1)), 0.9, method="higher")
    assert paired_bootstrap_error_upper(target, None, pred, "mae", 0.9) == mae
    assert paired_bootstrap_error_upper(target, None, pred, "rmse", 0.9) == rmse
    assert mae != rmse
    assert regression_error(target + 1, pred + 1, "mae") == pytest.approx(np.abs(pred).mean())
    assert regression_error(np.array([1.0, 2.0]), np.array([1.0, 2.0]), "rmse") == 0.0


def test_the_exact_bound_needs_trials_and_is_zero_without_successes() -> None:
    with pytest.raises(ValueError, match="trials must be positive, got 0"):
        clopper_pearson_lower(0, 0, 0.95)
    assert clopper_pearson_lower(0, 10, 0.95) == 0.0
    # every trial a success: the bound solves p**n = 1 - confidence
    assert clopper_pearson_lower(10, 10, 0.95) == pytest.approx(0.05 ** (1 / 10))


def test_rows_for_a_lower_bound_is_the_smallest_split_that_can_reach_it() -> None:
    need = rows_for_lower_bound(0.97, 0.95)
    assert need == 99 and isinstance(need, int)  # 0.05 ** (1/99) = 0.97018; 1/98: 0.96990
    # a limit exactly at the bound of n/n needs exactly n rows
    assert rows_for_lower_bound(clopper_pearson_lower(50, 50, 0.95), 0.95) == 50
    assert rows_for_lower_bound(clopper_pearson_lower(10, 10, 0.95), 0.95, cap=10) == 10
    assert rows_for_lower_bound(0.999, 0.95, cap=10) is None


def test_the_examples_estimate_is_none_when_the_bound_sits_on_the_point() -> None:
    assert examples_needed(100, 0.9, 0.9, 0.95) is None


def test_the_median_interval_takes_the_order_statistics_the_binomial_names() -> None:
    samples = np.arange(1, 21, dtype=float)  # 20 samples: P(Bin(20, .5) <= 5) = 0.021 < 0.025
    assert median_interval(samples, 0.95) == (6.0, 14.0)
    assert median_interval(np.arange(1, 7, dtype=float), 0.95) == (1.0, 5.0)  # lo = 1 at n = 6
    assert median_interval(np.arange(1, 6, dtype=float), 0.95) is None  # 5 samples: too few
    assert median_interval(np.array([]), 0.95) is None


def test_the_speedup_interval_takes_the_mann_whitney_order_statistics() -> None:
    base = np.array([10.0, 10.5, 11.0, 11.5, 12.0])
    cand = np.array([5.0, 5.2, 5.6, 6.1, 6.3])
    diffs = np.sort((np.log(base)[:, None] - np.log(cand)[None, :]).ravel())
    estimate, low, high = ratio_interval(base, cand, 0.95)
    # k = floor(25/2 - 1.96 * sqrt(25 * 11 / 12)) = 3: the 3rd smallest and 3rd largest
    assert (low, high) == (math.exp(diffs[2]), math.exp(diffs[22]))
    assert estimate == pytest.approx(math.exp(np.median(diffs)))
    # 4 and 4: k = floor(8 - 1.96 * sqrt(12)) = 1, the extremes; 3 and 3 give no interval
    four = ratio_interval(base[:4], cand[:4], 0.95)
    d4 = np.sort((np.log(base[:4])[:, None] - np.log(cand[:4])[None, :]).ravel())
    assert four[1:] == (math.exp(d4[0]), math.exp(d4[-1]))
    assert ratio_interval(base[:3], cand[:3], 0.95)[1:] == (None, None)
    with pytest.raises(ValueError, match="at least one measurement of each"):
        ratio_interval(base, [], 0.95)
    with pytest.raises(ValueError, match="at least one measurement of each"):
        ratio_interval([], cand, 0.95)


def test_cosine_is_scale_free_and_quiet_on_zero_rows() -> None:
    assert mean_cosine(np.array([[3.0, 0.0]]), np.array([[1.0, 1.0]])) == pytest.approx(
        1 / math.sqrt(2)
    )
    assert mean_cosine(np.array([[3.0, 4.0]]), np.array([[-6.0, -8.0]])) == -1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mean_cosine(np.array([[0.0, 0.0], [1.0, 0.0]]), np.array([[1.0, 1.0]] * 2)) == (
            pytest.approx((0 + 1 / math.sqrt(2)) / 2)
        )
        assert mean_cosine(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0


def unit(degrees: float, norm: float = 1.0) -> list[float]:
    return [norm * math.cos(math.radians(degrees)), norm * math.sin(math.radians(degrees))]


def test_neighbours_are_by_cosine_excluding_the_row_itself() -> None:
    base = np.array([unit(0), unit(10), unit(90), unit(100)])
    # nearest by cosine: 0 <-> 10 and 90 <-> 100; the norms must not matter
    scaled = np.array([unit(0, 5), unit(10, 0.1), unit(90, 3), unit(100, 0.2)])
    assert neighbour_overlap(scaled, base, 1).tolist() == [1.0, 1.0, 1.0, 1.0]
    # a far row of large norm would be nearest by dot product; by cosine it is not
    angles = (0, 10, 60, 100)
    plain = np.array([unit(a) for a in angles])
    weighted = np.array([unit(a, n) for a, n in zip(angles, (1, 0.1, 10, 1), strict=True)])
    assert neighbour_overlap(weighted, plain, 1).tolist() == [1.0, 1.0, 1.0, 1.0]
    swapped = np.array([unit(0), unit(90), unit(10), unit(100)])
    assert neighbour_overlap(swapped, base, 1).tolist() == [0.0, 0.0, 0.0, 0.0]
    with pytest.raises(
        ValueError, match=r"embeddings of one shape needed, got \(3, 2\) and \(4, 2\)"
    ):
        neighbour_overlap(base[:3], base, 1)
    # k = 2: row 0's two nearest are rows 1 and 2 in both; row 1's are {0, 2} in base and
    # {2, 3} (10 and 100 degrees from 90) swapped
    assert neighbour_overlap(swapped, base, 2).tolist() == [1.0, 0.5, 0.5, 1.0]


def test_the_bootstrap_mean_bound_lies_below_the_mean() -> None:
    values = np.linspace(0, 1, 101)
    bound = bootstrap_mean_lower(values, 0.95)
    assert 0.45 < bound < 0.5
    assert bootstrap_mean_lower(np.ones(10), 0.95) == 1.0
