"""Each confidence bound the gate decides on covers the true value at its nominal rate.

Seeded simulations: many synthetic draws from a population whose true value is known, the
bound computed on each, and the share of draws where it lies on the right side of the truth.
The exact bounds (Clopper-Pearson, the order statistic of a percentile) must reach their
nominal rate; the bootstrap and Mann-Whitney ones are asymptotic, so they get the Monte-Carlo
tolerance of the simulation (three standard errors) and no more. The decision then flips from
inconclusive to pass as the evidence grows, at about the sample size the reason names.
"""

from __future__ import annotations

import numpy as np
import pytest

from validation.goals import AccuracyGoal, AgreementGoal, Evidence, Outcome, PerClassGoal
from validation.stats import (
    clopper_pearson_lower,
    examples_needed,
    paired_bootstrap_upper,
    percentile_upper_bound,
    ratio_interval,
)

DRAWS = 400
CONFIDENCE = 0.95


def tolerance(rate: float, draws: int) -> float:
    """Three Monte-Carlo standard errors of a coverage rate estimated from ``draws``."""
    return 3 * float(np.sqrt(rate * (1 - rate) / draws))


@pytest.mark.parametrize("n", [20, 40, 150, 400])
def test_the_exact_accuracy_bound_lies_below_the_true_accuracy_at_its_confidence(n: int) -> None:
    """Computed exactly, not simulated: the probability that the bound of k successes in n lies
    at or below p, summed over k, for true accuracies p across (0, 1)."""
    from scipy.stats import binom

    bounds = np.array([clopper_pearson_lower(k, n, CONFIDENCE) for k in range(n + 1)])
    coverage = []
    for p in np.linspace(0.01, 0.99, 99):
        coverage.append(float(binom.pmf(np.arange(n + 1), n, p)[bounds <= p].sum()))
    assert min(coverage) >= CONFIDENCE - 1e-9  # never below nominal, whatever p
    assert min(coverage) < 0.99  # and a bound, not a constant: it gets close to nominal


@pytest.mark.parametrize(("percentile", "n"), [(50, 30), (90, 100), (95, 200), (99, 700)])
def test_the_order_statistic_bounds_the_true_latency_percentile_at_its_confidence(
    percentile: float, n: int
) -> None:
    rng = np.random.default_rng(2)
    mu, sigma = np.log(2.0), 0.3
    from scipy.stats import lognorm

    truth = float(lognorm.ppf(percentile / 100, s=sigma, scale=np.exp(mu)))
    samples = rng.lognormal(mu, sigma, size=(DRAWS, n))
    bounds = [percentile_upper_bound(row, percentile, CONFIDENCE) for row in samples]
    assert all(b is not None for b in bounds)
    covered = np.mean([b >= truth for b in bounds if b is not None])
    assert covered >= CONFIDENCE - tolerance(CONFIDENCE, DRAWS)
    assert covered < 1.0


