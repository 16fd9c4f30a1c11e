from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from optimizers.base import OptimizeContext, StepRecord
from optimizers.quantization import QuantizationAwareTraining
from optimizers.testing import (
    N_FEATURES,
    ContractModel,
    Measured,
    OptimizerContract,
    make_contract_model,
)
from optimizers.torch_utils import export_onnx


class TestQuantizationAwareTraining(OptimizerContract):
    optimizer_class = QuantizationAwareTraining
    config: ClassVar[dict[str, Any]] = {"epochs": 2}
    bad_configs: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({"epochs": 0}, "epochs"),
        ({"momentum": 1.0}, "momentum"),
    ]

    def check_effect(self, before: Measured, after: Measured, record: StepRecord) -> None:
        assert record.details["layers"] == 3 and after.parameters == before.parameters
        assert (after.outputs.argmax(1) == before.outputs.argmax(1)).mean() > 0.9


@pytest.fixture(scope="module")
def contract_model(tmp_path_factory: pytest.TempPathFactory) -> ContractModel:
    return make_contract_model(tmp_path_factory.mktemp("qat"))


def test_weights_end_on_a_per_channel_int8_grid(
    contract_model: ContractModel, tmp_path: Path
) -> None:
    ctx = OptimizeContext(workdir=tmp_path, train=contract_model.train)
    module, _ = QuantizationAwareTraining({"epochs": 1}).run(
        copy.deepcopy(contract_model.module), ctx
    )
    export_onnx(module, N_FEATURES, tmp_path / "qat.onnx")
    weights = [
        numpy_helper.to_array(t)
        for t in onnx.load(str(tmp_path / "qat.onnx")).graph.initializer
        if t.dims and len(t.dims) == 2
    ]
    assert len(weights) == 3
    for w in weights:
        scale = np.abs(w).max(axis=1, keepdims=True) / 127
        steps = w / scale
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)  # integers: on the grid
