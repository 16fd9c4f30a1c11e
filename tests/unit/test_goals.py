from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from validation.goals import (
    AccuracyGoal,
    AgreementGoal,
    ChampionGoal,
    Evidence,
    FidelityGoal,
    Goals,
    LatencyGoal,
    Outcome,
    PerClassGoal,
    SizeGoal,
    SpeedupGoal,
)
from validation.stats import (
    clopper_pearson_lower,
    paired_bootstrap_upper,
    percentile_upper_bound,
    runs_needed_for_percentile_bound,
)

EMPTY = Evidence()


def model(
    size: int | None = None,
    labels: list[int] | None = None,
    preds: list[int] | None = None,
    latency: dict[int, list[float]] | None = None,
) -> Evidence:
    return Evidence(
        size_bytes=size,
        labels=None if labels is None else np.asarray(labels),
        predictions=None if preds is None else np.asarray(preds),
        latency_ms={b: np.asarray(v) for b, v in (latency or {}).items()},
    )


# --- statistics --------------------------------------------------------------------------------


def test_percentile_bound_is_an_order_statistic_at_or_above_the_percentile() -> None:
    samples = np.arange(1, 1001, dtype=float)  # 1..1000
    bound = percentile_upper_bound(samples, 90, 0.95)
    assert bound is not None
    assert np.percentile(samples, 90) < bound < 930
    assert bound in samples


def test_percentile_bound_needs_enough_samples() -> None:
    # MLPerf: p90 needs 64 queries for a 99% bound (the maximum bounds it: 1 - 0.9**n >= 0.99)
    assert runs_needed_for_percentile_bound(90, 0.99) == 44
    assert percentile_upper_bound(np.ones(43), 90, 0.99) is None
    assert percentile_upper_bound(np.ones(44), 90, 0.99) == 1.0


def test_percentile_bound_covers_the_true_percentile_at_its_confidence() -> None:
    rng = np.random.default_rng(0)
    true_p95 = float(np.quantile(rng.lognormal(0, 0.5, 2_000_000), 0.95))
    covered = [
        percentile_upper_bound(rng.lognormal(0, 0.5, 200), 95, 0.9) >= true_p95  # type: ignore[operator]
        for _ in range(500)
    ]
    assert 0.87 <= np.mean(covered) <= 0.97


def test_paired_bootstrap_bound_of_identical_models_is_zero() -> None:
    correct = np.array([1, 1, 0, 1] * 50, dtype=bool)
    assert paired_bootstrap_upper(correct, correct, 0.95) == 0.0


def test_paired_bootstrap_bound_lies_above_the_point_drop() -> None:
    rng = np.random.default_rng(1)
    base = rng.random(400) < 0.95
    cand = base.copy()
    cand[:8] = False  # up to 8 more errors
    point = base.mean() - cand.mean()
    bound = paired_bootstrap_upper(base, cand, 0.95)
    assert point < bound < point + 0.02


def test_clopper_pearson_lower_bound() -> None:
    assert clopper_pearson_lower(360, 360, 0.95) == pytest.approx(0.05 ** (1 / 360))
    assert clopper_pearson_lower(0, 10, 0.95) == 0.0
    assert clopper_pearson_lower(90, 100, 0.95) < 0.9


# --- goals -------------------------------------------------------------------------------------


def test_latency_passes_only_when_the_upper_bound_meets_it() -> None:
    fast = model(latency={1: list(np.linspace(0.4, 0.6, 500))})
    goal = LatencyGoal(percentile=95, batch=1, max_ms=0.7)
    result = goal.check(fast, EMPTY)
    assert result.outcome is Outcome.PASS
    assert result.bound is not None and result.value is not None and result.bound >= result.value
    assert LatencyGoal(percentile=95, max_ms=0.5).check(fast, EMPTY).outcome is Outcome.FAIL


def test_latency_with_the_point_met_but_not_the_bound_is_inconclusive() -> None:
    samples = [0.5] * 90 + [1.0] * 10  # p90 = 0.5 ms, but few samples above it
    result = LatencyGoal(percentile=90, max_ms=0.6, confidence=0.99).check(
        model(latency={1: samples}), EMPTY
    )
    assert result.outcome is Outcome.INCONCLUSIVE
    assert "upper bound 1.000 ms does not" in result.reason


def test_latency_with_too_few_runs_is_inconclusive_and_says_how_many() -> None:
    result = LatencyGoal(percentile=99, max_ms=1).check(model(latency={1: [0.1] * 20}), EMPTY)
    assert result.outcome is Outcome.INCONCLUSIVE
    assert "needs at least 299" in result.reason


