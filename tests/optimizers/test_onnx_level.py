from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from optimizers.base import OptimizeContext, StepRecord
from optimizers.graph import GraphOptimization
from optimizers.quantization import Fp16Conversion, StaticInt8Quantization
from optimizers.testing import ContractModel, Measured, OptimizerContract, make_contract_model


class TestStaticInt8(OptimizerContract):
    optimizer_class = StaticInt8Quantization
    config: ClassVar[dict[str, Any]] = {"calibration": "minmax"}
    bad_configs: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({"calibration": "magic"}, "calibration"),
        ({"calibration_rows": 2}, "calibration_rows"),
        ({"activation_type": "int4"}, "activation_type"),
    ]

    def check_effect(self, before: Measured, after: Measured, record: StepRecord) -> None:
        assert "int8" in after.initializer_dtypes and "DequantizeLinear" in after.op_types
        assert after.bytes < 0.35 * before.bytes
        assert record.details["calibration_rows"] == 256 and record.details["qdq_pairs"] > 0
        agree = (after.outputs.argmax(1) == before.outputs.argmax(1)).mean()
        assert agree > 0.95


class TestStaticInt8Entropy(TestStaticInt8):
    config: ClassVar[dict[str, Any]] = {"calibration": "entropy", "per_channel": False}


class TestFp16(OptimizerContract):
    optimizer_class = Fp16Conversion
    config: ClassVar[dict[str, Any]] = {}
    bad_configs: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({"keep_io_types": "maybe"}, "keep_io_types")
    ]

    def check_effect(self, before: Measured, after: Measured, record: StepRecord) -> None:
        assert after.initializer_dtypes == {"float16"} and before.initializer_dtypes == {"float32"}
        assert after.bytes < 0.55 * before.bytes
        assert after.outputs.dtype == np.float32  # inputs and outputs kept fp32
        np.testing.assert_allclose(after.outputs, before.outputs, atol=0.05, rtol=0.02)


class TestGraphOptimization(OptimizerContract):
    optimizer_class = GraphOptimization
    config: ClassVar[dict[str, Any]] = {"level": "extended"}
    bad_configs: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({"level": "max"}, "level"),
        ({"threads": 0}, "threads"),
    ]

    def check_effect(self, before: Measured, after: Measured, record: StepRecord) -> None:
        # Gemm followed by Relu fuses into one FusedGemm node; the numbers do not change
        assert "FusedGemm" in after.op_types and "Relu" not in after.op_types
        assert record.details["nodes_after"] < record.details["nodes_before"]
        np.testing.assert_allclose(after.outputs, before.outputs, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def contract_model(tmp_path_factory: pytest.TempPathFactory) -> ContractModel:
    return make_contract_model(tmp_path_factory.mktemp("onnx-level"))


def test_static_quantization_needs_calibration_rows(
    contract_model: ContractModel, tmp_path: Path
) -> None:
    x, y = contract_model.train
    ctx = OptimizeContext(workdir=tmp_path, calibration=(x[:4], y[:4]))
    with pytest.raises(
        ValueError,
        match="needs at least batch_size=16 calibration rows; the calibration split has 4",
    ):
        StaticInt8Quantization().run(contract_model.onnx, tmp_path / "q.onnx", ctx)


def test_each_calibration_method_gives_its_own_activation_ranges(
    tmp_path: Path, contract_model_for_calibration: ContractModel
) -> None:
    """ONNX Runtime's quantize_static cannot size the histograms, and with its defaults the
    entropy search has a single candidate, the whole range: Entropy came out byte for byte the
    MinMax model. The optimizer calibrates itself; entropy must clip (smaller scales)."""
    import onnx
    from onnx import numpy_helper

    scales = {}
    for method in ("minmax", "entropy", "percentile"):
        out = tmp_path / f"{method}.onnx"
        ctx = OptimizeContext(tmp_path, calibration=contract_model_for_calibration.train)
        StaticInt8Quantization({"calibration": method, "per_channel": False}).run(
            contract_model_for_calibration.onnx, out, ctx
        )
        graph = onnx.load(str(out)).graph
        scales[method] = {
            t.name: float(numpy_helper.to_array(t))
            for t in graph.initializer
            if t.name.endswith("_scale") and numpy_helper.to_array(t).size == 1
            and "output" in t.name
        }  # fmt: skip
    assert scales["minmax"].keys() == scales["entropy"].keys()
    assert scales["entropy"] != scales["minmax"] != scales["percentile"]
    assert all(scales["entropy"][k] <= scales["minmax"][k] + 1e-9 for k in scales["minmax"])
    assert any(scales["entropy"][k] < 0.9 * scales["minmax"][k] for k in scales["minmax"])


@pytest.fixture(scope="module")
def contract_model_for_calibration(tmp_path_factory: pytest.TempPathFactory) -> ContractModel:
    return make_contract_model(tmp_path_factory.mktemp("calibration"))
