"""What the gate decides on, read from a run directory: one home for every step that judges.

The gate, the search (whose trials are judged like the gate's candidates) and the report read
evidence here. Anything missing stays None and fails its goals; a champion record that should
exist and does not is :class:`validation.goals.NoEvidence`, never "no champion".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from components.layout import ModelDir, RunLayout, read_json
from components.spec import Candidate, Spec
from validation.goals import Champion, Evidence, NoEvidence

__all__ = [
    "champion_evidence",
    "champion_version",
    "finalists",
    "gated_candidates",
    "load_evidence",
]


def load_evidence(model: ModelDir) -> Evidence:
    """Whatever was measured for one model; anything missing stays None and fails its goals."""
    metrics = read_json(model.metrics) if model.metrics.is_file() else {}
    labels = predictions = logits = None
    if model.predictions.is_file():
        with np.load(model.predictions, allow_pickle=False) as arrays:
            labels, predictions, logits = arrays["labels"], arrays["predictions"], arrays["logits"]
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
        logits=logits,
        latency_ms=latency,
        comparisons=comparisons,
    )


def champion_evidence(spec: Spec, run: RunLayout) -> Champion:
    """The production model's evidence for the champion goal.

    None when the champion step found no model behind production; empty evidence (its goal
    fails) when one exists but could not be scored; NoEvidence when the spec has a champion
    goal and the champion step's record is missing: that is never read as "no champion".
    """
    if spec.goals.champion is None:
        return None
    if not run.champion_record.is_file():
        return NoEvidence(f"{run.champion_record} not found: the champion step did not run")
    if read_json(run.champion_record).get("version") is None:
        return None
    return load_evidence(run.champion)


def champion_version(run: RunLayout) -> int | None:
    record = run.champion_record
    return read_json(record).get("version") if record.is_file() else None


def finalists(run: RunLayout) -> list[Candidate]:
    """The search's Pareto front, as candidates for the gate (none if no search ran)."""
    path = run.search_result
    if not path.is_file():
        return []
    data = read_json(path)
    by_name = {t["name"]: t for t in data["trials"]}
    return [Candidate.model_validate(by_name[n]["candidate"]) for n in data["front"]]


def gated_candidates(spec: Spec, run: RunLayout) -> list[Candidate]:
    """Every candidate the gate judges: the spec's fixed recipes, then the search's front."""
    return [*spec.candidate_names(), *finalists(run)]
