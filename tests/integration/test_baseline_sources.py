"""The baseline step on each kind of model source, with real training, export and ONNX Runtime."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from components.baseline import baseline
from components.errors import ModelError
from components.layout import RunLayout, read_json
from components.prepare import prepare_data
from components.spec import load_spec
from optimizers.torch_utils import export_onnx

LINEAR = {"factory": "torch.nn:Linear", "kwargs": {"in_features": 64, "out_features": 10}}


def prepared(tmp_path: Path, demo_spec: dict[str, Any], write_spec: Any, **changes: Any) -> Any:
    demo_spec.update(training={"epochs": 3, "seed": 0}, **changes)
    spec = load_spec(write_spec(demo_spec))
    prepare_data(spec, tmp_path / "run")
    return spec


def test_a_factory_without_weights_is_trained(
    tmp_path: Path, demo_spec: dict[str, Any], write_spec: Any
) -> None:
    spec = prepared(tmp_path, demo_spec, write_spec, model=LINEAR)
    spec = spec.model_copy(
        update={"training": spec.training.model_copy(update={"epochs": 15, "lr": 0.01})}
    )
    metrics = baseline(spec, tmp_path / "run")
    run = RunLayout(tmp_path / "run")
    assert read_json(run.baseline.root / "train.json")["trained"] is True
    # a linear classifier on raw pixels still learns digits (chance is 0.1)
    assert metrics["accuracy"] > 0.85
    assert metrics["parameters"] == 64 * 10 + 10


def test_a_factory_with_weights_is_loaded_not_trained(
    tmp_path: Path, demo_spec: dict[str, Any], write_spec: Any
) -> None:
    torch.manual_seed(3)
    reference = torch.nn.Linear(64, 10)
    torch.save(reference.state_dict(), tmp_path / "weights.pt")
    spec = prepared(tmp_path, demo_spec, write_spec, model={**LINEAR, "weights": "weights.pt"})
    baseline(spec, tmp_path / "run")
    run = RunLayout(tmp_path / "run")
    assert read_json(run.baseline.root / "train.json")["trained"] is False
    x = np.load(run.split("test"))["x"]
    with np.load(run.baseline.predictions) as saved:
        expected = reference(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(saved["logits"], expected, rtol=1e-4, atol=1e-4)


class _Payload:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("this must never run",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_weights_are_never_unpickled_as_objects(
    tmp_path: Path, demo_spec: dict[str, Any], write_spec: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"weight": _Payload()}))
    spec = prepared(tmp_path, demo_spec, write_spec, model={**LINEAR, "weights": "evil.pt"})
    with pytest.raises(ModelError, match=r"model.weights: .*evil\.pt holds pickled Python objects"):
        baseline(spec, tmp_path / "run")
    assert "this must never run" not in capsys.readouterr().out


def test_an_onnx_model_of_the_wrong_width_is_refused(
    tmp_path: Path, demo_spec: dict[str, Any], write_spec: Any
) -> None:
    export_onnx(torch.nn.Linear(30, 10), 30, tmp_path / "narrow.onnx")
    spec = prepared(tmp_path, demo_spec, write_spec, model={"onnx": "narrow.onnx"})
    with pytest.raises(ModelError, match=r"input 'input' takes \['batch', 30\]; the data's array "
                                         r"is \[2, 64\] \(axis 1: 64, expected 30\)"):  # fmt: skip
        baseline(spec, tmp_path / "run")


def test_an_onnx_model_with_the_wrong_classes_is_refused(
    tmp_path: Path, demo_spec: dict[str, Any], write_spec: Any
) -> None:
    export_onnx(torch.nn.Linear(64, 3), 64, tmp_path / "three.onnx")
    spec = prepared(tmp_path, demo_spec, write_spec, model={"onnx": "three.onnx"})
    with pytest.raises(ModelError, match=r"the data has 10 classes, so expected \[10\]"):
        baseline(spec, tmp_path / "run")


def _with_external_data(path: Path, location: str) -> None:
    """A linear classifier of the digits saved at ``path`` with its weights in ``location``."""
    import onnx

    export_onnx(torch.nn.Linear(64, 10), 64, path)
    onnx.save(onnx.load(str(path)), str(path), save_as_external_data=True, location=location,
              size_threshold=0)  # fmt: skip


def test_an_onnx_model_with_external_data_becomes_one_file(
    tmp_path: Path, demo_spec: dict[str, Any], write_spec: Any
) -> None:
    from optimizers.onnx_utils import external_files, model_bytes

    _with_external_data(tmp_path / "split.onnx", "split.onnx.data")
    data = tmp_path / "split.onnx.data"
    assert external_files(tmp_path / "split.onnx") == [data]
    assert model_bytes(tmp_path / "split.onnx") > data.stat().st_size > 64 * 10 * 4
    spec = prepared(tmp_path, demo_spec, write_spec, model={"onnx": "split.onnx"})
    metrics = baseline(spec, tmp_path / "run")
    run = RunLayout(tmp_path / "run")
    assert external_files(run.baseline.model) == []
    assert metrics["parameters"] == 64 * 10 + 10

    before = run.baseline.model.read_bytes()
    data.write_bytes(data.read_bytes()[:-4] + bytes(4))  # the last bias changed
    baseline(spec, tmp_path / "run")  # the cache key holds the data file: not reused
    assert run.baseline.model.read_bytes() != before

    data.unlink()
    with pytest.raises(ModelError, match=r"keeps weights in split\.onnx\.data, not found in "):
        baseline(spec, tmp_path / "run")


def test_external_data_outside_the_model_folder_is_refused(
    tmp_path: Path, demo_spec: dict[str, Any], write_spec: Any
) -> None:
    import onnx

    (tmp_path / "models").mkdir()
    _with_external_data(tmp_path / "models" / "m.onnx", "m.data")
    (tmp_path / "models" / "m.data").rename(tmp_path / "m.data")
    model = onnx.load(str(tmp_path / "models" / "m.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../m.data"
    onnx.save(model, str(tmp_path / "models" / "m.onnx"))
    spec = prepared(tmp_path, demo_spec, write_spec, model={"onnx": "models/m.onnx"})
    with pytest.raises(ModelError, match=r"m\.onnx: tensor '.*' has its data at '\.\./m\.data'; "
                                         r"expected a relative path inside .*models"):  # fmt: skip
        baseline(spec, tmp_path / "run")


def test_the_digits_cnn_refuses_other_data(
    tmp_path: Path, demo_spec: dict[str, Any], write_spec: Any
) -> None:
    spec = prepared(tmp_path, demo_spec, write_spec, data={"builtin": "breast_cancer"})
    with pytest.raises(
        ModelError, match=r"digits_cnn takes 64 pixel columns.*has 30 feature columns"
    ):
        baseline(spec, tmp_path / "run")


def test_the_tabular_mlp_standardizes_inside_the_exported_model(
    tmp_path: Path, demo_spec: dict[str, Any], write_spec: Any
) -> None:
    spec = prepared(
        tmp_path, demo_spec, write_spec,
        data={"builtin": "breast_cancer"}, model={"builtin": "tabular_mlp"},
    )  # fmt: skip
    metrics = baseline(spec, tmp_path / "run")
    # raw breast-cancer features span 0.001 to 4000; without in-model scaling this fails
    assert metrics["accuracy"] > 0.93


def factory_of(spec: Any) -> Any:
    from components.spec import FactoryModel

    assert isinstance(spec.model, FactoryModel)
    return spec.model


def test_a_factory_is_imported_from_its_path_or_the_specs_folder(
    tmp_path: Path, demo_spec: dict[str, Any], write_spec: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys
    import uuid

    from components.models import import_factory

    monkeypatch.setattr(sys, "path", list(sys.path))  # what the import adds is undone after
    body = "import torch\n\ndef build():\n    return torch.nn.Linear(64, 10)\n"
    beside, inside = f"beside_{uuid.uuid4().hex[:8]}", f"inside_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{beside}.py").write_text(body)  # next to the spec: found without anything
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / f"{inside}.py").write_text(body)

    spec = load_spec(write_spec({**demo_spec, "model": {"factory": f"{beside}:build"}}))
    assert import_factory(factory_of(spec), spec)().in_features == 64
    spec = load_spec(
        write_spec({**demo_spec, "model": {"factory": f"{inside}:build", "path": "src"}})
    )
    assert import_factory(factory_of(spec), spec)().out_features == 10
    spec = load_spec(write_spec({**demo_spec, "model": {"factory": f"nowhere_{beside}:build"}}))
    with pytest.raises(ModelError, match=r"cannot import .* set model.path to the folder"):
        import_factory(factory_of(spec), spec)
    spec = load_spec(
        write_spec({**demo_spec, "model": {"factory": f"{inside}:build", "path": "nope"}})
    )
    with pytest.raises(ModelError, match=r"model.path: .*nope is not a folder"):
        import_factory(factory_of(spec), spec)
