"""The search step: find recipes that meet the goals, within a trial and time budget.

Optuna samples a chain (one of ``search.recipes``) and the searched values of its steps;
three objectives are traded off, latency at the speed batch, size and accuracy, and every goal
of the spec is a constraint, so the result is the Pareto front of *feasible* trials, not of all.

Each trial is looked at twice (multi-fidelity). The screen is cheap: the model's exact size,
its accuracy on a share of the test split, a short benchmark. A trial that clearly misses a goal
(beyond the statistical noise of the screen, or beyond a margin for latency) stops there. The
others are measured like any candidate (full test split, benchmark, interleaved comparison) and
judged by the gate's own goal checks. Built models and measurements go through the
content-addressed cache, so a repeated proposal or an unchanged re-run costs almost nothing.

Files, in ``runs/<id>/search/``: ``study.journal`` (the Optuna study: the step resumes it when
run again on the same run directory), ``search.json`` (every trial, what blocked it, the front).
Trials' models live in ``candidates/search-<n>/``; the front's members join the gate.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from components.benchmark import benchmark
from components.data import load_split
from components.evidence import champion_evidence, load_evidence
from components.layout import RunLayout, read_json, write_json
from components.optimize import build_candidate, measure_candidate
from components.space import enqueued, grid_values, sampler, suggest
from components.spec import Candidate, Search, SearchRecipe, Spec
from optimizers.onnx_utils import infer, session
from optimizers.tensors import subset
from validation.goals import Evidence, GoalResult, Outcome

if TYPE_CHECKING:
    import optuna

__all__ = ["search"]

_logger = logging.getLogger(__name__)

OBJECTIVES = ("latency_p50_ms", "size_bytes", "accuracy")
DIRECTIONS: list[Literal["minimize", "maximize"]] = ["minimize", "minimize", "maximize"]


def search(spec: Spec, run_dir: Path) -> dict[str, Any]:
    """Run (or resume) the spec's search; writes ``search/search.json`` and returns it."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    run = RunLayout(run_dir)
    cfg = spec.search
    if cfg is None:
        return {"trials": []}
    root = run.search
    root.mkdir(exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=spec.name,
        storage=JournalStorage(JournalFileBackend(str(run.search_journal))),
        directions=DIRECTIONS,
        sampler=sampler(cfg.sampler, cfg.seed, cfg.trials),
        load_if_exists=True,
    )
    budget = cfg.trials
    if cfg.sampler == "grid":
        points = _grid(cfg)
        budget = min(budget, len(points))  # the grid is exhausted first
        if not study.trials:
            for params in points[:budget]:
                study.enqueue_trial(params)
    objective = _Objective(spec, run, cfg, budget, study)
    start = time.perf_counter()
    # A repeated proposal is answered from the first one's result and does not count against
    # the budget; the sampler may propose at most 3x the budget before the space is called done.
    stopped = "trials"
    while objective.distinct() < budget:
        if len(study.trials) >= 3 * budget:
            stopped = "space"  # the sampler keeps proposing points it has tried
            break
        if cfg.timeout_s is not None and time.perf_counter() - start >= cfg.timeout_s:
            stopped = "timeout"
            break
        study.optimize(objective, n_trials=1, catch=(Exception,))
    result = _summarise(study, cfg, time.perf_counter() - start, stopped)
    write_json(run.search_result, result)
    _logger.info(
        "search: %d distinct trials (%d proposals; %d screened out), %d feasible, front of %d",
        result["distinct"], len(result["trials"]), result["screened_out"], len(result["feasible"]),
        len(result["front"]),
    )  # fmt: skip
    return result


# --- sampling ------------------------------------------------------------------------------------


def _grid(cfg: Search) -> list[dict[str, Any]]:
    points = []
    for recipe in cfg.recipes:
        dims = recipe.dimensions()
        grids = [grid_values(dim) for _, _, dim in dims.values()]
        for combo in itertools.product(*grids):
            point: dict[str, Any] = {"recipe": recipe.name}
            for (name, (_, _, dim)), value in zip(dims.items(), combo, strict=True):
                point[f"{recipe.name}/{name}"] = enqueued(dim, value)
            points.append(point)
    return points


def _suggest(trial: optuna.Trial, recipe: SearchRecipe) -> dict[str, Any]:
    return {
        dim_name: suggest(trial, f"{recipe.name}/{dim_name}", dim)
        for dim_name, (_, _, dim) in recipe.dimensions().items()
    }


# --- one trial -----------------------------------------------------------------------------------


