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
    task: str = "classification",
    pooling: str = "mean",
) -> dict[str, Any]:
    """Score ``model`` on the split in ``data`` with ONNX Runtime.

    Writes ``predictions.npz`` (labels, predictions, logits) and ``metrics.json`` to
    ``out_dir``. With ``reference`` (another model's ``predictions.npz`` on the same split),
    also records top-1 agreement with it. ``output`` names the scored output (default: the
    model's first). A regression is scored on MAE and RMSE; an embedding model's output is
    pooled into one vector per row (``pooling``) and compared with the reference's.
    """
    x, y = load_split(data)
    logits = infer(session(model, threads), x, output=output, where=str(model))
    if task == "regression":
        return _evaluate_regression(model, y, logits, out_dir)
    if task == "embedding":
        mask = x.get("attention_mask") if not isinstance(x, np.ndarray) else None
        return _evaluate_embedding(model, pool(logits, mask, pooling), out_dir, reference)
    if logits.ndim == 1 or (logits.ndim == 2 and logits.shape[1] == 1):
        # a binary classifier with a single logit: class 1 when it is positive
        logits = np.stack([np.zeros(len(logits)), logits.reshape(len(logits))], axis=1)
    if logits.ndim != 2 or logits.shape[0] != len(y):
        raise ModelError(
            f"{model}: expected one row of class scores per example, got {logits.shape}"
        )
    pred = logits.argmax(axis=1).astype(np.int64)
    correct = pred == y
    n_classes = max(int(y.max()) + 1, logits.shape[1])
    per_class = {str(c): float(correct[y == c].mean()) for c in range(n_classes) if (y == c).any()}
    metrics: dict[str, Any] = {
        "accuracy": float(correct.mean()),
        "n_examples": len(y),
        "n_correct": int(correct.sum()),
        "per_class_accuracy": per_class,
        **_file_metrics(model),
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
    return _write(out_dir, metrics, labels=y, predictions=pred, logits=logits)


def _evaluate_regression(
    model: Path, y: np.ndarray, outputs: np.ndarray, out_dir: Path
) -> dict[str, Any]:
    if outputs.shape not in ((len(y),), (len(y), 1)):
        raise ModelError(f"{model}: expected one predicted value per example, got {outputs.shape}")
    pred = outputs.reshape(len(y)).astype(np.float64)
    err = pred - y.astype(np.float64)
    metrics: dict[str, Any] = {
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "n_examples": len(y),
        **_file_metrics(model),
    }
    return _write(out_dir, metrics, labels=y, predictions=pred, logits=outputs)


def pool(outputs: np.ndarray, mask: np.ndarray | None, pooling: str) -> np.ndarray:
    """One vector per row: a [rows, sequence, hidden] output pooled by the mean over the
    attention mask (or over every position without one), or its first token (``cls``)."""
    if outputs.ndim == 2:
        return outputs.astype(np.float64)
    if outputs.ndim != 3:
        raise ModelError(f"an embedding output must be [rows, hidden] or [rows, sequence, hidden], "
                         f"got {list(outputs.shape)}")  # fmt: skip
    if pooling == "cls":
        return outputs[:, 0].astype(np.float64)
    weights = np.ones(outputs.shape[:2]) if mask is None else mask.astype(np.float64)
    total = (outputs * weights[..., None]).sum(axis=1)
    return np.asarray(total / np.maximum(weights.sum(axis=1, keepdims=True), 1.0), np.float64)


def _evaluate_embedding(
    model: Path, embeddings: np.ndarray, out_dir: Path, reference: Path | None
) -> dict[str, Any]:
    from validation.stats import mean_cosine, neighbour_overlap

    metrics: dict[str, Any] = {
        "n_examples": len(embeddings),
        "dimensions": int(embeddings.shape[1]),
        **_file_metrics(model),
    }
    if reference is not None:
        with np.load(reference, allow_pickle=False) as ref:
            base = ref["logits"]
        if base.shape != embeddings.shape:
            raise ModelError(f"{reference}: reference embeddings are {list(base.shape)}, these "
                             f"{list(embeddings.shape)}; they must embed the same split")  # fmt: skip
        metrics["cosine"] = mean_cosine(embeddings, base)
        if len(base) > 10:
            metrics["neighbours@10"] = float(neighbour_overlap(embeddings, base, 10).mean())
    empty = np.zeros(0, np.int64)  # no labels, no predicted classes
    return _write(out_dir, metrics, labels=empty, predictions=empty, logits=embeddings)


def _file_metrics(model: Path) -> dict[str, Any]:
    """What every evaluation records of the file itself."""
    stats = onnx_stats(model)
    return {"size_bytes": int(stats["bytes"]), "parameters": int(stats["parameters"]),
            "nodes": int(stats["nodes"]), "sha256": sha256_file(model)}  # fmt: skip


def _write(out_dir: Path, metrics: dict[str, Any], **arrays: Any) -> dict[str, Any]:
    out = ModelDir(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out.predictions, **arrays)
    write_json(out.metrics, metrics)
    return metrics
