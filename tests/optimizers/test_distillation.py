from __future__ import annotations

from typing import Any, ClassVar

from optimizers.base import StepRecord
from optimizers.distillation import Distillation
from optimizers.testing import Measured, OptimizerContract


class TestDistillation(OptimizerContract):
    optimizer_class = Distillation
    config: ClassVar[dict[str, Any]] = {"builtin": "tabular_mlp", "width": 0.25, "epochs": 8}
    bad_configs: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({}, "builtin or factory"),
        ({"builtin": "tabular_mlp", "factory": "torch.nn:Linear"}, "builtin or factory"),
        ({"builtin": "tabular_mlp", "alpha": 1.5}, "alpha"),
        ({"builtin": "resnet50"}, "builtin"),
    ]

    def check_effect(self, before: Measured, after: Measured, record: StepRecord) -> None:
        # 32 -> 64 -> 32 -> 4 (a quarter of 256 and 128) against the 32 -> 256 -> 256 -> 4 teacher
        assert after.parameters < 0.1 * before.parameters
        assert record.details["train_agreement_with_teacher"] > 0.9
        assert (after.outputs.argmax(1) == before.outputs.argmax(1)).mean() > 0.85


class TestDistillationToAFactoryStudent(TestDistillation):
    config: ClassVar[dict[str, Any]] = {
        "factory": "torch.nn:Linear", "kwargs": {"in_features": 32, "out_features": 4}, "epochs": 8,
    }  # fmt: skip

    def check_effect(self, before: Measured, after: Measured, record: StepRecord) -> None:
        assert after.parameters == 32 * 4 + 4 and record.details["student"] == "torch.nn:Linear"
        assert (after.outputs.argmax(1) == before.outputs.argmax(1)).mean() > 0.85
