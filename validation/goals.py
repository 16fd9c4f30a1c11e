"""Release goals as typed data, and how each is decided.

Each goal names its metric, its direction, whether it is absolute or relative to the baseline,
and the confidence it is decided with. A goal passes only when the evidence shows it met:
a missing metric fails, and a point estimate that meets the bound while its confidence bound
does not is ``inconclusive``, which blocks promotion like a failure.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from fractions import Fraction
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from validation._strict import StrictModel
from validation.stats import (
    bootstrap_mean_lower,
    clopper_pearson_lower,
    examples_needed,
    mean_cosine,
    neighbour_overlap,
    paired_bootstrap_error_upper,
    paired_bootstrap_upper,
    percentile_upper_bound,
    regression_error,
    rows_for_lower_bound,
    runs_needed_for_percentile_bound,
)

__all__ = [
    "AccuracyGoal",
    "AgreementGoal",
    "Champion",
    "ChampionGoal",
    "ErrorGoal",
    "Evidence",
    "FidelityGoal",
    "Goal",
    "GoalResult",
    "Goals",
    "LatencyGoal",
    "NeighbourGoal",
    "NoEvidence",
    "Outcome",
    "PerClassGoal",
    "SizeGoal",
    "SpeedupGoal",
]

MB = 1_000_000


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class GoalResult:
    """One line of a verdict: a goal, what was measured, and what was decided."""

    goal: str
    metric: str
    comparison: Literal["<=", ">="]
    threshold: float
    value: float | None
    outcome: Outcome
    reason: str
    bound: float | None = None
    confidence: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["outcome"] = self.outcome.value
        return out


@dataclass(frozen=True)
class Evidence:
    """What the gate knows about one model: evaluation metrics, benchmark, per-example results.

    ``latency_ms`` maps a batch size to its raw timed samples in milliseconds;
    ``comparisons`` maps a batch size to the interleaved comparison with the baseline
    (``speedup``, ``interval`` [low, high], ``confidence``).
    """

    size_bytes: int | None = None
    accuracy: float | None = None
    labels: np.ndarray | None = None
    predictions: np.ndarray | None = None
    logits: np.ndarray | None = None
    latency_ms: dict[int, np.ndarray] = field(default_factory=dict)
    comparisons: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def correct(self) -> np.ndarray | None:
        if self.labels is None or self.predictions is None:
            return None
        return np.asarray(self.predictions == self.labels)


@dataclass(frozen=True)
class NoEvidence:
    """Evidence a goal needs that should exist and does not (a step that did not run, a file
    that is gone): the goal fails with "no evidence for goal X", never assumes."""

    reason: str


# The model behind production: its evidence, NoEvidence when it was never looked up or its
# record is gone, or None when the registry has no production model.
Champion = Evidence | NoEvidence | None


class Goal(StrictModel, ABC):
    """A release goal. ``check`` compares a candidate's evidence with the baseline's."""

    name: ClassVar[str]

    @abstractmethod
    def check(
        self, candidate: Evidence, baseline: Evidence, champion: Champion = None
    ) -> GoalResult:
        """Decide the goal for ``candidate``; ``champion`` is the production model, if any."""

    def _missing(
        self, metric: str, comparison: Literal["<=", ">="], threshold: float, what: str
    ) -> GoalResult:
        return GoalResult(
            self.name, metric, comparison, threshold, None, Outcome.FAIL, f"{what} was not measured"
        )


_ORDER = {"fail": 0, "inconclusive": 1, "pass": 2}


def _worst_of(results: list[GoalResult]) -> GoalResult:
    return min(results, key=lambda r: _ORDER[r.outcome.value])


def _decide(
    value: float, bound: float | None, threshold: float, comparison: Literal["<=", ">="]
) -> Outcome:
    def ok(x: float) -> bool:
        return x <= threshold if comparison == "<=" else x >= threshold

    if not ok(value):
        return Outcome.FAIL
    if bound is None or ok(bound):
        return Outcome.PASS
    return Outcome.INCONCLUSIVE


class LatencyGoal(Goal):
    """Absolute latency bound: the ``percentile`` latency at ``batch`` is at most ``max_ms``.

    Decided on the one-sided upper confidence bound of that percentile.
    """

    name: ClassVar[str] = "latency"
    max_ms: float = Field(gt=0)
    percentile: float = Field(default=95, ge=50, lt=100)
    batch: int = Field(default=1, ge=1)
    confidence: float = Field(default=0.95, ge=0.5, lt=1)

    def check(
        self, candidate: Evidence, baseline: Evidence, champion: Champion = None
    ) -> GoalResult:
        metric = f"latency_p{self.percentile:g}_ms@batch{self.batch}"
        samples = candidate.latency_ms.get(self.batch)
        if samples is None or len(samples) == 0:
            return self._missing(metric, "<=", self.max_ms, f"latency at batch {self.batch}")
        value = float(np.percentile(samples, self.percentile))
        bound = percentile_upper_bound(samples, self.percentile, self.confidence)
        if bound is None:
            need = runs_needed_for_percentile_bound(self.percentile, self.confidence)
            return GoalResult(
                self.name, metric, "<=", self.max_ms, value, Outcome.INCONCLUSIVE,
                f"{len(samples)} timed runs cannot bound p{self.percentile:g} at "
                f"{self.confidence:.0%} confidence; needs at least {need}",
                None, self.confidence,
            )  # fmt: skip
        outcome = _decide(value, bound, self.max_ms, "<=")
        reason = {
            Outcome.PASS: f"p{self.percentile:g} {value:.3f} ms, upper bound {bound:.3f} ms "
            f"<= {self.max_ms:g} ms",
            Outcome.FAIL: f"p{self.percentile:g} {value:.3f} ms > {self.max_ms:g} ms",
            Outcome.INCONCLUSIVE: f"p{self.percentile:g} {value:.3f} ms meets {self.max_ms:g} ms "
            f"but its upper bound {bound:.3f} ms does not",
        }[outcome]
        return GoalResult(
            self.name, metric, "<=", self.max_ms, value, outcome, reason, bound, self.confidence
        )


class SpeedupGoal(Goal):
    """Relative latency: baseline median / candidate median is at least ``min``.

    Decided on the lower end of the interval from the interleaved comparison of the two models
    in alternating processes, never on two medians taken at different times.
    """

    name: ClassVar[str] = "speedup"
    min: float = Field(gt=0)
    batch: int = Field(default=1, ge=1)

    def check(
        self, candidate: Evidence, baseline: Evidence, champion: Champion = None
    ) -> GoalResult:
        metric = f"speedup@batch{self.batch}"
        comp = candidate.comparisons.get(self.batch)
        if comp is None:
            return self._missing(
                metric,
                ">=",
                self.min,
                f"an interleaved comparison with the baseline at batch {self.batch}",
            )
        value, (low, high), conf = float(comp["speedup"]), comp["interval"], comp["confidence"]
        if low is None or high is None:
            return GoalResult(
                self.name, metric, ">=", self.min, value, Outcome.INCONCLUSIVE,
                f"{value:.2f}x, but too few rounds for a {conf:.0%} interval", None, conf,
            )  # fmt: skip
        outcome = _decide(value, low, self.min, ">=")
        interval = f"{conf:.0%} interval [{low:.2f}, {high:.2f}]"
        reason = {
            Outcome.PASS: f"{value:.2f}x, {interval} >= {self.min:g}x",
            Outcome.FAIL: f"{value:.2f}x < {self.min:g}x ({interval})",
            Outcome.INCONCLUSIVE: f"{value:.2f}x meets {self.min:g}x but its {interval} reaches "
            "below it: too noisy to decide",
        }[outcome]
        return GoalResult(self.name, metric, ">=", self.min, value, outcome, reason, low, conf)


class SizeGoal(Goal):
    """Model file size: at most ``max_mb`` megabytes, and/or at most ``max_ratio`` of the baseline."""

    name: ClassVar[str] = "size"
    max_mb: float | None = Field(default=None, gt=0)
    max_ratio: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_bound(self) -> SizeGoal:
        if self.max_mb is None and self.max_ratio is None:
            raise ValueError("set max_mb, max_ratio or both")
        return self

    def check(
        self, candidate: Evidence, baseline: Evidence, champion: Champion = None
    ) -> GoalResult:
        results = []
        if self.max_mb is not None:
            if candidate.size_bytes is None:
                return self._missing("size_mb", "<=", self.max_mb, "candidate size")
            mb = candidate.size_bytes / MB
            results.append(("size_mb", mb, self.max_mb, f"{mb:.3f} MB"))
        if self.max_ratio is not None:
            if candidate.size_bytes is None or not baseline.size_bytes:
                return self._missing(
                    "size_ratio", "<=", self.max_ratio, "size of candidate or baseline"
                )
            ratio = candidate.size_bytes / baseline.size_bytes
            results.append(("size_ratio", ratio, self.max_ratio, f"{ratio:.3f} of the baseline"))
        # Report the binding bound: the first one missed, or else the tightest.
        failed = [r for r in results if r[1] > r[2]]
        metric, value, limit, text = (
            failed[0] if failed else max(results, key=lambda r: r[1] / r[2])
        )
        outcome = Outcome.FAIL if failed else Outcome.PASS
        sign = ">" if failed else "<="
        unit = " MB" if metric == "size_mb" else ""
        return GoalResult(
            self.name, metric, "<=", limit, value, outcome, f"{text} {sign} {limit:g}{unit}"
        )


class AccuracyGoal(Goal):
    """Accuracy: at least ``min`` absolute, and/or a drop from the baseline of at most ``max_drop``.

    With ``confidence`` set (the default), ``min`` is decided on an exact lower bound and
    ``max_drop`` on a one-sided paired-bootstrap upper bound of the drop; ``confidence: null``
    decides on point estimates.
    """

    name: ClassVar[str] = "accuracy"
    min: float | None = Field(default=None, gt=0, le=1)
    max_drop: float | None = Field(default=None, ge=0, lt=1)
    max_relative_drop: float | None = Field(
        default=None, ge=0, lt=1, description="drop as a share of the baseline's accuracy"
    )
    confidence: float | None = Field(default=0.95, ge=0.5, lt=1)

    @model_validator(mode="after")
    def _one_bound(self) -> AccuracyGoal:
        if self.min is None and self.max_drop is None and self.max_relative_drop is None:
            raise ValueError("set min, max_drop, max_relative_drop, or several")
        return self

    def check(
        self, candidate: Evidence, baseline: Evidence, champion: Champion = None
    ) -> GoalResult:
        results = []
        if self.min is not None:
            results.append(self._check_min(candidate, self.min))
        if self.max_drop is not None:
            results.append(self._check_drop(candidate, baseline, self.max_drop))
        if self.max_relative_drop is not None:
            base = baseline.correct
            if base is None or base.size == 0:
                results.append(
                    self._missing(
                        "accuracy_drop", "<=", self.max_relative_drop, "baseline accuracy"
                    )
                )
            else:
                # a relative drop of r is an absolute drop of r * baseline accuracy, rounded once
                # from the exact product (0.1 of 0.7 is 0.07, not 0.06999999999999999)
                limit = float(
                    Fraction(repr(self.max_relative_drop)) * Fraction(int(base.sum()), base.size)
                )
                res = self._check_drop(candidate, baseline, limit)
                results.append(
                    replace(
                        res,
                        reason=res.reason
                        + f" ({self.max_relative_drop:g} of the baseline's {base.mean():.4f})",
                    )
                )
        return _worst_of(results)

    def _check_min(self, candidate: Evidence, limit: float) -> GoalResult:
        correct = candidate.correct
        if correct is None or correct.size == 0:
            return self._missing("accuracy", ">=", limit, "candidate accuracy")
        n, k = int(correct.size), int(correct.sum())
        value = k / n
        bound = None if self.confidence is None else clopper_pearson_lower(k, n, self.confidence)
        outcome = _decide(value, bound, limit, ">=")
        reason = f"accuracy {value:.4f} on {n} examples"
        if bound is not None:
            reason += f", lower bound {bound:.4f}"
        reason += {Outcome.PASS: " >= ", Outcome.FAIL: " < "}.get(outcome, ", bound below ")
        reason += f"{limit:g}"
        if outcome is Outcome.INCONCLUSIVE and bound is not None:
            need = examples_needed(n, value, bound, limit)
            if need:
                reason += f"; about {need} examples would decide it"
        return GoalResult(
            self.name, "accuracy", ">=", limit, value, outcome, reason, bound, self.confidence
        )

    def _check_drop(self, candidate: Evidence, baseline: Evidence, limit: float) -> GoalResult:
        cand, base = candidate.correct, baseline.correct
        if cand is None or cand.size == 0:
            return self._missing("accuracy_drop", "<=", limit, "candidate per-example accuracy")
        if base is None or base.size == 0:
            return self._missing("accuracy_drop", "<=", limit, "baseline per-example accuracy")
        if cand.shape != base.shape or not np.array_equal(
            np.asarray(candidate.labels), np.asarray(baseline.labels)
        ):
            return GoalResult(
                self.name, "accuracy_drop", "<=", limit, None, Outcome.FAIL,
                "candidate and baseline were evaluated on different examples",
            )  # fmt: skip
        n = int(cand.size)
        # from counts, so that one example lost in 100 is a drop of exactly 0.01
        value = (int(base.sum()) - int(cand.sum())) / n
        bound = (
            None if self.confidence is None else paired_bootstrap_upper(base, cand, self.confidence)
        )
        outcome = _decide(value, bound, limit, "<=")
        reason = f"drop {value:+.4f} on {n} examples"
        if bound is not None:
            reason += f", upper bound {bound:+.4f}"
        reason += {Outcome.PASS: " <= ", Outcome.FAIL: " > "}.get(outcome, ", bound above ")
        reason += f"{limit:g}"
        if outcome is Outcome.INCONCLUSIVE and bound is not None:
            need = examples_needed(n, value, bound, limit)
            if need:
                reason += f"; about {need} examples would decide it"
        return GoalResult(
            self.name, "accuracy_drop", "<=", limit, value, outcome, reason, bound, self.confidence
        )


class AgreementGoal(Goal):
    """Top-1 agreement with the baseline's predictions is at least ``min``."""

    name: ClassVar[str] = "agreement"
    min: float = Field(gt=0, le=1)
    confidence: float | None = Field(default=0.95, ge=0.5, lt=1)

    def check(
        self, candidate: Evidence, baseline: Evidence, champion: Champion = None
    ) -> GoalResult:
        if candidate.predictions is None or baseline.predictions is None:
            return self._missing(
                "agreement", ">=", self.min, "predictions of candidate or baseline"
            )
        if candidate.predictions.shape != baseline.predictions.shape:
            return GoalResult(
                self.name, "agreement", ">=", self.min, None, Outcome.FAIL,
                "candidate and baseline were evaluated on different examples",
            )  # fmt: skip
        same = candidate.predictions == baseline.predictions
        n, k = int(same.size), int(same.sum())
        value = k / n
        bound = None if self.confidence is None else clopper_pearson_lower(k, n, self.confidence)
        outcome = _decide(value, bound, self.min, ">=")
        reason = f"{k}/{n} predictions agree ({value:.4f})"
        if bound is not None:
            reason += f", lower bound {bound:.4f}"
        reason += {Outcome.PASS: " >= ", Outcome.FAIL: " < "}.get(outcome, ", bound below ")
        reason += f"{self.min:g}"
        if outcome is Outcome.INCONCLUSIVE and bound is not None:
            need = examples_needed(n, value, bound, self.min)
            if need:
                reason += f"; about {need} examples would decide it"
        return GoalResult(
            self.name, "agreement", ">=", self.min, value, outcome, reason, bound, self.confidence
        )