def paired_outcomes(
    rng: np.random.Generator, n: int, accuracy: float, lost: float, gained: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-example correctness of a baseline and a candidate that loses ``lost`` of the
    examples the baseline gets right and gains ``gained``: the true drop is known."""
    base = rng.random(n) < accuracy
    flip = rng.random(n)
    cand = np.where(base, flip >= lost / accuracy, flip < gained / (1 - accuracy))
    return base, cand


@pytest.mark.parametrize(("n", "lost", "gained"), [(200, 0.03, 0.01), (500, 0.02, 0.02)])
def test_the_paired_bootstrap_bounds_the_true_accuracy_drop_at_its_confidence(
    n: int, lost: float, gained: float
) -> None:
    rng = np.random.default_rng(3)
    truth = lost - gained
    covered = []
    for i in range(DRAWS):
        base, cand = paired_outcomes(rng, n, 0.9, lost, gained)
        bound = paired_bootstrap_upper(base, cand, CONFIDENCE, resamples=1000, seed=i)
        covered.append(bound >= truth)
    rate = float(np.mean(covered))
    assert rate >= CONFIDENCE - tolerance(CONFIDENCE, DRAWS)
    assert rate < 1.0


def test_the_per_class_bound_covers_the_true_drop_of_the_class_that_collapses() -> None:
    """Three classes; the candidate loses 12% of class 2 and nothing elsewhere. The per-class
    goal's bound on the worst class covers that class's true drop."""
    rng = np.random.default_rng(4)
    covered = []
    for _ in range(DRAWS // 2):
        labels = rng.integers(0, 3, size=300)
        base = rng.random(300) < 0.95
        cand = base & ~((labels == 2) & (rng.random(300) < 0.12 / 0.95))
        goal = PerClassGoal(max_drop=0.5, confidence=CONFIDENCE)
        result = goal.check(
            Evidence(labels=labels, predictions=np.where(cand, labels, -1)),
            Evidence(labels=labels, predictions=np.where(base, labels, -1)),
        )
        assert result.bound is not None
        covered.append(result.bound >= 0.12)
    rate = float(np.mean(covered))
    assert rate >= CONFIDENCE - tolerance(CONFIDENCE, DRAWS // 2)


@pytest.mark.parametrize(("ratio", "processes"), [(1.0, 5), (1.6, 5), (2.5, 8)])
def test_the_speedup_interval_covers_the_true_ratio_of_log_normal_timings(
    ratio: float, processes: int
) -> None:
    """Each process's median of a log-normal timing, the candidate ``ratio`` times faster: the
    Mann-Whitney interval holds the true ratio at its confidence, and its lower end (the one
    the speedup goal is decided on) lies below it at least as often."""
    rng = np.random.default_rng(5)
    inside, below = [], []
    for _ in range(DRAWS):
        base = rng.lognormal(np.log(10.0), 0.08, size=processes)
        cand = rng.lognormal(np.log(10.0 / ratio), 0.08, size=processes)
        estimate, low, high = ratio_interval(base, cand, CONFIDENCE)
        assert low is not None and high is not None
        assert low <= estimate <= high
        inside.append(low <= ratio <= high)
        below.append(low <= ratio)
    assert np.mean(inside) >= CONFIDENCE - tolerance(CONFIDENCE, DRAWS)
    # the lower end alone errs on one side only: half of the two-sided miss rate
    one_sided = 1 - (1 - CONFIDENCE) / 2
    assert np.mean(below) >= one_sided - tolerance(one_sided, DRAWS)


def test_the_speedup_interval_needs_enough_processes_and_narrows_with_more() -> None:
    rng = np.random.default_rng(6)
    widths = []
    for processes in (3, 5, 10, 20):
        base = rng.lognormal(np.log(10.0), 0.05, size=processes)
        cand = rng.lognormal(np.log(5.0), 0.05, size=processes)
        _, low, high = ratio_interval(base, cand, CONFIDENCE)
        if processes == 3:  # 9 pairs cannot give a 95% Mann-Whitney interval
            assert low is None and high is None
            continue
        assert low is not None and high is not None
        widths.append(np.log(high / low))
    assert widths == sorted(widths, reverse=True)


@pytest.mark.parametrize(
    ("goal", "accuracy"),
    [
        (AccuracyGoal(min=0.95), 0.975),
        (AgreementGoal(min=0.97), 0.99),
    ],
)
def test_the_decision_flips_from_inconclusive_to_pass_as_the_test_split_grows(
    goal: AccuracyGoal | AgreementGoal, accuracy: float
) -> None:
    """A model whose true rate meets the limit: on a small split the exact bound cannot show
    it (inconclusive); on larger splits it passes, and stays passing; it never fails. (That the
    estimate of the examples needed names such a split is the next test.)"""
    rng = np.random.default_rng(7)
    outcomes = []
    for n in (40, 200, 1000, 5000, 20000):
        labels = rng.integers(0, 10, size=n)
        right = rng.random(n) < accuracy
        preds = np.where(right, labels, (labels + 1) % 10)
        base = Evidence(labels=labels, predictions=labels)
        result = goal.check(Evidence(labels=labels, predictions=preds), base)
        outcomes.append(result.outcome)
    assert Outcome.FAIL not in outcomes
    assert outcomes[0] is Outcome.INCONCLUSIVE
    assert outcomes[-1] is Outcome.PASS
    flipped = outcomes.index(Outcome.PASS)
    assert all(o is Outcome.PASS for o in outcomes[flipped:])


@pytest.mark.parametrize(("n", "k", "limit"), [(100, 97, 0.95), (400, 386, 0.95), (60, 57, 0.9)])
def test_the_examples_estimate_names_a_split_on_which_the_same_rate_passes(
    n: int, k: int, limit: float
) -> None:
    """The "about N examples would decide it" of an inconclusive accuracy: at that many
    examples with the same accuracy the exact bound meets the limit; at half of them it
    does not yet."""
    point = k / n
    bound = clopper_pearson_lower(k, n, CONFIDENCE)
    assert bound < limit <= point
    need = examples_needed(n, point, bound, limit)
    assert need is not None and need > n

    def bound_at(m: int) -> float:
        return clopper_pearson_lower(round(point * m), m, CONFIDENCE)

    assert bound_at(int(need * 1.15)) >= limit
    assert bound_at(need // 2) < limit


def test_the_examples_estimate_is_none_when_no_amount_of_data_would_help() -> None:
    # the point estimate itself misses the limit: more of the same data only confirms it
    assert examples_needed(100, 0.93, 0.90, 0.95) is None
    # for a drop, an upper limit: point 0.02 above a limit 0.01
    assert examples_needed(100, 0.02, 0.04, 0.01) is None
    # the point is at the limit: the bound can only approach it
    assert examples_needed(100, 0.95, 0.92, 0.95) is None
    # an upper bound: the bound twice as far from the point as the limit is needs 4x the data
    assert examples_needed(200, 0.25, 0.75, 0.5) == 800
    # a lower bound: the same, mirrored
    assert examples_needed(200, 0.75, 0.25, 0.5) == 800
