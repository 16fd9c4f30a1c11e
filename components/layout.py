"""Where each step reads and writes inside a run directory ``runs/<run-id>/``.

::

    spec.json                       the validated spec, as the run saw it
    data/{train,calibration,test}.npz, data/dataset.json
    data/validation.json
    baseline/model.onnx, model.pt, train.json, tune.journal, metrics.json, predictions.npz,
             benchmark.json, cache.json
    candidates/<name>/model.onnx, optimize.json, metrics.json, predictions.npz, benchmark.json,
                      comparison.json (interleaved against the baseline), cache.json,
                      screen.json, screen-benchmark.json (search trials), error.json
    search/search.json, study.journal, error.json (a failed search)
    champion/champion.json, metrics.json, predictions.npz
    steps/<step>[.<item>].json      how each executed step ended (components.pipeline)
    verdict.json, promotion.json, report.json, report.html, error.json (a run that stopped)
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ModelDir", "RunLayout", "read_json", "write_json"]


@dataclass(frozen=True)
class ModelDir:
    """The files of one model (the baseline or a candidate) inside a run."""

    root: Path

    @property
    def model(self) -> Path:
        return self.root / "model.onnx"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions.npz"

    @property
    def benchmark(self) -> Path:
        return self.root / "benchmark.json"

    @property
    def comparison(self) -> Path:
        return self.root / "comparison.json"

    @property
    def error(self) -> Path:
        """Why building or measuring this model failed (the gate fails it with the reason)."""
        return self.root / "error.json"

    @property
    def weights(self) -> Path:
        """The trained PyTorch state_dict (the baseline of a torch-level model)."""
        return self.root / "model.pt"

    @property
    def train_record(self) -> Path:
        """How the model was trained (and tuned): epochs, losses, trials."""
        return self.root / "train.json"

    @property
    def tune_journal(self) -> Path:
        return self.root / "tune.journal"

    @property
    def optimize_record(self) -> Path:
        """The recipe's steps as run: each optimizer's key, version, config and effect."""
        return self.root / "optimize.json"

    @property
    def cache_record(self) -> Path:
        """Which of this model's files and measurements came from the cache."""
        return self.root / "cache.json"

    @property
    def screen(self) -> Path:
        """A search trial's quick screen (size, accuracy, latency before the full build)."""
        return self.root / "screen.json"

    @property
    def screen_benchmark(self) -> Path:
        return self.root / "screen-benchmark.json"


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @property
    def run_id(self) -> str:
        return self.root.name

    @property
    def spec(self) -> Path:
        return self.root / "spec.json"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def split(self, name: str) -> Path:
        return self.data / f"{name}.npz"

    @property
    def dataset(self) -> Path:
        return self.data / "dataset.json"

    @property
    def baseline(self) -> ModelDir:
        return ModelDir(self.root / "baseline")

    def candidate(self, name: str) -> ModelDir:
        return ModelDir(self.root / "candidates" / name)

    @property
    def champion(self) -> ModelDir:
        """The model behind the registry's production alias, scored on this run's test split."""
        return ModelDir(self.root / "champion")

    @property
    def champion_record(self) -> Path:
        """Which version is behind production, or why none: written by the champion step."""
        return self.champion.root / "champion.json"

    @property
    def search(self) -> Path:
        return self.root / "search"

    @property
    def search_result(self) -> Path:
        return self.search / "search.json"

    @property
    def search_journal(self) -> Path:
        """The search's Optuna study (a JournalStorage file): a retried step resumes it."""
        return self.search / "study.journal"

    @property
    def data_validation(self) -> Path:
        """Every data check with its outcome (great-expectations and the split checks)."""
        return self.data / "validation.json"

    @property
    def steps(self) -> Path:
        return self.root / "steps"

    def step_record(self, step: str, item: str | None = None) -> Path:
        return self.steps / (f"{step}.{item}.json" if item else f"{step}.json")

    def step_error(self, step: str, item: str | None = None) -> Path:
        """Where a step whose failure the pipeline continues past records it: the evidence
        the gate reads (a candidate's own folder, the search's)."""
        if step == "candidate" and item:
            return self.candidate(item).error
        if step == "search":
            return self.search / "error.json"
        return self.root / step / "error.json"

    @property
    def error(self) -> Path:
        """Why a run stopped."""
        return self.root / "error.json"

    @property
    def verdict(self) -> Path:
        return self.root / "verdict.json"

    @property
    def promotion(self) -> Path:
        return self.root / "promotion.json"

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def tracking(self) -> Path:
        """Where the run was logged to MLflow tracking (or why it could not be)."""
        return self.root / "tracking.json"


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically: readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=False, default=str)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    with path.open() as f:
        return json.load(f)