class PerClassGoal(Goal):
    """The worst class's accuracy drop from the baseline is at most ``max_drop``.

    An overall drop can hide one class that collapses; this bounds every class, each with a
    paired bootstrap on that class's examples (so small classes need more evidence to pass).
    """

    name: ClassVar[str] = "per_class"
    max_drop: float = Field(ge=0, lt=1)
    confidence: float | None = Field(default=0.95, ge=0.5, lt=1)

    def check(
        self, candidate: Evidence, baseline: Evidence, champion: Champion = None
    ) -> GoalResult:
        cand, base = candidate.correct, baseline.correct
        if cand is None or base is None or candidate.labels is None:
            return self._missing("worst_class_drop", "<=", self.max_drop, "per-example accuracy")
        if cand.shape != base.shape or not np.array_equal(
            candidate.labels, np.asarray(baseline.labels)
        ):
            return GoalResult(self.name, "worst_class_drop", "<=", self.max_drop, None, Outcome.FAIL,
                              "candidate and baseline were evaluated on different examples")  # fmt: skip
        per_class = []
        for cls in np.unique(candidate.labels):
            mask = candidate.labels == cls
            drop = (int(base[mask].sum()) - int(cand[mask].sum())) / int(mask.sum())
            bound = (
                None
                if self.confidence is None
                else paired_bootstrap_upper(base[mask], cand[mask], self.confidence)
            )
            per_class.append(
                (drop if bound is None else bound, drop, bound, int(cls), int(mask.sum()))
            )
        _, value, bound, cls, n = max(per_class)
        outcome = _decide(value, bound, self.max_drop, "<=")
        reason = f"worst class {cls} ({n} examples): drop {value:+.4f}"
        if bound is not None:
            reason += f", upper bound {bound:+.4f}"
        reason += {Outcome.PASS: " <= ", Outcome.FAIL: " > "}.get(
            outcome, ", bound above "
        ) + f"{self.max_drop:g}"
        return GoalResult(self.name, "worst_class_drop", "<=", self.max_drop, value, outcome, reason,
                          bound, self.confidence)  # fmt: skip


