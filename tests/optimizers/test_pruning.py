from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from optimizers.base import StepRecord
from optimizers.pruning import StructuredPruning, UnstructuredPruning
from optimizers.testing import Measured, OptimizerContract


class TestStructuredPruning(OptimizerContract):
    optimizer_class = StructuredPruning
    config: ClassVar[dict[str, Any]] = {"ratio": 0.5, "fine_tune_epochs": 2}
    bad_configs: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({"ratio": 1.0}, "ratio"),
        ({"importance": "vibes"}, "importance"),
        ({"fine_tune_epochs": -1}, "fine_tune_epochs"),
    ]

    def check_effect(self, before: Measured, after: Measured, record: StepRecord) -> None:
        # 32 -> 256 -> 256 -> 4 becomes 32 -> 128 -> 128 -> 4: the weights really shrink
        assert record.details["widths"] == {"0": [256, 128], "2": [256, 128], "4": [4, 4]}
        assert after.parameters < 0.35 * before.parameters
        assert after.bytes < 0.4 * before.bytes
        assert record.after["parameters"] == after.parameters
        # fine-tuned back: it still agrees with the unpruned model on most examples
        assert (after.outputs.argmax(1) == before.outputs.argmax(1)).mean() > 0.9


class TestUnstructuredPruning(OptimizerContract):
    optimizer_class = UnstructuredPruning
    config: ClassVar[dict[str, Any]] = {"sparsity": 0.6, "fine_tune_epochs": 1}
    bad_configs: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({"sparsity": 0}, "sparsity"),
        ({"scope": "row"}, "scope"),
    ]

    def check_effect(self, before: Measured, after: Measured, record: StepRecord) -> None:
        assert abs(record.details["weight_sparsity"] - 0.6) < 0.01
        assert after.parameters == before.parameters  # same shapes: dense kernels, no speedup
        assert after.nonzero_parameters < 0.45 * before.nonzero_parameters
        assert "no speedup" in record.details["note"]
        assert np.isfinite(after.outputs).all()
