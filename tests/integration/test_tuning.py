"""Hyperparameter tuning of the baseline's training: Optuna trials scored on held-out rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from components.errors import SpecError
from components.layout import RunLayout, read_json
from components.runner import run
from components.spec import load_spec
from components.testing import write_quick_spec

SPACE = {"lr": {"low": 1e-4, "high": 3e-2, "log": True}, "epochs": {"choices": [1, 6]},
         "width": {"choices": [0.25, 1.0]}}  # fmt: skip


DEFAULTS = {
    "training": {"epochs": 5, "tune": {"trials": 5, "sampler": "random", "space": SPACE}},
    "candidates": [{"name": "pruned", "steps": [{"pruning.structured": {"ratio": 0.5, "fine_tune_epochs": 1}}]}],
}  # fmt: skip


def write_spec(tmp_path: Path, **changes: Any) -> Path:
    return write_quick_spec(tmp_path, **(DEFAULTS | changes))


def test_the_best_trial_becomes_the_baseline(tmp_path: Path) -> None:
    result = run(load_spec(write_spec(tmp_path)), tmp_path / "runs", run_id="tuned")
    layout = RunLayout(result.run_dir)
    trained = read_json(layout.baseline.root / "train.json")
    tuning = trained["tuning"]
    assert len(tuning["trials"]) == 5
    scores = [t["validation_accuracy"] for t in tuning["trials"]]
    assert tuning["best"]["validation_accuracy"] == max(scores)
    best = tuning["best"]["params"]
    # the baseline was trained with the best trial's settings and width ...
    assert (
        trained["training"]["lr"] == best["lr"] and trained["training"]["epochs"] == best["epochs"]
    )
    assert trained["width"] == best["width"] and len(trained["history"]["loss"]) == best["epochs"]
    # ... on the whole training split; trials held out a share of it, never the test split
    dataset = read_json(layout.dataset)
    assert tuning["validation_rows"] == round(0.2 * dataset["rows_per_split"]["train"])
    # torch-level recipes rebuild the tuned architecture from its weights
    assert read_json(layout.candidate("pruned").root / "optimize.json")["steps"]
    assert (layout.baseline.root / "tune.journal").stat().st_size > 0


def test_the_grid_sampler_trains_every_point(tmp_path: Path) -> None:
    space = {"epochs": {"choices": [1, 2]}, "lr": {"low": 0.001, "high": 0.003, "step": 0.002}}
    spec = write_spec(
        tmp_path, training={"tune": {"trials": 10, "sampler": "grid", "space": space}}
    )
    result = run(load_spec(spec), tmp_path / "runs", run_id="grid")
    trials = read_json(RunLayout(result.run_dir).baseline.root / "train.json")["tuning"]["trials"]
    assert sorted((t["params"]["epochs"], t["params"]["lr"]) for t in trials) == [
        (1, 0.001), (1, 0.003), (2, 0.001), (2, 0.003)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"training": {"tune": {"space": {"lr": 0.01}}}}, "space.lr: expected {choices: [...]} or {low, high[, step][, log]}, got 0.01"),
        ({"training": {"tune": {"space": {"momentum": {"choices": [0.9]}}}}}, "momentum"),
        ({"training": {"tune": {"space": {"lr": {"low": 0.1, "high": 0.01}}}}}, "low 0.1 is above high 0.01"),
        ({"model": {"onnx": "model.onnx"}, "candidates": [["quantization.dynamic_int8"]]},
         "training.tune: this baseline is loaded, not trained"),
        ({"model": {"factory": "torch.nn:Linear", "kwargs": {"in_features": 30, "out_features": 2}}},
         "training.tune.space.width: only built-in models have a width"),
    ],
)  # fmt: skip
def test_bad_tuning_specs_name_the_field(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(SpecError) as info:
        load_spec(write_spec(tmp_path, **changes))
    assert message in str(info.value)
