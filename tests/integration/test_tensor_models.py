"""Models of any signature, with data in their shape: an image CNN [N, 3, 32, 32] from ONNX and
from a factory, a two-output model scored on its named output, and the one-line errors for data
that does not fit the model (a missing array, a wrong rank, a wrong dtype)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from components.layout import RunLayout, read_json
from components.runner import run
from components.spec import load_spec
from components.testing import QUICK_BENCHMARK
from optimizers.testing import image_cnn, image_task
from optimizers.torch_utils import TrainSettings, export_onnx, train_classifier

SLIMGATE = str(Path(sys.executable).with_name("slimgate"))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Image data as an npz (one array named as the model's input) and a trained CNN as ONNX,
    plus the same CNN with a second output ("embedding" before "logits")."""
    import torch

    root = tmp_path_factory.mktemp("images")
    x, y = image_task(480, seed=1)
    np.savez(root / "images.npz", image=x, label=y)
    model = image_cnn()
    train_classifier(model, x, y, TrainSettings(epochs=4, seed=0))
    export_onnx(model, {"image": x[:1]}, root / "cnn.onnx")

    class TwoOutputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.head = model[:-1], model[-1]

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            embedding = self.body(image)
            return embedding, self.head(embedding)

    two = TwoOutputs().eval()
    torch.onnx.export(two, (torch.from_numpy(x[:1]),), str(root / "two.onnx"),
                      input_names=["image"], output_names=["embedding", "logits"],
                      dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"},
                                    "logits": {0: "batch"}}, opset_version=17, dynamo=False)  # fmt: skip
    return {"root": root, "data": root / "images.npz", "onnx": root / "cnn.onnx",
            "two": root / "two.onnx"}  # fmt: skip


def spec_file(folder: Path, name: str, **fields: Any) -> Path:
    spec = {
        "name": name,
        "data": {"path": str(folder / "images.npz")},
        "target": {"threads": 1, "batch_sizes": [1]},
        "benchmark": QUICK_BENCHMARK,
        "goals": {"size": {"max_ratio": 0.6}, "accuracy": {"max_drop": 0.05}},
        "candidates": [["quantization.static_int8"]],
        "registry": str(folder / "registry"),
        **fields,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_an_image_cnn_from_onnx_is_quantized_static_int8_and_promoted(
    images: dict[str, Path], tmp_path: Path
) -> None:
    spec = load_spec(spec_file(images["root"], "cnn-onnx", model={"onnx": str(images["onnx"])}))
    result = run(spec, tmp_path / "runs")
    layout = RunLayout(result.run_dir)
    info = read_json(layout.dataset)
    assert info["inputs"] == {"image": {"dtype": "float32", "shape": [3, 32, 32]}}
    assert info["n_features"] is None
    base = read_json(layout.baseline.metrics)
    assert base["accuracy"] > 0.9
    cand = read_json(layout.candidate("c0-static-int8").metrics)
    assert cand["size_bytes"] < 0.6 * base["size_bytes"]
    assert result.status == "promoted", read_json(layout.verdict)["reason"]
    # calibration fed the model's own input: the quantized graph holds QDQ pairs
    steps = read_json(layout.candidate("c0-static-int8").optimize_record)["steps"]
    assert steps[0]["details"]["qdq_pairs"] > 0 and steps[0]["details"]["calibration_rows"] >= 8


def test_an_image_cnn_from_a_factory_is_pruned_then_quantized(
    images: dict[str, Path], tmp_path: Path
) -> None:
    path = spec_file(
        images["root"], "cnn-factory", model={"factory": "optimizers.testing:image_cnn"},
        training={"epochs": 4},
        candidates=[[{"pruning.structured": {"ratio": 0.5, "fine_tune_epochs": 2}},
                     "quantization.static_int8"]],
        goals={"size": {"max_ratio": 0.3}, "accuracy": {"max_drop": 0.1}},
    )  # fmt: skip
    result = run(load_spec(path), tmp_path / "runs")
    layout = RunLayout(result.run_dir)
    name = "c0-structured-static-int8"
    steps = read_json(layout.candidate(name).optimize_record)["steps"]
    assert steps[0]["after"]["parameters"] < 0.5 * steps[0]["before"]["parameters"]
    import onnxruntime as ort

    sess = ort.InferenceSession(str(layout.candidate(name).model))
    assert [(i.name, i.shape[1:]) for i in sess.get_inputs()] == [("image", [3, 32, 32])]
    assert result.status == "promoted", read_json(layout.verdict)["reason"]


def test_a_two_output_model_is_scored_on_its_named_output(
    images: dict[str, Path], tmp_path: Path
) -> None:
    named = spec_file(images["root"], "two", model={"onnx": str(images["two"]), "output": "logits"},
                      candidates=[["quantization.dynamic_int8"]], goals={"accuracy": {"max_drop": 0.05}})  # fmt: skip
    result = run(load_spec(named), tmp_path / "runs")
    base = read_json(RunLayout(result.run_dir).baseline.metrics)
    assert base["accuracy"] > 0.9 and result.status == "promoted"


def slimgate_run(spec: Path, runs: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SLIMGATE, "run", str(spec), "--runs-dir", str(runs)],
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip


def errors(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("slimgate: error:")]


def test_the_first_output_is_not_the_scores_and_the_error_says_to_name_it(
    images: dict[str, Path], tmp_path: Path
) -> None:
    unnamed = spec_file(images["root"], "two-unnamed", model={"onnx": str(images["two"])})
    proc = slimgate_run(unnamed, tmp_path / "a")
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = errors(proc)
    assert line.endswith("output 'embedding' has shape [32] per row; the data has 4 classes, so "
                         "expected [4]; name the scored output with model.output")  # fmt: skip
    wrong = spec_file(
        images["root"], "two-wrong", model={"onnx": str(images["two"]), "output": "score"}
    )
    (line,) = errors(slimgate_run(wrong, tmp_path / "b"))
    assert line.endswith("model.output 'score' is not an output; outputs: ['embedding', 'logits']")


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        ({"img": lambda x: x}, "input 'image' has no array in the data; the data has ['img']"),
        ({"image": lambda x: x.reshape(len(x), -1)},
         "input 'image' takes rank 4 ['batch', 3, 32, 32]; the data's array has rank 2 [2, 3072]"),
        ({"image": lambda x: x[:, :, :16, :16]},
         "input 'image' takes ['batch', 3, 32, 32]; the data's array is [2, 3, 16, 16] "
         "(axis 2: 16, expected 32)"),
    ],
)  # fmt: skip
def test_data_that_does_not_fit_the_model_is_one_line_naming_the_input(
    images: dict[str, Path], tmp_path: Path, arrays: dict[str, Any], expected: str
) -> None:
    x, y = image_task(120, seed=2)
    np.savez(tmp_path / "images.npz", label=y, **{k: f(x) for k, f in arrays.items()})
    spec = spec_file(tmp_path, "misfit", model={"onnx": str(images["onnx"])})
    proc = slimgate_run(spec, tmp_path / "runs")
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = errors(proc)
    assert line.endswith(expected), line