class FidelityGoal(Goal):
    """The candidate's raw outputs stay close to the baseline's; needs no labels.

    ``min_cosine`` bounds the mean cosine similarity of the output vectors, ``max_abs_error``
    the largest absolute difference of any output value.
    """

    name: ClassVar[str] = "fidelity"
    min_cosine: float | None = Field(default=None, gt=-1, le=1)
    max_abs_error: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_bound(self) -> FidelityGoal:
        if self.min_cosine is None and self.max_abs_error is None:
            raise ValueError("set min_cosine, max_abs_error or both")
        return self

    def check(
        self, candidate: Evidence, baseline: Evidence, champion: Champion = None
    ) -> GoalResult:
        limit = self.min_cosine if self.min_cosine is not None else (self.max_abs_error or 0.0)
        a, b = candidate.logits, baseline.logits
        if a is None or b is None or a.shape != b.shape:
            return self._missing(
                "output_fidelity", ">=", limit, "comparable outputs of candidate and baseline"
            )
        a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
        results = []
        if self.min_cosine is not None and a.shape[1] < 2:
            results.append(GoalResult(self.name, "mean_cosine", ">=", self.min_cosine, None,
                                      Outcome.FAIL, "the outputs have one value per row: their "
                                      "cosine is only their sign; use max_abs_error"))  # fmt: skip
        elif self.min_cosine is not None:
            cos = mean_cosine(a, b)
            outcome = _decide(cos, None, self.min_cosine, ">=")
            results.append(GoalResult(self.name, "mean_cosine", ">=", self.min_cosine, cos, outcome,
                                      f"mean cosine similarity {cos:.6f} {'>=' if outcome is Outcome.PASS else '<'} {self.min_cosine:g}"))  # fmt: skip
        if self.max_abs_error is not None:
            err = float(np.abs(a - b).max())
            outcome = _decide(err, None, self.max_abs_error, "<=")
            results.append(GoalResult(self.name, "max_abs_error", "<=", self.max_abs_error, err, outcome,
                                      f"largest output difference {err:.4g} {'<=' if outcome is Outcome.PASS else '>'} {self.max_abs_error:g}"))  # fmt: skip
        return _worst_of(results)