def test_missing_metrics_fail_closed() -> None:
    goals = Goals(
        latency=LatencyGoal(max_ms=1),
        speedup=SpeedupGoal(min=1.5),
        size=SizeGoal(max_mb=1, max_ratio=0.5),
        accuracy=AccuracyGoal(min=0.9, max_drop=0.01),
        agreement=AgreementGoal(min=0.9),
    )
    results = goals.check(EMPTY, EMPTY)
    assert [r.outcome for r in results] == [Outcome.FAIL] * 5
    assert all("not measured" in r.reason for r in results)


def test_relative_goals_fail_without_a_baseline() -> None:
    cand = model(size=10, labels=[0, 1], preds=[0, 1], latency={1: [0.1] * 100})
    assert SizeGoal(max_ratio=1).check(cand, EMPTY).outcome is Outcome.FAIL
    assert AccuracyGoal(max_drop=0.1).check(cand, EMPTY).outcome is Outcome.FAIL
    assert AgreementGoal(min=0.5).check(cand, EMPTY).outcome is Outcome.FAIL


def compared(speedup: float, low: float | None, high: float | None, batch: int = 1) -> Evidence:
    comp = {"speedup": speedup, "interval": [low, high], "confidence": 0.95}
    return Evidence(comparisons={batch: comp})


def test_speedup_is_decided_on_the_comparison_interval() -> None:
    ok = SpeedupGoal(min=1.5).check(compared(2.0, 1.8, 2.2), EMPTY)
    assert ok.value == 2.0 and ok.bound == 1.8 and ok.outcome is Outcome.PASS
    slower = SpeedupGoal(min=1.0).check(compared(0.5, 0.45, 0.55), EMPTY)
    assert slower.outcome is Outcome.FAIL and "0.50x < 1x" in slower.reason
    noisy = SpeedupGoal(min=1.2).check(compared(1.3, 0.9, 1.6), EMPTY)
    assert noisy.outcome is Outcome.INCONCLUSIVE and "too noisy to decide" in noisy.reason
    undecided = SpeedupGoal(min=1.2).check(compared(1.5, None, None), EMPTY)
    assert undecided.outcome is Outcome.INCONCLUSIVE and "too few rounds" in undecided.reason


def test_speedup_without_an_interleaved_comparison_fails_closed() -> None:
    # medians taken one after the other are not evidence enough for a speedup
    cand = model(latency={1: [0.5] * 100})
    result = SpeedupGoal(min=1.5).check(cand, model(latency={1: [1.0] * 100}))
    assert result.outcome is Outcome.FAIL and "interleaved comparison" in result.reason
    assert (
        SpeedupGoal(min=1.5, batch=32).check(compared(2.0, 1.9, 2.1, batch=1), EMPTY).outcome
        is Outcome.FAIL
    )


def test_size_reports_the_bound_that_binds() -> None:
    base = model(size=4_000_000)
    ok = SizeGoal(max_mb=2, max_ratio=0.5).check(model(size=1_000_000), base)
    assert ok.outcome is Outcome.PASS
    too_big = SizeGoal(max_mb=2, max_ratio=0.1).check(model(size=1_000_000), base)
    assert too_big.outcome is Outcome.FAIL and too_big.metric == "size_ratio"


def test_accuracy_drop_on_a_tiny_split_is_inconclusive() -> None:
    # 40 examples, the candidate gets 1 more wrong: a point drop of 0.025 < 0.03, but 40
    # examples cannot bound it below 0.03 at 95%.
    labels = [0, 1] * 20
    base = model(labels=labels, preds=labels)
    worse = list(labels)
    worse[0] = 1
    result = AccuracyGoal(max_drop=0.03).check(model(labels=labels, preds=worse), base)
    assert result.value == pytest.approx(0.025)
    assert result.outcome is Outcome.INCONCLUSIVE
    assert "examples would decide it" in result.reason
    # On point estimates alone it would pass: the confidence is what blocks it.
    point = AccuracyGoal(max_drop=0.03, confidence=None).check(
        model(labels=labels, preds=worse), base
    )
    assert point.outcome is Outcome.PASS


