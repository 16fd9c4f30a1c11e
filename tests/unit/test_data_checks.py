"""slimgate's own data checks, function by function, at their boundaries: whether each passes,
and the line it prints (the user reads it to fix the data). The great-expectations suite is
tested on real tables in tests/integration/test_data_validation.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from validation.data import (
    CheckResult,
    DataReport,
    feature_profile,
    goal_rows_checks,
    psi,
    split_checks,
    tensor_checks,
    verdict_checks,
)


def by_check(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.check + (f"[{r.column}]" if r.column else ""): r for r in results}


# --- a result, a report --------------------------------------------------------------------


def test_a_check_line_names_the_column_and_at_most_three_cut_examples() -> None:
    long = "x" * 70
    line = CheckResult("c", False, "bad", "slimgate", "age", [1, long, 3, 4]).line()
    assert line == f"c column 'age': bad (e.g. 1, {'x' * 57}..., 3)"
    assert CheckResult("c", False, "bad", "slimgate").line() == "c: bad"
    assert CheckResult("c", True, "ok", "slimgate", "x", target="input").line() == "c input 'x': ok"
    exactly = "y" * 60
    assert CheckResult("c", False, "d", "s", None, [exactly]).line() == f"c: d (e.g. {exactly})"


def test_a_report_succeeds_only_when_every_check_does() -> None:
    ok, bad = CheckResult("a", True, "", "s"), CheckResult("b", False, "", "s", "col", [7])
    assert DataReport([ok, ok]).success and not DataReport([ok, bad]).success
    assert DataReport([]).success
    report = DataReport([ok, bad])
    assert report.failures() == [bad]
    assert report.to_dict() == {
        "success": False, "evaluated": 2, "failed": 1, "data_docs": None,
        "results": [ok.to_dict(), bad.to_dict()],
    }  # fmt: skip
    assert bad.to_dict() == {"check": "b", "success": False, "detail": "", "source": "s",
                             "column": "col", "examples": [7]}  # fmt: skip


# --- can the data support a verdict --------------------------------------------------------


def test_a_classifier_needs_two_classes_each_in_every_split() -> None:
    classes = ("a", "b", "c")
    one = by_check(verdict_checks(np.array([1, 1, 1, 1]), classes, "classification", 3))
    assert not one["two_classes"].success
    assert one["two_classes"].detail == (
        "the label column holds 1 class ('b'); a classifier that can only be right cannot be "
        "evaluated, so nothing would be released"
    )
    assert one["class_in_every_split"].success
    assert one["class_in_every_split"].detail == "every class can appear in every split"

    two = by_check(verdict_checks(np.array([0, 0, 0, 2, 2]), classes, "classification", 3))
    assert two["two_classes"].success and two["two_classes"].detail == "2 classes"
    assert not two["class_in_every_split"].success  # 'c' has 2 rows for 3 splits
    assert two["class_in_every_split"].detail == (
        "every class needs at least 3 rows, one for each split; too few: 'c': 2"
    )
    exactly = by_check(verdict_checks(np.array([0, 0, 0, 2, 2, 2]), classes, "classification", 3))
    assert exactly["class_in_every_split"].success
    for empty in (np.array([], dtype=int), np.array([])):  # an empty array is float by default
        none = by_check(verdict_checks(empty, classes, "classification", 3))
        assert "holds 0 classes (none)" in none["two_classes"].detail


def test_a_regression_needs_a_finite_target_that_varies() -> None:
    def check(y: list[float]) -> CheckResult:
        return verdict_checks(np.array(y), (), "regression", 3)[0]

    constant = check([2.0, 2.0, 2.0])
    assert (constant.check, constant.success) == ("target_varies", False)
    assert constant.detail.startswith("the target is constant or nearly so (std 0 around 2)")
    assert check([1.0, 2.0]).success and check([1.0, 2.0]).detail == "target std 0.5"
    # nearly constant: a spread of 1e-7 on values around 1000 is below 1e-6 of their scale
    assert not check([1000.0, 1000.0 + 2e-4]).success
    assert check([1000.0, 1000.01]).success
    assert check([0.0, 1e-9]).success  # small values, but they vary
    assert not check([5.0]).success
    infinite = check([1.0, np.inf, np.nan])
    assert (infinite.check, infinite.success) == ("target_finite", False)
    assert infinite.detail.startswith("2 target values are missing, infinite or beyond")
    assert verdict_checks(np.array([1.0]), (), "embedding", 3) == []


def test_the_test_split_must_be_large_enough_for_each_bounded_goal() -> None:
    goal = "goals.accuracy.min 0.97 at confidence 0.95"
    enough, short, never = goal_rows_checks(
        [(goal, 99), (goal, 101), ("g", None)], test_rows=100, total_rows=400, test_share=0.25
    )
    assert enough.success and enough.detail == f"{goal}: 100 test rows, at least 99 needed"
    assert not short.success
    assert short.detail == (
        f"{goal} cannot pass on 100 test rows even with every example right; it needs at least "
        "101 (about 404 rows at split.test 0.25; the data has 400), or a lower confidence"
    )
    assert not never.success and "cannot pass on any number of test rows" in never.detail
    assert goal_rows_checks([(goal, 100)], 100, 400, 0.25)[0].success


# --- splits --------------------------------------------------------------------------------


def parts(
    train_y: list[int], *, test_rows: int = 4, calibration_rows: int = 4
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    x = np.arange(len(train_y) * 2, dtype=float).reshape(-1, 2)
    return {
        "train": (x, np.array(train_y)),
        "test": (x[:test_rows] + 1000, np.zeros(test_rows, int)),
        "calibration": (x[:calibration_rows] + 2000, np.zeros(calibration_rows, int)),
    }


def test_split_rows_class_rows_and_balance_at_their_limits() -> None:
    balanced = split_checks(parts([0, 0, 0, 1, 1, 1]), ("a", "b"), min_rows_per_split=4,
                            min_rows_per_class=3, max_class_ratio=1.0, overlap=False)  # fmt: skip
    assert [r.success for r in balanced] == [True, True, True, True, True]
    found = by_check(balanced)
    assert found["class_row_count"].detail == "every class needs at least 3 training rows"
    assert found["class_balance"].detail == ("largest/smallest class in training is 1.0, at most 1")
    found = by_check(split_checks(parts([0, 0, 0, 0, 1, 1], test_rows=3), ("a", "b"),
                                  min_rows_per_split=4, min_rows_per_class=3, max_class_ratio=1.9,
                                  overlap=False))  # fmt: skip
    results = split_checks(parts([0, 0, 0, 0, 1, 1], test_rows=3), ("a", "b"),
                           min_rows_per_split=4, min_rows_per_class=3, max_class_ratio=1.9,
                           overlap=False)  # fmt: skip
    rows = {r.detail for r in results if r.check == "split_row_count"}
    assert rows == {"train has 6 rows, needs at least 4", "test has 3 rows, needs at least 4",
                    "calibration has 4 rows, needs at least 4"}  # fmt: skip
    assert [r.success for r in results if r.check == "split_row_count"] == [True, False, True]
    assert not found["class_row_count"].success
    assert found["class_row_count"].detail == (
        "every class needs at least 3 training rows; too few: 'b': 2"
    )
    assert not found["class_balance"].success  # 4 / 2 = 2.0 > 1.9


def test_an_empty_calibration_split_is_not_counted_and_a_regression_has_no_classes() -> None:
    results = split_checks(parts([0, 0, 0], calibration_rows=0), (), min_rows_per_split=1,
                           min_rows_per_class=5, max_class_ratio=2.0, overlap=False)  # fmt: skip
    assert [(r.check, r.detail) for r in results] == [
        ("split_row_count", "train has 3 rows, needs at least 1"),
        ("split_row_count", "test has 4 rows, needs at least 1"),
    ]
    # a class missing from training fails its row count and skips the ratio (no division by 0)
    missing = split_checks(parts([0, 0, 0]), ("a", "b"), min_rows_per_split=1,
                           min_rows_per_class=1, max_class_ratio=2.0, overlap=False)  # fmt: skip
    assert [r.check for r in missing if not r.success] == ["class_row_count"]
    assert "class_balance" not in {r.check for r in missing}


def test_test_and_calibration_rows_seen_in_training_are_named() -> None:
    split = parts([0, 0, 1, 1])
    x_train = split["train"][0]
    split["test"] = (np.vstack([x_train[2], x_train[0] + 0.5, x_train[3]]), np.zeros(3, int))
    results = by_check(split_checks(split, ("a", "b"), min_rows_per_split=1, min_rows_per_class=1,
                                    max_class_ratio=None, overlap=True))  # fmt: skip
    leaked = results["test_rows_not_in_train"]
    assert not leaked.success
    assert leaked.detail == "2 of 3 test rows also appear in train"
    assert leaked.examples == ["test row 0 = train row 2", "test row 2 = train row 3"]
    clean = results["calibration_rows_not_in_train"]
    assert clean.success and clean.detail == "no calibration row appears in train"


# --- tensors ------------------------------------------------------------------------------


def tensors(**kw: object) -> dict[str, CheckResult]:
    args: dict[str, Any] = {
        "ranges": {},
        "labels_allowed": None,
        "min_rows": 1,
        "duplicates": False,
    }
    args.update(kw)
    inputs = args.pop("inputs")
    labels = args.pop("labels")
    return by_check(tensor_checks(inputs, labels, **args).results)


def test_tensor_rows_dtype_and_finite_values_per_input() -> None:
    image = np.zeros((4, 1, 2, 2), np.float32)
    image[1, 0, 0, 0] = np.nan
    image[3, 0, 1, 1] = -np.inf
    found = tensors(inputs={"image": image, "ids": np.zeros((4, 3), np.int64),
                            "text": np.array([["a"]] * 4)},
                    labels=np.array([0, 1, 0, 1]), min_rows=4)  # fmt: skip
    assert found["min_rows"].success and found["min_rows"].detail == "4 rows, at least 4 expected"
    assert found["numeric_dtype[image]"].detail == "dtype float32, per row [1, 2, 2]"
    assert not found["finite_values[image]"].success
    assert found["finite_values[image]"].detail == "2 of 4 rows hold NaN or +-inf"
    assert found["finite_values[image]"].examples == [1, 3]
    assert found["numeric_dtype[ids]"].success and "finite_values[ids]" not in found
    assert not found["numeric_dtype[text]"].success
    assert found["numeric_dtype[text]"].detail == (
        "dtype <U1, per row [1]; expected a numeric or boolean dtype"
    )
    assert "finite_values[text]" not in found
    assert found["numeric_dtype[text]"].line().startswith("numeric_dtype input 'text': ")
    assert not tensors(inputs={"x": np.zeros((4, 2))}, labels=np.zeros(4), min_rows=5)[
        "min_rows"
    ].success
    clean = tensors(inputs={"x": np.ones((2, 2))}, labels=np.zeros(2))
    assert clean["finite_values[x]"].success and clean["finite_values[x]"].detail == "no NaN or inf"


def test_tensor_ranges_are_inclusive_and_fall_back_to_the_star_entry() -> None:
    x = np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 1.5], [-0.1, 0.0]])
    found = tensors(inputs={"x": x, "y": x}, labels=np.zeros(4), ranges={"x": (0.0, 1.0),
                                                                         "*": (-1.0, 2.0)})  # fmt: skip
    inside = found["values_in_range[y]"]
    assert inside.success and inside.detail == "values in [-0.1, 1.5] within [-1, 2]"
    out = found["values_in_range[x]"]
    assert not out.success and out.examples == [2, 3]
    assert out.detail == "2 of 4 rows outside [0, 1] (values in [-0.1, 1.5])"
    edge = tensors(inputs={"x": x[:2]}, labels=np.zeros(2), ranges={"x": (0.0, 1.0)})
    assert edge["values_in_range[x]"].success  # 0 and 1 themselves are allowed
    assert "values_in_range[x]" not in tensors(inputs={"x": x}, labels=np.zeros(4))


def test_tensor_labels_and_duplicate_rows() -> None:
    x = np.array([[1.0], [2.0], [1.0], [3.0], [1.0]])
    found = tensors(inputs={"x": x}, labels=np.array([0.0, np.nan, 1.0, 2.0, 9.0], dtype=object),
                    labels_allowed=["0.0", "1.0", "2.0"], duplicates=True)  # fmt: skip
    assert not found["labels_not_null[label]"].success
    assert found["labels_not_null[label]"].detail == "1 of 5 rows have no label"
    assert found["labels_not_null[label]"].examples == [1]
    assert not found["label_set[label]"].success
    assert (
        found["label_set[label]"].detail == "labels outside ['0.0', '1.0', '2.0']: ['9.0', 'nan']"
    )
    assert not found["no_duplicate_rows"].success
    assert found["no_duplicate_rows"].detail == "2 rows repeat an earlier row (every input equal)"
    assert found["no_duplicate_rows"].examples == [0]
    clean = tensors(inputs={"x": x[:2]}, labels=np.array([0, 1]), labels_allowed=["0", "1"],
                    duplicates=True)  # fmt: skip
    assert clean["labels_not_null[label]"].detail == "every row has a label"
    assert clean["label_set[label]"].success and clean["label_set[label]"].detail == (
        "every label is known"
    )
    assert clean["no_duplicate_rows"].success
    assert clean["no_duplicate_rows"].detail == "no duplicate rows"
    # one input equal is not a duplicate row: every input must repeat
    two = tensors(inputs={"a": np.array([[1.0], [1.0]]), "b": np.array([[1.0], [2.0]])},
                  labels=np.array([0, 1]), duplicates=True)  # fmt: skip
    assert two["no_duplicate_rows"].success


# --- drift --------------------------------------------------------------------------------


def test_a_profile_and_its_population_stability_index() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 2))
    profile = feature_profile(x, ("a", "b"))
    assert profile["features"] == ["a", "b"] and profile["rows"] == 2000
    assert [len(e) for e in profile["edges"]] == [9, 9]
    assert all(s == pytest.approx([0.1] * 10, abs=0.002) for s in profile["shares"])
    same = psi(profile, x)
    assert same["a"] == pytest.approx(0.0, abs=1e-3) and same["b"] == pytest.approx(0.0, abs=1e-3)
    shifted = psi(profile, x + np.array([1.0, 0.0]))
    assert shifted["a"] > 0.5 and shifted["b"] == pytest.approx(0.0, abs=1e-3)
    # PSI = sum((a - e) * ln(a / e)): everything in one decile of ten
    one_bin = psi(profile, np.full((10, 2), 10.0))
    expected = (1 - 0.1) * np.log(1 / 0.1) + 9 * (1e-4 - 0.1) * np.log(1e-4 / 0.1)
    assert one_bin["a"] == pytest.approx(expected, rel=0.02)
    constant = feature_profile(np.ones((50, 1)), ("c",))
    assert constant["edges"] == [[1.0]] and constant["shares"] == [[0.0, 1.0]]


# --- edges --------------------------------------------------------------------------------


def test_a_report_names_its_data_docs() -> None:
    from pathlib import Path

    report = DataReport([], docs=Path("run/data/docs/index.html"))
    assert report.to_dict()["data_docs"] == "run/data/docs/index.html"


def test_values_in_details_are_short() -> None:
    from validation.data import _short

    assert _short(list(range(6))) == "[0, 1, 2, 3, 4, 5]"
    assert _short(list(range(7))) == "[0, 1, 2, 3, ... 7 values]"
    assert _short("text") == "'text'"
    assert _short(3) == "3"
    assert _short(np.float64(0.5)) == "0.5"  # numbers as they read, not as numpy writes them


def test_an_empty_regression_target_does_not_vary() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice" on the way
        (check,) = verdict_checks(np.array([], dtype=float), (), "regression", 3)
    assert not check.success
    assert check.detail.startswith("the target is constant or nearly so (std 0 around 0);")
    zeros = verdict_checks(np.zeros(5), (), "regression", 3)[0]
    assert not zeros.success


def test_split_checks_do_not_depend_on_the_order_of_the_splits() -> None:
    split = parts([0, 0, 1, 1], calibration_rows=0)
    reordered = {"train": split["train"], "calibration": split["calibration"],
                 "test": split["test"]}  # fmt: skip
    results = split_checks(reordered, ("a", "b"), min_rows_per_split=5, min_rows_per_class=1,
                           max_class_ratio=None, overlap=False)  # fmt: skip
    assert [r.detail for r in results if r.check == "split_row_count"] == [
        "train has 4 rows, needs at least 5", "test has 4 rows, needs at least 5",
    ]  # fmt: skip


def test_psi_weighs_each_bin_by_its_log_ratio() -> None:
    reference = {"features": ["a"], "edges": [[0.0]], "shares": [[0.2, 0.8]]}
    half = np.array([[-1.0], [1.0]])  # one row below the edge, one above: 0.5 and 0.5
    expected = 0.3 * np.log(0.5 / 0.2) + (-0.3) * np.log(0.5 / 0.8)
    assert psi(reference, half)["a"] == pytest.approx(expected)
    # every row below the first edge: the bins above are empty, not missing
    low = psi(reference, np.array([[-5.0], [-6.0]]))["a"]
    assert low == pytest.approx(0.8 * np.log(1 / 0.2) + (1e-4 - 0.8) * np.log(1e-4 / 0.8))


def test_tensor_checks_go_on_past_an_input_they_cannot_read() -> None:
    found = tensors(inputs={"text": np.array([["a"]] * 2), "x": np.array([[np.nan, 1.0]] * 2)},
                    labels=np.array([0, 1]))  # fmt: skip
    assert not found["numeric_dtype[text]"].success
    assert not found["finite_values[x]"].success
    empty = tensors(inputs={"x": np.zeros((0, 3))}, labels=np.array([]), ranges={"*": (0, 1)},
                    min_rows=0)  # fmt: skip
    assert empty["values_in_range[x]"].detail == "no values within [0, 1]"
    wide = np.array([[1.0, 2.0], [1.0, 3.0], [1.0, 2.0]])
    dup = tensors(inputs={"x": wide}, labels=np.array([0, 1, 0]), duplicates=True)
    assert dup["no_duplicate_rows"].detail == "1 rows repeat an earlier row (every input equal)"


def test_a_suite_result_names_what_raised_in_either_form_great_expectations_uses() -> None:
    import pandas as pd

    from validation.data import _result

    def item(exception_info: dict[str, Any], success: bool = False) -> dict[str, Any]:
        return {"success": success, "result": {}, "exception_info": exception_info,
                "expectation_config": {"type": "expect_x", "kwargs": {"column": "a", "k": 1}}}  # fmt: skip

    flat = {"raised_exception": True, "exception_message": "boom"}
    nested = {"MetricConfigurationID(...)": {**flat, "exception_message": "bang"},
              "other": {"raised_exception": False, "exception_message": "quiet"}}  # fmt: skip
    frame = pd.DataFrame({"a": [1]})
    assert _result("rows", item(flat), frame).line() == "expect_x column 'a': k=1: boom"
    assert _result("rows", item(nested), frame).line() == "expect_x column 'a': k=1: bang"
    assert _result("rows", item({}), frame).line() == "expect_x column 'a': k=1"
    assert _result("rows", item({}, success=True), frame).detail == "k=1"
    bare = item({}, success=True)
    bare["expectation_config"]["kwargs"] = {"column": "a"}
    assert _result("values", bare, frame).detail == "met"
