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
from typing import Any

import numpy as np

from components.errors import DataError
from components.spec import BuiltinData, FileData, Spec, Split

__all__ = ["SPLITS", "Table", "fingerprint", "load_dataset", "load_split", "save_split", "split"]

SPLITS = ("train", "calibration", "test")
MIN_ROWS_PER_CLASS = 3  # one each for train, calibration and test in a stratified split


@dataclass(frozen=True)
class Table:
    x: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.y.shape[0])


def load_dataset(spec: Spec) -> Table:
    """Load the spec's dataset and check that it can be trained and evaluated on.

    Raises:
        DataError: the file is missing or unreadable, or the table fails a check; the message
            names the file, the column and the offending rows.
    """
    source = spec.data
    if isinstance(source, BuiltinData):
        table = _load_builtin(source.builtin)
        where = f"data.builtin={source.builtin}"
    else:
        path = spec.resolve(source.path)
        table = _load_file(path, source)
        where = str(path)
    _check(table, where)
    return table


def _load_builtin(name: str) -> Table:
    from sklearn import datasets

    loader = {
        "digits": datasets.load_digits,
        "breast_cancer": datasets.load_breast_cancer,
        "wine": datasets.load_wine,
    }[name]
    bunch = loader()
    return Table(
        x=np.ascontiguousarray(bunch.data, dtype=np.float32),
        y=np.asarray(bunch.target, dtype=np.int64),
        feature_names=tuple(str(f) for f in bunch.feature_names),
        classes=tuple(str(c) for c in bunch.target_names),
    )


def _load_file(path: Path, source: FileData) -> Table:
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
            return _from_npz(path, source.label)
        frame = pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)
    except (OSError, ValueError, ImportError) as exc:
        raise DataError(f"data.path: cannot read {path} as {fmt}: {exc}") from exc
    return _from_frame(frame, source.label, str(path))


def _from_npz(path: Path, label: str) -> Table:
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
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{path}: array 'x' must be numeric, got dtype {x.dtype}")
    y_idx, classes = _encode_labels(y, str(path))
    names = tuple(f"f{i}" for i in range(x.shape[1]))
    return Table(np.ascontiguousarray(x, dtype=np.float32), y_idx, names, classes)


def _from_frame(frame: Any, label: str, where: str) -> Table:
    import pandas as pd

    if label not in frame.columns:
        raise DataError(
            f"{where}: label column {label!r} (data.label) not found; "
            f"columns are {list(map(str, frame.columns))}"
        )
    features = frame.drop(columns=[label])
    non_numeric = [
        str(c) for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])
    ]
    if non_numeric:
        raise DataError(
            f"{where}: feature columns must be numeric; {non_numeric} are not "
            f"(dtypes {[str(features[c].dtype) for c in non_numeric]})"
        )
    labels = frame[label]
    missing = np.flatnonzero(labels.isna().to_numpy())
    if missing.size:
        raise DataError(
            f"{where}: label column {label!r} has {missing.size} missing values "
            f"(rows {_rows(missing)}); every row needs a label"
        )
    y, classes = _encode_labels(labels.to_numpy(), where)
    x = features.to_numpy(dtype=np.float32, na_value=np.nan)
    return Table(np.ascontiguousarray(x), y, tuple(map(str, features.columns)), classes)


def _encode_labels(values: np.ndarray, where: str) -> tuple[np.ndarray, tuple[str, ...]]:
    try:
        classes, y = np.unique(values, return_inverse=True)
    except TypeError as exc:
        raise DataError(f"{where}: labels of mixed types cannot be sorted into classes") from exc
    return y.astype(np.int64), tuple(str(c) for c in classes)


def _rows(idx: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(str(int(i)) for i in idx[:limit])
    return shown + (f", ... ({idx.size} in all)" if idx.size > limit else "")


def _check(table: Table, where: str) -> None:
    bad = ~np.isfinite(table.x)
    if bad.any():
        cols = np.flatnonzero(bad.any(axis=0))
        rows = np.flatnonzero(bad.any(axis=1))
        names = [table.feature_names[i] for i in cols[:5]]
        raise DataError(
            f"{where}: {int(bad.sum())} missing or infinite feature values in columns {names} "
            f"(rows {_rows(rows)}); fill or drop them before the run"
        )
    if len(table.classes) < 2:
        raise DataError(f"{where}: found only class {list(table.classes)}; need at least two")
    counts = np.bincount(table.y, minlength=len(table.classes))
    small = [
        f"{table.classes[i]!r} ({int(c)} rows)"
        for i, c in enumerate(counts)
        if c < MIN_ROWS_PER_CLASS
    ]
    if small:
        raise DataError(
            f"{where}: classes {', '.join(small)} have fewer than {MIN_ROWS_PER_CLASS} rows; "
            "each class needs rows in train, calibration and test"
        )


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
