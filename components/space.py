"""Search spaces shared by the recipe search and training's hyperparameter tuning.

A dimension is written in a spec as ``{choices: [...]}`` or ``{low, high[, step][, log]}``;
the spec checks it (components/spec.py), and this module turns it into Optuna suggestions,
grid points and a sampler.
"""

from __future__ import annotations

import json
import math
import warnings
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import optuna

__all__ = ["enqueued", "grid_values", "sampler", "suggest"]

_PLAIN = (type(None), bool, int, float, str)


def _encoded(dim: dict[str, Any]) -> bool:
    """Optuna's categorical values are None, bool, int, float or str; lists (a set of op types
    or nodes to keep in fp32) and mappings are stored as their JSON text instead."""
    return "choices" in dim and not all(isinstance(c, _PLAIN) for c in dim["choices"])


def suggest(trial: optuna.Trial, name: str, dim: dict[str, Any]) -> Any:
    """Ask the trial for a value of one dimension."""
    if _encoded(dim):
        text = trial.suggest_categorical(name, [json.dumps(c) for c in dim["choices"]])
        return json.loads(str(text))
    if "choices" in dim:
        return trial.suggest_categorical(name, dim["choices"])
    log = bool(dim.get("log", False))
    if all(isinstance(dim.get(k, 1), int) for k in ("low", "high", "step")):
        return trial.suggest_int(name, dim["low"], dim["high"], step=dim.get("step", 1), log=log)
    return trial.suggest_float(name, dim["low"], dim["high"], step=dim.get("step"), log=log)


def grid_values(dim: dict[str, Any]) -> list[Any]:
    """Every value of a dimension with choices or a step."""
    if "choices" in dim:
        return list(dim["choices"])
    low, high, step = dim["low"], dim["high"], dim["step"]
    count = math.floor((high - low) / step + 1e-9) + 1
    return [round(low + i * step, 10) for i in range(count)]


def enqueued(dim: dict[str, Any], value: Any) -> Any:
    """``value`` as the study stores it (for ``enqueue_trial``)."""
    return json.dumps(value) if _encoded(dim) else value


def sampler(
    kind: Literal["tpe", "random", "grid"], seed: int, trials: int
) -> optuna.samplers.BaseSampler:
    """TPE (multivariate, grouped: recipes have disjoint parameters), or random. The grid is
    enqueued by the caller and drawn by a random sampler, which takes enqueued points first."""
    import optuna

    if kind == "tpe":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, group=True,
                n_startup_trials=min(10, max(2, trials // 3)),
            )  # fmt: skip
    return optuna.samplers.RandomSampler(seed=seed)