class NeighbourGoal(Goal):
    """An embedding model keeps its neighbourhoods: for each test row, the share of its ``k``
    nearest rows under the baseline's embeddings that stay among its ``k`` nearest under the
    candidate's, on average at least ``min``. Needs no labels; decided on a one-sided bootstrap
    lower bound over rows."""

    name: ClassVar[str] = "neighbours"
    min: float = Field(gt=0, le=1)
    k: int = Field(default=10, ge=1)
    confidence: float | None = Field(default=0.95, ge=0.5, lt=1)

    def check(
        self, candidate: Evidence, baseline: Evidence, champion: Champion = None
    ) -> GoalResult:
        metric = f"neighbours@{self.k}"
        a, b = candidate.logits, baseline.logits
        if a is None or b is None or a.shape != b.shape or a.ndim != 2:
            return self._missing(metric, ">=", self.min, "embeddings of candidate and baseline")
        if a.shape[0] <= self.k:
            return GoalResult(self.name, metric, ">=", self.min, None, Outcome.FAIL,
                              f"{a.shape[0]} test rows cannot have {self.k} neighbours each")  # fmt: skip
        shares = neighbour_overlap(a, b, self.k)
        value = float(shares.mean())
        bound = None if self.confidence is None else bootstrap_mean_lower(shares, self.confidence)
        outcome = _decide(value, bound, self.min, ">=")
        reason = f"{value:.4f} of {self.k} nearest neighbours kept on {a.shape[0]} rows"
        if bound is not None:
            reason += f", lower bound {bound:.4f}"
        reason += {Outcome.PASS: " >= ", Outcome.FAIL: " < "}.get(outcome, ", bound below ")
        reason += f"{self.min:g}"
        return GoalResult(self.name, metric, ">=", self.min, value, outcome, reason, bound,
                          self.confidence)  # fmt: skip


