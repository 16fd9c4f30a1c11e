"""The prepare_data step: load, check, split and fingerprint the dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from components.data import SPLITS, fingerprint, load_dataset, save_split, split
from components.layout import RunLayout, write_json
from components.spec import Spec

__all__ = ["prepare_data"]


def prepare_data(spec: Spec, run_dir: Path) -> dict[str, Any]:
    """Write the train, calibration and test splits and ``dataset.json`` into the run."""
    run = RunLayout(run_dir)
    write_json(run.spec, {"digest": spec.digest(), "spec": spec.model_dump(mode="json")})
    table = load_dataset(spec)
    parts = split(table, spec.split)
    run.data.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        save_split(run.split(name), parts[name])
    n_classes = len(table.classes)
    info = {
        "source": spec.data.model_dump(),
        "rows": len(table),
        "n_features": int(table.x.shape[1]),
        "feature_names": list(table.feature_names),
        "classes": list(table.classes),
        "split": spec.split.model_dump(),
        "rows_per_split": {name: len(parts[name]) for name in SPLITS},
        "class_counts": {
            name: np.bincount(parts[name].y, minlength=n_classes).tolist() for name in SPLITS
        },
        "fingerprint": fingerprint(table, spec.split),
    }
    write_json(run.dataset, info)
    return info
