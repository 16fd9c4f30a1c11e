from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from optimizers.base import OptimizeContext, StepRecord
from optimizers.low_rank import SvdFactorization
from optimizers.testing import Measured, OptimizerContract


class TestSvdFactorization(OptimizerContract):
    optimizer_class = SvdFactorization
    config: ClassVar[dict[str, Any]] = {"rank_ratio": 0.25, "fine_tune_epochs": 1}
    bad_configs: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({}, "rank_ratio or energy"),
        ({"rank_ratio": 0.5, "energy": 0.9}, "rank_ratio or energy"),
        ({"energy": 1.5}, "energy"),
    ]

    def check_effect(self, before: Measured, after: Measured, record: StepRecord) -> None:
        layers = record.details["layers"]
        assert layers["0"]["rank"] == 8 and layers["2"]["rank"] == 64  # of full ranks 32 and 256
        assert "4" not in layers  # 256 x 4: below min_params
        assert after.parameters < 0.55 * before.parameters
        assert (after.outputs.argmax(1) == before.outputs.argmax(1)).mean() > 0.9


def test_a_rank_that_saves_nothing_is_skipped(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(128, 128))
    opt = SvdFactorization({"rank_ratio": 0.9, "fine_tune_epochs": 0, "min_params": 0})
    with pytest.raises(ValueError, match="no layer was factored"):
        opt.run(model, OptimizeContext(workdir=tmp_path))


def test_convolutions_factor_into_a_thin_conv_and_a_pointwise_one(tmp_path: Path) -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(64, 128, 3, padding=1)
    low_rank = torch.randn(128, 16) @ torch.randn(16, 64 * 3 * 3)  # a weight of rank 16
    conv.weight.data.copy_(low_rank.reshape(128, 64, 3, 3))
    model = torch.nn.Sequential(conv)
    x = torch.randn(2, 64, 8, 8)
    expected = model(x).detach()
    opt = SvdFactorization({"energy": 0.999999, "fine_tune_epochs": 0, "min_params": 0})
    out, record = opt.run(model, OptimizeContext(workdir=tmp_path))
    factored = out.get_submodule("0")
    assert isinstance(factored, torch.nn.Sequential)
    thin, pointwise = factored.get_submodule("0"), factored.get_submodule("1")
    assert isinstance(thin, torch.nn.Conv2d) and isinstance(pointwise, torch.nn.Conv2d)
    assert pointwise.kernel_size == (1, 1)
    assert record.details["layers"]["0"]["rank"] == thin.out_channels == 16
    # nearly all energy kept: the factored layer computes nearly the same thing
    torch.testing.assert_close(out(x), expected, rtol=1e-3, atol=1e-3)
