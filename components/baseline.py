"""The baseline step: train or load the model, export it to ONNX, evaluate and benchmark it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from components.benchmark import benchmark, disturbed
from components.cache import baseline_inputs, measurement_inputs, open_cache, reuse_or_make
from components.data import load_split
from components.errors import DataError, ModelError, first_line
from components.evaluate import evaluate
from components.layout import RunLayout, read_json, write_json
from components.models import bind_inputs, build_builtin, load_factory, load_huggingface
from components.onnx_utils import check_model
from components.spec import BuiltinModel, FactoryModel, HuggingFaceModel, OnnxModel, Spec
from components.stores import sha256_file
from components.tuning import build_untrained, tune_training
from optimizers.onnx_utils import external_files
from optimizers.tensors import Features, take
from optimizers.torch_utils import export_onnx, train_classifier

if TYPE_CHECKING:
    import torch

__all__ = ["baseline", "data_sample", "dataset_info", "load_baseline_module"]


def dataset_info(run: RunLayout) -> dict[str, Any]:
    if not run.dataset.is_file():
        raise DataError(f"{run.dataset}: not found; run the prepare_data step first")
    info: dict[str, Any] = read_json(run.dataset)
    return info


def _input_names(x: Features, source: HuggingFaceModel) -> list[str]:
    if isinstance(x, np.ndarray):
        raise ModelError(
            f"model.huggingface={source.huggingface} takes named inputs (input_ids, "
            "attention_mask, ...): give text with data.text and data.tokenizer, or an npz of them"
        )
    return list(x)


def data_sample(run: RunLayout, rows: int = 2) -> Features:
    """The first rows of the test split, in the model's input shape: what models are checked on."""
    x, _ = load_split(run.split("test"))
    return x[:rows] if isinstance(x, np.ndarray) else take(x, slice(0, rows))


def baseline(spec: Spec, run_dir: Path) -> dict[str, Any]:
    """Produce ``baseline/model.onnx`` and measure it: the reference every candidate is judged by.

    Both halves come from the cache when their inputs are unchanged (see components/cache.py);
    ``baseline/cache.json`` says which did.
    """
    run = RunLayout(run_dir)
    info = dataset_info(run)
    out = run.baseline
    out.root.mkdir(parents=True, exist_ok=True)
    cache = open_cache(spec, run_dir)
    record = {
        "model": reuse_or_make(cache, "baseline", baseline_inputs(spec, info["fingerprint"]),
                               out.root, lambda: _make(spec, run, info), run_id=run.run_id),
    }  # fmt: skip
    try:
        check_model(out.model, data_sample(run), len(info["classes"]), spec.target.threads,
                    spec.scored_output, task=spec.task)  # fmt: skip
    except ModelError as exc:
        if isinstance(spec.model, OnnxModel):  # name the user's file, not our copy of it
            raise ModelError(
                f"model.onnx: {str(exc).replace(str(out.model), str(spec.resolve(spec.model.onnx)))}"
            ) from None
        raise

    def measure() -> list[str]:
        evaluate(out.model, run.split("test"), out.root, threads=spec.target.threads,
                 output=spec.scored_output,
                 task=spec.task, pooling=spec.embedding.pooling)  # fmt: skip
        benchmark(out.model, run.split("test"), out.benchmark, spec.target, spec.benchmark)
        return [out.metrics.name, out.predictions.name, out.benchmark.name]

    inputs = measurement_inputs(spec, info["fingerprint"], sha256_file(out.model), None)
    record["measurements"] = reuse_or_make(
        cache if spec.cache.measurements else None, "measurements", inputs, out.root, measure,
        run_id=run.run_id, unfit=lambda: disturbed(out.benchmark),
    )  # fmt: skip
    write_json(out.cache_record, record)
    metrics: dict[str, Any] = read_json(out.metrics)
    return metrics


