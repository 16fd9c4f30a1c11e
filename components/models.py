"""Models defined in code, their training loop, and export to ONNX.

torch is imported inside functions so that importing this module stays cheap; the classes
are built by :func:`_classes` on first use for the same reason.
"""

from __future__ import annotations

import importlib
import logging
import time
import warnings
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from components.errors import ModelError
from components.spec import BuiltinModel, FactoryModel, Spec, Training

if TYPE_CHECKING:
    import torch

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "build_builtin",
    "export_onnx",
    "load_factory",
    "module_stats",
    "train_classifier",
]

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
OPSET = 17

_logger = logging.getLogger(__name__)


@cache
def _classes() -> dict[str, Any]:
    import torch
    from torch import nn

    class DigitsCNN(nn.Module):
        """A CNN for scikit-learn's 8x8 digits, fed flat rows of 64 raw pixel values (0-16).

        Sized so that latency differences are measurable (about 0.4 ms per image in fp32
        ONNX Runtime on 2 cores) while it trains in well under a minute.
        """

        def __init__(self, n_classes: int = 10, width: float = 1.0) -> None:
            super().__init__()
            c1, c2, c3, hidden = (max(1, round(c * width)) for c in (64, 128, 256, 1024))
            self.features = nn.Sequential(
                nn.Conv2d(1, c1, 3, padding=1),
                nn.BatchNorm2d(c1),
                nn.ReLU(),
                nn.Conv2d(c1, c2, 3, padding=1),
                nn.BatchNorm2d(c2),
                nn.ReLU(),
                nn.Conv2d(c2, c3, 3, padding=1),
                nn.BatchNorm2d(c3),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
            )
            self.classifier = nn.Sequential(
                nn.Linear(c3 * 16, hidden),
                nn.ReLU(),
                nn.Dropout(0.2),
                nn.Linear(hidden, n_classes),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x.reshape(-1, 1, 8, 8) / 16.0
            return self.classifier(self.features(x))  # type: ignore[no-any-return]

    class TabularMLP(nn.Module):
        """An MLP for numeric tables; standardization is part of the model (and of its ONNX)."""

        def __init__(
            self,
            n_features: int,
            n_classes: int,
            mean: np.ndarray | None = None,
            std: np.ndarray | None = None,
            width: float = 1.0,
        ) -> None:
            super().__init__()
            h1, h2 = (max(1, round(c * width)) for c in (256, 128))
            mean = np.zeros(n_features, np.float32) if mean is None else mean
            std = np.ones(n_features, np.float32) if std is None else std
            self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
            self.register_buffer(
                "scale", torch.as_tensor(1.0 / np.maximum(std, 1e-6), dtype=torch.float32)
            )
            self.net = nn.Sequential(
                nn.Linear(n_features, h1),
                nn.ReLU(),
                nn.Linear(h1, h2),
                nn.ReLU(),
                nn.Linear(h2, n_classes),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            mean, scale = self.get_buffer("mean"), self.get_buffer("scale")
            return self.net((x - mean) * scale)  # type: ignore[no-any-return]

    return {"digits_cnn": DigitsCNN, "tabular_mlp": TabularMLP}


def build_builtin(source: BuiltinModel, x_train: np.ndarray, n_classes: int) -> torch.nn.Module:
    """A fresh, untrained built-in model for data with ``x_train``'s columns."""
    import torch

    torch.manual_seed(0)
    n_features = x_train.shape[1]
    if source.builtin == "digits_cnn":
        if n_features != 64:
            raise ModelError(
                f"model.builtin=digits_cnn takes 64 pixel columns (8x8 images); "
                f"the data has {n_features} feature columns; use model.builtin=tabular_mlp"
            )
        model: torch.nn.Module = _classes()["digits_cnn"](n_classes, source.width)
        return model
    model = _classes()["tabular_mlp"](
        n_features, n_classes, x_train.mean(axis=0), x_train.std(axis=0), source.width
    )
    return model


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


def train_classifier(
    model: torch.nn.Module, x: np.ndarray, y: np.ndarray, training: Training
) -> dict[str, Any]:
    """Train with AdamW and a one-cycle schedule on cross-entropy; deterministic for a seed."""
    import torch
    from torch import nn

    torch.manual_seed(training.seed)
    gen = torch.Generator().manual_seed(training.seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    steps_per_epoch = (len(xt) + training.batch_size - 1) // training.batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=training.lr, weight_decay=training.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=training.lr, total_steps=training.epochs * steps_per_epoch
    )
    losses = []
    start = time.perf_counter()
    model.train()
    for epoch in range(training.epochs):
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), training.batch_size):
            idx = perm[i : i + training.batch_size]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        losses.append(total / len(xt))
        _logger.info("epoch %d/%d: loss %.4f", epoch + 1, training.epochs, losses[-1])
    model.eval()
    return {"epochs": training.epochs, "loss": losses, "seconds": time.perf_counter() - start}


def module_stats(model: torch.nn.Module) -> dict[str, float]:
    """Parameter count and how many of them are non-zero."""
    params = [p.detach() for p in model.parameters()]
    return {
        "parameters": float(sum(p.numel() for p in params)),
        "nonzero_parameters": float(sum(int((p != 0).sum()) for p in params)),
    }


def export_onnx(
    model: torch.nn.Module, n_features: int, path: Path, *, input_dtype: str = "float32"
) -> None:
    """Export with a dynamic batch axis: input ``input`` (batch, features), output ``logits``.

    ``input_dtype="int64"`` for models over token ids (a sequence of ``n_features`` tokens).
    """
    import torch

    model.eval()
    sample = torch.zeros(1, n_features, dtype=getattr(torch, input_dtype))
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The TorchScript exporter is chosen on purpose: it handles every model here with
        # fixed-rank dynamic batch axes and needs no onnxscript; torch flags it as legacy.
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
        try:
            torch.onnx.export(
                model,
                (sample,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )
        except Exception as exc:
            raise ModelError(f"cannot export the model to ONNX: {exc}") from exc