class ChampionGoal(Goal):
    """Champion/challenger: the candidate against the model now behind ``production``.

    Both are scored on this run's test split. With no production model yet, ``first_release``
    decides: ``fail`` (the default) blocks, ``pass`` lets the first release through, recorded.
    """

    name: ClassVar[str] = "champion"
    max_accuracy_drop: float = Field(default=0.0, ge=0, lt=1)
    confidence: float | None = Field(default=0.95, ge=0.5, lt=1)
    first_release: Literal["fail", "pass"] = "fail"

    def check(
        self, candidate: Evidence, baseline: Evidence, champion: Champion = None
    ) -> GoalResult:
        metric = "accuracy_drop_vs_production"
        if isinstance(champion, NoEvidence):
            return GoalResult(self.name, metric, "<=", self.max_accuracy_drop, None, Outcome.FAIL,
                              f"no evidence for goal champion: {champion.reason}")  # fmt: skip
        if champion is None:
            outcome = Outcome.PASS if self.first_release == "pass" else Outcome.FAIL
            reason = "no model is behind production yet: " + (
                "first release allowed (goals.champion.first_release: pass)"
                if outcome is Outcome.PASS
                else "set goals.champion.first_release: pass to allow the first release"
            )
            return GoalResult(
                self.name, metric, "<=", self.max_accuracy_drop, None, outcome, reason
            )
        drop = AccuracyGoal(max_drop=self.max_accuracy_drop, confidence=self.confidence)
        result = drop._check_drop(candidate, champion, self.max_accuracy_drop)
        return replace(result, goal=self.name, metric=metric,
                       reason=result.reason.replace("drop", "drop from production", 1))  # fmt: skip