def _make(spec: Spec, run: RunLayout, info: dict[str, Any]) -> list[str]:
    """Train (or load) and export the baseline into ``baseline/``; returns the files written."""
    import torch

    n_classes = len(info["classes"])
    out = run.baseline
    source = spec.model
    record: dict[str, Any] = {"source": source.model_dump(), "trained": False}
    files = [out.model.name, out.train_record.name]
    if isinstance(source, BuiltinModel | FactoryModel | HuggingFaceModel):
        x, y = load_split(run.split("train"))
        regression = y if spec.task == "regression" else None
        if isinstance(source, BuiltinModel):
            module = build_builtin(source, x, n_classes, regression)
            loaded = False
        elif isinstance(source, HuggingFaceModel):
            module, loaded = load_huggingface(source, spec, _input_names(x, source)), True
        else:
            module, loaded = load_factory(source, spec)
            module = bind_inputs(
                module, [] if isinstance(x, np.ndarray) else list(x), source.factory
            )
        if not loaded:
            training = spec.training
            if training.tune is not None:
                training, width, record["tuning"] = tune_training(spec, x, y, n_classes, out.root)
                module = build_untrained(spec, x, n_classes, width)
                record["width"] = width
            record["trained"] = True
            record["training"] = training.model_dump()
            record["history"] = train_classifier(module, x, y, training, spec.task)
        module.eval()
        torch.save(module.state_dict(), out.weights)
        files.append(out.weights.name)
        export_onnx(module, x[:1] if isinstance(x, np.ndarray) else take(x, slice(0, 1)), out.model)
    else:
        src = spec.resolve(source.onnx)
        if not src.is_file():
            raise ModelError(f"model.onnx: file not found: {src}")
        if data_files := external_files(src):
            _one_file(src, data_files, out.model)
        else:
            shutil.copyfile(src, out.model)
    write_json(out.train_record, record)
    return files


def _one_file(src: Path, files: list[Path], dest: Path) -> None:
    """A model that keeps its weights in the external data ``files``, saved as one file: every
    later step (and the registry) handles one file per model. Models of 2 GiB or more
    (protobuf's limit for one file) are refused."""
    import onnx

    missing = [f.name for f in files if not f.is_file()]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise ModelError(f"model.onnx: {src} keeps weights in {', '.join(missing[:3])}{more}, not "
                         f"found in {src.parent} (external data files must lie where the model "
                         "names them)")  # fmt: skip
    size = src.stat().st_size + sum(f.stat().st_size for f in files)
    if size >= 2**31:
        raise ModelError(f"model.onnx: {src} with its external data is {size / 2**30:.2f} GiB; "
                         "slimgate handles models under 2 GiB (one protobuf file)")  # fmt: skip
    try:
        model = onnx.load(str(src))
    except Exception as exc:
        raise ModelError(f"model.onnx: {src}: its external data cannot be read: "
                         f"{first_line(exc)}") from exc  # fmt: skip
    onnx.save(model, str(dest))


def load_baseline_module(spec: Spec, run: RunLayout) -> torch.nn.Module:
    """The trained baseline as a PyTorch module, for torch-level optimizers.

    Weights come from ``baseline/model.pt`` with ``weights_only=True``: never unpickled.
    """
    import torch

    source = spec.model
    weights = run.baseline.weights
    if (
        not isinstance(source, BuiltinModel | FactoryModel | HuggingFaceModel)
        or not weights.is_file()
    ):
        raise ModelError(
            "torch-level optimizers need the baseline as a PyTorch model; "
            f"{weights} is missing (model source: {next(iter(source.model_dump()))})"
        )
    info = dataset_info(run)
    if isinstance(source, BuiltinModel):
        x, y = load_split(run.split("train"))
        trained = read_json(run.baseline.train_record)
        width = trained.get("width")  # tuning may have chosen another width
        module = build_untrained(spec, x, len(info["classes"]), width,
                                 y if spec.task == "regression" else None)  # fmt: skip
    elif isinstance(source, HuggingFaceModel):
        x, _ = load_split(run.split("test"))
        module = load_huggingface(source, spec, _input_names(x, source))
    else:
        module, _ = load_factory(source.model_copy(update={"weights": None}), spec)
        x, _ = load_split(run.split("test"))
        module = bind_inputs(module, [] if isinstance(x, np.ndarray) else list(x), source.factory)
    module.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    module.eval()
    return module
