"""The gate step: one verdict per candidate, then the selection among those that passed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from components.layout import ModelDir, RunLayout, read_json, write_json
from components.spec import Spec
from validation.goals import Evidence, GoalResult, Outcome

__all__ = ["gate", "load_evidence"]


def load_evidence(model: ModelDir) -> Evidence:
    """Whatever was measured for one model; anything missing stays None and fails its goals."""
    metrics = read_json(model.metrics) if model.metrics.is_file() else {}
    labels = predictions = None
    if model.predictions.is_file():
        with np.load(model.predictions, allow_pickle=False) as arrays:
            labels, predictions = arrays["labels"], arrays["predictions"]
    latency: dict[int, np.ndarray] = {}
    comparisons: dict[int, dict[str, Any]] = {}
    if model.comparison.is_file():
        comp = read_json(model.comparison)
        comparisons[int(comp["batch"])] = comp
    if model.benchmark.is_file():
        for batch, result in read_json(model.benchmark)["batches"].items():
            latency[int(batch)] = np.asarray(result["samples_ms"], dtype=np.float64)
    return Evidence(
        size_bytes=metrics.get("size_bytes"),
        accuracy=metrics.get("accuracy"),
        labels=labels,
        predictions=predictions,
        latency_ms=latency,
        comparisons=comparisons,
    )


def _worst(results: list[GoalResult]) -> Outcome:
    outcomes = {r.outcome for r in results}
    for outcome in (Outcome.FAIL, Outcome.INCONCLUSIVE):
        if outcome in outcomes:
            return outcome
    return Outcome.PASS


def gate(spec: Spec, run_dir: Path) -> dict[str, Any]:
    """Judge every candidate against every goal and write ``verdict.json``.

    A candidate passes only if every goal passes. A candidate whose step failed, or whose
    files are missing, fails: the gate never passes on missing evidence.
    """
    run = RunLayout(run_dir)
    base = load_evidence(run.baseline)
    batch = spec.speed_batch()
    entries = []
    for cand in spec.candidate_names():
        mdir = run.candidate(cand.name)
        error = mdir.root / "error.json"
        metrics = read_json(mdir.metrics) if mdir.metrics.is_file() else {}
        ev = load_evidence(mdir)
        results = spec.goals.check(ev, base)
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
            entry.update(outcome=Outcome.FAIL.value, passed=False, error=read_json(error)["error"])
        entries.append(entry)

    passing = [e for e in entries if e["passed"] and e["sha256"]]
    if spec.select == "fastest" and all(e["speedup"] is not None for e in passing):
        # interleaved comparisons against the same baseline rank candidates more robustly
        # than medians measured one after the other
        key, sign = "speedup", -1.0
    else:
        key, sign = ("latency_p50_ms" if spec.select == "fastest" else "size_bytes"), 1.0
    selected = min(passing, key=lambda e: (sign * e[key], e["name"])) if passing else None
    if selected:
        reason = (
            f"{len(passing)} of {len(entries)} candidates met every goal; "
            f"{selected['name']} is the {spec.select} ({key} = {selected[key]:.4g})"
        )
    else:
        reason = f"none of {len(entries)} candidates met every goal"
    verdict = {
        "policy": spec.select,
        "selected": selected["name"] if selected else None,
        "reason": reason,
        "goals": spec.goals.model_dump(exclude_none=True),
        "candidates": entries,
    }
    write_json(run.verdict, verdict)
    return verdict
