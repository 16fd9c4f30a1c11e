"""Every optimizer on a third architecture family: a BERT encoder built from a config with
random weights, classifying token sequences. Also the transformer-only optimizer, fusion."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx
import pytest

from optimizers.base import OnnxOptimizer, OptimizeContext, StepRecord, TorchOptimizer
from optimizers.graph import TransformerFusion
from optimizers.onnx_utils import infer, onnx_stats, session
from optimizers.registry import build
from optimizers.testing import (
    SEQUENCE,
    ContractModel,
    Measured,
    OptimizerContract,
    make_transformer_contract_model,
)
from optimizers.torch_utils import export_onnx


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> ContractModel:
    return make_transformer_contract_model(tmp_path_factory.mktemp("encoder"))


def _ops(path: Path) -> Counter[str]:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def _run(
    key: str, config: dict[str, Any], model: ContractModel, src: Path, out: Path
) -> StepRecord:
    opt = build(key, config)
    ctx = OptimizeContext(workdir=out.parent, train=model.train, calibration=model.test, threads=1)
    if isinstance(opt, OnnxOptimizer):
        return opt.run(src, out, ctx)
    assert isinstance(opt, TorchOptimizer)
    module, record = opt.run(copy.deepcopy(model.module), ctx)
    export_onnx(module, SEQUENCE, out, input_dtype="int64")
    return record


CASES = [
    ("quantization.dynamic_int8", {}, lambda b, a: a["bytes"] < 0.5 * b["bytes"]),
    ("quantization.static_int8", {}, lambda b, a: a["bytes"] < 0.6 * b["bytes"]),
    ("quantization.fp16", {}, lambda b, a: a["bytes"] < 0.6 * b["bytes"]),
    ("graph.ort_optimize", {"level": "extended"}, lambda b, a: a["nodes"] < b["nodes"]),
    ("graph.transformer_fusion", {}, lambda b, a: a["nodes"] < 0.5 * b["nodes"]),
    (
        "pruning.structured",
        {"ratio": 0.5, "fine_tune_epochs": 2},
        lambda b, a: a["parameters"] < 0.5 * b["parameters"],
    ),
    (
        "pruning.unstructured",
        {"sparsity": 0.5, "fine_tune_epochs": 0},
        lambda b, a: a["parameters"] == b["parameters"],
    ),
    (
        "low_rank.svd",
        {"energy": 0.9, "fine_tune_epochs": 1},
        lambda b, a: a["parameters"] < b["parameters"],
    ),
    (
        "distillation.student",
        {
            "factory": "optimizers.testing:make_transformer_module",
            "kwargs": {"hidden": 32, "heads": 2, "intermediate": 64},
            "epochs": 6,
        },
        lambda b, a: a["parameters"] < 0.5 * b["parameters"],
    ),
    ("quantization.qat", {"epochs": 1}, lambda b, a: a["parameters"] == b["parameters"]),
]


@pytest.mark.parametrize(("key", "config", "effect"), CASES, ids=[c[0] for c in CASES])
def test_every_optimizer_on_the_encoder(
    encoder: ContractModel, tmp_path: Path, key: str, config: dict[str, Any], effect: Any
) -> None:
    out = tmp_path / "out.onnx"
    _run(key, config, encoder, encoder.onnx, out)
    onnx.checker.check_model(str(out))
    x, y = encoder.test
    logits = infer(session(out, 1), x)
    assert logits.shape == (len(x), 4) and np.isfinite(logits).all()
    assert (logits.argmax(1) == y).mean() > 0.9  # still solves the task
    assert effect(onnx_stats(encoder.onnx), onnx_stats(out))


def test_structured_pruning_removes_whole_heads(encoder: ContractModel, tmp_path: Path) -> None:
    out = tmp_path / "pruned.onnx"
    record = _run(
        "pruning.structured", {"ratio": 0.5, "fine_tune_epochs": 1}, encoder, encoder.onnx, out
    )
    assert record.details["heads"] == [[4, 2], [4, 2]]
    query = record.details["widths"]["encoder.encoder.layer.0.attention.self.query"]
    assert query == [64, 32]  # two heads of 16, each head kept whole
    # and the pruned encoder still fuses, its head count read from the graph
    fused = tmp_path / "fused.onnx"
    record = _run("graph.transformer_fusion", {}, encoder, out, fused)
    assert (record.details["num_heads"], record.details["hidden_size"]) == (2, 32)
    assert _ops(fused)["Attention"] == 2


def test_fusion_refuses_a_model_without_attention(encoder: ContractModel, tmp_path: Path) -> None:
    from optimizers.testing import make_contract_model

    mlp = make_contract_model(tmp_path)
    with pytest.raises(ValueError, match="no bert attention subgraph found"):
        TransformerFusion().run(mlp.onnx, tmp_path / "out.onnx", OptimizeContext(tmp_path))
    assert not (tmp_path / "out.onnx").exists()


class TestTransformerFusion(OptimizerContract):
    optimizer_class = TransformerFusion
    bad_configs: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({"model_type": "resnet"}, "model_type"),
        ({"num_heads": -1}, "num_heads"),
    ]

    @pytest.fixture(scope="class")
    @classmethod
    def contract_model(cls, tmp_path_factory: pytest.TempPathFactory) -> ContractModel:
        return make_transformer_contract_model(tmp_path_factory.mktemp("contract"))

    def check_effect(self, before: Measured, after: Measured, record: StepRecord) -> None:
        assert {"Attention", "SkipLayerNormalization", "EmbedLayerNormalization"} <= after.op_types
        assert "Softmax" not in after.op_types
        assert record.details["fused"]["Attention"] == 2
        np.testing.assert_allclose(after.outputs, before.outputs, atol=1e-4)
