"""The boundary rules of README's "How goals are decided", goal by goal.

Every limit is inclusive: a value exactly at it passes, and so does a confidence bound exactly
at it; the next float beyond the limit decides the other way. A point estimate that misses is a
fail whatever its bound; one that meets while its bound does not is inconclusive. Drops are
counted in examples, so one example lost in a hundred is a drop of exactly 0.01.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from validation.goals import (
    AccuracyGoal,
    AgreementGoal,
    ChampionGoal,
    ErrorGoal,
    Evidence,
    FidelityGoal,
    Goal,
    Goals,
    LatencyGoal,
    NeighbourGoal,
    Outcome,
    PerClassGoal,
    SizeGoal,
    SpeedupGoal,
)

PASS, FAIL, INCONCLUSIVE = Outcome.PASS, Outcome.FAIL, Outcome.INCONCLUSIVE


def above(x: float) -> float:
    return math.nextafter(x, math.inf)


def below(x: float) -> float:
    return math.nextafter(x, -math.inf)


def classified(n: int, wrong: int, *, classes: int = 4, offset: int = 0) -> Evidence:
    """``n`` examples, the ``wrong`` ones from ``offset`` on predicted wrongly."""
    labels = np.arange(n) % classes
    preds = labels.copy()
    preds[offset : offset + wrong] = (labels[offset : offset + wrong] + 1) % classes
    return Evidence(labels=labels, predictions=preds)


def outcome(
    goal: Goal, candidate: Evidence, baseline: Evidence | None = None, **kw: Any
) -> Outcome:
    return goal.check(candidate, baseline or Evidence(), **kw).outcome


# --- latency: the order-statistic bound of a percentile, at most max_ms -----------------------

# 96 runs at 1 ms and 4 at 2 ms: p95 is 1 ms, its 95% upper bound (the 99th run) 2 ms
SPLIT_LATENCY = Evidence(latency_ms={1: np.array([1.0] * 96 + [2.0] * 4)})


def test_latency_at_its_limit_passes_and_its_bound_at_the_limit_passes() -> None:
    flat = Evidence(latency_ms={1: np.full(100, 2.0)})
    assert outcome(LatencyGoal(max_ms=2.0), flat) is PASS
    assert outcome(LatencyGoal(max_ms=below(2.0)), flat) is FAIL
    assert outcome(LatencyGoal(max_ms=2.0), SPLIT_LATENCY) is PASS
    assert outcome(LatencyGoal(max_ms=below(2.0)), SPLIT_LATENCY) is INCONCLUSIVE
    assert outcome(LatencyGoal(max_ms=1.0), SPLIT_LATENCY) is INCONCLUSIVE
    assert outcome(LatencyGoal(max_ms=below(1.0)), SPLIT_LATENCY) is FAIL


def test_latency_bound_is_the_order_statistic_the_binomial_names() -> None:
    result = LatencyGoal(max_ms=5.0).check(SPLIT_LATENCY, Evidence())
    assert (result.value, result.bound) == (1.0, 2.0)
    # the 97th of 100 runs is not yet a 95% bound of p95; the 99th is (P(Bin(100, .95) <= 98))
    runs = np.array([1.0] * 97 + [3.0] * 3)
    assert LatencyGoal(max_ms=5.0).check(Evidence(latency_ms={1: runs}), Evidence()).bound == 3.0


def test_latency_with_exactly_the_runs_the_bound_needs_is_decided() -> None:
    # p95 at 95%: the maximum of n runs is a bound once 1 - 0.95**n >= 0.95, n >= 59
    enough = Evidence(latency_ms={1: np.full(59, 1.0)})
    short = Evidence(latency_ms={1: np.full(58, 1.0)})
    assert outcome(LatencyGoal(max_ms=1.0), enough) is PASS
    result = LatencyGoal(max_ms=1.0).check(short, Evidence())
    assert result.outcome is INCONCLUSIVE
    assert "needs at least 59" in result.reason


# --- speedup: the lower end of the interleaved comparison's interval, at least min ------------


def compared(speedup: float, low: float | None, high: float | None) -> Evidence:
    return Evidence(
        comparisons={1: {"speedup": speedup, "interval": [low, high], "confidence": 0.95}}
    )


def test_speedup_at_its_minimum_passes_and_its_lower_end_at_the_minimum_passes() -> None:
    assert outcome(SpeedupGoal(min=1.5), compared(1.5, 1.5, 1.7)) is PASS
    assert outcome(SpeedupGoal(min=above(1.5)), compared(1.5, 1.5, 1.7)) is FAIL
    assert outcome(SpeedupGoal(min=1.5), compared(2.0, 1.5, 2.5)) is PASS
    assert outcome(SpeedupGoal(min=above(1.5)), compared(2.0, 1.5, 2.5)) is INCONCLUSIVE
    assert outcome(SpeedupGoal(min=2.0), compared(2.0, 1.5, 2.5)) is INCONCLUSIVE
    assert outcome(SpeedupGoal(min=above(2.0)), compared(2.0, 1.5, 2.5)) is FAIL


def test_speedup_without_an_interval_is_inconclusive_even_when_far_above() -> None:
    assert outcome(SpeedupGoal(min=1.1), compared(5.0, None, None)) is INCONCLUSIVE
    assert outcome(SpeedupGoal(min=1.1), compared(5.0, 4.0, None)) is INCONCLUSIVE
    assert outcome(SpeedupGoal(min=1.1), compared(5.0, None, 6.0)) is INCONCLUSIVE


def test_speedup_is_read_at_the_goal_batch() -> None:
    ev = Evidence(
        comparisons={
            1: {"speedup": 1.2, "interval": [1.1, 1.3], "confidence": 0.95},
            32: {"speedup": 3.0, "interval": [2.8, 3.2], "confidence": 0.95},
        }
    )
    assert outcome(SpeedupGoal(min=2.0), ev) is FAIL
    assert outcome(SpeedupGoal(min=2.0, batch=32), ev) is PASS
    assert outcome(SpeedupGoal(min=2.0, batch=8), ev) is FAIL


# --- size: at most max_mb (10**6 bytes) and/or max_ratio of the baseline ----------------------


def test_size_at_its_limits_passes() -> None:
    half_mb, base = Evidence(size_bytes=500_000), Evidence(size_bytes=2_000_000)
    assert outcome(SizeGoal(max_mb=0.5), half_mb) is PASS
    assert outcome(SizeGoal(max_mb=below(0.5)), half_mb) is FAIL
    assert outcome(SizeGoal(max_ratio=0.25), half_mb, base) is PASS
    assert outcome(SizeGoal(max_ratio=below(0.25)), half_mb, base) is FAIL
    assert outcome(SizeGoal(max_mb=0.5, max_ratio=below(0.25)), half_mb, base) is FAIL
    assert outcome(SizeGoal(max_mb=below(0.5), max_ratio=0.25), half_mb, base) is FAIL
    assert outcome(SizeGoal(max_mb=0.5, max_ratio=0.25), half_mb, base) is PASS


def test_size_reports_the_tightest_bound_when_both_pass() -> None:
    half_mb, base = Evidence(size_bytes=500_000), Evidence(size_bytes=2_000_000)
    loose_ratio = SizeGoal(max_mb=0.5, max_ratio=0.5).check(half_mb, base)
    assert (loose_ratio.metric, loose_ratio.value, loose_ratio.threshold) == ("size_mb", 0.5, 0.5)
    loose_mb = SizeGoal(max_mb=2.0, max_ratio=0.25).check(half_mb, base)
    assert (loose_mb.metric, loose_mb.value) == ("size_ratio", 0.25)
    missed_ratio = SizeGoal(max_mb=2.0, max_ratio=0.2).check(half_mb, base)
    assert (missed_ratio.metric, missed_ratio.outcome) == ("size_ratio", FAIL)
    assert "0.250 of the baseline > 0.2" in missed_ratio.reason


# --- accuracy, agreement: at least min; the drop at most max_drop -----------------------------


def test_accuracy_at_its_minimum_passes_on_the_point_estimate() -> None:
    ev = classified(100, 5)  # 0.95
    assert outcome(AccuracyGoal(min=0.95, confidence=None), ev) is PASS
    assert outcome(AccuracyGoal(min=above(0.95), confidence=None), ev) is FAIL


def test_accuracy_minimum_with_confidence_passes_only_when_the_exact_bound_reaches_it() -> None:
    ev = classified(1000, 20)  # 0.98, 95% lower bound 0.9711
    result = AccuracyGoal(min=0.97).check(ev, Evidence())
    assert result.outcome is PASS and result.bound is not None
    assert result.bound == pytest.approx(0.97107, abs=1e-5)
    assert outcome(AccuracyGoal(min=result.bound), ev) is PASS
    assert outcome(AccuracyGoal(min=above(result.bound)), ev) is INCONCLUSIVE
    assert outcome(AccuracyGoal(min=0.98), ev) is INCONCLUSIVE
    assert outcome(AccuracyGoal(min=above(0.98)), ev) is FAIL


def test_one_example_lost_in_a_hundred_is_a_drop_of_exactly_the_limit() -> None:
    base, cand = classified(100, 2), classified(100, 3)
    result = AccuracyGoal(max_drop=0.01, confidence=None).check(cand, base)
    assert (result.value, result.outcome) == (0.01, PASS)
    assert outcome(AccuracyGoal(max_drop=below(0.01), confidence=None), cand, base) is FAIL
    # a candidate better than the baseline has a negative drop and meets max_drop 0
    assert AccuracyGoal(max_drop=0, confidence=None).check(base, cand).value == -0.01


def test_the_drop_bound_at_the_limit_passes() -> None:
    base = classified(200, 10)
    cand = classified(200, 12)
    bounded = AccuracyGoal(max_drop=0.5).check(cand, base)
    assert bounded.bound is not None and bounded.value == 0.01 < bounded.bound
    assert outcome(AccuracyGoal(max_drop=bounded.bound), cand, base) is PASS
    assert outcome(AccuracyGoal(max_drop=below(bounded.bound)), cand, base) is INCONCLUSIVE
    assert outcome(AccuracyGoal(max_drop=0.01), cand, base) is INCONCLUSIVE
    assert outcome(AccuracyGoal(max_drop=below(0.01)), cand, base) is FAIL
    # identical per-example outcomes: the bound is 0, which meets max_drop 0
    assert outcome(AccuracyGoal(max_drop=0), base, base) is PASS


def test_a_relative_drop_is_a_share_of_the_baseline_accuracy() -> None:
    base = classified(100, 50)  # accuracy 0.5
    cand = classified(100, 75)  # 0.25: dropped by half of the baseline's accuracy
    result = AccuracyGoal(max_relative_drop=0.5, confidence=None).check(cand, base)
    assert (result.value, result.threshold, result.outcome) == (0.25, 0.25, PASS)
    assert "0.5 of the baseline's 0.5000" in result.reason
    assert outcome(AccuracyGoal(max_relative_drop=below(0.5), confidence=None), cand, base) is FAIL
    # decimal shares that binary floats cannot hold are exact too: 0.1 of 0.70 is 0.07
    for share, base_wrong, cand_wrong in ((0.1, 30, 37), (0.29, 0, 29), (0.07, 0, 7)):
        b, c = classified(100, base_wrong), classified(100, cand_wrong)
        assert outcome(AccuracyGoal(max_relative_drop=share, confidence=None), c, b) is PASS
        worse = classified(100, cand_wrong + 1)
        assert outcome(AccuracyGoal(max_relative_drop=share, confidence=None), worse, b) is FAIL
    # a baseline that is never right: any share of its accuracy is 0, which no drop exceeds
    never = classified(100, 100)
    assert outcome(AccuracyGoal(max_relative_drop=0.5), never, never) is PASS
    assert outcome(AccuracyGoal(max_relative_drop=0.5), never, Evidence()) is FAIL


def test_agreement_at_its_minimum_passes() -> None:
    base = classified(100, 0)
    cand = classified(100, 3)
    assert outcome(AgreementGoal(min=0.97, confidence=None), cand, base) is PASS
    assert outcome(AgreementGoal(min=above(0.97), confidence=None), cand, base) is FAIL
    bounded = AgreementGoal(min=0.5).check(cand, base)
    assert bounded.bound is not None and bounded.bound < 0.97
    assert outcome(AgreementGoal(min=bounded.bound), cand, base) is PASS
    assert outcome(AgreementGoal(min=above(bounded.bound)), cand, base) is INCONCLUSIVE


def test_per_class_drop_at_its_limit_passes_and_reports_the_worst_class() -> None:
    base = classified(80, 0)
    cand = classified(80, 1, offset=2)  # one of class 2's 20 examples: drop 0.05
    result = PerClassGoal(max_drop=0.05, confidence=None).check(cand, base)
    assert (result.value, result.outcome) == (0.05, PASS)
    assert "worst class 2 (20 examples)" in result.reason
    assert outcome(PerClassGoal(max_drop=below(0.05), confidence=None), cand, base) is FAIL
    bounded = PerClassGoal(max_drop=0.9).check(cand, base)
    assert bounded.bound is not None and bounded.bound > 0.05
    assert outcome(PerClassGoal(max_drop=bounded.bound), cand, base) is PASS
    assert outcome(PerClassGoal(max_drop=below(bounded.bound)), cand, base) is INCONCLUSIVE


def test_champion_drop_at_its_limit_passes() -> None:
    champion, cand = classified(100, 1), classified(100, 2)
    goal = ChampionGoal(max_accuracy_drop=0.01, confidence=None)
    assert goal.check(cand, Evidence(), champion).outcome is PASS
    tighter = ChampionGoal(max_accuracy_drop=below(0.01), confidence=None)
    assert tighter.check(cand, Evidence(), champion).outcome is FAIL


# --- fidelity, error, neighbours ---------------------------------------------------------------


def test_fidelity_at_its_limits_passes() -> None:
    base = Evidence(logits=np.array([[1.0, 0.0], [0.0, 2.0]]))
    cand = Evidence(logits=np.array([[1.0, 0.0], [0.0, 2.5]]))
    assert outcome(FidelityGoal(min_cosine=1.0), cand, base) is PASS
    assert outcome(FidelityGoal(max_abs_error=0.5), cand, base) is PASS
    assert outcome(FidelityGoal(max_abs_error=below(0.5)), cand, base) is FAIL
    turned = Evidence(logits=np.array([[1.0, 1.0], [0.0, 2.0]]))  # cosine 1/sqrt(2) on row 1
    cosine = FidelityGoal(min_cosine=0.5).check(turned, base).value
    assert cosine is not None and cosine == pytest.approx((1 / math.sqrt(2) + 1) / 2)
    assert outcome(FidelityGoal(min_cosine=cosine), turned, base) is PASS
    assert outcome(FidelityGoal(min_cosine=above(cosine)), turned, base) is FAIL
    both = FidelityGoal(min_cosine=0.5, max_abs_error=below(1.0)).check(turned, base)
    assert (both.metric, both.outcome) == ("max_abs_error", FAIL)


def regression(target: list[float], pred: list[float]) -> Evidence:
    return Evidence(labels=np.array(target), predictions=np.array(pred))


def test_error_at_its_limits_passes() -> None:
    target = [0.0, 0.0, 0.0, 0.0]
    base, cand = regression(target, [0.25] * 4), regression(target, [0.5] * 4)
    assert outcome(ErrorGoal(max=0.5, confidence=None), cand, base) is PASS
    assert outcome(ErrorGoal(max=below(0.5), confidence=None), cand, base) is FAIL
    assert outcome(ErrorGoal(max_increase=0.25, confidence=None), cand, base) is PASS
    assert outcome(ErrorGoal(max_increase=below(0.25), confidence=None), cand, base) is FAIL
    assert outcome(ErrorGoal(max_relative_increase=1.0, confidence=None), cand, base) is PASS
    assert outcome(ErrorGoal(max_relative_increase=below(1.0), confidence=None), cand, base) is FAIL
    rmse = ErrorGoal(metric="rmse", max=0.5, confidence=None).check(
        regression(target, [0.5, -0.5, 0.5, -0.5]), base
    )
    assert (rmse.value, rmse.outcome) == (0.5, PASS)


def test_neighbours_at_their_minimum_pass() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(30, 8))
    same = Evidence(logits=emb)
    assert outcome(NeighbourGoal(min=1.0, k=5, confidence=None), same, same) is PASS
    assert outcome(NeighbourGoal(min=1.0, k=5), same, same) is PASS
    moved = Evidence(logits=emb + rng.normal(scale=0.7, size=emb.shape))
    kept = NeighbourGoal(min=0.1, k=5, confidence=None).check(moved, same)
    assert kept.value is not None and 0 < kept.value < 1
    assert outcome(NeighbourGoal(min=kept.value, k=5, confidence=None), moved, same) is PASS
    assert outcome(NeighbourGoal(min=above(kept.value), k=5, confidence=None), moved, same) is FAIL
    # k neighbours need more than k rows
    assert outcome(NeighbourGoal(min=0.1, k=30), same, same) is FAIL
    assert outcome(NeighbourGoal(min=0.1, k=29), same, same) is PASS


# --- combining --------------------------------------------------------------------------------


def test_a_goal_of_several_bounds_is_its_worst() -> None:
    base, cand = classified(100, 0), classified(100, 3)
    # min met on the point, drop bound meets 0.5, min bound does not reach 0.97: inconclusive
    assert outcome(AccuracyGoal(min=0.97, max_drop=0.5), cand, base) is INCONCLUSIVE
    assert outcome(AccuracyGoal(min=0.97, max_drop=0.01), cand, base) is FAIL
    assert outcome(AccuracyGoal(min=0.9, max_drop=0.5), cand, base) is PASS


def test_the_verdict_of_a_candidate_is_its_worst_goal() -> None:
    from components.gate import _worst

    goals = Goals.model_validate(
        {"size": {"max_mb": 1}, "accuracy": {"min": 0.97}, "agreement": {"min": 0.5}}
    )
    base = classified(100, 0)
    small = Evidence(size_bytes=10, labels=base.labels, predictions=classified(100, 3).predictions)
    assert [r.outcome for r in goals.check(small, base)] == [PASS, INCONCLUSIVE, PASS]
    assert _worst(goals.check(small, base)) is INCONCLUSIVE
    big = Evidence(size_bytes=2_000_000, labels=base.labels, predictions=small.predictions)
    assert _worst(goals.check(big, base)) is FAIL
    fine = Evidence(size_bytes=10, labels=base.labels, predictions=base.labels)
    assert _worst(goals.check(fine, base)) is PASS  # 100/100: lower bound 0.05**(1/100) = 0.9705
    stricter = goals.model_copy(update={"accuracy": AccuracyGoal(min=0.98)})
    assert _worst(stricter.check(fine, base)) is INCONCLUSIVE
    assert _worst(Goals.model_validate({"size": {"max_mb": 1}}).check(fine, base)) is PASS


# --- what each decision says ----------------------------------------------------------------

FEW_WRONG, BASE = classified(200, 12), classified(200, 10)
TURNED = Evidence(logits=np.array([[1.0, 1.0], [0.0, 2.0]]))
STRAIGHT = Evidence(logits=np.array([[1.0, 0.0], [0.0, 2.0]]))
ZERO = [0.0] * 8


@pytest.mark.parametrize(
    ("goal", "candidate", "baseline", "expected"),
    [
        (AccuracyGoal(min=0.9), classified(1000, 20), None,
         "pass: accuracy 0.9800 on 1000 examples, lower bound 0.9711 >= 0.9"),
        (AccuracyGoal(min=0.975), classified(1000, 20), None,
         "inconclusive: accuracy 0.9800 on 1000 examples, lower bound 0.9711, bound below 0.975; "
         "about 3190 examples would decide it"),
        (AccuracyGoal(min=0.99), classified(1000, 20), None,
         "fail: accuracy 0.9800 on 1000 examples, lower bound 0.9711 < 0.99"),
        (AccuracyGoal(min=0.99, confidence=None), classified(1000, 20), None,
         "fail: accuracy 0.9800 on 1000 examples < 0.99"),
        (AccuracyGoal(max_drop=0.05), FEW_WRONG, BASE,
         "pass: drop +0.0100 on 200 examples, upper bound +0.0250 <= 0.05"),
        (AccuracyGoal(max_drop=0.02), FEW_WRONG, BASE,
         "inconclusive: drop +0.0100 on 200 examples, upper bound +0.0250, bound above 0.02; "
         "about 450 examples would decide it"),
        (AccuracyGoal(max_drop=0.005), FEW_WRONG, BASE,
         "fail: drop +0.0100 on 200 examples, upper bound +0.0250 > 0.005"),
        (AccuracyGoal(max_drop=0.005, confidence=None), FEW_WRONG, BASE,
         "fail: drop +0.0100 on 200 examples > 0.005"),
        (AccuracyGoal(max_relative_drop=0.05), FEW_WRONG, BASE,
         "pass: drop +0.0100 on 200 examples, upper bound +0.0250 <= 0.0475 "
         "(0.05 of the baseline's 0.9500)"),
        (AgreementGoal(min=0.9), classified(200, 3), classified(200, 0),
         "pass: 197/200 predictions agree (0.9850), lower bound 0.9617 >= 0.9"),
        (AgreementGoal(min=0.98), classified(200, 3), classified(200, 0),
         "inconclusive: 197/200 predictions agree (0.9850), lower bound 0.9617, bound below 0.98; "
         "about 4347 examples would decide it"),
        (AgreementGoal(min=0.99, confidence=None), classified(200, 3), classified(200, 0),
         "fail: 197/200 predictions agree (0.9850) < 0.99"),
        (PerClassGoal(max_drop=0.5), classified(80, 1, offset=2), classified(80, 0),
         "pass: worst class 2 (20 examples): drop +0.0500, upper bound +0.1500 <= 0.5"),
        (PerClassGoal(max_drop=0.1), classified(80, 1, offset=2), classified(80, 0),
         "inconclusive: worst class 2 (20 examples): drop +0.0500, upper bound +0.1500, "
         "bound above 0.1"),
        (PerClassGoal(max_drop=0.01, confidence=None), classified(80, 1, offset=2),
         classified(80, 0), "fail: worst class 2 (20 examples): drop +0.0500 > 0.01"),
        (LatencyGoal(max_ms=2.0), SPLIT_LATENCY, None,
         "pass: p95 1.000 ms, upper bound 2.000 ms <= 2 ms"),
        (LatencyGoal(max_ms=1.5), SPLIT_LATENCY, None,
         "inconclusive: p95 1.000 ms meets 1.5 ms but its upper bound 2.000 ms does not"),
        (LatencyGoal(max_ms=0.5), SPLIT_LATENCY, None, "fail: p95 1.000 ms > 0.5 ms"),
        (SpeedupGoal(min=1.5), compared(2.0, 1.6, 2.4), None,
         "pass: 2.00x, 95% interval [1.60, 2.40] >= 1.5x"),
        (SpeedupGoal(min=1.8), compared(2.0, 1.6, 2.4), None,
         "inconclusive: 2.00x meets 1.8x but its 95% interval [1.60, 2.40] reaches below it: "
         "too noisy to decide"),
        (SpeedupGoal(min=2.5), compared(2.0, 1.6, 2.4), None,
         "fail: 2.00x < 2.5x (95% interval [1.60, 2.40])"),
        (SpeedupGoal(min=2.5), compared(2.0, None, None), None,
         "inconclusive: 2.00x, but too few rounds for a 95% interval"),
        (SizeGoal(max_mb=1), Evidence(size_bytes=500_000), None, "pass: 0.500 MB <= 1 MB"),
        (SizeGoal(max_mb=0.1), Evidence(size_bytes=500_000), None, "fail: 0.500 MB > 0.1 MB"),
        (SizeGoal(max_ratio=0.1), Evidence(size_bytes=500_000), Evidence(size_bytes=10**6),
         "fail: 0.500 of the baseline > 0.1"),
        (FidelityGoal(min_cosine=0.5, max_abs_error=1.0), TURNED, STRAIGHT,
         "pass: mean cosine similarity 0.853553 >= 0.5"),
        (FidelityGoal(min_cosine=0.99), TURNED, STRAIGHT,
         "fail: mean cosine similarity 0.853553 < 0.99"),
        (FidelityGoal(max_abs_error=0.5), TURNED, STRAIGHT,
         "fail: largest output difference 1 > 0.5"),
        (FidelityGoal(max_abs_error=1.0), TURNED, STRAIGHT,
         "pass: largest output difference 1 <= 1"),
        (ErrorGoal(max=1.0, max_increase=0.5), regression(ZERO, [0.5, -0.5] * 4),
         regression(ZERO, [0.25] * 8), "pass: mae 0.5, upper bound 0.5 <= 1"),
        (ErrorGoal(max_relative_increase=0.5, confidence=None), regression(ZERO, [0.5, -0.5] * 4),
         regression(ZERO, [0.25] * 8),
         "fail: mae increase +0.25 > 0.125 (0.5 of the baseline's 0.25)"),
        (ErrorGoal(max_increase=0.5), regression(ZERO, [0.5, -0.5] * 4),
         regression(ZERO, [0.25] * 8), "pass: mae increase +0.25, upper bound +0.25 <= 0.5"),
        (ErrorGoal(metric="rmse", max=0.1, confidence=None), regression(ZERO, [0.5, -0.5] * 4),
         regression(ZERO, [0.25] * 8), "fail: rmse 0.5 > 0.1"),
        (ChampionGoal(first_release="pass"), classified(10, 0), None,
         "pass: no model is behind production yet: first release allowed "
         "(goals.champion.first_release: pass)"),
        (ChampionGoal(), classified(10, 0), None,
         "fail: no model is behind production yet: set goals.champion.first_release: pass to "
         "allow the first release"),
    ],
)  # fmt: skip
def test_each_decision_says_what_was_measured_and_against_what(
    goal: Goal, candidate: Evidence, baseline: Evidence | None, expected: str
) -> None:
    result = goal.check(candidate, baseline or Evidence(), None)
    assert f"{result.outcome.value}: {result.reason}" == expected


def test_a_champion_decision_says_it_is_measured_from_production() -> None:
    result = ChampionGoal(max_accuracy_drop=0.05).check(FEW_WRONG, Evidence(), BASE)
    assert result.reason == (
        "drop from production +0.0100 on 200 examples, upper bound +0.0250 <= 0.05"
    )
    assert (result.goal, result.metric) == ("champion", "accuracy_drop_vs_production")


# --- which bound a verdict reports -----------------------------------------------------------


def test_size_reports_the_first_bound_missed() -> None:
    half_mb, base = Evidence(size_bytes=500_000), Evidence(size_bytes=2_000_000)
    # both missed, the ratio by far more: the first missed (size_mb) is the one named
    both = SizeGoal(max_mb=0.25, max_ratio=0.05).check(half_mb, base)
    assert (both.metric, both.threshold, both.outcome) == ("size_mb", 0.25, FAIL)


def test_the_worst_class_is_the_one_with_the_highest_bound_not_the_highest_drop() -> None:
    """Class 0: 200 examples, 12 lost (drop 0.06, a tight bound); class 1: 20 examples, 1 lost
    (drop 0.05, a loose bound). The goal is decided on the class whose bound is worst."""
    labels = np.array([0] * 200 + [1] * 20)
    base = Evidence(labels=labels, predictions=labels)
    preds = labels.copy()
    preds[:12] = 1
    preds[200] = 0
    cand = Evidence(labels=labels, predictions=preds)
    result = PerClassGoal(max_drop=0.1).check(cand, base)
    assert result.reason.startswith("worst class 1 (20 examples): drop +0.0500")
    assert result.outcome is INCONCLUSIVE  # class 0 alone would pass: drop 0.06, bound < 0.1
    point = PerClassGoal(max_drop=0.1, confidence=None).check(cand, base)
    assert point.reason.startswith("worst class 0 (200 examples): drop +0.0600")


def test_a_missing_result_names_the_limit_it_could_not_check() -> None:
    nothing = Evidence()
    assert FidelityGoal(min_cosine=0.9).check(nothing, nothing).threshold == 0.9
    assert FidelityGoal(max_abs_error=0.3).check(nothing, nothing).threshold == 0.3
    assert FidelityGoal(min_cosine=0.9, max_abs_error=0.3).check(nothing, nothing).threshold == 0.9
    assert ErrorGoal(max=2.0).check(nothing, nothing).threshold == 2.0
    assert ErrorGoal(max_increase=0.5).check(nothing, nothing).threshold == 0.0


def test_an_absolute_error_bound_needs_no_baseline() -> None:
    cand = regression([0.0] * 4, [0.5] * 4)
    assert outcome(ErrorGoal(max=1.0, confidence=None), cand, Evidence()) is PASS
    assert outcome(ErrorGoal(max=1.0, max_increase=1.0, confidence=None), cand, Evidence()) is FAIL
    assert outcome(ErrorGoal(max_relative_increase=1.0), cand, Evidence()) is FAIL


def test_neighbour_reasons() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(30, 8))
    same = Evidence(logits=emb)
    moved = Evidence(logits=emb + rng.normal(scale=0.7, size=emb.shape))
    kept = NeighbourGoal(min=0.1, k=5).check(moved, same)
    assert kept.bound is not None and kept.value is not None and kept.bound < kept.value
    assert kept.reason == (
        f"{kept.value:.4f} of 5 nearest neighbours kept on 30 rows, lower bound {kept.bound:.4f}"
        " >= 0.1"
    )
    missed = NeighbourGoal(min=0.99, k=5).check(moved, same)
    assert missed.reason.endswith(f", lower bound {kept.bound:.4f} < 0.99")
    between = NeighbourGoal(min=kept.value, k=5).check(moved, same)
    assert between.outcome is INCONCLUSIVE and between.reason.endswith(
        f"bound below {kept.value:g}"
    )
    assert NeighbourGoal(min=0.1, k=5, confidence=None).check(moved, same).bound is None


def test_rows_needed_lists_each_bounded_minimum() -> None:
    goals = Goals.model_validate(
        {"accuracy": {"max_drop": 0.01}, "agreement": {"min": 0.97}, "size": {"max_mb": 1}}
    )
    assert goals.rows_needed() == [("goals.agreement.min 0.97 at confidence 0.95", 99)]
    both = Goals.model_validate({"accuracy": {"min": 0.9, "confidence": 0.99},
                                 "agreement": {"min": 0.97, "confidence": None}})  # fmt: skip
    assert both.rows_needed() == [("goals.accuracy.min 0.9 at confidence 0.99", 44)]
    assert Goals.model_validate({"size": {"max_mb": 1}}).rows_needed() == []