class _Objective:
    def __init__(
        self, spec: Spec, run: RunLayout, cfg: Search, total: int, study: optuna.Study
    ) -> None:
        self.spec, self.run, self.cfg, self.total = spec, run, cfg, total
        self.recipes = {r.name: r for r in cfg.recipes}
        self.base = load_evidence(run.baseline)
        self.champion = champion_evidence(spec, run)  # the same evidence the gate will use
        # label -> what its first trial found (a resumed study brings its own)
        self.seen: dict[str, dict[str, Any]] = {}
        for t in study.trials:
            if t.state.is_finished() and "label" in t.user_attrs:
                self.seen.setdefault(t.user_attrs["label"], _outcome(t.user_attrs, t.values))

    def distinct(self) -> int:
        return len(self.seen)

    def __call__(self, trial: optuna.Trial) -> tuple[float, float, float]:
        recipe = self.recipes[trial.suggest_categorical("recipe", list(self.recipes))]
        cand = recipe.concrete(_suggest(trial, recipe), f"search-{trial.number:03d}")
        label = cand.label()
        trial.set_user_attr("candidate", cand.model_dump())
        trial.set_user_attr("label", label)
        first = self.seen.get(label)
        if first is not None:  # answered from the first trial of the same recipe
            trial.set_user_attr("duplicate_of", first["name"])
            if first["values"] is None:
                raise RuntimeError(f"same recipe as {first['name']}, which failed")
            trial.set_user_attr("stage", first["stage"])
            trial.set_user_attr("blocked_by", first["blocked_by"])
            _constrain(trial, first["violations"])
            return first["values"]  # type: ignore[no-any-return]
        where = f"trial {len(self.seen) + 1}/{self.total} {label}"
        values = None
        try:
            values = self._evaluate(trial, cand, where)
            return values
        finally:
            self.seen[label] = _outcome(trial.user_attrs, values)

    def _evaluate(
        self, trial: optuna.Trial, cand: Candidate, where: str
    ) -> tuple[float, float, float]:
        screen = self.cfg.screen
        # the screen's model: the recipe with its training epochs cut (size and latency do not
        # depend on them; accuracy does, so it is judged at the screen only at full epochs)
        cheap = _fewer_epochs(cand, screen.epoch_fraction) if screen.enabled else cand
        try:
            record = build_candidate(self.spec, self.run, cheap)
        except Exception as exc:
            trial.set_user_attr("error", str(exc) or type(exc).__name__)
            _logger.info("%s: failed: %s", where, exc)
            raise
        if screen.enabled:
            values, misses = self._screen(cand.name, judge_accuracy=cheap == cand)
            if cheap != cand:
                trial.set_user_attr("screen_recipe", cheap.label())
            if misses:
                trial.set_user_attr("stage", "screen")
                _constrain(trial, {g.name: misses[g.name][1] if g.name in misses else 0.0
                                   for g in self.spec.goals.active()})  # fmt: skip
                blocked = [f"{goal}: {reason}" for goal, (reason, _) in misses.items()]
                trial.set_user_attr("blocked_by", blocked)
                write_json(self.run.candidate(cand.name).cache_record, record)
                _logger.info("%s: screened out: %s", where, "; ".join(blocked))
                return values
            if cheap != cand:  # promising: now the real thing
                screened = read_json(self.run.candidate(cand.name).screen)
                record = build_candidate(self.spec, self.run, cand)
                write_json(self.run.candidate(cand.name).screen, screened)
        record["measurements"] = measure_candidate(self.spec, self.run, cand.name)
        write_json(self.run.candidate(cand.name).cache_record, record)
        evidence = load_evidence(self.run.candidate(cand.name))
        results = self.spec.goals.check(evidence, self.base, self.champion)
        trial.set_user_attr("stage", "full")
        _constrain(trial, {r.goal: _violation(r) for r in results})
        blocked = [f"{r.goal}: {r.reason}" for r in results if r.outcome is not Outcome.PASS]
        trial.set_user_attr("blocked_by", blocked)
        _logger.info("%s: %s", where, "meets every goal" if not blocked else "; ".join(blocked))
        return self._objectives(evidence)

    def _objectives(self, ev: Evidence) -> tuple[float, float, float]:
        lat = ev.latency_ms.get(self.spec.speed_batch())
        return (
            float(np.median(lat)) if lat is not None else math.inf,
            float(ev.size_bytes or math.inf),
            float(ev.accuracy or 0.0),
        )

    def _screen(
        self, name: str, *, judge_accuracy: bool
    ) -> tuple[tuple[float, float, float], dict[str, tuple[str, float]]]:
        """Cheap evidence, and the goals it shows clearly missed (nothing else is decided)."""
        spec, run, screen = self.spec, self.run, self.cfg.screen
        out = run.candidate(name)
        size = float(out.model.stat().st_size)
        misses: dict[str, tuple[str, float]] = {}  # goal -> (reason, relative gap)
        ev = Evidence(size_bytes=int(size), accuracy=None)
        if spec.goals.size is not None:
            size_result = spec.goals.size.check(ev, self.base)
            if size_result.outcome is Outcome.FAIL:  # exact: size has no noise
                misses["size"] = (size_result.reason, _violation(size_result))

        x, y = load_split(run.split("test"))
        rng = np.random.default_rng(spec.search.seed if spec.search else 0)
        idx = np.sort(
            rng.choice(len(y), size=max(1, round(screen.test_fraction * len(y))), replace=False)
        )
        logits = infer(session(out.model, spec.target.threads), subset(x, idx),
                       output=spec.scored_output, where=str(out.model))  # fmt: skip
        correct = logits.argmax(1) == y[idx]
        base_correct = (
            self.base.predictions[idx] == y[idx] if self.base.predictions is not None else None
        )
        accuracy = float(correct.mean())
        goal = spec.goals.accuracy
        if goal is not None and judge_accuracy:
            se = float(correct.std(ddof=1) / math.sqrt(len(idx))) if len(idx) > 1 else 1.0
            if goal.min is not None and accuracy + 2 * se < goal.min:
                misses["accuracy"] = (
                    f"{accuracy:.4f} on {len(idx)} test rows, clearly below {goal.min}",
                    _gap(accuracy + 2 * se, goal.min, ">="),
                )
            if goal.max_drop is not None and base_correct is not None:
                diff = base_correct.astype(float) - correct.astype(float)
                dse = float(diff.std(ddof=1) / math.sqrt(len(idx))) if len(idx) > 1 else 1.0
                if diff.mean() - 2 * dse > goal.max_drop:
                    misses["accuracy"] = (
                        f"drop {diff.mean():+.4f} on {len(idx)} test rows, clearly above "
                        f"{goal.max_drop}",
                        _gap(diff.mean() - 2 * dse, goal.max_drop, "<="),
                    )

        batch = spec.speed_batch()
        quick = spec.benchmark.model_copy(update={"warmup": 5, "min_runs": screen.min_runs,
                                                  "min_seconds": 0.05, "max_seconds": 2.0,
                                                  "settle_seconds": min(spec.benchmark.settle_seconds, 2.0)})  # fmt: skip
        target = spec.target.model_copy(update={"batch_sizes": (batch,)})
        result = benchmark(out.model, run.split("test"), out.screen_benchmark, target, quick)
        samples = np.asarray(result["batches"][str(batch)]["samples_ms"])
        p50 = float(np.median(samples))
        slack = 1 + screen.margin
        # timings taken under competing load screen nothing out: the full measurement decides
        timed = result["disturbed"] is None
        if spec.goals.latency is not None and timed:
            lat = spec.goals.latency
            value = float(np.percentile(samples, lat.percentile))
            if value > lat.max_ms * slack:
                misses["latency"] = (
                    f"p{lat.percentile:g} {value:.3f} ms in a short benchmark, "
                    f"beyond {lat.max_ms} ms x {slack:g}",
                    _gap(value, lat.max_ms, "<="),
                )
        base_lat = self.base.latency_ms.get(batch)
        if spec.goals.speedup is not None and base_lat is not None and timed:
            speedup = float(np.median(base_lat)) / p50
            if speedup < spec.goals.speedup.min / slack:
                misses["speedup"] = (
                    f"about {speedup:.2f}x in a short benchmark, "
                    f"below {spec.goals.speedup.min}x / {slack:g}",
                    _gap(speedup, spec.goals.speedup.min, ">="),
                )
        write_json(out.screen, {"size_bytes": size, "accuracy": accuracy,
                                              "rows": len(idx), "p50_ms": p50,
                                              "misses": {g: r for g, (r, _) in misses.items()},
                                              "disturbed": result["disturbed"]})  # fmt: skip
        return (p50, size, accuracy), misses