def test_accuracy_drop_beyond_the_bound_fails() -> None:
    labels = [0, 1] * 100
    wrong = [1 - v for v in labels[:20]] + labels[20:]
    result = AccuracyGoal(max_drop=0.05).check(
        model(labels=labels, preds=wrong), model(labels=labels, preds=labels)
    )
    assert result.outcome is Outcome.FAIL and result.value == pytest.approx(0.1)


def test_accuracy_on_other_examples_fails() -> None:
    base = model(labels=[0, 1, 0], preds=[0, 1, 0])
    result = AccuracyGoal(max_drop=0.5).check(model(labels=[1, 1, 0], preds=[1, 1, 0]), base)
    assert result.outcome is Outcome.FAIL and "different examples" in result.reason


def test_agreement_uses_a_lower_bound() -> None:
    base = model(preds=[0] * 1000)
    cand = model(preds=[0] * 985 + [1] * 15)  # 0.985 agreement
    assert AgreementGoal(min=0.98).check(cand, base).outcome is Outcome.INCONCLUSIVE
    assert AgreementGoal(min=0.97).check(cand, base).outcome is Outcome.PASS
    assert AgreementGoal(min=0.99).check(cand, base).outcome is Outcome.FAIL


def test_goal_configs_are_checked() -> None:
    with pytest.raises(ValidationError, match="set max_mb, max_ratio or both"):
        SizeGoal()
    with pytest.raises(ValidationError, match="set min, max_drop, max_relative_drop, or several"):
        AccuracyGoal()
    with pytest.raises(ValidationError, match="max_ms"):
        LatencyGoal(max_ms=0)


# --- per-class, relative drop, fidelity, champion ------------------------------------------------


def test_relative_accuracy_drop_scales_with_the_baseline() -> None:
    labels = [0, 1] * 500
    base_preds = list(labels)
    for i in range(0, 200, 2):  # baseline wrong on 100 examples: accuracy 0.9
        base_preds[i] = 1 - base_preds[i]
    cand_preds = list(base_preds)
    for i in range(1, 21, 2):  # candidate wrong on 10 more: drop 0.01
        cand_preds[i] = 1 - cand_preds[i]
    base, cand = model(labels=labels, preds=base_preds), model(labels=labels, preds=cand_preds)
    # 0.01 absolute of 0.9 is 1.1% relative
    assert (
        AccuracyGoal(max_relative_drop=0.005, confidence=None).check(cand, base).outcome
        is Outcome.FAIL
    )
    ok = AccuracyGoal(max_relative_drop=0.05).check(cand, base)
    assert ok.outcome is Outcome.PASS and "of the baseline's 0.9000" in ok.reason


def test_a_collapsed_class_fails_the_per_class_goal_though_the_overall_drop_is_small() -> None:
    labels = np.repeat(np.arange(10), 100)
    cand = labels.copy()
    cand[labels == 3] = 5  # class 3 entirely lost: overall drop 0.1
    base_ev, cand_ev = (
        model(labels=list(labels), preds=list(labels)),
        model(labels=list(labels), preds=list(cand)),
    )
    result = PerClassGoal(max_drop=0.2).check(cand_ev, base_ev)
    assert (
        result.outcome is Outcome.FAIL
        and "worst class 3 (100 examples): drop +1.0000" in result.reason
    )
    assert AccuracyGoal(max_drop=0.2).check(cand_ev, base_ev).outcome is Outcome.PASS


def test_fidelity_compares_raw_outputs_without_labels() -> None:
    rng = np.random.default_rng(0)
    out = rng.normal(size=(200, 10))
    close = Evidence(logits=out + rng.normal(0, 1e-3, size=out.shape))
    far = Evidence(logits=out + rng.normal(0, 1.0, size=out.shape))
    base = Evidence(logits=out)
    assert (
        FidelityGoal(min_cosine=0.999, max_abs_error=0.01).check(close, base).outcome
        is Outcome.PASS
    )
    result = FidelityGoal(min_cosine=0.999).check(far, base)
    assert result.outcome is Outcome.FAIL and result.metric == "mean_cosine"
    assert FidelityGoal(max_abs_error=0.1).check(EMPTY, base).outcome is Outcome.FAIL


