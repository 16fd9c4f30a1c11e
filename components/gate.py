"""The gate step: one verdict per candidate, then the selection among those that passed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from components.evidence import (
    champion_evidence,
    champion_version,
    gated_candidates,
    load_evidence,
)
from components.layout import RunLayout, read_json
from components.records import StepError, Verdict, VerdictEntry
from components.spec import Spec
from validation.goals import GoalResult, Outcome

__all__ = ["gate", "pareto_front", "pareto_knee", "select"]


def _worst(results: list[GoalResult]) -> Outcome:
    outcomes = {r.outcome for r in results}
    for outcome in (Outcome.FAIL, Outcome.INCONCLUSIVE):
        if outcome in outcomes:
            return outcome
    return Outcome.PASS


def gate(spec: Spec, run_dir: Path) -> Verdict:
    """Judge every candidate against every goal and write ``verdict.json``.

    A candidate passes only if every goal passes. A candidate whose step failed, or whose
    files are missing, fails: the gate never passes on missing evidence.
    """
    run = RunLayout(run_dir)
    base = load_evidence(run.baseline)
    champion = champion_evidence(spec, run)
    batch = spec.speed_batch()
    entries = []
    for cand in gated_candidates(spec, run):
        mdir = run.candidate(cand.name)
        error = mdir.error
        metrics = read_json(mdir.metrics) if mdir.metrics.is_file() else {}
        ev = load_evidence(mdir)
        results = spec.goals.check(ev, base, champion)
        outcome = _worst(results)
        entry: dict[str, Any] = {
            "name": cand.name,
            "recipe": cand.label(),
            "sha256": metrics.get("sha256"),
            "outcome": outcome.value,
            "passed": outcome is Outcome.PASS,
            "goals": [r.to_dict() for r in results],
            "size_bytes": ev.size_bytes,
            "accuracy": ev.accuracy,
            "latency_p50_ms": float(np.median(ev.latency_ms[batch]))
            if batch in ev.latency_ms
            else None,
            "speedup": ev.comparisons[batch]["speedup"] if batch in ev.comparisons else None,
        }
        if error.is_file():
            entry.update(
                outcome=Outcome.FAIL.value, passed=False, error=StepError.read(error).error
            )
        entries.append(entry)

    passing = [e for e in entries if e["passed"] and e["sha256"]]
    selected, reason = select(passing, spec.select)
    if selected is None:
        reason = f"none of {len(entries)} candidates met every goal"
    else:
        reason = f"{len(passing)} of {len(entries)} candidates met every goal; {reason}"
    if run.step_error("search").is_file():
        failed = StepError.read(run.step_error("search")).error
        reason += f" (the search failed and added none: {failed})"
    verdict = Verdict(
        policy=spec.select,
        selected=selected["name"] if selected else None,
        reason=reason,
        goals=spec.goals.model_dump(exclude_none=True),
        champion=champion_version(run),
        candidates=[VerdictEntry.model_validate(e) for e in entries],
    )
    verdict.write(run.verdict)
    return verdict


def pareto_front(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Candidates no other candidate beats on both latency and accuracy, fastest first."""
    pts = [e for e in entries if e["latency_p50_ms"] is not None and e["accuracy"] is not None]
    front = [
        e for e in pts
        if not any(
            o["latency_p50_ms"] <= e["latency_p50_ms"] and o["accuracy"] >= e["accuracy"]
            and (o["latency_p50_ms"] < e["latency_p50_ms"] or o["accuracy"] > e["accuracy"])
            for o in pts
        )
    ]  # fmt: skip
    return sorted(front, key=lambda e: (e["latency_p50_ms"], -e["accuracy"], e["name"]))


def pareto_knee(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The front's point farthest from the line joining its two ends; ties go to the faster.

    Which point that is does not depend on the axes' units: scaling latency or accuracy scales
    every point's distance alike, so neither axis needs normalising.
    """
    front = pareto_front(entries) or sorted(entries, key=lambda e: e["name"])
    if len(front) <= 2:
        return front[0]
    lat = np.array([e["latency_p50_ms"] for e in front], dtype=np.float64)
    acc = np.array([e["accuracy"] for e in front], dtype=np.float64)
    dx, dy = lat[-1] - lat[0], acc[-1] - acc[0]
    # twice the area of the triangle each point makes with the two ends: its distance from
    # their line, times that line's length (the same for every point)
    area = np.abs(dy * (lat - lat[0]) - dx * (acc - acc[0]))
    if not np.isfinite(area).all():
        return front[0]
    # equal up to rounding, on the scale of the front's box (a collinear front's areas are
    # rounding noise): the faster
    best = int(np.flatnonzero(area >= area.max() - 1e-12 * abs(dx * dy))[0])
    return front[best]


def select(passing: list[dict[str, Any]], policy: str) -> tuple[dict[str, Any] | None, str]:
    """The candidate the policy picks among passing ones; ties broken by name."""
    if not passing:
        return None, ""
    if policy == "knee":
        chosen = pareto_knee(passing)
        names = [e["name"] for e in pareto_front(passing)]
        return chosen, f"{chosen['name']} is the knee of the latency/accuracy Pareto front {names}"
    if policy == "fastest" and all(e["speedup"] is not None for e in passing):
        # interleaved comparisons against the same baseline rank candidates more robustly
        # than medians measured one after the other
        chosen = min(passing, key=lambda e: (-e["speedup"], e["name"]))
        return chosen, f"{chosen['name']} is the fastest (speedup {chosen['speedup']:.3g}x)"
    key = "latency_p50_ms" if policy == "fastest" else "size_bytes"
    chosen = min(passing, key=lambda e: (e[key] if e[key] is not None else float("inf"), e["name"]))
    return chosen, f"{chosen['name']} is the {policy} ({key} = {chosen[key]:.4g})"
