"""The evaluate step: accuracy of the exported ONNX artifact, never of a PyTorch stand-in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from components.data import load_split
from components.errors import ModelError
from components.layout import ModelDir, write_json
from components.onnx_utils import sha256_file
from optimizers.onnx_utils import infer, onnx_stats, session

__all__ = ["evaluate"]


def evaluate(
    model: Path,
    data: Path,
    out_dir: Path,
    *,
    threads: int = 2,
    reference: Path | None = None,
    output: str | None = None,
) -> dict[str, Any]:
    """Score ``model`` on the split in ``data`` with ONNX Runtime.

    Writes ``predictions.npz`` (labels, predictions, logits) and ``metrics.json`` to
    ``out_dir``. With ``reference`` (another model's ``predictions.npz`` on the same split),
    also records top-1 agreement with it. ``output`` names the scored output (default: the
    model's first).
    """
    x, y = load_split(data)
    logits = infer(session(model, threads), x, output=output, where=str(model))
    if y.dtype.kind == "f":  # a regression's targets
        return _evaluate_regression(model, y, logits, out_dir)
    if logits.ndim != 2 or logits.shape[0] != len(y):
        raise ModelError(
            f"{model}: expected one row of class scores per example, got {logits.shape}"
        )
    pred = logits.argmax(axis=1).astype(np.int64)
    correct = pred == y
    n_classes = max(int(y.max()) + 1, logits.shape[1])
    per_class = {str(c): float(correct[y == c].mean()) for c in range(n_classes) if (y == c).any()}
    stats = onnx_stats(model)
    metrics: dict[str, Any] = {
        "accuracy": float(correct.mean()),
        "n_examples": len(y),
        "n_correct": int(correct.sum()),
        "per_class_accuracy": per_class,
        "size_bytes": int(stats["bytes"]),
        "parameters": int(stats["parameters"]),
        "nodes": int(stats["nodes"]),
        "sha256": sha256_file(model),
    }
    if reference is not None:
        with np.load(reference, allow_pickle=False) as ref:
            ref_pred = ref["predictions"]
        if ref_pred.shape != pred.shape:
            raise ModelError(
                f"{reference}: reference predictions cover {ref_pred.shape[0]} examples, "
                f"this evaluation {pred.shape[0]}; they must score the same split"
            )
        metrics["agreement"] = float((ref_pred == pred).mean())
    out = ModelDir(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out.predictions, labels=y, predictions=pred, logits=logits)
    write_json(out.metrics, metrics)
    return metrics


def _evaluate_regression(
    model: Path, y: np.ndarray, outputs: np.ndarray, out_dir: Path
) -> dict[str, Any]:
    if outputs.shape not in ((len(y),), (len(y), 1)):
        raise ModelError(f"{model}: expected one predicted value per example, got {outputs.shape}")
    pred = outputs.reshape(len(y)).astype(np.float64)
    err = pred - y.astype(np.float64)
    stats = onnx_stats(model)
    metrics: dict[str, Any] = {
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "n_examples": len(y),
        "size_bytes": int(stats["bytes"]),
        "parameters": int(stats["parameters"]),
        "nodes": int(stats["nodes"]),
        "sha256": sha256_file(model),
    }
    out = ModelDir(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out.predictions, labels=y, predictions=pred, logits=outputs)
    write_json(out.metrics, metrics)
    return metrics
