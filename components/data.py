"""Loading, checking, splitting and fingerprinting the run's dataset.

Every dataset becomes a :class:`Table`: the model's inputs, rows first, and int64 class indices.
A tabular dataset (CSV, Parquet, or an NPZ with a 2-D ``x``) is one float32 feature matrix (int64
for token ids); models that want another shape may reshape inside (the digits CNN does). A tensor
dataset (an NPZ, or a folder of them, with one array per model input name: images
[N, C, H, W], token ids and masks) keeps every array as it is.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from components.errors import DataError, first_line
from components.spec import BuiltinData, FileData, Spec, Split
from optimizers.tensors import Features, take

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "SPLITS",
    "Table",
    "builtin_labels",
    "fingerprint",
    "finite_check",
    "is_tensor_npz",
    "load_frame",
    "load_split",
    "load_tensors",
    "save_split",
    "split",
    "to_table",
]

SPLITS = ("train", "calibration", "test")


@dataclass(frozen=True)
class Table:
    """The model's inputs (one array, or one per input name) and int64 class indices."""

    inputs: Features
    y: np.ndarray
    feature_names: tuple[str, ...]  # a tabular input's columns; () for tensor data
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def tabular(self) -> bool:
        return isinstance(self.inputs, np.ndarray)

    @property
    def x(self) -> np.ndarray:
        """The feature matrix of tabular data (tensor data has no single matrix)."""
        if not isinstance(self.inputs, np.ndarray):
            raise DataError(f"this step needs tabular data (one feature matrix); the data has "
                            f"tensor inputs {sorted(self.inputs)}")  # fmt: skip
        return self.inputs

    def rows(self) -> np.ndarray:
        """Every input of each row flattened into one row of float64 (for overlap checks)."""
        arrays = [self.inputs] if isinstance(self.inputs, np.ndarray) else self.inputs.values()
        return np.concatenate([a.reshape(len(a), -1).astype(np.float64) for a in arrays], axis=1)


def load_frame(spec: Spec, *, labelled: bool = True) -> tuple[pd.DataFrame, str, str]:
    """The spec's dataset as a frame of feature columns and one label column.

    Only structural problems raise here (a missing or unreadable file, no label column); every
    check on values belongs to the validation suite, so it shows in the run's Data Docs.

    Returns:
        (frame, label column, where the data came from)
    """
    source = spec.data
    if isinstance(source, BuiltinData):
        return _builtin_frame(source.builtin), "label", f"data.builtin={source.builtin}"
    path = spec.resolve(source.path)
    return _file_frame(path, source, labelled=labelled), source.label, str(path)


def builtin_labels(name: str) -> list[str] | None:
    """The class names of a built-in dataset (None for a regression)."""
    bunch = _bunch(name)
    return [str(c) for c in bunch.target_names] if "target_names" in bunch else None


def _bunch(name: str) -> Any:
    from sklearn import datasets

    loader = {
        "digits": datasets.load_digits,
        "breast_cancer": datasets.load_breast_cancer,
        "wine": datasets.load_wine,
        "diabetes": datasets.load_diabetes,
    }[name]
    return loader()


def _builtin_frame(name: str) -> pd.DataFrame:
    import pandas as pd

    bunch = _bunch(name)
    frame = pd.DataFrame(bunch.data, columns=[str(f) for f in bunch.feature_names])
    if "target_names" in bunch:
        frame["label"] = np.asarray([str(c) for c in bunch.target_names])[bunch.target]
    else:  # a regression's numeric target
        frame["label"] = bunch.target.astype(np.float64)
    return frame


def _file_frame(path: Path, source: FileData, *, labelled: bool = True) -> pd.DataFrame:
    import pandas as pd

    if not path.is_file():
        raise DataError(f"data.path: file not found: {path}")
    fmt = source.format or {".csv": "csv", ".parquet": "parquet", ".npz": "npz"}.get(path.suffix)
    if fmt is None:
        raise DataError(
            f"data.path: cannot tell the format of {path} from its suffix {path.suffix!r}; "
            "set data.format to csv, parquet or npz"
        )
    try:
        if fmt == "npz":
            frame = _npz_frame(path, source.label)
        else:
            # index_col=False: a row with more fields than the header is an error, not an index
            frame = pd.read_csv(path, index_col=False) if fmt == "csv" else pd.read_parquet(path)
    except (OSError, ValueError, ImportError) as exc:  # (pandas' ParserError is a ValueError)
        first = first_line(exc)
        raise DataError(f"data.path: cannot read {path} as {fmt}: {first}") from None
    if not frame.index.equals(pd.RangeIndex(len(frame))):
        frame = frame.reset_index(drop=True)
    if not labelled:
        if source.label in frame.columns:
            raise DataError(f"{path}: task embedding takes no labels, but the data has a column "
                            f"{source.label!r} (data.label); drop it, or set the task")  # fmt: skip
        return frame
    if source.label not in frame.columns:
        raise DataError(
            f"{path}: label column {source.label!r} (data.label) not found; the "
            f"{frame.shape[1]} columns are {_some(list(map(str, frame.columns)))}"
        )
    if frame.shape[1] < 2:
        raise DataError(f"{path}: no feature columns besides the label {source.label!r}")
    return frame