def test_float_data_for_an_integer_input_is_refused_by_name(tmp_path: Path) -> None:
    from optimizers.tensors import feeds

    class Input:
        name, type, shape = "input_ids", "tensor(int64)", ["batch", 8]

    with pytest.raises(Exception, match=r"input 'input_ids' takes tensor\(int64\); the data's "
                                        r"array is float32 \(integers expected"):  # fmt: skip
        feeds([Input()], {"input_ids": np.zeros((2, 8), np.float32)}, "model.onnx")


def test_tensor_data_is_checked_input_by_input(images: dict[str, Path], tmp_path: Path) -> None:
    x, y = image_task(120, seed=3)
    x[5, 0, 0, 0] = np.nan
    np.savez(tmp_path / "images.npz", image=x, label=y)
    spec = spec_file(tmp_path, "nan", model={"onnx": str(images["onnx"])})
    proc = slimgate_run(spec, tmp_path / "runs")
    assert proc.returncode == 2
    lines = errors(proc)
    assert lines[1] == ("slimgate: error: finite_values input 'image': 1 of 120 rows hold NaN "
                        "or +-inf (e.g. 5)")  # fmt: skip
    (run_dir,) = (tmp_path / "runs").iterdir()
    checks = json.loads((run_dir / "data" / "validation.json").read_text())["results"]
    assert {c["check"] for c in checks} >= {"min_rows", "numeric_dtype", "finite_values",
                                            "no_duplicate_rows"}  # fmt: skip


def test_a_binary_classifier_with_a_single_logit_is_scored(tmp_path: Path) -> None:
    """A model whose output is one logit per row (class 1 when positive), as many binary
    classifiers are exported, on the breast-cancer table."""
    import torch
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    model = torch.nn.Sequential(torch.nn.Linear(30, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))
    for _ in range(200):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(xt)[:, 0], yt)
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    export_onnx(model, x[:1], tmp_path / "binary.onnx")
    np.savez(tmp_path / "table.npz", x=x, label=y)
    spec = {"name": "binary", "model": {"onnx": str(tmp_path / "binary.onnx")},
            "data": {"path": str(tmp_path / "table.npz")}, "target": {"threads": 1},
            "benchmark": QUICK_BENCHMARK, "goals": {"accuracy": {"max_drop": 0.05}},
            "candidates": [["quantization.dynamic_int8"]], "registry": str(tmp_path / "registry")}  # fmt: skip
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    result = run(load_spec(tmp_path / "spec.yaml"), tmp_path / "runs")
    assert read_json(RunLayout(result.run_dir).baseline.metrics)["accuracy"] > 0.95
    assert result.status == "promoted"
