"""Properties of the goals (hypothesis), whatever the parameters and the data:

- evidence that is missing or was taken on other examples fails, never passes, never is
  inconclusive;
- a candidate identical to its baseline passes every goal relative to the baseline, at any
  sample size where the goal's bound can be met at all;
- swapping baseline and candidate flips the sign of every drop.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from validation.goals import (
    AccuracyGoal,
    AgreementGoal,
    ChampionGoal,
    ErrorGoal,
    Evidence,
    FidelityGoal,
    Goal,
    LatencyGoal,
    NeighbourGoal,
    NoEvidence,
    Outcome,
    PerClassGoal,
    SizeGoal,
    SpeedupGoal,
)
from validation.stats import rows_for_lower_bound

PROPERTY = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])  # fmt: skip

unit = st.floats(0.01, 0.99)
limit = st.floats(0.0, 0.99)
confidence = st.none() | st.floats(0.5, 0.99)

absolute_goals: list[st.SearchStrategy[Goal]] = [
    st.builds(LatencyGoal, max_ms=st.floats(0.01, 1e3), percentile=st.floats(50, 99.9),
              batch=st.integers(1, 64)),
    st.builds(SpeedupGoal, min=st.floats(0.1, 10), batch=st.integers(1, 64)),
    st.builds(SizeGoal, max_mb=st.floats(0.01, 1e3), max_ratio=st.none() | unit),
    st.builds(SizeGoal, max_ratio=unit),
    st.builds(AccuracyGoal, min=unit, confidence=confidence),
]  # fmt: skip
relative_goals: list[st.SearchStrategy[Goal]] = [
    st.builds(AccuracyGoal, min=st.none() | unit, max_drop=limit, confidence=confidence),
    st.builds(AccuracyGoal, max_relative_drop=limit, confidence=confidence),
    st.builds(AgreementGoal, min=unit, confidence=confidence),
    st.builds(PerClassGoal, max_drop=limit, confidence=confidence),
    st.builds(FidelityGoal, min_cosine=st.floats(-0.99, 1.0), max_abs_error=st.none() | limit),
    st.builds(FidelityGoal, max_abs_error=limit),
    st.builds(ErrorGoal, metric=st.sampled_from(["mae", "rmse"]), max=st.none() | st.floats(0.01, 10),
              max_increase=limit, confidence=confidence),
    st.builds(ErrorGoal, max_relative_increase=limit, confidence=confidence),
    st.builds(NeighbourGoal, min=unit, k=st.integers(1, 5), confidence=confidence),
]  # fmt: skip
champion_goals = st.builds(ChampionGoal, max_accuracy_drop=limit, confidence=confidence,
                           first_release=st.sampled_from(["fail", "pass"]))  # fmt: skip
goals = st.one_of(*absolute_goals, *relative_goals, champion_goals)


@st.composite
def models(draw: st.DrawFn, n: int | None = None) -> Evidence:
    """A classifier's complete evidence on ``n`` examples."""
    n = n or draw(st.integers(8, 60))
    labels = draw(arrays(np.int64, n, elements=st.integers(0, 3)))
    preds = draw(arrays(np.int64, n, elements=st.integers(0, 3)))
    logits = draw(arrays(np.float64, (n, 4), elements=st.floats(-5, 5)))
    latency = draw(arrays(np.float64, 100, elements=st.floats(0.1, 10)))
    return Evidence(
        size_bytes=draw(st.integers(1, 10**9)),
        labels=labels,
        predictions=preds,
        logits=logits,
        latency_ms={b: latency for b in range(1, 65)},
        comparisons={
            b: {"speedup": 2.0, "interval": [1.5, 2.5], "confidence": 0.95} for b in range(1, 65)
        },
    )


def emptied(ev: Evidence, field: str) -> Evidence:
    from dataclasses import replace

    empty: dict[str, Any] = {
        "size_bytes": None, "labels": None, "predictions": None, "logits": None,
        "latency_ms": {}, "comparisons": {},
    }  # fmt: skip
    return replace(ev, **{field: empty[field]})


NEEDS: dict[type[Goal], tuple[str, ...]] = {
    LatencyGoal: ("latency_ms",),
    SpeedupGoal: ("comparisons",),
    SizeGoal: ("size_bytes",),
    AccuracyGoal: ("labels", "predictions"),
    AgreementGoal: ("predictions",),
    PerClassGoal: ("labels", "predictions"),
    FidelityGoal: ("logits",),
    ErrorGoal: ("labels", "predictions"),
    NeighbourGoal: ("logits",),
    ChampionGoal: ("labels", "predictions"),
}


def _relative(goal: Goal) -> bool:
    """Whether ``goal`` reads the baseline (an absolute accuracy or error bound does not)."""
    if isinstance(goal, AccuracyGoal):
        return goal.max_drop is not None or goal.max_relative_drop is not None
    if isinstance(goal, ErrorGoal):
        return goal.max_increase is not None or goal.max_relative_increase is not None
    return True


@PROPERTY
@given(goal=goals, model=models(), data=st.data())
def test_missing_evidence_of_the_candidate_fails(goal: Goal, model: Evidence, data: Any) -> None:
    field = data.draw(st.sampled_from(NEEDS[type(goal)]))
    result = goal.check(emptied(model, field), model, model)
    assert result.outcome is Outcome.FAIL, result


