"""``slimgate init MODEL DATA``: a commented starting spec, from what the model and the data are.

It inspects both (the model's kind, size and inputs; the data's columns, rows and label) and
writes goals that fit the model's size and task, and candidate recipes of the techniques that
apply to that kind of model, saying why it left the others out. ``slimgate validate`` accepts
what it writes; the user edits it from there.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.errors import InputError
from components.spec import BuiltinModel, Split

__all__ = ["starting_spec"]

BUILTIN_MODELS = typing.get_args(BuiltinModel.model_fields["builtin"].annotation)
BUILTIN_DATA = {"digits": (1797, "classification"), "breast_cancer": (569, "classification"),
                "wine": (178, "classification"), "diabetes": (442, "regression")}  # fmt: skip
LABELS = ("label", "labels", "target", "y", "class")
MB = 1_000_000


@dataclass
class Found:
    """What init learned, as spec fields and as comments for the reader."""

    model: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    kind: str = "torch"  # torch (built-in or factory), onnx, huggingface
    size_bytes: int | None = None
    rows: int | None = None
    task: str = "classification"
    max_length: int = 128  # tokens per text: at most the model's positions
    features: int | None = None  # a table's feature columns
    notes: list[str] = field(default_factory=list)


def _model(model: str, found: Found) -> None:
    path = Path(model)
    if model in BUILTIN_MODELS:
        found.model = {"builtin": model}
        found.size_bytes = 200_000  # both are small: about 0.02 to 0.5 MB, by the data's width
        found.notes.append(f"model: the built-in {model}, trained on the data by the baseline step")
    elif path.suffix == ".onnx":
        if not path.is_file():
            raise InputError(f"MODEL {model}: no such ONNX file")
        import onnx

        from optimizers.onnx_utils import model_bytes

        graph = onnx.load(str(path), load_external_data=False).graph
        inputs = [i.name for i in graph.input]
        found.model, found.kind = {"onnx": str(path)}, "onnx"
        found.size_bytes = model_bytes(path)
        found.notes.append(f"model: an ONNX file, {found.size_bytes / MB:.2f} MB, inputs {inputs}; "
                           "only ONNX-level optimizers apply to it")  # fmt: skip
    elif path.is_dir():
        if not (path / "config.json").is_file():
            raise InputError(f"MODEL {model}: a folder without config.json is not a Hugging Face "
                             "save_pretrained directory")  # fmt: skip
        import json

        weights = [p for p in path.iterdir() if p.suffix in (".safetensors", ".bin")]
        found.model, found.kind = {"huggingface": str(path)}, "huggingface"
        config = json.loads((path / "config.json").read_text())
        found.max_length = min(128, int(config.get("max_position_embeddings") or 128))
        found.size_bytes = sum(p.stat().st_size for p in weights)
        found.notes.append(
            f"model: a Hugging Face folder, {found.size_bytes / MB:.2f} MB of weights"
        )
    elif ":" in model and not path.exists():
        found.model = {"factory": model}
        top = model.partition(":")[0].split(".")[0]
        if Path(f"{top}.py").is_file() or Path(top).is_dir():  # here: say where it is
            found.model["path"] = "."
        found.notes.append(f"model: {model}(**kwargs) builds it (add kwargs: and weights: if it "
                           "is trained; without weights the baseline step trains it)")  # fmt: skip
    else:
        raise InputError(f"MODEL {model!r}: expected a file.onnx, a Hugging Face folder, a factory "
                         f"'module:function', or a built-in model ({', '.join(BUILTIN_MODELS)})")  # fmt: skip


def _data(data: str, found: Found, label: str | None, tokenizer: str | None) -> None:
    path = Path(data)
    if data in BUILTIN_DATA:
        found.rows, found.task = BUILTIN_DATA[data]
        found.data = {"builtin": data}
        found.notes.append(f"data: the built-in {data} ({found.rows} rows, {found.task})")
        return
    if not path.is_file():
        raise InputError(f"DATA {data}: no such file (a .csv, .parquet or .npz)")
    if path.suffix == ".npz":
        import numpy as np

        with np.load(path, allow_pickle=False) as arrays:
            names = list(arrays.files)
            key = label or next((k for k in LABELS if k in names), None)
            if key is None or key not in names:
                raise InputError(f"DATA {data}: no label array {key or ''!r} among {names}; name "
                                 "it with --label")  # fmt: skip
            y = arrays[key]
            shapes = {k: list(arrays[k].shape[1:]) for k in names if k != key}
        found.rows = int(y.shape[0])
        found.data = {"path": str(path), "label": key}
        found.task = _task(y)
        found.notes.append(
            f"data: {found.rows} rows; inputs {shapes}; label {key!r} ({found.task})"
        )
        return
    if path.suffix not in (".csv", ".parquet"):
        raise InputError(f"DATA {data}: expected a .csv, .parquet or .npz file")
    import pandas as pd

    frame = pd.read_csv(path, index_col=False) if path.suffix == ".csv" else pd.read_parquet(path)
    columns = [str(c) for c in frame.columns]
    lowered = {c.lower(): c for c in columns}
    key = label or next((lowered[k] for k in LABELS if k in lowered), columns[-1])
    if key not in columns:
        raise InputError(f"--label {key!r}: the data has no such column; it has {columns[:8]}")
    found.rows, found.task = len(frame), _task(frame[key].to_numpy())
    found.features = len(columns) - 1
    found.data = {"path": str(path), "label": key}
    text = [c for c in columns if c != key and (frame[c].dtype == object
                                                or pd.api.types.is_string_dtype(frame[c]))]  # fmt: skip
    if text:
        if tokenizer is None:
            raise InputError(f"DATA {data}: column {text[0]!r} holds text; give --tokenizer DIR (a "
                             "local Hugging Face tokenizer folder) to turn it into token ids")  # fmt: skip
        found.data |= {"text": text[0], "tokenizer": tokenizer, "max_length": found.max_length}
    found.notes.append(f"data: {found.rows} rows, {len(columns) - 1} columns, label {key!r} "
                       f"({found.task}){f', text column {text[0]!r}' if text else ''}")  # fmt: skip


def _task(y: Any) -> str:
    """A guess, said so in the spec: many distinct numbers are a regression target (floats
    above 20 values; integers above 50 that are also a tenth of the rows), anything else labels."""
    import numpy as np

    values = np.asarray(y)
    distinct = len(np.unique(values)) if values.dtype.kind in "biuf" else 0
    if values.dtype.kind == "f" and distinct > 20:
        return "regression"
    if values.dtype.kind in "iu" and distinct > 50 and distinct > 0.1 * len(values):
        return "regression"
    return "classification"


def _goals(found: Found) -> tuple[dict[str, Any], list[str]]:
    goals: dict[str, Any] = {"size": {"max_ratio": 0.5}}
    notes = []
    if found.size_bytes is None:
        goals["speedup"] = {"min": 1.2}
        notes.append("speedup 1.2: the model's size is not known before it is built; int8 is "
                     "rarely faster below 1 MB, so drop this goal for a small model")  # fmt: skip
    elif found.size_bytes >= MB:
        goals["speedup"] = {"min": 1.2}
    else:
        notes.append(f"no speedup goal: int8 is rarely faster below 1 MB (this model is about "
                     f"{found.size_bytes / MB:.2f} MB); the report shows what each candidate gets")  # fmt: skip
    if found.task == "regression":
        goals["error"] = {"metric": "mae", "max_relative_increase": 0.05}
        return goals, notes
    goals["accuracy"] = {"max_drop": 0.01}
    share = Split().test
    test_rows = int((found.rows or 0) * share)
    need = _rows_for_agreement(0.97, 0.99)
    if test_rows >= need:
        goals["agreement"] = {"min": 0.97}
    else:
        notes.append(f"no agreement goal: a candidate agreeing on 99% of the examples passes "
                     f"agreement.min 0.97 at 95% confidence from {need} test rows; this data "
                     f"gives {test_rows} (split.test {share:g})")  # fmt: skip
    return goals, notes


def _rows_for_agreement(limit: float, rate: float) -> int:
    """Test rows on which a model agreeing at ``rate`` passes ``limit`` at 95% confidence."""
    from validation.stats import clopper_pearson_lower

    n = 10
    while clopper_pearson_lower(int(rate * n), n, 0.95) < limit:
        n = int(n * 1.05) + 1
    return n


def _candidates(found: Found) -> tuple[list[Any], list[str]]:
    if found.kind == "onnx":
        return [
            ["quantization.dynamic_int8"],
            {"name": "static-int8", "steps": ["quantization.static_int8"]},
            {"name": "graph", "steps": [{"graph.ort_optimize": {"level": "extended"}}]},
        ], ["only ONNX-level steps: an ONNX file has no PyTorch model to prune, factor or distil",
            "quantization.fp16 left out: on CPU it is a size optimization only (slower)"]  # fmt: skip
    if found.kind == "huggingface":
        return [
            {"name": "fused-int8", "steps": ["graph.transformer_fusion",
                                             {"quantization.dynamic_int8": {"per_channel": True}}]},
            ["quantization.dynamic_int8"],
        ], ["static int8 left out: calibrated int8 of a transformer's activations loses accuracy"]  # fmt: skip
    out: list[Any] = [
        ["quantization.dynamic_int8"],
        {"name": "pruned-int8", "steps": [{"pruning.structured": {"ratio": 0.3}},
                                          "quantization.dynamic_int8"]},
        {"name": "low-rank", "steps": [{"low_rank.svd": {"rank_ratio": 0.5}}]},
    ]  # fmt: skip
    notes = ["pruning.unstructured left out: zeroed weights give no speedup on dense kernels"]
    if found.model.get("builtin") == "digits_cnn":
        out.append({"name": "static-int8", "steps": ["quantization.static_int8"]})
    return out, notes


def starting_spec(
    model: str,
    data: str,
    *,
    name: str,
    base: Path,
    label: str | None = None,
    tokenizer: str | None = None,
) -> str:
    """The text of a commented starting spec for ``model`` and ``data``; its paths are relative
    to ``base``, the folder the spec is written to (a spec's paths are read from its folder)."""
    import os

    import yaml

    found = Found()
    _model(model, found)
    _data(data, found, label, tokenizer)
    for part, key in ((found.model, "onnx"), (found.model, "huggingface"), (found.model, "path"),
                      (found.data, "path"), (found.data, "tokenizer")):  # fmt: skip
        if key in part:
            part[key] = os.path.relpath(Path(part[key]).resolve(), base.resolve())
    pixels = found.data.get("builtin") == "digits" or found.features == 64
    if found.model.get("builtin") == "digits_cnn" and not pixels:
        raise InputError("MODEL digits_cnn takes 8x8 images as 64 pixel columns (data digits); "
                         "use tabular_mlp for a table")  # fmt: skip
    goals, goal_notes = _goals(found)
    candidates, candidate_notes = _candidates(found)
    found.notes.append(f"task: {found.task}, guessed from the label; set task: to change it")
    spec: dict[str, Any] = {"name": name, "model": found.model, "data": found.data}
    if found.task != "classification":
        spec["task"] = found.task
    spec |= {
        "target": {"device": "cpu", "threads": 2, "batch_sizes": [1]},
        "goals": goals,
        "candidates": candidates,
        "select": "fastest",
        "registry": "./registry",
    }
    header = ["# written by slimgate init: what it found, and why the spec reads as it does.",
              *(f"# {n}" for n in found.notes + goal_notes + candidate_notes),
              "# `slimgate validate` checks it; `slimgate optimizers show KEY` documents each",
              "# step's config; goals: README, 'How goals are decided'.", ""]  # fmt: skip
    body = yaml.safe_dump(spec, sort_keys=False, width=100, default_flow_style=None)
    return "\n".join(header) + body
