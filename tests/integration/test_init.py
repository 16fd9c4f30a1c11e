"""``slimgate init``: a starting spec written from a model and its data, which ``slimgate
validate`` accepts and ``slimgate run`` runs, for a table and for images in an npz with an ONNX
model. (Text through a local tokenizer: tests/integration/test_text_models.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from components.cli import main
from components.testing import QUICK_BENCHMARK


def init(tmp_path: Path, model: str, data: str, *extra: str) -> tuple[Path, dict[str, Any]]:
    out = tmp_path / "specs" / "spec.yaml"
    assert main(["init", model, data, "-o", str(out), *extra]) == 0
    assert main(["validate", str(out)]) == 0
    return out, yaml.safe_load(out.read_text())


def run_quickly(spec_path: Path, spec: dict[str, Any], tmp_path: Path) -> int:
    """Run the spec init wrote, with a short benchmark (the one edit a test needs)."""
    spec["benchmark"] = QUICK_BENCHMARK
    spec["target"]["threads"] = 1
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return main(["run", str(spec_path), "--runs-dir", str(tmp_path / "runs")])


def test_a_spec_for_a_table_fits_a_small_model_and_runs(tmp_path: Path) -> None:
    from sklearn.datasets import load_breast_cancer

    load_breast_cancer(as_frame=True).frame.to_csv(tmp_path / "cancer.csv", index=False)
    path, spec = init(tmp_path, "tabular_mlp", str(tmp_path / "cancer.csv"))
    text = path.read_text()
    assert spec["name"] == "cancer" and spec["data"] == {"path": "../cancer.csv", "label": "target"}
    assert "speedup" not in spec["goals"]
    assert "# no speedup goal: int8 is rarely faster below 1 MB" in text
    # 113 test rows cannot show 0.97 agreement for a model that disagrees on 1% of them
    assert "agreement" not in spec["goals"] and "# no agreement goal: a candidate agreeing" in text
    assert [c if isinstance(c, list) else c["name"] for c in spec["candidates"]] == [
        ["quantization.dynamic_int8"], "pruned-int8", "low-rank",
    ]  # fmt: skip
    spec["training"] = {"epochs": 5}
    assert run_quickly(path, spec, tmp_path) in (0, 3)  # a verdict, either way
    assert list((tmp_path / "runs").glob("*/report.html"))


def test_a_spec_for_images_and_an_onnx_model_runs_onnx_steps_only(tmp_path: Path) -> None:
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.data / 16).astype(np.float32).reshape(-1, 1, 8, 8)
    np.savez(tmp_path / "digits.npz", image=images, label=digits.target)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(8 * 64, 10),
    )  # fmt: skip
    torch.onnx.export(model, (torch.from_numpy(images[:1]),), str(tmp_path / "cnn.onnx"),
                      input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}}, dynamo=False)  # fmt: skip
    path, spec = init(tmp_path, str(tmp_path / "cnn.onnx"), str(tmp_path / "digits.npz"))
    text = path.read_text()
    assert spec["model"] == {"onnx": "../cnn.onnx"} and spec["data"]["label"] == "label"
    assert "inputs ['image']" in text and "only ONNX-level steps" in text
    steps = [s for c in spec["candidates"] for s in (c if isinstance(c, list) else c["steps"])]
    keys = [s if isinstance(s, str) else next(iter(s)) for s in steps]
    assert keys and all(k.startswith(("quantization.", "graph.")) for k in keys)
    # an untrained model: accuracy near chance, so a drop goal is all it can be judged on
    spec["goals"] = {"size": {"max_ratio": 0.9}}
    assert run_quickly(path, spec, tmp_path) in (0, 3)


@pytest.mark.parametrize(
    ("model", "data", "extra", "message"),
    [
        ("nothing.onnx", "digits", [], "MODEL nothing.onnx: no such ONNX file"),
        ("my_net", "digits", [], "MODEL 'my_net': expected a file.onnx, a Hugging Face folder"),
        ("tabular_mlp", "nothing.csv", [], "DATA nothing.csv: no such file"),
        ("tabular_mlp", "TEXT", [], "holds text; give --tokenizer DIR"),
        ("tabular_mlp", "TABLE", ["--label", "nope"], "--label 'nope': the data has no such column"),
        ("tabular_mlp", "ARRAYS", ["--label", "lbl"], "no label array 'lbl' among ['x', 'y']"),
        ("digits_cnn", "TABLE", [], "MODEL digits_cnn takes 8x8 images as 64 pixel columns"),
    ],
)  # fmt: skip
def test_bad_inputs_to_init_exit_2_naming_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str, data: str, *,
    extra: list[str], message: str,
) -> None:  # fmt: skip
    (tmp_path / "text.csv").write_text("text,label\nhello there,a\ngood bye,b\n")
    (tmp_path / "table.csv").write_text("x,label\n1,0\n2,1\n")
    np.savez(tmp_path / "arrays.npz", x=np.zeros((4, 2)), y=np.arange(4))
    data = {"TEXT": str(tmp_path / "text.csv"), "TABLE": str(tmp_path / "table.csv"),
            "ARRAYS": str(tmp_path / "arrays.npz")}.get(data, data)  # fmt: skip
    out = tmp_path / "spec.yaml"
    assert main(["init", model, data, "-o", str(out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_init_guesses_label_task_and_name_as_a_reader_would(tmp_path: Path) -> None:
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=300), "y": rng.normal(size=300),
                          "label": rng.integers(0, 2, 300)})  # fmt: skip
    frame.to_csv(tmp_path / "_Odd Name!.csv", index=False)
    _, spec = init(tmp_path, "tabular_mlp", str(tmp_path / "_Odd Name!.csv"))
    # "label" wins over a column called "y"; the name is a valid registry name
    assert spec["data"]["label"] == "label" and spec["name"] == "odd-name-"
    assert "task" not in spec  # classification
    prices = pd.DataFrame({"area": rng.normal(size=300), "price": rng.integers(100, 900, 300)})
    prices.to_csv(tmp_path / "prices.csv", index=False)
    path = tmp_path / "p" / "spec.yaml"
    assert main(["init", "tabular_mlp", str(tmp_path / "prices.csv"), "-o", str(path)]) == 0
    regression = yaml.safe_load(path.read_text())
    assert regression["task"] == "regression" and "error" in regression["goals"]
    assert "# task: regression, guessed from the label; set task: to change it" in path.read_text()
    assert main(["validate", str(path)]) == 0