def test_champion_goal_compares_with_production_and_guards_the_first_release() -> None:
    labels = [0, 1] * 200
    champ = model(labels=labels, preds=labels)
    worse = list(labels)
    worse[:20] = [1 - v for v in worse[:20]]
    cand = model(labels=labels, preds=worse)
    result = ChampionGoal(max_accuracy_drop=0.01).check(cand, EMPTY, champ)
    assert result.outcome is Outcome.FAIL and result.metric == "accuracy_drop_vs_production"
    assert (
        ChampionGoal().check(model(labels=labels, preds=labels), EMPTY, champ).outcome
        is Outcome.PASS
    )
    first = ChampionGoal().check(cand, EMPTY, None)
    assert first.outcome is Outcome.FAIL and "first_release: pass" in first.reason
    assert ChampionGoal(first_release="pass").check(cand, EMPTY, None).outcome is Outcome.PASS
    # a champion that exists but could not be scored fails closed
    assert ChampionGoal(first_release="pass").check(cand, EMPTY, Evidence()).outcome is Outcome.FAIL


def regression(predictions: np.ndarray, targets: np.ndarray) -> Evidence:
    return Evidence(labels=targets, predictions=predictions)


def test_the_error_goal_decides_the_mae_increase_at_its_boundary() -> None:
    from validation.goals import ErrorGoal

    targets = np.linspace(0.0, 10.0, 200)
    base = regression(targets + 1.0, targets)  # every prediction 1 above: MAE 1
    worse = regression(targets + 1.5, targets)  # MAE 1.5: an increase of exactly 0.5
    at = ErrorGoal(max_increase=0.5).check(worse, base)
    assert (
        at.outcome is Outcome.PASS
        and at.value == pytest.approx(0.5)
        and at.bound == pytest.approx(0.5)
    )
    below = ErrorGoal(max_increase=0.49).check(worse, base)
    assert below.outcome is Outcome.FAIL and below.reason.startswith("mae increase +0.5")
    same = ErrorGoal(max_increase=0.0).check(base, base)
    assert same.outcome is Outcome.PASS and same.value == 0.0


def test_the_error_goal_bounds_a_noisy_increase_and_can_be_inconclusive() -> None:
    from validation.goals import ErrorGoal

    rng = np.random.default_rng(0)
    targets = rng.normal(size=60)
    base = regression(targets + rng.normal(0, 1.0, 60), targets)
    cand = regression(base.predictions + rng.normal(0, 0.3, 60), targets)  # type: ignore[operator]
    result = ErrorGoal(max_increase=0.05).check(cand, base)
    assert result.bound is not None and result.value is not None and result.bound > result.value
    loose = ErrorGoal(max_increase=max(result.value, 0.0) + 1e-9).check(cand, base)
    assert loose.outcome is Outcome.INCONCLUSIVE  # the point meets it, the bound does not


def test_the_error_goal_on_rmse_and_an_absolute_maximum() -> None:
    from validation.goals import ErrorGoal

    targets = np.zeros(100)
    cand = regression(np.r_[np.full(50, 3.0), np.full(50, -4.0)], targets)
    rmse = float(np.sqrt((9 * 50 + 16 * 50) / 100))
    result = ErrorGoal(metric="rmse", max=rmse, confidence=None).check(cand, cand)
    assert result.outcome is Outcome.PASS and result.value == pytest.approx(rmse)
    assert (
        ErrorGoal(metric="rmse", max=rmse - 0.01, confidence=None).check(cand, cand).outcome
        is Outcome.FAIL
    )
    assert ErrorGoal(metric="mae", max=3.5, confidence=None).check(
        cand, cand
    ).value == pytest.approx(3.5)


def test_the_error_goal_fails_without_the_baseline_or_on_other_examples() -> None:
    from validation.goals import ErrorGoal

    targets = np.arange(10.0)
    cand = regression(targets, targets)
    missing = ErrorGoal(max_increase=1.0).check(cand, Evidence())
    assert missing.outcome is Outcome.FAIL and missing.reason == "baseline mae was not measured"
    other = ErrorGoal(max_increase=1.0).check(cand, regression(targets, targets + 1))
    assert other.outcome is Outcome.FAIL and "different examples" in other.reason
    assert ErrorGoal(max=1.0).check(Evidence(), cand).outcome is Outcome.FAIL


def test_cosine_fidelity_refuses_one_value_per_row() -> None:
    from validation.goals import FidelityGoal

    a = Evidence(logits=np.array([[1.0], [2.0], [-1.0]]))
    b = Evidence(logits=np.array([[10.0], [20.0], [-10.0]]))  # 10x off, same signs: cosine 1
    result = FidelityGoal(min_cosine=0.99).check(a, b)
    assert result.outcome is Outcome.FAIL and "only their sign" in result.reason
    assert FidelityGoal(max_abs_error=1.0).check(a, b).outcome is Outcome.FAIL
