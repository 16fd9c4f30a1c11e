"""Static int8 of the matrix products (SmoothQuant) and accuracy-aware mixed precision: the
shared contract on the MLP, then what they claim on the BERT test encoder."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx
import pytest

from optimizers.base import OptimizeContext, StepRecord
from optimizers.onnx_utils import infer, session
from optimizers.quantization import MixedPrecisionInt8, SmoothQuantInt8
from optimizers.testing import (
    ContractModel,
    Measured,
    OptimizerContract,
    make_transformer_contract_model,
)


class TestSmoothQuantInt8(OptimizerContract):
    optimizer_class = SmoothQuantInt8
    config: ClassVar[dict[str, Any]] = {"calibration_rows": 64}
    bad_configs: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": -0.1}, "alpha"),
        ({"activation_type": "int4"}, "activation_type"),
        ({"batch_size": 0}, "batch_size"),
        ({"smooth": True}, "smooth"),
    ]

    def check_effect(self, before: Measured, after: Measured, record: StepRecord) -> None:
        assert "int8" in after.initializer_dtypes and "float32" in after.initializer_dtypes
        assert {"QuantizeLinear", "DequantizeLinear"} <= after.op_types
        assert after.bytes < 0.35 * before.bytes  # every Gemm's weight is int8
        assert record.details["quantized"] == 3 and record.details["kept_fp32"] == []
        agree = (after.outputs.argmax(1) == before.outputs.argmax(1)).mean()
        assert agree >= 0.97


class TestSmoothQuantInt8Symmetric(TestSmoothQuantInt8):
    config: ClassVar[dict[str, Any]] = {"alpha": 0.0, "activation_type": "int8",
                                        "per_channel": False}  # fmt: skip


class TestMixedPrecisionInt8(TestSmoothQuantInt8):
    optimizer_class = MixedPrecisionInt8  # type: ignore[assignment]
    config: ClassVar[dict[str, Any]] = {"min_cosine": 0.5, "sensitivity_rows": 16}
    bad_configs: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({"min_cosine": 1.5}, "min_cosine"),
        ({"max_fp32": 1.0}, "max_fp32"),
        ({"sensitivity_rows": 2}, "sensitivity_rows"),
    ]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> ContractModel:
    return make_transformer_contract_model(tmp_path_factory.mktemp("encoder"))


def _quantize(
    cls: type[SmoothQuantInt8 | MixedPrecisionInt8],
    config: dict[str, Any],
    model: ContractModel,
    out: Path,
) -> tuple[Path, StepRecord]:
    ctx = OptimizeContext(workdir=out.parent, calibration=model.train, threads=1)
    return out, cls(config).run(model.onnx, out, ctx)


def _fidelity(model: ContractModel, path: Path) -> tuple[float, float]:
    x, _ = model.test
    a, b = infer(session(model.onnx, 1), x), infer(session(path, 1), x)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return float((a.argmax(1) == b.argmax(1)).mean()), float(cos.mean())


def _optimized(path: Path, tmp_path: Path) -> onnx.GraphProto:
    """The graph ONNX Runtime's CPU provider runs, after its QDQ fusions."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(tmp_path / "as-run.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return onnx.load(opts.optimized_model_filepath).graph


def producer(graph: onnx.GraphProto, tensor: str) -> str:
    return next((n.op_type for n in graph.node if tensor in n.output), "")


def test_the_encoder_keeps_its_outputs_and_runs_on_integer_kernels(
    encoder: ContractModel, tmp_path: Path
) -> None:
    path, record = _quantize(SmoothQuantInt8, {"alpha": 0.5}, encoder, tmp_path / "sq.onnx")
    agreement, cosine = _fidelity(encoder, path)
    assert agreement >= 0.99 and cosine >= 0.999
    ops = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    # the 12 projections and the head, nothing else: softmax, LayerNorm, the mask stay fp32
    assert record.details["quantized"] == 13 == ops["QuantizeLinear"]
    assert record.details["embedding_tables"] == 3  # words, positions, token types
    graph = _optimized(path, tmp_path)
    fused = Counter(n.op_type for n in graph.node)
    assert fused["MatMulIntegerToFloat"] == 12  # every projection of the encoder
    # The head's [1, 64] x [64, 4] product stays fp32 behind DequantizeLinear: ONNX Runtime
    # fuses a 2-D MatMul and its bias Add into Gemm before its QDQ fusions look at it.
    products = [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm", "FusedMatMul")
                and {"DequantizeLinear"} & {producer(graph, i) for i in n.input}]  # fmt: skip
    assert products == ["/head/Gemm/MatMulAddFusion"]


