"""The PyTorch toolbox of the techniques and of the baseline step: the built-in architectures,
the training loop, fine-tuning, parameter counts and export to ONNX.

It sits below both (``components`` imports it; it imports nothing of ``components`` but its
error types), so a technique never reaches into the pipeline. torch is imported inside
functions so that importing this module stays cheap.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from components.errors import ModelError
from optimizers.tensors import Features, take, to_torch

if TYPE_CHECKING:
    import torch

    from optimizers.base import OptimizeContext

__all__ = [
    "INPUT_NAME",
    "OPSET",
    "OUTPUT_NAME",
    "TrainSettings",
    "TrainingSettings",
    "build_builtin",
    "export_onnx",
    "fine_tune",
    "module_stats",
    "scores",
    "train_classifier",
    "weight_layers",
]

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
OPSET = 17

_logger = logging.getLogger(__name__)


class TrainingSettings(Protocol):
    """What the training loop reads (the spec's ``training`` section has these fields)."""

    @property
    def epochs(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def lr(self) -> float: ...
    @property
    def weight_decay(self) -> float: ...
    @property
    def seed(self) -> int: ...


@dataclass(frozen=True)
class TrainSettings:
    """Training settings for a technique's own training (fine-tuning, a student)."""

    epochs: int
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0


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

    class TabularRegressor(TabularMLP):
        """The MLP with one output per row; the target's scale is part of the model too, so it
        trains on squared error in the target's own units."""

        def __init__(
            self, n_features: int, mean: np.ndarray, std: np.ndarray, *, target_mean: float,
            target_std: float, width: float = 1.0,
        ) -> None:  # fmt: skip
            super().__init__(n_features, 1, mean, std, width)
            self.register_buffer("target_mean", torch.tensor(float(target_mean)))
            self.register_buffer("target_std", torch.tensor(max(float(target_std), 1e-6)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = super().forward(x)
            return out * self.get_buffer("target_std") + self.get_buffer("target_mean")

    return {
        "digits_cnn": DigitsCNN,
        "tabular_mlp": TabularMLP,
        "tabular_regressor": TabularRegressor,
    }


def build_builtin(
    name: str, width: float, x_train: Features, n_classes: int, y_train: np.ndarray | None = None
) -> torch.nn.Module:
    """A fresh, untrained built-in model (``digits_cnn`` or ``tabular_mlp``) at a width
    multiplier, for data with ``x_train``'s columns; with regression targets ``y_train``, the
    MLP has one output, in the targets' scale."""
    import torch

    if not isinstance(x_train, np.ndarray):
        raise ModelError(f"the built-in {name} takes tabular data (one feature matrix); the data "
                         f"has tensor inputs {sorted(x_train)}")  # fmt: skip
    torch.manual_seed(0)
    n_features = x_train.shape[1]
    if name == "digits_cnn":
        if n_features != 64:
            raise ModelError(
                f"model.builtin=digits_cnn takes 64 pixel columns (8x8 images); "
                f"the data has {n_features} feature columns; use model.builtin=tabular_mlp"
            )
        model: torch.nn.Module = _classes()["digits_cnn"](n_classes, width)
        return model
    if y_train is not None:
        y = y_train.astype(np.float64)
        model = _classes()["tabular_regressor"](
            n_features, x_train.mean(axis=0), x_train.std(axis=0), target_mean=y.mean(),
            target_std=y.std(), width=width,
        )  # fmt: skip
        return model
    model = _classes()["tabular_mlp"](
        n_features, n_classes, x_train.mean(axis=0), x_train.std(axis=0), width
    )
    return model


def scores(model: torch.nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
    """The model's class scores: its output, or the first of several (the one exported first)."""
    out = model(*inputs)
    return out[0] if isinstance(out, tuple | list) else out  # type: ignore[no-any-return]


def train_classifier(
    model: torch.nn.Module,
    x: Features,
    y: np.ndarray,
    training: TrainingSettings,
    task: str = "classification",
) -> dict[str, Any]:
    """Train with AdamW and a one-cycle schedule on cross-entropy (squared error for
    ``task="regression"``, one output per row; for ``"embedding"``, squared error to the
    outputs ``y``); deterministic for a seed.

    ``x`` is one array or one per input, passed to ``forward`` in order."""
    import torch
    from torch import nn

    torch.manual_seed(training.seed)
    gen = torch.Generator().manual_seed(training.seed)
    xs, yt = to_torch(x), torch.from_numpy(y)
    xt = xs[0]
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
            out = scores(model, *(t[idx] for t in xs))
            if task == "classification":
                loss = nn.functional.cross_entropy(out, yt[idx])
            elif task == "regression":
                loss = nn.functional.mse_loss(out.reshape(-1), yt[idx].float())
            else:  # embedding: y holds the outputs to learn (the baseline's)
                loss = nn.functional.mse_loss(out, yt[idx].float())
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        losses.append(total / len(xt))
        _logger.info("epoch %d/%d: loss %.4f", epoch + 1, training.epochs, losses[-1])
    model.eval()
    return {"epochs": training.epochs, "loss": losses, "seconds": time.perf_counter() - start}


def weight_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The linear and convolution layers, by name: what pruning and quantization act on."""
    import torch

    return [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear | torch.nn.Conv2d | torch.nn.Conv1d)
    ]


def fine_tune(
    model: torch.nn.Module, ctx: OptimizeContext, epochs: int, lr: float
) -> dict[str, Any]:
    """Fine-tune a transformed model on the context's training split (nothing for 0 epochs):
    on its labels, or, for an embedding model, on the baseline's outputs."""
    if epochs == 0:
        return {"epochs": 0}
    if ctx.train is None:
        raise ValueError("fine-tuning needs the training split, and this context has none")
    x, y = ctx.train
    if ctx.task == "embedding":  # no labels: learn the baseline's outputs (a distillation loss)
        if ctx.targets is None:
            raise ValueError("fine-tuning an embedding model needs the baseline's outputs")
        y = ctx.targets
    history = train_classifier(model, x, y, TrainSettings(epochs=epochs, lr=lr, seed=ctx.seed),
                               ctx.task)  # fmt: skip
    return {"epochs": epochs, "final_loss": history["loss"][-1]}


def module_stats(model: torch.nn.Module) -> dict[str, float]:
    """Parameter count and how many of them are non-zero."""
    params = [p.detach() for p in model.parameters()]
    return {
        "parameters": float(sum(p.numel() for p in params)),
        "nonzero_parameters": float(sum(int((p != 0).sum()) for p in params)),
    }


def export_onnx(
    model: torch.nn.Module,
    sample: int | Features,
    path: Path,
    *,
    input_dtype: str = "float32",
) -> None:
    """Export with a dynamic batch axis on every input and output.

    ``sample`` is a row or a few of the data (one array, or one per input name, as the model's
    ``forward`` takes them in order), or, for a tabular model, its number of features (a zero
    row of ``input_dtype``: ``int64`` for token ids). One array is exported as input
    ``input``; named arrays keep their names. One output is ``logits``; a model returning
    several gives ``output_0``, ``output_1``, ... (``model.output`` names the scored one).
    """
    import torch

    model.eval()
    if isinstance(sample, int):
        sample = np.zeros((1, sample), dtype=input_dtype)
    arrays = {INPUT_NAME: sample} if isinstance(sample, np.ndarray) else dict(sample)
    tensors = to_torch(take(arrays, slice(0, 1)))
    with torch.no_grad():
        produced = model(*tensors)
    n_out = len(produced) if isinstance(produced, tuple | list) else 1
    outputs = [OUTPUT_NAME] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The TorchScript exporter is chosen on purpose: it handles every model here with
        # fixed-rank dynamic batch axes and needs no onnxscript; torch flags it as legacy.
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
        try:
            torch.onnx.export(
                model,
                tensors,
                str(path),
                input_names=list(arrays),
                output_names=outputs,
                dynamic_axes={name: {0: "batch"} for name in [*arrays, *outputs]},
                opset_version=OPSET,
                dynamo=False,
            )
        except Exception as exc:
            raise ModelError(f"cannot export the model to ONNX: {exc}") from exc
