from __future__ import annotations

from pathlib import Path

import torch

from components.onnx_cost import graph_cost
from optimizers.base import OptimizeContext
from optimizers.quantization import DynamicInt8Quantization
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