def test_calibration_holds_one_batch_whatever_the_rows(
    encoder: ContractModel, tmp_path: Path
) -> None:
    _, few = _quantize(SmoothQuantInt8, {"calibration_rows": 32, "batch_size": 16}, encoder,
                       tmp_path / "few.onnx")  # fmt: skip
    _, many = _quantize(SmoothQuantInt8, {"calibration_rows": 256, "batch_size": 16}, encoder,
                        tmp_path / "many.onnx")  # fmt: skip
    assert (few.details["calibration"]["rows"], many.details["calibration"]["rows"]) == (32, 256)
    held = few.details["calibration"]["batch_activation_mb"]
    assert held == many.details["calibration"]["batch_activation_mb"] > 0


def test_mixed_precision_keeps_the_most_sensitive_products_in_fp32(
    encoder: ContractModel, tmp_path: Path
) -> None:
    # an unreachable goal: it keeps as many as max_fp32 allows, in the order of sensitivity
    path, record = _quantize(MixedPrecisionInt8, {"min_cosine": 1.0, "max_fp32": 0.25},
                             encoder, tmp_path / "mixed.onnx")  # fmt: skip
    details = record.details
    kept = details["kept_fp32"]
    assert len(kept) == int(0.25 * 13) == 3 and details["goal_reached"] is False
    assert details["quantized"] == 10
    model = onnx.load(str(path))
    fp32 = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    nodes = {n.name: n for n in model.graph.node}
    for name in kept:  # still reads its fp32 weight, with no Q/DQ in front
        assert nodes[name].input[1] in fp32
        assert not nodes[name].input[0].endswith("_a_dq")
    quantized = [n for n in nodes.values() if n.input and n.input[0].endswith("_a_dq")]
    assert len(quantized) == 10 and not {n.name for n in quantized} & set(kept)
    source = onnx.load(str(encoder.onnx)).graph
    dims = {t.name: t.dims for t in source.initializer}
    sizes = {n.name: np.prod(dims[n.input[1]]) for n in source.node
             if n.name in details["sensitivity"]}  # fmt: skip
    per_weight = sorted(details["sensitivity"],
                        key=lambda k: details["sensitivity"][k] / sizes[k], reverse=True)  # fmt: skip
    assert sorted(kept) == sorted(per_weight[:3])
    # a goal already met keeps nothing
    _, easy = _quantize(MixedPrecisionInt8, {"min_cosine": 0.5}, encoder, tmp_path / "e.onnx")
    assert easy.details["kept_fp32"] == [] and easy.details["goal_reached"] is True


def test_smoothing_moves_an_outlier_channel_into_the_weights(tmp_path: Path) -> None:
    """One input channel 100x larger than the rest: per-tensor activation scales waste the int8
    grid on it, and SmoothQuant's migration gets most of the precision back."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="product")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        [numpy_helper.from_array(w, "w")],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              str(tmp_path / "m.onnx"))  # fmt: skip
    x = rng.normal(size=(256, 16)).astype(np.float32)
    x[:, 3] *= 100
    ctx = OptimizeContext(workdir=tmp_path, calibration=(x[:128], np.zeros(128)), threads=1)
    reference = x[128:] @ w
    errors = {}
    for alpha in (0.0, 0.5):
        out = tmp_path / f"a{alpha}.onnx"
        record = SmoothQuantInt8({"alpha": alpha, "quantize_embeddings": False}).run(
            tmp_path / "m.onnx", out, ctx
        )
        y = infer(session(out, 1), x[128:])
        errors[alpha] = float(np.abs(y - reference).mean() / np.abs(reference).mean())
    assert record.details["smoothed_tensors"] == 1
    assert errors[0.5] < errors[0.0] / 3, errors


def test_bad_inputs_are_named(encoder: ContractModel, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"nodes_to_exclude .*\['nowhere'\]"):
        _quantize(SmoothQuantInt8, {"nodes_to_exclude": ["nowhere"]}, encoder, tmp_path / "a")
    ctx = OptimizeContext(
        workdir=tmp_path, calibration=(encoder.train[0][:4], encoder.train[1][:4])
    )
    with pytest.raises(ValueError, match=r"at least batch_size=16 calibration rows; .* has 4"):
        SmoothQuantInt8().run(encoder.onnx, tmp_path / "b.onnx", ctx)
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])  # fmt: skip
    onnx.save(helper.make_model(graph), str(tmp_path / "relu.onnx"))
    with pytest.raises(ValueError, match="no MatMul or Gemm with a weight"):
        SmoothQuantInt8().run(tmp_path / "relu.onnx", tmp_path / "c.onnx", ctx)
