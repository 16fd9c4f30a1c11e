from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from components.models import build_builtin
from components.spec import BuiltinModel
from optimizers.base import OptimizeContext, StepRecord
from optimizers.features import FeatureSelection, PcaProjection
from optimizers.testing import ContractModel, Measured, OptimizerContract, make_contract_model


class TestMutualInformationSelection(OptimizerContract):
    optimizer_class = FeatureSelection
    config: ClassVar[dict[str, Any]] = {"method": "mutual_info", "keep": 8, "fine_tune_epochs": 2}
    bad_configs: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({"method": "vibes"}, "method"),
        ({"keep": 0}, "keep"),
    ]

    def check_effect(self, before: Measured, after: Measured, record: StepRecord) -> None:
        assert record.details["kept"] == 8 and len(record.details["columns"]) == 8
        assert "Gather" in after.op_types  # the selection is inside the ONNX graph
        assert after.parameters < before.parameters - (32 - 8) * 256 + 64
        assert (after.outputs.argmax(1) == before.outputs.argmax(1)).mean() > 0.85


class TestRfeSelection(TestMutualInformationSelection):
    config: ClassVar[dict[str, Any]] = {"method": "rfe", "keep": 0.25, "fine_tune_epochs": 2}


class TestPca(OptimizerContract):
    optimizer_class = PcaProjection
    config: ClassVar[dict[str, Any]] = {"components": 6, "fine_tune_epochs": 2}
    bad_configs: ClassVar[list[tuple[dict[str, Any], str]]] = [({"components": -1}, "components")]

    def check_effect(self, before: Measured, after: Measured, record: StepRecord) -> None:
        assert record.details["components"] == 6 and 0 < record.details["variance_kept"] < 1
        assert (after.outputs.argmax(1) == before.outputs.argmax(1)).mean() > 0.85


@pytest.fixture(scope="module")
def contract_model(tmp_path_factory: pytest.TempPathFactory) -> ContractModel:
    return make_contract_model(tmp_path_factory.mktemp("features"))


def test_the_tabular_mlp_family_keeps_its_scaling_consistent(
    contract_model: ContractModel, tmp_path: Path
) -> None:
    x, y = contract_model.train
    mlp = build_builtin(BuiltinModel(builtin="tabular_mlp"), x, 4)
    ctx = OptimizeContext(workdir=tmp_path, train=(x, y))
    selected, record = FeatureSelection({"keep": 10, "fine_tune_epochs": 0}).run(mlp, ctx)
    import torch

    out = selected(torch.as_tensor(x[:5]))  # full rows in: the model selects its columns itself
    assert out.shape == (5, 4) and np.isfinite(out.detach().numpy()).all()
    assert record.after["parameters"] < record.before["parameters"]


def test_other_families_are_refused_by_name(tmp_path: Path) -> None:
    cnn = build_builtin(BuiltinModel(builtin="digits_cnn"), np.zeros((4, 64), np.float32), 10)
    ctx = OptimizeContext(
        workdir=tmp_path, train=(np.zeros((4, 64), np.float32), np.zeros(4, np.int64))
    )
    with pytest.raises(
        ValueError,
        match=r"first layer is a Linear over the 64 input features.*DigitsCNN is not one",
    ):
        FeatureSelection({"keep": 8}).run(cnn, ctx)
