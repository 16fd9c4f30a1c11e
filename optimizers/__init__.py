"""Optimization techniques: one module per technique, one class per variant.

Look optimizers up by their stable key with :func:`optimizers.registry.get`; platform teams
add their own through the ``slimgate.optimizers`` entry-point group.
"""

from optimizers.base import (
    OnnxOptimizer,
    OptimizeContext,
    Optimizer,
    OptimizerConfig,
    Stage,
    StepRecord,
    TorchOptimizer,
)
from optimizers.registry import OptimizerRegistryError, available, build, get, register

__all__ = [
    "OnnxOptimizer",
    "OptimizeContext",
    "Optimizer",
    "OptimizerConfig",
    "OptimizerRegistryError",
    "Stage",
    "StepRecord",
    "TorchOptimizer",
    "available",
    "build",
    "get",
    "register",
]
