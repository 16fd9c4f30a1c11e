"""Every optimizer on a second architecture family: the built-in CNN (convolutions, batch
norm, pooling), narrowed so that the test stays quick. The contract suite covers the MLP."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from sklearn.datasets import load_digits

from components.models import build_builtin
from components.spec import BuiltinModel, Training
from optimizers.base import OnnxOptimizer, OptimizeContext, TorchOptimizer
from optimizers.onnx_utils import infer, onnx_stats, session
from optimizers.registry import build
from optimizers.torch_utils import export_onnx, train_classifier


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("cnn")
    digits = load_digits()
    x, y = digits.data.astype(np.float32), digits.target.astype(np.int64)
    model = build_builtin(BuiltinModel(builtin="digits_cnn", width=0.25), x[:1200], 10)
    train_classifier(model, x[:1200], y[:1200], Training(epochs=3))
    export_onnx(model, 64, root / "cnn.onnx")
    ctx = OptimizeContext(
        workdir=root,
        train=(x[:1200], y[:1200]),
        calibration=(x[1200:1500], y[1200:1500]),
        threads=1,
    )
    return {"model": model, "onnx": root / "cnn.onnx", "ctx": ctx, "test": (x[1500:], y[1500:])}


CASES = [
    ("quantization.dynamic_int8", {}, lambda b, a: a["bytes"] < 0.5 * b["bytes"]),
    ("quantization.static_int8", {}, lambda b, a: a["bytes"] < 0.4 * b["bytes"]),
    ("quantization.fp16", {}, lambda b, a: a["bytes"] < 0.6 * b["bytes"]),
    ("graph.ort_optimize", {"level": "extended"}, lambda b, a: a["nodes"] < b["nodes"]),
    (
        "pruning.structured",
        {"ratio": 0.5, "fine_tune_epochs": 1},
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
        {"builtin": "digits_cnn", "width": 0.125, "epochs": 2},
        lambda b, a: a["parameters"] < 0.4 * b["parameters"],
    ),
    ("quantization.qat", {"epochs": 1}, lambda b, a: a["parameters"] == b["parameters"]),
]


@pytest.mark.parametrize(("key", "config", "effect"), CASES, ids=[c[0] for c in CASES])
def test_every_optimizer_on_the_cnn(
    cnn: dict[str, Any], tmp_path: Path, key: str, config: dict[str, Any], effect: Any
) -> None:
    opt = build(key, config)
    out = tmp_path / "out.onnx"
    ctx = OptimizeContext(
        workdir=tmp_path, train=cnn["ctx"].train, calibration=cnn["ctx"].calibration, threads=1
    )
    if isinstance(opt, OnnxOptimizer):
        opt.run(cnn["onnx"], out, ctx)
    else:
        assert isinstance(opt, TorchOptimizer)
        module, _ = opt.run(copy.deepcopy(cnn["model"]), ctx)
        export_onnx(module, 64, out)
    onnx.checker.check_model(str(out))
    x, y = cnn["test"]
    logits = infer(session(out, 1), x)
    assert logits.shape == (len(x), 10) and np.isfinite(logits).all()
    assert (logits.argmax(1) == y).mean() > 0.6  # still a digit classifier
    assert effect(onnx_stats(cnn["onnx"]), onnx_stats(out))


def test_feature_selection_refuses_the_cnn(cnn: dict[str, Any], tmp_path: Path) -> None:
    opt = build("features.select", {"keep": 16})
    assert isinstance(opt, TorchOptimizer)
    with pytest.raises(ValueError, match="DigitsCNN is not one"):
        opt.run(copy.deepcopy(cnn["model"]), cnn["ctx"])