def _npz_frame(path: Path, label: str) -> pd.DataFrame:
    import pandas as pd

    with np.load(path, allow_pickle=False) as arrays:
        if "x" not in arrays or label not in arrays:
            raise DataError(
                f"{path}: an npz dataset needs arrays 'x' and {label!r} (data.label); "
                f"found {sorted(arrays.files)}"
            )
        x, y = arrays["x"], arrays[label]
    if x.ndim != 2:
        raise DataError(f"{path}: array 'x' must be 2-D (rows, features), got shape {x.shape}")
    if y.shape != (x.shape[0],):
        raise DataError(
            f"{path}: array {label!r} must have one label per row of 'x' ({x.shape[0]}), "
            f"got shape {y.shape}"
        )
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    frame[label] = y
    return frame


def to_table(
    frame: pd.DataFrame, label: str, *, tokens: bool = False, regression: bool = False
) -> Table:
    """The validated frame as float32 features (int64 token ids with ``tokens``) and int64
    class indices (classes sorted), or float32 targets for a regression (no classes)."""
    features = frame.drop(columns=[label])
    values = frame[label].to_numpy()
    if regression:
        try:
            y = values.astype(np.float32)
        except (TypeError, ValueError):
            raise DataError(f"label column {label!r} must be numeric for task regression; it holds "
                            f"{frame[label].dtype} values like {values[:3].tolist()}") from None  # fmt: skip
        classes: Any = np.zeros(0, dtype=str)
    else:
        classes, y = np.unique(values.astype(str), return_inverse=True)
    if tokens:
        fractional = [str(c) for c in features.columns
                      if not np.array_equal(features[c].to_numpy(), np.round(features[c].to_numpy()))
                      or (features[c].to_numpy() < 0).any()]  # fmt: skip
        if fractional:
            raise DataError(
                f"data.features is tokens, but columns {fractional[:5]} hold values that are not "
                "non-negative integers (token ids)"
            )
        x = features.to_numpy(dtype=np.int64)
    else:
        x = features.to_numpy(dtype=np.float32)
    return Table(
        np.ascontiguousarray(x), y if regression else y.astype(np.int64),
        tuple(map(str, features.columns)), tuple(str(c) for c in classes),
    )  # fmt: skip


def _some(names: list[str], shown: int = 6) -> str:
    """A list of names, the first few and the last (a wide table has hundreds)."""
    if len(names) <= shown + 1:
        return ", ".join(map(repr, names))
    return (
        ", ".join(map(repr, names[:shown])) + f", ... {len(names) - shown - 1} more, {names[-1]!r}"
    )


def finite_check(frame: pd.DataFrame, label: str) -> list[str]:
    """Feature columns holding +-inf (the suite's null checks do not see them), or values
    beyond what float32, the dtype the model computes in, can hold."""
    features = frame.drop(columns=[label]).select_dtypes("number")
    limit = float(np.finfo(np.float32).max)
    with np.errstate(invalid="ignore"):
        return [str(c) for c in features.columns
                if (np.abs(features[c].to_numpy(dtype=float)) > limit).any()]  # fmt: skip


