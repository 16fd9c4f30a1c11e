"""Checks of ONNX files the steps are given or write (sessions and statistics: optimizers.onnx_utils)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from components.errors import ModelError
from optimizers.onnx_utils import session

__all__ = ["check_model", "sha256_file"]

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def check_model(path: Path, n_features: int, n_classes: int, threads: int = 1) -> None:
    """Fail with a clear message unless the model maps (batch, n_features) rows to class scores."""
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    sess = session(path, threads)
    inputs, outputs = sess.get_inputs(), sess.get_outputs()
    if len(inputs) != 1 or len(outputs) < 1:
        raise ModelError(
            f"{path}: expected one input and one output, got inputs "
            f"{[i.name for i in inputs]} and outputs {[o.name for o in outputs]}"
        )
    shape = inputs[0].shape
    if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != n_features):
        raise ModelError(
            f"{path}: input {inputs[0].name!r} has shape {shape}; the data has rows of "
            f"{n_features} features, so expected [batch, {n_features}]"
        )
    try:
        dtype = np.int64 if inputs[0].type == "tensor(int64)" else np.float32
        out = sess.run(None, {inputs[0].name: np.zeros((2, n_features), dtype)})[0]
    except Exception as exc:
        raise ModelError(
            f"{path}: a batch of 2 rows of {n_features} features fails: {exc}"
        ) from exc
    if out.shape != (2, n_classes):
        raise ModelError(
            f"{path}: output {outputs[0].name!r} has shape {list(out.shape[1:])} per row; "
            f"the data has {n_classes} classes, so expected [{n_classes}]"
        )