def _outcome(attrs: dict[str, Any], values: Sequence[float] | None) -> dict[str, Any]:
    """What a trial found, to answer a repeated proposal of the same recipe with."""
    return {
        "name": attrs["candidate"]["name"],
        "values": tuple(values) if values is not None else None,
        "stage": attrs.get("stage"),
        "blocked_by": attrs.get("blocked_by", []),
        "violations": attrs.get("violations", {}),
    }


_EPOCH_FIELDS = ("epochs", "fine_tune_epochs")


def _fewer_epochs(cand: Candidate, fraction: float) -> Candidate:
    """The recipe with every step's training epochs cut to ``fraction``, down to the least its
    config allows (0 for fine-tuning, 1 for a student that must learn something)."""
    from pydantic import ValidationError

    steps = []
    for step in cand.steps:
        config_class = step.build().config_class
        config = dict(step.config)
        for field in _EPOCH_FIELDS:
            info = config_class.model_fields.get(field)
            epochs = config.get(field, info.default if info is not None else None)
            if not isinstance(epochs, int):
                continue
            for fewer in (round(epochs * fraction), 1):  # the share, else the least allowed
                try:
                    config_class.model_validate({**config, field: fewer})
                except ValidationError:
                    continue
                if fewer < epochs:
                    config[field] = fewer
                break
        steps.append(step.model_copy(update={"config": config}))
    return cand.model_copy(update={"steps": tuple(steps)})