def split(table: Table, params: Split) -> dict[str, Table]:
    """Stratified train / calibration / test split; the same table and params give the same split."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(table))
    stratify = table.y if table.classes else None  # a regression has no classes to keep
    rest, test = train_test_split(
        idx, test_size=params.test, stratify=stratify, random_state=params.seed
    )
    parts = {"test": test}
    if params.calibration > 0:
        share = params.calibration / (1.0 - params.test)
        train, calib = train_test_split(
            rest, test_size=share, stratify=None if stratify is None else table.y[rest],
            random_state=params.seed,
        )  # fmt: skip
        parts |= {"train": train, "calibration": calib}
    else:
        parts |= {"train": rest, "calibration": rest[:0]}
    return {
        name: Table(_take(table.inputs, ix), table.y[ix], table.feature_names, table.classes)
        for name, ix in parts.items()
    }


def _take(inputs: Features, index: np.ndarray) -> Features:
    return inputs[index] if isinstance(inputs, np.ndarray) else take(inputs, index)


def fingerprint(table: Table, params: Split) -> str:
    """sha256 over the data's bytes, shapes, names and the split parameters."""
    h = hashlib.sha256()
    inputs = (
        table.inputs if isinstance(table.inputs, np.ndarray) else dict(sorted(table.inputs.items()))
    )
    arrays = [inputs] if isinstance(inputs, np.ndarray) else [*inputs.values()]
    for arr in (*arrays, table.y):
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    meta = {"features": table.feature_names, "classes": table.classes, "split": params.model_dump(),
            "inputs": None if isinstance(inputs, np.ndarray) else list(inputs)}  # fmt: skip
    h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()


def save_split(path: Path, table: Table) -> None:
    """Tabular data as ``x``; tensor data as ``input.<name>``; labels as ``y``."""
    if isinstance(table.inputs, np.ndarray):
        np.savez(path, x=table.inputs, y=table.y)
    else:
        arrays: dict[str, Any] = {f"input.{k}": v for k, v in table.inputs.items()}
        np.savez(path, y=table.y, **arrays)


def load_split(path: Path) -> tuple[Features, np.ndarray]:
    """The inputs and labels of one split written by the prepare_data step: a feature matrix
    for tabular data, ``{input name: array}`` for tensor data."""
    if not path.is_file():
        raise DataError(f"{path}: split not found; run the prepare_data step first")
    with np.load(path, allow_pickle=False) as arrays:
        if "x" in arrays.files:
            return arrays["x"], arrays["y"]
        inputs = {
            k.removeprefix("input."): arrays[k] for k in arrays.files if k.startswith("input.")
        }
        return inputs, arrays["y"]


def is_tensor_npz(path: Path) -> bool:
    """An NPZ (or a folder of them) whose arrays are the model's inputs, not a 2-D ``x``."""
    files = sorted(path.glob("*.npz")) if path.is_dir() else [path]
    if not files or not files[0].is_file():
        return path.is_dir()
    with np.load(files[0], allow_pickle=False) as arrays:
        return not ("x" in arrays.files and arrays["x"].ndim == 2)


def load_tensors(
    path: Path, label: str, *, labelled: bool = True
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """One array per model input, and the labels (``data.label``), from an NPZ or a folder of
    them (concatenated in file-name order). Structural problems only: every array needs one
    row per label, and every file the same arrays."""
    files = sorted(path.glob("*.npz")) if path.is_dir() else [path]
    if not files:
        raise DataError(f"data.path: {path} is a folder with no .npz file")
    parts: list[dict[str, np.ndarray]] = []
    for f in files:
        try:
            with np.load(f, allow_pickle=False) as arrays:
                parts.append({k: arrays[k] for k in arrays.files})
        except (OSError, ValueError) as exc:
            raise DataError(f"data.path: cannot read {f} as npz: {exc}") from exc
        if set(parts[-1]) != set(parts[0]):
            raise DataError(f"{f}: holds arrays {sorted(parts[-1])}; {files[0].name} holds "
                            f"{sorted(parts[0])}: every file needs the same arrays")  # fmt: skip
    where = str(files[0] if len(files) == 1 else path)
    arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    if not labelled:
        if label in arrays:
            raise DataError(f"{where}: task embedding takes no labels, but the data has an array "
                            f"{label!r} (data.label); drop it, or set the task")  # fmt: skip
        n = {a.shape[0] for a in arrays.values() if a.ndim}
        if len(n) != 1:
            raise DataError(f"{where}: the inputs have different row counts: "
                            f"{ {k: list(a.shape) for k, a in arrays.items()} }")  # fmt: skip
        return arrays, None
    if label not in arrays:
        raise DataError(f"{where}: no array {label!r} of labels (data.label); arrays are "
                        f"{sorted(arrays)}")  # fmt: skip
    y = arrays.pop(label)
    if not arrays:
        raise DataError(f"{where}: no input arrays besides the labels {label!r}")
    if y.ndim != 1:
        raise DataError(f"{where}: labels {label!r} must be 1-D (one per row), got {list(y.shape)}")
    for name, a in arrays.items():
        if a.ndim == 0 or a.shape[0] != y.shape[0]:
            raise DataError(f"{where}: input {name!r} has shape {list(a.shape)}; expected one row "
                            f"per label ({y.shape[0]} rows first)")  # fmt: skip
    return arrays, y
