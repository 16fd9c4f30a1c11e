"""A model's inputs as data: one array per named input, rows first.

Tabular data is one 2-D array (rows x feature columns); a tensor dataset has one array per model
input, of any rank and dtype (images [N, C, H, W], token ids with their mask). Everything that
feeds a model (evaluation, calibration, benchmarks, training) takes :data:`Inputs` and maps them
to the model's own input names with :func:`feeds`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from components.errors import ModelError

if TYPE_CHECKING:
    import torch

__all__ = [
    "DTYPES",
    "Features",
    "Inputs",
    "as_inputs",
    "feeds",
    "n_rows",
    "subset",
    "take",
    "to_torch",
]

Inputs = Mapping[str, np.ndarray]
# Data for a model: one array feeds a one-input model, whatever its input is called.
Features = np.ndarray | Inputs
SOLE = "x"

# ONNX tensor types slimgate feeds, as ONNX Runtime names them, and their numpy dtypes.
DTYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


def as_inputs(x: Features) -> dict[str, np.ndarray]:
    return {SOLE: x} if isinstance(x, np.ndarray) else dict(x)


def n_rows(x: Features) -> int:
    arrays = as_inputs(x)
    return int(next(iter(arrays.values())).shape[0]) if arrays else 0


def take(x: Features, index: Any) -> dict[str, np.ndarray]:
    """The same rows of every input."""
    return {name: np.ascontiguousarray(a[index]) for name, a in as_inputs(x).items()}


def subset(x: Features, index: Any) -> Features:
    """The same rows of every input, keeping one array one array."""
    return np.ascontiguousarray(x[index]) if isinstance(x, np.ndarray) else take(x, index)


def to_torch(x: Features) -> tuple[torch.Tensor, ...]:
    """The inputs as tensors, in their order: what ``model(*inputs)`` takes."""
    import torch

    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in as_inputs(x).values())


def feeds(model_inputs: Sequence[Any], x: Features, where: str) -> dict[str, np.ndarray]:
    """Map data arrays to a session's inputs (``sess.get_inputs()``), by name, in their dtype.

    Named arrays must match the input names; an unnamed array (a table's feature matrix)
    feeds a model with one input, whatever that input is called. Raises :class:`ModelError`
    naming the input, what the data has and what the model expects.
    """
    arrays = as_inputs(x)
    if list(arrays) == [SOLE] and len(model_inputs) == 1:
        arrays = {model_inputs[0].name: next(iter(arrays.values()))}
    out = {}
    for inp in model_inputs:
        if inp.name not in arrays:
            raise ModelError(f"{where}: input {inp.name!r} has no array in the data; "
                             f"the data has {sorted(arrays)}")  # fmt: skip
        a = arrays[inp.name]
        shape = list(inp.shape)
        if a.ndim != len(shape):
            raise ModelError(f"{where}: input {inp.name!r} takes rank {len(shape)} {shape}; "
                             f"the data's array has rank {a.ndim} {list(a.shape)}")  # fmt: skip
        fixed = [(i, d, a.shape[i]) for i, d in enumerate(shape) if isinstance(d, int)]
        wrong = [(i, d, seen) for i, d, seen in fixed if i > 0 and d != seen]
        if wrong:
            i, d, seen = wrong[0]
            raise ModelError(f"{where}: input {inp.name!r} takes {shape}; the data's array is "
                             f"{list(a.shape)} (axis {i}: {seen}, expected {d})")  # fmt: skip
        dtype = DTYPES.get(inp.type)
        if dtype is None:
            raise ModelError(f"{where}: input {inp.name!r} has type {inp.type}; slimgate feeds "
                             f"{', '.join(DTYPES)}")  # fmt: skip
        if np.issubdtype(dtype, np.integer) and not np.issubdtype(a.dtype, np.integer):
            raise ModelError(f"{where}: input {inp.name!r} takes {inp.type}; the data's array is "
                             f"{a.dtype} (integers expected, e.g. token ids)")  # fmt: skip
        out[inp.name] = np.ascontiguousarray(a, dtype=dtype)
    return out
