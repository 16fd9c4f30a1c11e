"""The spec's model sources: a built-in architecture or a user's factory module.

The architectures, the training loop and the export live in :mod:`optimizers.torch_utils`,
below the steps and the techniques that both use them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

import numpy as np

from components.errors import ModelError
from components.spec import BuiltinModel, FactoryModel, Spec
from optimizers import torch_utils
from optimizers.tensors import Features

if TYPE_CHECKING:
    import torch

__all__ = ["build_builtin", "load_factory"]


def build_builtin(source: BuiltinModel, x_train: Features, n_classes: int) -> torch.nn.Module:
    """A fresh, untrained built-in model of the spec's ``model`` section."""
    if not isinstance(x_train, np.ndarray):
        raise ModelError(
            f"model.builtin={source.builtin} takes tabular data (one feature matrix); the data "
            f"has tensor inputs {sorted(x_train)}: use model.factory or model.onnx"
        )
    return torch_utils.build_builtin(source.builtin, source.width, x_train, n_classes)


def load_factory(source: FactoryModel, spec: Spec) -> tuple[torch.nn.Module, bool]:
    """Build the factory's model; load its weights if given. Returns (model, weights_loaded)."""
    import torch

    module_name, _, attr = source.factory.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"model.factory: cannot import {source.factory!r}: {exc}") from exc
    model = factory(**source.kwargs)
    if not isinstance(model, torch.nn.Module):
        raise ModelError(
            f"model.factory: {source.factory!r} returned {type(model).__name__}, "
            "expected a torch.nn.Module"
        )
    if source.weights is None:
        return model, False
    path = spec.resolve(source.weights)
    if not path.is_file():
        raise ModelError(f"model.weights: file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:
        raise ModelError(f"model.weights: cannot load {path} into {source.factory}: {exc}") from exc
    return model, True
