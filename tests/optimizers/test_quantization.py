from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from optimizers.base import StepRecord
from optimizers.quantization import DynamicInt8Quantization
from optimizers.testing import ContractModel, Measured, OptimizerContract


class TestDynamicInt8(OptimizerContract):
    optimizer_class = DynamicInt8Quantization
    config: ClassVar[dict[str, Any]] = {}
    bad_configs: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({"per_channel": "sometimes"}, "per_channel"),
        ({"op_types": ["Softmax"]}, "op_types"),
        ({"op_types": []}, "op_types"),
        ({"weight_type": "int4"}, "weight_type"),
        ({"per_chanel": True}, "per_chanel"),
    ]

    def check_effect(self, before: Measured, after: Measured, record: StepRecord) -> None:
        assert "int8" in after.initializer_dtypes
        assert "MatMulInteger" in after.op_types and "Gemm" not in after.op_types
        # fp32 weights become int8: close to a quarter of the bytes
        assert after.bytes < 0.35 * before.bytes
        assert record.after["bytes"] == after.bytes and record.before["bytes"] == before.bytes
        assert record.details["integer_nodes"] == 3


class TestDynamicInt8PerChannel(TestDynamicInt8):
    config: ClassVar[dict[str, Any]] = {"per_channel": True, "reduce_range": True}


def test_op_types_that_match_nothing_are_an_error(
    contract_model: ContractModel, tmp_path: Path
) -> None:
    from optimizers.base import OptimizeContext

    opt = DynamicInt8Quantization({"op_types": ["LSTM"]})
    with pytest.raises(ValueError, match=r"op_types \['LSTM'\] match no node"):
        opt.run(contract_model.onnx, tmp_path / "out.onnx", OptimizeContext(workdir=tmp_path))


def test_nodes_to_exclude_must_exist(contract_model: ContractModel, tmp_path: Path) -> None:
    from optimizers.base import OptimizeContext

    opt = DynamicInt8Quantization({"nodes_to_exclude": ["/no/such/node"]})
    with pytest.raises(ValueError, match="nodes_to_exclude names nodes that are not in"):
        opt.run(contract_model.onnx, tmp_path / "out.onnx", OptimizeContext(workdir=tmp_path))


@pytest.fixture(scope="module")
def contract_model(tmp_path_factory: pytest.TempPathFactory) -> ContractModel:
    from optimizers.testing import make_contract_model

    return make_contract_model(tmp_path_factory.mktemp("quant"))
