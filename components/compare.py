"""Is the candidate faster than the baseline? Measured so that the answer holds on a noisy machine.

The two models are measured in alternating fresh processes (B C, C B, B C, ...), each process
reduced to its median, and the speedup (baseline time / candidate time) is reported with a
distribution-free interval. When the interval straddles 1, the answer is "indistinguishable";
when there are too few processes to give an interval, the answer is "undecided". Neither passes
a speedup goal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from components.benchmark import disturbance, measuring, request, run_worker
from components.layout import write_json
from components.spec import BenchmarkSettings, Target
from validation.stats import ratio_interval

__all__ = ["compare"]


def compare(
    candidate: Path,
    baseline: Path,
    data: Path | None,
    batch: int,
    *,
    target: Target,
    settings: BenchmarkSettings,
    out: Path | None = None,
) -> dict[str, Any]:
    """Interleaved comparison at ``batch``; writes ``out`` (comparison.json) when given."""
    medians: dict[str, list[float]] = {"baseline": [], "candidate": []}
    order = []
    loads = []
    with measuring(candidate, settings) as hold:
        for round_ in range(settings.compare_rounds):
            pair = [("baseline", baseline), ("candidate", candidate)]
            if round_ % 2:
                pair.reverse()
            for name, path in pair:
                raw = run_worker(
                    request(path, data, batch, target, settings,
                            min_runs=settings.compare_min_runs,
                            min_seconds=settings.compare_seconds)
                )  # fmt: skip
                medians[name].append(float(np.median(raw["samples_ms"])))
                order.append(name)
                loads.append(raw["load"])
    speedup, low, high = ratio_interval(
        medians["baseline"], medians["candidate"], settings.confidence
    )
    if low is None or high is None:
        verdict = "undecided"
        note = (
            f"{settings.compare_rounds} rounds are too few for a {settings.confidence:.0%} interval"
        )
    elif low > 1:
        verdict, note = "faster", "faster: the whole interval lies above 1"
    elif high < 1:
        verdict, note = "slower", "slower: the whole interval lies below 1"
    else:
        verdict, note = "indistinguishable", "the interval contains 1: no difference can be claimed"
    spread = {k: float(max(v) / min(v) - 1) for k, v in medians.items()}
    result = {
        "batch": batch,
        "rounds": settings.compare_rounds,
        "order": order,
        "medians_ms": medians,
        "process_spread": spread,
        "speedup": speedup,
        "interval": [low, high],
        "confidence": settings.confidence,
        "verdict": verdict,
        "note": note,
        "host_lock": hold,
        "loads": loads,
        "disturbed": disturbance(loads, settings),
        "candidate": str(candidate),
        "baseline": str(baseline),
    }
    if out is not None:
        write_json(out, result)
    return result