class ErrorGoal(Goal):
    """A regression model's error on the test split (``metric``: ``mae`` or ``rmse``): at most
    ``max``, and/or at most ``max_increase`` (absolute) or ``max_relative_increase`` (a share
    of the baseline's) above the baseline's.

    With ``confidence`` (the default) each is decided on a one-sided paired-bootstrap upper
    bound; ``confidence: null`` decides on point estimates.
    """

    name: ClassVar[str] = "error"
    metric: Literal["mae", "rmse"] = "mae"
    max: float | None = Field(default=None, gt=0)
    max_increase: float | None = Field(default=None, ge=0)
    max_relative_increase: float | None = Field(default=None, ge=0)
    confidence: float | None = Field(default=0.95, ge=0.5, lt=1)

    @model_validator(mode="after")
    def _one_bound(self) -> ErrorGoal:
        if self.max is None and self.max_increase is None and self.max_relative_increase is None:
            raise ValueError("set max, max_increase, max_relative_increase, or several")
        return self

    def check(
        self, candidate: Evidence, baseline: Evidence, champion: Champion = None
    ) -> GoalResult:
        m = self.metric
        if candidate.labels is None or candidate.predictions is None or candidate.labels.size == 0:
            return self._missing(m, "<=", self.max or 0.0, f"candidate {m}")
        target, pred = candidate.labels, candidate.predictions
        results = []
        if self.max is not None:
            value = regression_error(target, pred, m)
            bound = (None if self.confidence is None else
                     paired_bootstrap_error_upper(target, None, pred, m, self.confidence))  # fmt: skip
            results.append(self._result(m, value, bound, self.max, f"{m} {value:.4g}"))
        limits = []
        if self.max_increase is not None:
            limits.append((self.max_increase, ""))
        if baseline.predictions is None or baseline.labels is None:
            if self.max_increase is not None or self.max_relative_increase is not None:
                results.append(self._missing(f"{m}_increase", "<=", 0.0, f"baseline {m}"))
            return _worst_of(results)
        if baseline.labels.shape != target.shape or not np.array_equal(baseline.labels, target):
            return GoalResult(self.name, f"{m}_increase", "<=", 0.0, None, Outcome.FAIL,
                              "candidate and baseline were evaluated on different examples")  # fmt: skip
        base_error = regression_error(target, baseline.predictions, m)
        if self.max_relative_increase is not None:
            limits.append(
                (
                    self.max_relative_increase * base_error,
                    f" ({self.max_relative_increase:g} of the baseline's {base_error:.4g})",
                )
            )
        for limit, note in limits:
            value = regression_error(target, pred, m) - base_error
            bound = (None if self.confidence is None else paired_bootstrap_error_upper(
                target, baseline.predictions, pred, m, self.confidence))  # fmt: skip
            res = self._result(f"{m}_increase", value, bound, limit, f"{m} increase {value:+.4g}")
            results.append(replace(res, reason=res.reason + note))
        return _worst_of(results)

    def _result(
        self, metric: str, value: float, bound: float | None, limit: float, what: str
    ) -> GoalResult:
        outcome = _decide(value, bound, limit, "<=")
        sign = "+" if metric.endswith("_increase") else ""
        reason = what + (f", upper bound {bound:{sign}.4g}" if bound is not None else "")
        reason += {Outcome.PASS: " <= ", Outcome.FAIL: " > "}.get(outcome, ", bound above ")
        reason += f"{limit:g}"
        return GoalResult(self.name, metric, "<=", limit, value, outcome, reason, bound,
                          self.confidence)  # fmt: skip