def _gap(value: float, threshold: float, comparison: str) -> float:
    """How far ``value`` lies beyond ``threshold``, relative to it; at least 0.001."""
    gap = value - threshold if comparison == "<=" else threshold - value
    return max(gap / (abs(threshold) or 1.0), 1e-3)


def _violation(result: GoalResult) -> float:
    """0 for a pass, else how far the deciding value lies beyond the threshold (relative)."""
    if result.outcome is Outcome.PASS:
        return 0.0
    value = result.bound if result.bound is not None else result.value
    if value is None:
        return 1.0
    return _gap(value, result.threshold, result.comparison)  # inconclusive: just beyond


def _constrain(trial: optuna.Trial, violations: dict[str, float]) -> None:
    """The goals as Optuna constraints (feasible when every value is 0 or less)."""
    for goal, value in violations.items():
        trial.set_constraint(goal, value)
    trial.set_user_attr("violations", violations)


# --- the result ----------------------------------------------------------------------------------


def _dominates(a: list[float], b: list[float]) -> bool:
    """a is no worse than b on every objective and better on one (latency, size down; accuracy up)."""
    pa = (a[0], a[1], -a[2])
    pb = (b[0], b[1], -b[2])
    return all(x <= y for x, y in zip(pa, pb, strict=True)) and pa != pb


def _summarise(study: optuna.Study, cfg: Search, seconds: float, stopped: str) -> dict[str, Any]:
    trials: list[dict[str, Any]] = []
    for t in study.trials:
        if not t.state.is_finished():
            continue
        cand = t.user_attrs.get("candidate")
        constraints = t.user_attrs.get("violations")
        ok = t.values is not None and constraints is not None and not any(constraints.values())
        trials.append({
            "number": t.number,
            "name": cand["name"] if cand else f"search-{t.number:03d}",
            "label": t.user_attrs.get("label"),
            "candidate": cand,
            "state": t.state.name.lower(),
            "stage": t.user_attrs.get("stage"),
            "params": t.params,
            "objectives": dict(zip(OBJECTIVES, t.values, strict=True)) if t.values else None,
            "feasible": ok,
            "blocked_by": t.user_attrs.get("blocked_by", []),
            "duplicate_of": t.user_attrs.get("duplicate_of"),
            "screen_recipe": t.user_attrs.get("screen_recipe"),
            "error": t.user_attrs.get("error"),
            "seconds": t.duration.total_seconds() if t.duration else None,
        })  # fmt: skip
    distinct = [t for t in trials if not t["duplicate_of"]]
    feasible = [t for t in distinct if t["feasible"]]
    # One per distinct model: repeated proposals of one recipe share its measurements.
    unique: dict[str, dict[str, Any]] = {}
    for row in feasible:
        unique.setdefault(row["label"], row)
    points = {r["name"]: [r["objectives"][k] for k in OBJECTIVES] for r in unique.values()}
    front = sorted(
        (
            n
            for n, p in points.items()
            if not any(_dominates(q, p) for m, q in points.items() if m != n)
        ),
        key=lambda n: points[n],
    )
    blocked: dict[str, int] = {}
    for row in distinct:
        for reason in row["blocked_by"] or []:
            goal = reason.partition(":")[0]
            blocked[goal] = blocked.get(goal, 0) + 1
    return {
        "budget": {"trials": cfg.trials, "timeout_s": cfg.timeout_s, "sampler": cfg.sampler},
        "stopped_by": stopped,
        "seconds": seconds,
        "objectives": dict(zip(OBJECTIVES, DIRECTIONS, strict=True)),
        "trials": trials,
        "distinct": len(distinct),
        "screened_out": sum(1 for t in distinct if t["stage"] == "screen"),
        "failed": sum(1 for t in distinct if t["state"] == "fail"),
        "feasible": [t["name"] for t in feasible],
        "front": front,
        "blocked_by_goal": blocked,
    }
