from __future__ import annotations

from pathlib import Path
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


def test_structured_pruning_can_learn_the_unpruned_model(tmp_path: Path) -> None:
    """fine_tune_on teacher: the pruned model is fine-tuned on the unpruned one's outputs, and
    ends far closer to them (KL divergence of the softened outputs) than fine-tuned on labels."""
    import copy

    import torch
    from torch.nn import functional

    from optimizers.base import OptimizeContext
    from optimizers.testing import make_contract_model

    model = make_contract_model(tmp_path)
    ctx = OptimizeContext(tmp_path, train=model.train)
    x = torch.from_numpy(model.test[0])
    with torch.no_grad():
        teacher = functional.softmax(model.module(x) / 4, dim=1)

    def prune(**config: Any) -> tuple[float, StepRecord]:
        pruned, record = StructuredPruning({"ratio": 0.8, "lr": 3e-3, **config}).run(
            copy.deepcopy(model.module), ctx
        )
        with torch.no_grad():
            out = functional.log_softmax(pruned(x) / 4, dim=1)
        return float(functional.kl_div(out, teacher, reduction="batchmean")), record

    untuned, _ = prune(fine_tune_epochs=0)
    on_labels, _ = prune(fine_tune_epochs=5)
    on_teacher, record = prune(fine_tune_epochs=5, fine_tune_on="teacher")
    assert record.details["fine_tune"]["on"] == "teacher"
    assert record.details["fine_tune"]["train_agreement_with_teacher"] > 0.9
    assert on_teacher < 0.3 * on_labels < 0.3 * untuned
