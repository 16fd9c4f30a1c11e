"""Loading, checking, splitting and fingerprinting the run's dataset.

Every dataset becomes a table: a float32 feature matrix (one row per example) and int64 class
indices. Models that want another shape (the digits CNN wants 8x8 images) reshape inside the
model, so the exported ONNX file takes the same rows that the data has.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from components.errors import DataError
from components.spec import BuiltinData, FileData, Spec, Split

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "SPLITS",
    "Table",
    "builtin_labels",
    "fingerprint",
    "finite_check",
    "load_frame",
    "load_split",
    "save_split",
    "split",
    "to_table",
]

SPLITS = ("train", "calibration", "test")


@dataclass(frozen=True)
class Table:
    x: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.y.shape[0])


def load_frame(spec: Spec) -> tuple[pd.DataFrame, str, str]:
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
    return _file_frame(path, source), source.label, str(path)


def builtin_labels(name: str) -> list[str]:
    return [str(c) for c in _bunch(name).target_names]


def _bunch(name: str) -> Any:
    from sklearn import datasets

    loader = {
        "digits": datasets.load_digits,
        "breast_cancer": datasets.load_breast_cancer,
        "wine": datasets.load_wine,
    }[name]
    return loader()


def _builtin_frame(name: str) -> pd.DataFrame:
    import pandas as pd

    bunch = _bunch(name)
    frame = pd.DataFrame(bunch.data, columns=[str(f) for f in bunch.feature_names])
    frame["label"] = np.asarray([str(c) for c in bunch.target_names])[bunch.target]
    return frame


def _file_frame(path: Path, source: FileData) -> pd.DataFrame:
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
            frame = pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)
    except (OSError, ValueError, ImportError) as exc:
        raise DataError(f"data.path: cannot read {path} as {fmt}: {exc}") from exc
    if source.label not in frame.columns:
        raise DataError(
            f"{path}: label column {source.label!r} (data.label) not found; "
            f"columns are {list(map(str, frame.columns))}"
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


def to_table(frame: pd.DataFrame, label: str, *, tokens: bool = False) -> Table:
    """The validated frame as float32 features (int64 token ids with ``tokens``) and int64
    class indices (classes sorted)."""
    features = frame.drop(columns=[label])
    values = frame[label].to_numpy()
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
        np.ascontiguousarray(x), y.astype(np.int64), tuple(map(str, features.columns)),
        tuple(str(c) for c in classes),
    )  # fmt: skip


def finite_check(frame: pd.DataFrame, label: str) -> list[str]:
    """Feature columns holding +-inf (the suite's null checks do not see them)."""
    features = frame.drop(columns=[label]).select_dtypes("number")
    return [str(c) for c in features.columns if np.isinf(features[c].to_numpy(dtype=float)).any()]


def split(table: Table, params: Split) -> dict[str, Table]:
    """Stratified train / calibration / test split; the same table and params give the same split."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(table))
    rest, test = train_test_split(
        idx, test_size=params.test, stratify=table.y, random_state=params.seed
    )
    parts = {"test": test}
    if params.calibration > 0:
        share = params.calibration / (1.0 - params.test)
        train, calib = train_test_split(
            rest, test_size=share, stratify=table.y[rest], random_state=params.seed
        )
        parts |= {"train": train, "calibration": calib}
    else:
        parts |= {"train": rest, "calibration": rest[:0]}
    return {
        name: Table(table.x[ix], table.y[ix], table.feature_names, table.classes)
        for name, ix in parts.items()
    }


def fingerprint(table: Table, params: Split) -> str:
    """sha256 over the data's bytes, shapes, names and the split parameters."""
    h = hashlib.sha256()
    for arr in (table.x, table.y):
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    meta = {"features": table.feature_names, "classes": table.classes, "split": params.model_dump()}
    h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()


def save_split(path: Path, table: Table) -> None:
    np.savez(path, x=table.x, y=table.y)


def load_split(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) arrays of one split written by the prepare_data step."""
    if not path.is_file():
        raise DataError(f"{path}: split not found; run the prepare_data step first")
    with np.load(path, allow_pickle=False) as arrays:
        return arrays["x"], arrays["y"]
