from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from components.onnx_cost import graph_cost
from optimizers.base import OnnxOptimizer, OptimizeContext
from optimizers.quantization import DynamicInt8Quantization
from optimizers.registry import build
from optimizers.torch_utils import export_onnx


def test_linear_macs_scale_with_batch(tmp_path: Path) -> None:
    export_onnx(torch.nn.Linear(64, 10), 64, tmp_path / "linear.onnx")
    one, eight = graph_cost(tmp_path / "linear.onnx", 1), graph_cost(tmp_path / "linear.onnx", 8)
    assert (one.macs, eight.macs) == (640, 8 * 640)
    assert one.parameters == 650 and one.weight_bytes == 650 * 4 and one.unknown_nodes == []


class _Conv(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x.reshape(-1, 1, 8, 8)).flatten(1))  # type: ignore[no-any-return]


def test_conv_macs_count_every_output_element(tmp_path: Path) -> None:
    export_onnx(_Conv(), 64, tmp_path / "conv.onnx")
    cost = graph_cost(tmp_path / "conv.onnx")
    conv = 4 * 8 * 8 * (1 * 3 * 3)  # output elements x (in channels x kernel)
    fc = 4 * 64 * 3
    assert cost.macs == conv + fc and cost.macs_int8 == 0


def test_integer_matmuls_count_as_int8(tmp_path: Path) -> None:
    export_onnx(
        torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)),
        64,
        tmp_path / "m.onnx",
    )
    DynamicInt8Quantization().run(
        tmp_path / "m.onnx", tmp_path / "q.onnx", OptimizeContext(workdir=tmp_path)
    )
    before, after = graph_cost(tmp_path / "m.onnx"), graph_cost(tmp_path / "q.onnx")
    assert after.macs_int8 == before.macs == 64 * 32 + 32 * 10 and after.macs_fp == 0
    assert after.weight_bytes < 0.4 * before.weight_bytes


# The BERT test encoder: 2 layers, hidden 64, 4 heads, FFN 256, 32 tokens, a 4-class head on
# [CLS]. Per layer: Q, K, V and output projections, the two FFN layers, and the two attention
# products (Q K^T and softmax x V, each sequence x sequence x hidden).
S, H, FFN, LAYERS, CLASSES = 32, 64, 256, 2, 4
PROJECTIONS = LAYERS * (4 * S * H * H + 2 * S * H * FFN) + H * CLASSES
SCORES = LAYERS * 2 * S * S * H


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from optimizers.testing import SEQUENCE, make_transformer_module

    assert SEQUENCE == S
    out = tmp_path_factory.mktemp("encoder")
    export_onnx(make_transformer_module(), SEQUENCE, out / "encoder.onnx", input_dtype="int64")
    return out / "encoder.onnx"


def _variant(encoder: Path, recipe: list[tuple[str, dict[str, Any]]]) -> Path:
    src = encoder
    for i, (key, config) in enumerate(recipe):
        dst = encoder.parent / f"{'-'.join(k for k, _ in recipe[: i + 1])}.onnx"
        if not dst.exists():
            rows = np.random.default_rng(0).integers(1, 199, size=(32, S))
            ctx = OptimizeContext(workdir=encoder.parent, calibration=(rows, np.zeros(32)))
            step = build(key, config)
            assert isinstance(step, OnnxOptimizer)
            step.run(src, dst, ctx)
        src = dst
    return src


@pytest.mark.parametrize(
    ("recipe", "fp", "int8"),
    [
        ([], PROJECTIONS + SCORES, 0),
        ([("graph.transformer_fusion", {})], PROJECTIONS + SCORES, 0),  # Attention, BiasGelu, ...
        # QAttention and MatMulInteger: the projections in int8, the scores in float
        (
            [("graph.transformer_fusion", {}), ("quantization.dynamic_int8", {})],
            SCORES,
            PROJECTIONS,
        ),
        ([("quantization.dynamic_int8", {})], SCORES, PROJECTIONS),
        ([("quantization.static_int8", {})], 0, PROJECTIONS + SCORES),  # QDQ on every MatMul
    ],
    ids=["fp32", "fused", "fused-dynamic-int8", "dynamic-int8", "static-int8-qdq"],
)
def test_transformer_macs_are_counted_through_fused_and_quantized_operators(
    encoder: Path, recipe: list[tuple[str, dict[str, Any]]], fp: int, int8: int
) -> None:
    cost = graph_cost(_variant(encoder, recipe))
    assert cost.unknown_nodes == []
    assert (cost.macs_fp, cost.macs_int8) == (fp, int8)


def test_symbolic_axes_are_sized_from_the_rows_fed(tmp_path: Path) -> None:
    from optimizers.testing import make_transformer_module

    ids = torch.ones((1, S), dtype=torch.int64)
    path = tmp_path / "dynamic-sequence.onnx"
    torch.onnx.export(make_transformer_module().eval(), (ids,), str(path), input_names=["ids"],
                      output_names=["logits"], dynamic_axes={"ids": {0: "batch", 1: "sequence"}},
                      opset_version=17, dynamo=False)  # fmt: skip
    assert graph_cost(path).unknown_nodes != []  # the sequence length is not in the graph
    assert graph_cost(path, 1, {"ids": (S,)}).macs == PROJECTIONS + SCORES
    assert graph_cost(path, 3, {"*": (S,)}).macs == 3 * (PROJECTIONS + SCORES)


def test_an_operator_nobody_knows_leaves_its_consumers_unknown_and_no_file_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((8, 4), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Mystery", ["x"], ["y"], domain="example.org", name="mystery"),
         helper.make_node("MatMul", ["y", "w"], ["z"], name="after"),
         helper.make_node("MatMul", ["x", "w"], ["z2"], name="beside")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("z2", TensorProto.FLOAT, [2, 4])], [w],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("example.org", 1)])  # fmt: skip
    onnx.save(model, str(tmp_path / "m.onnx"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    cost = graph_cost(tmp_path / "m.onnx")
    assert cost.unknown_nodes == ["after"] and cost.macs == 2 * 8 * 4
    assert list(cwd.iterdir()) == []  # ONNX Runtime's inference would save a model here