@PROPERTY
@given(goal=st.one_of(*relative_goals), model=models(), data=st.data())
def test_missing_evidence_of_the_baseline_fails(goal: Goal, model: Evidence, data: Any) -> None:
    field = data.draw(st.sampled_from(NEEDS[type(goal)]))
    baseline = emptied(model, field)
    if not _relative(goal):
        return  # an absolute bound only: the baseline is not evidence for it
    result = goal.check(model, baseline)
    assert result.outcome is Outcome.FAIL, result


@PROPERTY
@given(goal=st.one_of(*relative_goals), model=models(), data=st.data())
def test_evidence_taken_on_other_examples_fails(goal: Goal, model: Evidence, data: Any) -> None:
    if not _relative(goal):
        return
    assert model.labels is not None and model.predictions is not None and model.logits is not None
    other = data.draw(models(n=len(model.labels) + data.draw(st.integers(1, 5))))
    assert goal.check(model, other).outcome is Outcome.FAIL
    assert goal.check(other, model).outcome is Outcome.FAIL
    if isinstance(goal, AccuracyGoal | PerClassGoal | ErrorGoal):
        # as many examples, other labels: still other examples
        from dataclasses import replace

        relabelled = replace(model, labels=(model.labels + 1) % 4)
        assert goal.check(model, relabelled).outcome is Outcome.FAIL


@PROPERTY
@given(goal=champion_goals, model=models())
def test_a_champion_that_cannot_be_scored_fails(goal: ChampionGoal, model: Evidence) -> None:
    result = goal.check(model, model, NoEvidence("its record is gone"))
    assert result.outcome is Outcome.FAIL and "its record is gone" in result.reason
    first = goal.check(model, model, None).outcome
    assert first is (Outcome.PASS if goal.first_release == "pass" else Outcome.FAIL)


def _can_be_met(goal: Goal, n: int) -> bool:
    """Whether ``goal`` can pass at all on ``n`` examples (an exact lower bound needs rows)."""
    if isinstance(goal, AgreementGoal) and goal.confidence is not None:
        need = rows_for_lower_bound(goal.min, goal.confidence)
        return need is not None and n >= need
    if isinstance(goal, NeighbourGoal):
        return n > goal.k
    return True


@PROPERTY
@given(goal=st.one_of(*relative_goals, champion_goals), n=st.integers(8, 3000),
       seed=st.integers(0, 2**16))  # fmt: skip
def test_a_candidate_identical_to_its_baseline_passes_every_relative_goal(
    goal: Goal, n: int, seed: int
) -> None:
    if isinstance(goal, AccuracyGoal):
        goal = goal.model_copy(update={"min": None})
        if goal.max_drop is None and goal.max_relative_drop is None:
            return
    if isinstance(goal, ErrorGoal):
        goal = goal.model_copy(update={"max": None})
        if goal.max_increase is None and goal.max_relative_increase is None:
            return
    if isinstance(goal, NeighbourGoal):
        n = min(n, 300)  # its neighbour search is quadratic in the rows
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    right = rng.random(n) < rng.random()
    model = Evidence(
        labels=labels if not isinstance(goal, ErrorGoal) else rng.normal(size=n),
        predictions=np.where(right, labels, (labels + 1) % 4)
        if not isinstance(goal, ErrorGoal) else rng.normal(size=n),
        logits=rng.normal(size=(n, 4)) * rng.integers(0, 2, size=(n, 1)),  # zero rows too
    )  # fmt: skip
    if not _can_be_met(goal, n):
        return
    result = goal.check(model, model, model)
    assert result.outcome is Outcome.PASS, result


@PROPERTY
@given(cand=models(n=40), base=models(n=40))
def test_swapping_baseline_and_candidate_flips_the_sign_of_every_drop(
    cand: Evidence, base: Evidence
) -> None:
    from dataclasses import replace

    base = replace(base, labels=cand.labels)  # one test split
    drop = AccuracyGoal(max_drop=0.5, confidence=None)
    assert drop.check(cand, base).value == -drop.check(base, cand).value  # type: ignore[operator]

    per_class = PerClassGoal(max_drop=0.5, confidence=None)
    assert cand.labels is not None and cand.correct is not None and base.correct is not None
    drops = {
        int(c): float(base.correct[cand.labels == c].mean() - cand.correct[cand.labels == c].mean())
        for c in np.unique(cand.labels)
    }
    worst, flipped = per_class.check(cand, base).value, per_class.check(base, cand).value
    assert worst is not None and flipped is not None
    assert np.isclose(worst, max(drops.values()), atol=1e-12)
    assert np.isclose(flipped, -min(drops.values()), atol=1e-12)

    target = np.linspace(-1, 1, 40)
    c = Evidence(labels=target, predictions=cand.logits[:, 0] if cand.logits is not None else None)
    b = Evidence(labels=target, predictions=base.logits[:, 0] if base.logits is not None else None)
    for metric in ("mae", "rmse"):
        error = ErrorGoal(metric=metric, max_increase=0.5, confidence=None)
        assert error.check(c, b).value == -error.check(b, c).value  # type: ignore[operator]
