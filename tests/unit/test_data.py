from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from components.data import fingerprint, load_dataset, split
from components.errors import DataError
from components.spec import load_spec

CSV_HEADER = "a,b,label\n"


def spec_for(tmp_path: Path, demo_spec: dict[str, Any], write_spec: Any, csv: str) -> Any:
    (tmp_path / "data.csv").write_text(csv)
    demo_spec["data"] = {"path": "data.csv", "label": "label"}
    demo_spec["model"] = {"builtin": "tabular_mlp"}
    return load_spec(write_spec(demo_spec))


def rows(n: int = 30) -> str:
    return "".join(f"{i},{i * 2},{'yes' if i % 2 else 'no'}\n" for i in range(n))


def test_csv_loads_with_string_labels(
    tmp_path: Path, demo_spec: dict[str, Any], write_spec: Any
) -> None:
    table = load_dataset(spec_for(tmp_path, demo_spec, write_spec, CSV_HEADER + rows()))
    assert table.x.shape == (30, 2) and table.x.dtype == np.float32
    assert table.classes == ("no", "yes") and table.feature_names == ("a", "b")


def test_missing_file_names_the_path(
    tmp_path: Path, demo_spec: dict[str, Any], write_spec: Any
) -> None:
    demo_spec["data"] = {"path": "nowhere.csv"}
    with pytest.raises(DataError, match=r"data.path: file not found: .*nowhere\.csv"):
        load_dataset(load_spec(write_spec(demo_spec)))


def test_missing_label_column(tmp_path: Path, demo_spec: dict[str, Any], write_spec: Any) -> None:
    spec = spec_for(tmp_path, demo_spec, write_spec, "a,b,target\n" + rows())
    with pytest.raises(
        DataError,
        match=r"label column 'label' \(data.label\) not found; columns are \['a', 'b', 'target'\]",
    ):
        load_dataset(spec)


def test_missing_labels_name_the_rows(
    tmp_path: Path, demo_spec: dict[str, Any], write_spec: Any
) -> None:
    spec = spec_for(tmp_path, demo_spec, write_spec, CSV_HEADER + rows() + "1,2,\n3,4,\n")
    with pytest.raises(DataError, match=r"2 missing values \(rows 30, 31\)"):
        load_dataset(spec)


def test_non_numeric_features(tmp_path: Path, demo_spec: dict[str, Any], write_spec: Any) -> None:
    spec = spec_for(tmp_path, demo_spec, write_spec, CSV_HEADER + rows() + "x,2,yes\n")
    with pytest.raises(DataError, match=r"feature columns must be numeric; \['a'\] are not"):
        load_dataset(spec)


def test_missing_feature_values(tmp_path: Path, demo_spec: dict[str, Any], write_spec: Any) -> None:
    spec = spec_for(tmp_path, demo_spec, write_spec, CSV_HEADER + rows() + "1,,yes\n")
    with pytest.raises(
        DataError, match=r"1 missing or infinite feature values in columns \['b'\] \(rows 30\)"
    ):
        load_dataset(spec)


def test_a_class_too_small_to_split(
    tmp_path: Path, demo_spec: dict[str, Any], write_spec: Any
) -> None:
    spec = spec_for(tmp_path, demo_spec, write_spec, CSV_HEADER + rows() + "1,2,maybe\n")
    with pytest.raises(DataError, match=r"classes 'maybe' \(1 rows\) have fewer than 3 rows"):
        load_dataset(spec)


def test_split_is_stratified_disjoint_and_deterministic(
    demo_spec: dict[str, Any], write_spec: Any
) -> None:
    spec = load_spec(write_spec(demo_spec))
    table = load_dataset(spec)
    parts = split(table, spec.split)
    assert sum(len(p) for p in parts.values()) == len(table)
    assert len(parts["test"]) == math.ceil(0.25 * len(table))
    assert len(parts["calibration"]) == math.ceil(0.1 * len(table))
    for name, part in parts.items():  # every class in every split, in proportion
        share = np.bincount(part.y, minlength=10) / len(part)
        assert np.abs(share - np.bincount(table.y) / len(table)).max() < 0.02, name
    again = split(table, spec.split)
    assert all(np.array_equal(parts[n].y, again[n].y) for n in parts)
    assert fingerprint(table, spec.split) == fingerprint(table, spec.split)
    other = spec.split.model_copy(update={"seed": 1})
    assert fingerprint(table, other) != fingerprint(table, spec.split)
