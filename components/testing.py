"""Quick specs for tests of whole runs, in-tree or in a platform team's plugin package.

A small MLP on scikit-learn's breast-cancer table with short benchmarks: a full run (train,
candidates, gate, report) takes seconds. Latency from such runs is not for gating; use
size and accuracy goals in tests, and `make bench` for speed.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

__all__ = ["QUICK_BENCHMARK", "write_quick_spec"]

QUICK_BENCHMARK: dict[str, Any] = {
    "warmup": 5,
    "min_runs": 30,
    "min_seconds": 0.05,
    "compare_rounds": 4,
    "compare_seconds": 0.02,
    "compare_min_runs": 10,
}


def write_quick_spec(folder: Path, **fields: Any) -> Path:
    """Write a quick spec into ``folder`` (a fresh file each call); ``fields`` replace the
    defaults' top-level fields. The registry is ``folder/registry``."""
    import yaml

    spec = {
        "name": "cancer",
        "model": {"builtin": "tabular_mlp", "width": 0.5},
        "data": {"builtin": "breast_cancer"},
        "training": {"epochs": 5},
        "target": {"threads": 1, "batch_sizes": [1]},
        "benchmark": QUICK_BENCHMARK,
        "goals": {"accuracy": {"max_drop": 0.1}},
        "candidates": [{"name": "int8", "steps": ["quantization.dynamic_int8"]}],
        "registry": str(folder / "registry"),
        **fields,
    }
    path = folder / f"spec-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path
