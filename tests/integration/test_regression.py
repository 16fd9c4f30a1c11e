"""A regression model, trained on scikit-learn's diabetes table and gated on its error (MAE), and
the goals, policies and techniques that do not apply to a regression, refused by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from components.errors import SpecError
from components.layout import RunLayout, read_json
from components.runner import run
from components.spec import load_spec
from components.testing import QUICK_BENCHMARK


def spec_file(folder: Path, **fields: Any) -> Path:
    spec = {
        "name": "diabetes-mlp",
        "task": "regression",
        "model": {"builtin": "tabular_mlp", "width": 0.5},
        "data": {"builtin": "diabetes"},
        "training": {"epochs": 60, "lr": 0.003},
        "target": {"threads": 1, "batch_sizes": [1]},
        "benchmark": QUICK_BENCHMARK,
        "goals": {"error": {"metric": "mae", "max_increase": 3.0}, "size": {"max_ratio": 0.6}},
        "candidates": [["quantization.dynamic_int8"],
                       [{"pruning.structured": {"ratio": 0.5, "fine_tune_epochs": 10}}]],
        "select": "smallest",
        "registry": str(folder / "registry"),
        **fields,
    }  # fmt: skip
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_a_regression_is_gated_on_its_error_and_promoted(tmp_path: Path) -> None:
    result = run(load_spec(spec_file(tmp_path)), tmp_path / "runs")
    layout = RunLayout(result.run_dir)
    info = read_json(layout.dataset)
    assert info["task"] == "regression" and info["classes"] == [] and info["class_counts"] is None
    base = read_json(layout.baseline.metrics)
    # diabetes targets span 25-346 (std 77): a trained MLP is far better than the mean's MAE of 64
    assert base["mae"] < 55 and base["rmse"] >= base["mae"]
    verdict = read_json(layout.verdict)
    for entry in verdict["candidates"]:
        (goal,) = [g for g in entry["goals"] if g["goal"] == "error"]
        assert goal["metric"] == "mae_increase" and goal["bound"] is not None
        assert goal["outcome"] == "pass" if goal["bound"] <= 3.0 else goal["outcome"] != "pass"
    pruned = read_json(layout.candidate("c1-structured").metrics)
    assert pruned["size_bytes"] < 0.5 * base["size_bytes"]
    assert result.status == "promoted", verdict["reason"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"goals": {"accuracy": {"max_drop": 0.01}}},
         "goals.accuracy applies to task classification; this spec's task is regression; use "
         "goals.error (mae or rmse)"),
        ({"select": "knee"}, "select: knee trades latency against accuracy"),
        ({"goals": {"fidelity": {"min_cosine": 0.99}}},
         "goals.fidelity.min_cosine: a regression has one value per row"),
        ({"candidates": [[{"distillation.student": {"builtin": "tabular_mlp", "width": 0.5}}]]},
         "candidates[0]: distillation.student supports task classification, not regression"),
        ({"task": "classification"},
         "data.builtin=diabetes is a regression dataset; set task accordingly (task is "
         "classification)"),
    ],
)  # fmt: skip
def test_what_does_not_apply_to_a_regression_is_refused_by_name(
    tmp_path: Path, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec(spec_file(tmp_path, **fields))
    assert message in str(caught.value)
