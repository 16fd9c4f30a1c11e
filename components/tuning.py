"""Hyperparameter tuning of the baseline's training (``training.tune`` in the spec), with Optuna.

Each trial trains a fresh model on the training split less a held-out, stratified share and
scores its accuracy on that share; the test split is never seen, so the gate's judgement of
the baseline stays unbiased. The best trial's settings (ties: the earliest) then train the
baseline on the whole training split. The study is stored beside the baseline
(``baseline/tune.journal``), and every trial is recorded in ``train.json``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from components.layout import ModelDir
from components.space import grid_values, sampler, suggest
from components.spec import BuiltinModel, FactoryModel, Spec, Training
from optimizers.tensors import Features, subset, to_torch

if TYPE_CHECKING:
    import torch

__all__ = ["build_untrained", "tune_training"]

_logger = logging.getLogger(__name__)


def build_untrained(
    spec: Spec, x: Features, n_classes: int, width: float | None, y: np.ndarray | None = None
) -> torch.nn.Module:
    """A fresh model of the spec's source, at ``width`` (built-in models) if given."""
    from components.models import build_builtin, load_factory

    source = spec.model
    if isinstance(source, BuiltinModel):
        if width is not None:
            source = source.model_copy(update={"width": width})
        return build_builtin(source, x, n_classes, y)
    assert isinstance(source, FactoryModel)
    module, _ = load_factory(source, spec)
    return module


def tune_training(
    spec: Spec, x: Features, y: np.ndarray, n_classes: int, root: Path
) -> tuple[Training, float | None, dict[str, Any]]:
    """The best trial's training settings and width, and a record of the study."""
    import itertools

    import optuna
    import torch
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from sklearn.model_selection import train_test_split

    from optimizers.torch_utils import scores, train_classifier

    tune = spec.training.tune
    assert tune is not None
    fit, val = train_test_split(
        np.arange(len(y)), test_size=tune.validation, random_state=tune.seed, stratify=y
    )
    x_fit, x_val, y_fit, y_val = subset(x, fit), subset(x, val), y[fit], y[val]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=f"{spec.name}-training",
        storage=JournalStorage(JournalFileBackend(str(ModelDir(root).tune_journal))),
        direction="maximize",
        sampler=sampler(tune.sampler, tune.seed, tune.trials),
        load_if_exists=True,
    )
    budget = tune.trials
    if tune.sampler == "grid":
        names = list(tune.space)
        points = [dict(zip(names, combo, strict=True)) for combo in
                  itertools.product(*(grid_values(tune.space[n]) for n in names))]  # fmt: skip
        budget = min(budget, len(points))
        if not study.trials:
            for point in points[:budget]:
                study.enqueue_trial(point)

    def objective(trial: optuna.Trial) -> float:
        params: dict[str, Any] = {
            name: suggest(trial, name, dim) for name, dim in tune.space.items()
        }
        settings = _settings(spec.training, params)
        module = build_untrained(spec, x_fit, n_classes, params.get("width"))
        train_classifier(module, x_fit, y_fit, settings)
        with torch.no_grad():
            predicted = scores(module, *to_torch(x_val)).argmax(1).numpy()
        accuracy = float((predicted == y_val).mean())
        _logger.info("tuning trial %d/%d %s: validation accuracy %.4f",
                     trial.number + 1, budget, params, accuracy)  # fmt: skip
        return accuracy

    done = len([t for t in study.trials if t.state.is_finished()])
    start = time.perf_counter()
    study.optimize(objective, n_trials=max(0, budget - done), timeout=tune.timeout_s)
    best = max((t for t in study.trials if t.value is not None), key=lambda t: (t.value, -t.number))
    record = {
        "sampler": tune.sampler,
        "validation_rows": len(y_val),
        "seconds": time.perf_counter() - start,
        "trials": [
            {
                "number": t.number,
                "params": t.params,
                "validation_accuracy": t.value,
                "state": t.state.name.lower(),
            }
            for t in study.trials
        ],
        "best": {"number": best.number, "params": best.params, "validation_accuracy": best.value},
    }
    _logger.info("tuning: best of %d trials: %s (validation accuracy %.4f)",
                 len(study.trials), best.params, best.value)  # fmt: skip
    return _settings(spec.training, best.params), best.params.get("width"), record


def _settings(training: Training, params: dict[str, Any]) -> Training:
    fields = {k: v for k, v in params.items() if k != "width"}
    return training.model_copy(update={**fields, "tune": None})
