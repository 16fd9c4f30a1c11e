"""Data validation with a real great-expectations suite, through the prepare_data step and the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from components.data import fingerprint, load_frame, split, to_table
from components.errors import DataError
from components.layout import RunLayout, read_json
from components.prepare import prepare_data
from components.spec import load_spec


def csv_spec(
    tmp_path: Path, demo_spec: dict[str, Any], write_spec: Any, rows: list[str], **validation: Any
) -> Any:
    (tmp_path / "data.csv").write_text("a,b,label\n" + "".join(rows))
    demo_spec.update(data={"path": "data.csv"}, model={"builtin": "tabular_mlp"},
                     validation={"min_rows": 10, "min_rows_per_split": 2, **validation})  # fmt: skip
    return load_spec(write_spec(demo_spec))


def good_rows(n: int = 60) -> list[str]:
    return [f"{i % 17},{(i * 7) % 23},{'yes' if i % 2 else 'no'}\n" for i in range(n)]


def failures(spec: Any, run_dir: Path) -> list[str]:
    with pytest.raises(DataError) as info:
        prepare_data(spec, run_dir)
    first, *lines = str(info.value).splitlines()
    assert "nothing was trained" in first and "validation.json" in first
    report = read_json(run_dir / "data" / "validation.json")
    assert report["success"] is False and report["failed"] == len(lines)
    assert not RunLayout(run_dir).split("train").exists()  # nothing to train on was written
    return lines


def test_clean_data_passes_and_renders_data_docs(
    demo_spec: dict[str, Any], write_spec: Any, tmp_path: Path
) -> None:
    info = prepare_data(load_spec(write_spec(demo_spec)), tmp_path / "run")
    report = read_json(tmp_path / "run" / "data" / "validation.json")
    assert report["success"] and report["failed"] == 0 and report["evaluated"] >= 12
    checks = {r["check"].split(" ")[0] for r in report["results"]}
    assert {"expect_column_values_to_be_between", "expect_compound_columns_to_be_unique",
            "expect_column_values_to_be_in_set", "test_rows_not_in_train", "drift"} <= checks  # fmt: skip
    assert (tmp_path / "run" / "data" / "docs" / "index.html").is_file()
    assert info["profile"]["features"][0] == "pixel_0_0" and len(info["profile"]["shares"]) == 64


def test_missing_labels_stop_the_run(
    demo_spec: dict[str, Any], write_spec: Any, tmp_path: Path
) -> None:
    spec = csv_spec(tmp_path, demo_spec, write_spec, [*good_rows(), "1,2,\n", "3,4,\n"])
    (line,) = failures(spec, tmp_path / "run")
    assert line.startswith("expect_column_values_to_not_be_null column 'label': 2 of 62 rows fail")
    assert "row 60" in line and "row 61" in line


def test_out_of_range_values_stop_the_run(
    demo_spec: dict[str, Any], write_spec: Any, tmp_path: Path
) -> None:
    spec = csv_spec(tmp_path, demo_spec, write_spec, [*good_rows(), "99,1,yes\n"],
                    ranges={"a": [0, 20], "*": [0, 30]})  # fmt: skip
    (line,) = failures(spec, tmp_path / "run")
    assert "column 'a': min_value=0.0, max_value=20.0: 1 of 61 values fail" in line
    assert "row 60 column a: 99" in line


def test_missing_and_non_numeric_features(
    demo_spec: dict[str, Any], write_spec: Any, tmp_path: Path
) -> None:
    spec = csv_spec(tmp_path, demo_spec, write_spec, [*good_rows(), "1,,yes\n", "x,2,no\n"])
    lines = failures(spec, tmp_path / "run")
    assert any(
        "expect_column_values_to_be_in_set (columns)" in ln and "columns fail (e.g. a: " in ln
        for ln in lines
    )
    assert any(
        "expect_column_values_to_not_be_null (values)" in ln and "row 60 column b: nan" in ln
        for ln in lines
    )


def test_duplicates_and_test_rows_leaked_into_training(
    demo_spec: dict[str, Any], write_spec: Any, tmp_path: Path
) -> None:
    rows = good_rows() + good_rows()[:30]  # 30 rows appear twice
    spec = csv_spec(tmp_path, demo_spec, write_spec, rows)
    (line,) = failures(spec, tmp_path / "run")
    assert line.startswith("expect_compound_columns_to_be_unique")
    # allowing duplicates does not allow the copies to sit on both sides of the split
    spec = csv_spec(tmp_path, demo_spec, write_spec, rows, allow_duplicates=True)
    lines = failures(spec, tmp_path / "run2")
    assert any(
        ln.startswith("test_rows_not_in_train:") and "also appear in train" in ln for ln in lines
    )


def test_class_checks(demo_spec: dict[str, Any], write_spec: Any, tmp_path: Path) -> None:
    rows = good_rows() + [f"{100 + i},{100 + i},rare\n" for i in range(3)]
    spec = csv_spec(
        tmp_path,
        demo_spec,
        write_spec,
        rows,
        min_rows_per_class=4,
        max_class_ratio=5,
        labels=["yes", "no", "rare"],
    )
    lines = failures(spec, tmp_path / "run")
    assert any(ln.startswith("class_row_count:") and "'rare'" in ln for ln in lines)
    assert any(ln.startswith("class_balance:") for ln in lines)
    spec = csv_spec(tmp_path, demo_spec, write_spec, good_rows(), labels=["yes"])
    (line,) = failures(spec, tmp_path / "run2")
    assert line.startswith("expect_column_values_to_be_in_set column 'label'") and "no" in line


def test_user_expectations_from_the_spec(
    demo_spec: dict[str, Any], write_spec: Any, tmp_path: Path
) -> None:
    demo_spec["validation"] = {"expectations": [
        {"type": "expect_column_mean_to_be_between", "kwargs": {"column": "pixel_3_3", "min_value": 100}}
    ]}  # fmt: skip
    (line,) = failures(load_spec(write_spec(demo_spec)), tmp_path / "run")
    assert (
        line.startswith("expect_column_mean_to_be_between column 'pixel_3_3': min_value=100")
        and "observed" in line
    )
    demo_spec["validation"]["expectations"][0]["type"] = "expect_the_unexpected"
    with pytest.raises(DataError, match="unknown expectation 'expect_the_unexpected'"):
        prepare_data(load_spec(write_spec(demo_spec)), tmp_path / "run3")


def test_drift_against_a_reference_profile(
    demo_spec: dict[str, Any], write_spec: Any, tmp_path: Path
) -> None:
    prepare_data(load_spec(write_spec(demo_spec)), tmp_path / "ref")
    demo_spec["validation"] = {"reference": str(tmp_path / "ref" / "data" / "dataset.json")}
    prepare_data(load_spec(write_spec(demo_spec)), tmp_path / "same")  # no drift against itself
    rng = np.random.default_rng(0)
    x = rng.integers(8, 17, size=(300, 64)).astype(float)  # brighter images than digits
    np.savez(tmp_path / "shifted.npz", x=x, label=rng.integers(0, 10, 300))
    demo_spec.update(data={"path": "shifted.npz"}, model={"builtin": "tabular_mlp"})
    demo_spec["validation"] |= {"ranges": {"*": [0, 16]}, "max_class_ratio": None}
    lines = failures(load_spec(write_spec(demo_spec)), tmp_path / "shifted")
    drift = [line for line in lines if line.startswith("drift:") or "features differ" in line]
    # (300 rows are also too few for the demo's agreement goal at its confidence)
    assert len(drift) == 1 and all(
        line in drift or line.startswith("test_rows_for_goals:") for line in lines
    ), lines


def test_structural_errors_at_load(
    demo_spec: dict[str, Any], write_spec: Any, tmp_path: Path
) -> None:
    (tmp_path / "data.csv").write_text("a,b,target\n1,2,x\n")
    demo_spec["data"] = {"path": "data.csv"}
    with pytest.raises(
        DataError,
        match=r"label column 'label' \(data.label\) not found; the 3 columns are 'a', 'b', 'target'",
    ):
        load_frame(load_spec(write_spec(demo_spec)))
    demo_spec["data"] = {"path": "nowhere.csv"}
    with pytest.raises(DataError, match=r"data.path: file not found: .*nowhere\.csv"):
        load_frame(load_spec(write_spec(demo_spec)))


def test_split_is_stratified_and_deterministic(demo_spec: dict[str, Any], write_spec: Any) -> None:
    spec = load_spec(write_spec(demo_spec))
    frame, label, _ = load_frame(spec)
    table = to_table(frame, label)
    parts = split(table, spec.split)
    assert sum(len(p) for p in parts.values()) == len(table)
    assert len(parts["test"]) == math.ceil(0.25 * len(table))
    for name, part in parts.items():
        share = np.bincount(part.y, minlength=10) / len(part)
        assert np.abs(share - np.bincount(table.y) / len(table)).max() < 0.02, name
    again = split(table, spec.split)
    assert all(np.array_equal(parts[n].y, again[n].y) for n in parts)
    other = spec.split.model_copy(update={"seed": 1})
    assert fingerprint(table, other) != fingerprint(table, spec.split)


def test_bad_data_stops_the_cli_run_before_training(
    demo_spec: dict[str, Any], write_spec: Any, tmp_path: Path
) -> None:
    (tmp_path / "data.csv").write_text("a,b,label\n" + "".join(good_rows()) + "5,5,\n")
    demo_spec.update(
        data={"path": "data.csv"},
        model={"builtin": "tabular_mlp"},
        validation={"min_rows_per_split": 2},
    )
    exe = Path(sys.executable).with_name("slimgate")
    proc = subprocess.run([str(exe), "run", str(write_spec(demo_spec)), "--runs-dir", str(tmp_path / "runs")],
                          capture_output=True, text=True, check=False, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("slimgate: error:")]
    assert "1 data check failed; nothing was trained" in errors[0]
    assert "expect_column_values_to_not_be_null column 'label'" in errors[1]
    (run,) = (tmp_path / "runs").iterdir()
    assert not (run / "baseline").exists()
    assert json.loads((run / "report.json").read_text())["error"]


# --- the suite on small tables, directly ---------------------------------------------------


def suite_lines(frame: Any, **kw: Any) -> list[str]:
    from validation.data import run_suite

    args: dict[str, Any] = {"ranges": {}, "labels": None, "min_rows": 1, "duplicates": False,
                            "user": [], "docs_dir": None}  # fmt: skip
    args.update(kw)
    return [r.line() for r in run_suite(frame, "y", **args).failures()]


def test_a_star_range_covers_only_the_columns_without_their_own() -> None:
    import pandas as pd

    frame = pd.DataFrame({"a": [0.0, 5.0, 1.0], "b": [0.5, 0.2, 0.9], "y": [0, 1, 0]})
    assert suite_lines(frame, ranges={"a": (0.0, 10.0), "*": (0.0, 1.0)}) == []
    assert suite_lines(frame, ranges={"a": (0.0, 10.0), "b": (0.0, 1.0), "*": (0.0, 0.1)}) == []
    (line,) = suite_lines(frame, ranges={"*": (0.0, 1.0)})
    assert line.startswith(
        "expect_column_values_to_be_between (values): min_value=0.0, max_value=1.0"
    )
    assert "row 1 column a: 5.0" in line


def test_examples_name_the_row_and_column_of_a_missing_value() -> None:
    import pandas as pd

    frame = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 2.0, 3.0, None], "y": [0, 1, 0, 1]})
    (line,) = suite_lines(frame)
    assert line == (
        "expect_column_values_to_not_be_null (values): 1 of 8 values fail (e.g. row 3 column b: nan)"
    )


def test_an_expectation_that_raises_says_why_and_data_docs_can_be_rebuilt(tmp_path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame({"a": [0.0, 1.0], "y": [0, 1]})
    user = [("expect_column_mean_to_be_between", {"column": "missing", "min_value": 0})]
    (line,) = suite_lines(frame, user=user)
    assert line == ("expect_column_mean_to_be_between column 'missing': min_value=0.0: Error: "
                    'The column "missing" in BatchData does not exist.')  # fmt: skip
    from validation.data import run_suite

    for _ in range(2):  # a second run into the same folder (a resumed run) rebuilds the docs
        report = run_suite(frame, "y", ranges={}, labels=None, min_rows=1, duplicates=False,
                           user=[], docs_dir=tmp_path / "docs")  # fmt: skip
        assert report.docs == tmp_path / "docs" / "index.html" and report.docs.is_file()
        assert report.to_dict()["data_docs"] == str(tmp_path / "docs" / "index.html")
