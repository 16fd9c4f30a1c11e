"""Checks of ONNX files the steps are given or write (sessions and statistics: optimizers.onnx_utils)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from components.errors import ModelError
from optimizers.onnx_utils import infer, session
from optimizers.tensors import Features, n_rows, take

__all__ = ["check_model", "sha256_file"]

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def check_model(
    path: Path,
    sample: Features,
    n_classes: int,
    threads: int = 1,
    output: str | None = None,
    *,
    task: str = "classification",
) -> None:
    """Fail with a clear message unless the model takes the data's inputs (``sample``: a few
    rows of them) and its scored ``output`` (default: the first) gives one row of class scores
    per example (``n_classes`` 0: one value per example, a regression)."""
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    sess = session(path, threads)
    rows = take(sample, slice(0, 2))
    try:
        out = infer(sess, rows, output=output, where=str(path))
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(
            f"{path}: a batch of {n_rows(rows)} rows of the data fails: {exc}"
        ) from exc
    scored = output or sess.get_outputs()[0].name
    if task == "embedding":  # any shape, one row per example
        return
    if n_classes == 0:  # a regression: one value per row
        if out.shape not in ((n_rows(rows),), (n_rows(rows), 1)):
            raise ModelError(
                f"{path}: output {scored!r} has shape {list(out.shape[1:])} per row; a "
                "regression needs one value per row ([] or [1])"
                + ("" if output else "; name the predicted output with model.output")
            )
        return
    if n_classes == 2 and out.shape in ((n_rows(rows),), (n_rows(rows), 1)):
        return  # a binary classifier with a single logit
    if out.shape != (n_rows(rows), n_classes):
        raise ModelError(
            f"{path}: output {scored!r} has shape {list(out.shape[1:])} per row; "
            f"the data has {n_classes} classes, so expected [{n_classes}]"
            + ("" if output else "; name the scored output with model.output")
        )
