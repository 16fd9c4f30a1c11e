"""The optimizer contract: one class per technique variant, each with its own strict config.

An optimizer works at one of two stages of a recipe. Torch-level optimizers change an
``nn.Module`` (pruning, distillation, low-rank, quantization-aware training); the recipe then
exports the module to ONNX, and ONNX-level optimizers rewrite the exported file (post-training
quantization, graph optimization). A recipe runs every torch step before every ONNX step.

The base classes own the shared work (timing, logging, sizes and parameter counts before and
after); a technique writes one method, ``_apply``.
"""

from __future__ import annotations

import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from validation._strict import StrictModel

if TYPE_CHECKING:
    import numpy as np
    import torch

    from optimizers.tensors import Features

__all__ = [
    "OnnxOptimizer",
    "OptimizeContext",
    "Optimizer",
    "OptimizerConfig",
    "Stage",
    "StepRecord",
    "TorchOptimizer",
]

_logger = logging.getLogger(__name__)


class Stage(StrEnum):
    """Where in a recipe an optimizer runs: before or after the ONNX export."""

    TORCH = "torch"
    ONNX = "onnx"


class OptimizerConfig(StrictModel):
    """Base of every optimizer config: frozen, and unknown fields are errors."""


C = TypeVar("C", bound=OptimizerConfig)


@dataclass(frozen=True)
class OptimizeContext:
    """What an optimizer may use besides the model: data splits, target and a seed.

    ``train`` is for fine-tuning and distillation, ``calibration`` for static quantization;
    neither ever contains test rows.
    """

    workdir: Path
    seed: int = 0
    task: str = "classification"  # fine-tuning's loss: cross-entropy, or squared error
    # embedding: the baseline's outputs on ``train``, which fine-tuning learns (no labels)
    targets: np.ndarray | None = None
    train: tuple[Features, np.ndarray] | None = None  # inputs (one array, or one per name), labels
    calibration: tuple[Features, np.ndarray] | None = None
    threads: int = 2


@dataclass(frozen=True)
class StepRecord:
    """What one optimizer did, measured by the base class."""

    key: str
    version: int
    config: dict[str, Any]
    seconds: float
    before: dict[str, float]
    after: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "version": self.version,
            "config": self.config,
            "seconds": round(self.seconds, 4),
            "before": self.before,
            "after": self.after,
            "details": self.details,
        }


class Optimizer(ABC, Generic[C]):
    """Base of every optimizer. Subclass :class:`TorchOptimizer` or :class:`OnnxOptimizer`.

    Class attributes every concrete optimizer sets:

    - ``key``: the stable, namespaced registry key, e.g. ``"quantization.dynamic_int8"``;
    - ``config_class``: its own :class:`OptimizerConfig` subclass;
    - ``description``: one line for ``slimgate optimizers list``.

    ``version`` is bumped when the same config would produce a different model, so cached
    candidates and registry lineage can tell the two apart.
    """

    key: ClassVar[str]
    stage: ClassVar[Stage]
    config_class: ClassVar[type[OptimizerConfig]]
    description: ClassVar[str]
    version: ClassVar[int] = 1
    # the tasks it supports; a spec with another is refused before any work, naming it
    tasks: ClassVar[frozenset[str]] = frozenset({"classification", "regression", "embedding"})

    def __init__(self, config: C | Mapping[str, Any] | None = None) -> None:
        if config is None:
            config = self.config_class()  # type: ignore[assignment]
        elif not isinstance(config, OptimizerConfig):
            config = self.config_class.model_validate(dict(config))  # type: ignore[assignment]
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} takes a {self.config_class.__name__}, "
                f"got {type(config).__name__}"
            )
        self.config: C = config

    def config_json(self) -> str:
        """The config as JSON, with the key and version needed to rebuild the optimizer."""
        return json.dumps(
            {"key": self.key, "version": self.version, "config": self.config.model_dump()},
            sort_keys=True,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


class OnnxOptimizer(Optimizer[C]):
    """An optimizer that rewrites an exported ONNX file into a new one."""

    stage: ClassVar[Stage] = Stage.ONNX

    def run(self, src: Path, dst: Path, ctx: OptimizeContext) -> StepRecord:
        """Apply the technique to ``src``, write ``dst``, and measure both."""
        from optimizers.onnx_utils import onnx_stats

        before = onnx_stats(src)
        _logger.info("%s: %s -> %s", self.key, src, dst)
        start = time.perf_counter()
        details = self._apply(src, dst, ctx)
        seconds = time.perf_counter() - start
        if not dst.is_file():
            raise RuntimeError(f"optimizer {self.key!r} did not write its output file {dst}")
        after = onnx_stats(dst)
        _logger.info(
            "%s: %.0f -> %.0f bytes in %.2f s", self.key, before["bytes"], after["bytes"], seconds
        )
        return StepRecord(
            self.key, self.version, self.config.model_dump(), seconds, before, after, details
        )

    @abstractmethod
    def _apply(self, src: Path, dst: Path, ctx: OptimizeContext) -> dict[str, Any]:
        """Write the optimized model to ``dst``; return details worth recording."""


class TorchOptimizer(Optimizer[C]):
    """An optimizer that transforms a PyTorch module before export."""

    stage: ClassVar[Stage] = Stage.TORCH

    def run(
        self, model: torch.nn.Module, ctx: OptimizeContext
    ) -> tuple[torch.nn.Module, StepRecord]:
        """Apply the technique to ``model`` and measure it before and after."""
        from optimizers.torch_utils import module_stats

        before = module_stats(model)
        start = time.perf_counter()
        model, details = self._apply(model, ctx)
        seconds = time.perf_counter() - start
        after = module_stats(model)
        _logger.info(
            "%s: %.0f -> %.0f parameters in %.2f s",
            self.key,
            before["parameters"],
            after["parameters"],
            seconds,
        )
        record = StepRecord(
            self.key, self.version, self.config.model_dump(), seconds, before, after, details
        )
        return model, record

    @abstractmethod
    def _apply(
        self, model: torch.nn.Module, ctx: OptimizeContext
    ) -> tuple[torch.nn.Module, dict[str, Any]]:
        """Return the transformed module (may be ``model`` itself) and details to record."""