class Goals(StrictModel):
    """The goals a candidate must meet, all of them, to be promoted."""

    latency: LatencyGoal | None = None
    speedup: SpeedupGoal | None = None
    size: SizeGoal | None = None
    accuracy: AccuracyGoal | None = None
    per_class: PerClassGoal | None = None
    agreement: AgreementGoal | None = None
    fidelity: FidelityGoal | None = None
    error: ErrorGoal | None = None
    neighbours: NeighbourGoal | None = None
    champion: ChampionGoal | None = None

    @model_validator(mode="after")
    def _at_least_one(self) -> Goals:
        if not self.active():
            raise ValueError(
                "no goal is set; a release needs at least one of: "
                + ", ".join(type(self).model_fields)
            )
        return self

    def active(self) -> list[Goal]:
        """The goals that are set, in a fixed order."""
        return [g for name in type(self).model_fields if (g := getattr(self, name)) is not None]

    def rows_needed(self) -> list[tuple[str, int | None]]:
        """Test rows each bounded goal needs before it can pass at all, even with every
        example right (None: no number of rows would do)."""
        out = []
        for field_name, goal in (("accuracy", self.accuracy), ("agreement", self.agreement)):
            minimum = None if goal is None else goal.min
            if goal is None or goal.confidence is None or minimum is None:
                continue
            limit = float(minimum)
            out.append((f"goals.{field_name}.min {limit:g} at confidence {goal.confidence:g}",
                        rows_for_lower_bound(limit, goal.confidence)))  # fmt: skip
        return out

    def check(
        self, candidate: Evidence, baseline: Evidence, champion: Champion = None
    ) -> list[GoalResult]:
        return [goal.check(candidate, baseline, champion) for goal in self.active()]
