"""Data validation: a great-expectations suite built from the spec and the data, and split checks.

The suite (types, missing values, declared value ranges, label set, duplicate rows, row count,
and the user's own expectations) runs on the whole table before anything is trained or
calibrated on it, and renders Data Docs into the run. The split checks (rows per split and per
class, class balance, test rows leaked into training, drift against a reference profile) run on
the split. Each failure becomes one line that names the check, the column and example rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CheckResult",
    "DataReport",
    "feature_profile",
    "goal_rows_checks",
    "psi",
    "run_suite",
    "split_checks",
    "tensor_checks",
    "verdict_checks",
]

NUMERIC_TYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                 "float16", "float32", "float64", "Int64", "Float64"]  # fmt: skip
PROFILE_BINS = 10


@dataclass(frozen=True)
class CheckResult:
    """One check: what it expected, whether the data met it, and example offenders."""

    check: str
    success: bool
    detail: str
    source: str  # "great_expectations" or "slimgate"
    column: str | None = None
    examples: list[Any] = field(default_factory=list)
    target: str = "column"  # what `column` names: a table's column, or a model input

    def line(self) -> str:
        where = f" {self.target} {self.column!r}" if self.column else ""
        shown = [_cut(str(e)) for e in self.examples[:3]]
        ex = f" (e.g. {', '.join(shown)})" if self.examples else ""
        return f"{self.check}{where}: {self.detail}{ex}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "success": self.success,
            "detail": self.detail,
            "source": self.source,
            "column": self.column,
            "examples": self.examples,
        }


@dataclass
class DataReport:
    results: list[CheckResult] = field(default_factory=list)
    docs: Path | None = None

    @property
    def success(self) -> bool:
        return all(r.success for r in self.results)

    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.success]

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "evaluated": len(self.results),
            "failed": len(self.failures()),
            "data_docs": str(self.docs) if self.docs else None,
            "results": [r.to_dict() for r in self.results],
        }


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _expectation_class(name: str) -> Any:
    import great_expectations as gx

    for attr in dir(gx.expectations):
        cls = getattr(gx.expectations, attr)
        if isinstance(cls, type) and attr.startswith("Expect") and name in (attr, _snake(attr)):
            return cls
    raise ValueError(
        f"unknown expectation {name!r}; use a great_expectations.expectations class name, "
        "e.g. expect_column_values_to_be_between or ExpectColumnValuesToBeBetween"
    )


def run_suite(
    frame: pd.DataFrame,
    label: str,
    *,
    ranges: dict[str, tuple[float, float]],
    labels: list[str] | None,
    min_rows: int,
    duplicates: bool,
    user: list[tuple[str, dict[str, Any]]],
    docs_dir: Path | None,
) -> DataReport:
    """Build and run the suites on ``frame``; render Data Docs into ``docs_dir`` when given.

    Three tables keep the suites small whatever the number of columns: ``columns`` (one row per
    feature: its dtype), ``values`` (one row per feature value: nulls, ranges) and ``rows`` (the
    table itself: row count, labels, duplicates, and the user's expectations).
    """
    import great_expectations as gx
    import pandas as pd
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.expectations.row_conditions import Column

    expect: Any = gx.expectations
    features = [str(c) for c in frame.columns if c != label]
    frame = frame.set_axis([str(c) for c in frame.columns], axis=1)
    label = str(label)
    columns = pd.DataFrame({"column": features, "dtype": [str(frame[c].dtype) for c in features]})
    numeric = [c for c in features if pd.api.types.is_numeric_dtype(frame[c])]
    values = frame[numeric].melt(ignore_index=False, var_name="column", value_name="value")
    values = values.rename_axis("row").reset_index()

    suites: dict[str, tuple[pd.DataFrame, list[Any]]] = {
        "columns": (columns, [expect.ExpectColumnValuesToBeInSet(column="dtype", value_set=NUMERIC_TYPES)]),
        "values": (values, [expect.ExpectColumnValuesToNotBeNull(column="value")]),
        "rows": (frame, [expect.ExpectTableRowCountToBeBetween(min_value=min_rows),
                         expect.ExpectColumnValuesToNotBeNull(column=label)]),
    }  # fmt: skip
    for col, (lo, hi) in ranges.items():
        if col != "*" and col not in features:
            raise ValueError(
                f"validation.ranges names column {col!r}, which the data does not have"
            )
        kwargs: dict[str, Any] = {"column": "value", "min_value": lo, "max_value": hi}
        if col != "*":
            kwargs["row_condition"] = Column("column") == col
        elif any(c in ranges for c in features):  # "*" covers the columns without their own
            kwargs["row_condition"] = Column("column").is_in(
                [c for c in features if c not in ranges]
            )
        suites["values"][1].append(expect.ExpectColumnValuesToBeBetween(**kwargs))
    if labels is not None:
        allowed: list[Any] = labels
        if pd.api.types.is_numeric_dtype(frame[label]):  # "0" and "1" name the numbers 0 and 1
            allowed = [_number(v) for v in labels]
        suites["rows"][1].append(
            expect.ExpectColumnValuesToBeInSet(column=label, value_set=allowed)
        )
    if duplicates:
        suites["rows"][1].append(expect.ExpectCompoundColumnsToBeUnique(column_list=features))
    for name, kw in user:
        try:
            suites["rows"][1].append(_expectation_class(name)(**kw))
        except Exception as exc:
            raise ValueError(f"validation.expectations: {name}: {exc}") from exc

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = ctx.data_sources.add_pandas("slimgate")
    report = DataReport()
    for table, (data, items) in suites.items():
        batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("all rows")
        suite = ctx.suites.add(gx.ExpectationSuite(name=table))
        for item in items:
            suite.add_expectation(item)
        definition = ctx.validation_definitions.add(
            gx.ValidationDefinition(name=table, data=batch, suite=suite)
        )
        result: dict[str, Any] = definition.run(  # type: ignore[no-untyped-call]
            batch_parameters={"dataframe": data},
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": []},
        ).to_json_dict()
        report.results += [_result(table, item, data) for item in result["results"]]
    if docs_dir is not None:
        docs_dir.mkdir(parents=True, exist_ok=True)
        ctx.add_data_docs_site(
            site_name="run",
            site_config={
                "class_name": "SiteBuilder",
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir.resolve()),
                },
            },
        )
        ctx.build_data_docs(site_names=["run"])
        report.docs = docs_dir / "index.html"
    return report


def _short(value: Any) -> str:
    if isinstance(value, list) and len(value) > 6:
        return f"[{', '.join(map(repr, value[:4]))}, ... {len(value)} values]"
    return repr(value) if isinstance(value, str) else str(value)


def _result(table: str, item: dict[str, Any], data: pd.DataFrame) -> CheckResult:
    """One suite result as a CheckResult whose examples point at rows and columns of the data."""
    config = item["expectation_config"]
    kwargs = {
        k: v for k, v in config["kwargs"].items() if k not in ("batch_id", "condition_parser")
    }
    res = item.get("result") or {}
    column = kwargs.pop("column", None)
    condition = kwargs.pop("row_condition", None)
    if table == "values" and isinstance(condition, dict) and condition.get("operator") == "==":
        column = str(condition.get("parameter"))  # a range declared for one column
    elif table in ("values", "columns"):
        column = None  # the check covers every feature column; examples name them
    detail = ", ".join(f"{k}={_short(v)}" for k, v in kwargs.items() if k != "column_list")
    examples: list[Any] = []
    if item["success"]:
        detail = detail or "met"
    else:
        sep = ": " if detail else ""
        if res.get("unexpected_count") is not None:
            total = res.get("element_count") or len(data)
            detail += f"{sep}{res['unexpected_count']} of {total} {table} fail"
            idx = res.get("unexpected_index_list") or []
            if table == "values":
                examples = [f"row {data.at[i, 'row']} column {data.at[i, 'column']}: {data.at[i, 'value']}"
                            for i in idx[:5]]  # fmt: skip
            elif table == "columns":
                examples = [f"{data.at[i, 'column']}: {data.at[i, 'dtype']}" for i in idx[:5]]
            else:
                partial = res.get("partial_unexpected_list") or []
                examples = [f"row {i}: {v}" for i, v in zip(idx, partial, strict=False)][
                    :5
                ] or partial[:5]
        elif res.get("observed_value") is not None:
            detail += f"{sep}observed {res['observed_value']}"
        # great-expectations 1.x keys the exceptions by the metric that raised them
        info = item.get("exception_info") or {}
        raised = [info] if "raised_exception" in info else [
            e for e in info.values() if isinstance(e, dict)
        ]  # fmt: skip
        messages = sorted(
            {str(e.get("exception_message")) for e in raised if e.get("raised_exception")}
        )
        if messages:
            detail += f"{sep}{'; '.join(messages)}"
    name = config["type"] + ("" if table == "rows" else f" ({table})")
    return CheckResult(name, bool(item["success"]), detail, "great_expectations", column, examples)


# --- split-level checks ------------------------------------------------------------------------


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _cut(text: str, width: int = 60) -> str:
    """An example cut to a readable length."""
    return text if len(text) <= width else text[: width - 3] + "..."


def verdict_checks(
    y: np.ndarray, classes: tuple[str, ...], task: str, splits: int
) -> list[CheckResult]:
    """Whether the data can support a verdict at all: a classifier needs two classes or more,
    each with rows enough to appear in every split; a regression needs a target that varies."""
    out = []
    if task == "classification":
        counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=len(classes))
        present = [classes[i] for i, c in enumerate(counts) if c > 0]
        out.append(CheckResult(
            "two_classes", len(present) >= 2,
            f"the label column holds {len(present)} class{'' if len(present) == 1 else 'es'} "
            f"({', '.join(map(repr, present[:3])) or 'none'}); a classifier that can only be "
            "right cannot be evaluated, so nothing would be released" if len(present) < 2
            else f"{len(present)} classes", "slimgate",
        ))  # fmt: skip
        small = [f"{classes[i]!r}: {int(c)}" for i, c in enumerate(counts) if 0 < c < splits]
        out.append(CheckResult(
            "class_in_every_split", not small,
            f"every class needs at least {splits} rows, one for each split; too few: "
            + ", ".join(small[:5]) if small else "every class can appear in every split",
            "slimgate",
        ))  # fmt: skip
    elif task == "regression":
        values = y.astype(np.float64)
        if not np.isfinite(values).all():
            out.append(CheckResult(
                "target_finite", False,
                f"{int((~np.isfinite(values)).sum())} target values are missing, infinite or "
                "beyond float32's range (|y| > 3.4e38)", "slimgate",
            ))  # fmt: skip
            return out
        spread = float(values.std()) if values.size else 0.0
        scale = float(np.abs(values).mean()) if values.size else 0.0
        varies = spread > 1e-6 * scale  # a single value, or all of them 0, has no spread
        out.append(CheckResult(
            "target_varies", varies,
            f"the target is constant or nearly so (std {spread:.3g} around "
            f"{values.mean() if values.size else 0:.6g}); any model predicting that value would "
            "pass, so nothing can be judged" if not varies else f"target std {spread:.4g}",
            "slimgate",
        ))  # fmt: skip
    return out


def goal_rows_checks(
    needs: list[tuple[str, int | None]], test_rows: int, total_rows: int, test_share: float
) -> list[CheckResult]:
    """Whether the test split is large enough for each bounded goal to pass at all."""
    out = []
    for goal, need in needs:
        ok = need is not None and test_rows >= need
        if ok:
            detail = f"{goal}: {test_rows} test rows, at least {need} needed"
        elif need is None:
            detail = (
                f"{goal} cannot pass on any number of test rows; lower the confidence or the bound"
            )
        else:
            detail = (f"{goal} cannot pass on {test_rows} test rows even with every example "
                      f"right; it needs at least {need} (about {int(np.ceil(need / test_share))} "
                      f"rows at split.test {test_share:g}; the data has {total_rows}), or a lower "
                      "confidence")  # fmt: skip
        out.append(CheckResult("test_rows_for_goals", ok, detail, "slimgate"))
    return out


def split_checks(
    parts: dict[str, tuple[np.ndarray, np.ndarray]],
    classes: tuple[str, ...],
    *,
    min_rows_per_split: int,
    min_rows_per_class: int,
    max_class_ratio: float | None,
    overlap: bool,
) -> list[CheckResult]:
    """Rows per split and class, class balance, and test rows that also appear in training."""
    out = []
    for name, (_, y) in parts.items():
        if name == "calibration" and len(y) == 0:
            continue
        out.append(CheckResult(
            "split_row_count", len(y) >= min_rows_per_split,
            f"{name} has {len(y)} rows, needs at least {min_rows_per_split}", "slimgate",
        ))  # fmt: skip
    train_y = parts["train"][1]
    counts = np.bincount(train_y, minlength=len(classes)) if classes else np.zeros(0, np.int64)
    small = [f"{classes[i]!r}: {int(c)}" for i, c in enumerate(counts) if c < min_rows_per_class]
    if classes:  # a regression has no classes to count
        out.append(CheckResult(
            "class_row_count", not small,
            f"every class needs at least {min_rows_per_class} training rows"
            + (f"; too few: {', '.join(small)}" if small else ""), "slimgate",
        ))  # fmt: skip
    if classes and max_class_ratio is not None and counts.min() > 0:
        ratio = counts.max() / counts.min()
        out.append(CheckResult(
            "class_balance", ratio <= max_class_ratio,
            f"largest/smallest class in training is {ratio:.1f}, at most {max_class_ratio:g}",
            "slimgate",
        ))  # fmt: skip
    if overlap:
        train_rows = {row.tobytes(): i for i, row in enumerate(parts["train"][0])}
        for name in ("test", "calibration"):
            x = parts[name][0]
            leaked = [
                (j, train_rows[r.tobytes()]) for j, r in enumerate(x) if r.tobytes() in train_rows
            ]
            out.append(CheckResult(
                f"{name}_rows_not_in_train", not leaked,
                f"{len(leaked)} of {len(x)} {name} rows also appear in train"
                if leaked else f"no {name} row appears in train", "slimgate",
                examples=[f"{name} row {j} = train row {i}" for j, i in leaked[:5]],
            ))  # fmt: skip
    return out


# --- drift --------------------------------------------------------------------------------------


def feature_profile(x: np.ndarray, names: tuple[str, ...]) -> dict[str, Any]:
    """Per-feature decile edges and the share of rows between them: a compact data snapshot."""
    inner_edges = np.quantile(x, np.linspace(0, 1, PROFILE_BINS + 1)[1:-1], axis=0)
    edges, shares = [], []
    for j in range(x.shape[1]):
        inner = np.unique(inner_edges[:, j])
        counts = np.bincount(
            np.searchsorted(inner, x[:, j], side="right"), minlength=inner.size + 1
        )
        edges.append(inner.tolist())
        shares.append((counts / len(x)).tolist())
    return {"features": list(names), "rows": len(x), "edges": edges, "shares": shares}


def psi(reference: dict[str, Any], x: np.ndarray) -> dict[str, float]:
    """Population stability index of each feature of ``x`` against a reference profile."""
    out = {}
    for j, name in enumerate(reference["features"]):
        inner = np.asarray(reference["edges"][j])
        expected = np.asarray(reference["shares"][j])
        counts = np.bincount(
            np.searchsorted(inner, x[:, j], side="right"), minlength=inner.size + 1
        )
        actual = counts / len(x)
        e, a = np.clip(expected, 1e-4, None), np.clip(actual, 1e-4, None)
        out[name] = float(np.sum((a - e) * np.log(a / e)))
    return out


def _per_row(a: np.ndarray) -> np.ndarray:
    """One row per example (also for no examples, where reshape cannot infer a width)."""
    return a.reshape(a.shape[0], int(np.prod(a.shape[1:], dtype=np.int64)))


def tensor_checks(
    inputs: dict[str, np.ndarray],
    labels: np.ndarray,
    *,
    ranges: dict[str, tuple[float, float]],
    labels_allowed: list[str] | None,
    min_rows: int,
    duplicates: bool,
) -> DataReport:
    """The checks of a tensor dataset (one array per model input): what the table suite checks
    of columns, per input. ``ranges`` maps an input name (or ``"*"``) to its allowed values.

    Every failure is one line naming the input, what was seen and what was expected.
    """
    results = []
    n = int(labels.shape[0])
    results.append(CheckResult("min_rows", n >= min_rows,
                               f"{n} rows, at least {min_rows} expected", "slimgate"))  # fmt: skip
    for name, a in inputs.items():
        per_row = list(a.shape[1:])
        numeric = a.dtype.kind in "biuf"
        results.append(CheckResult(
            "numeric_dtype", numeric, f"dtype {a.dtype}, per row {per_row}"
            + ("" if numeric else "; expected a numeric or boolean dtype"), "slimgate", name, target="input",
        ))  # fmt: skip
        if not numeric:
            continue
        if a.dtype.kind == "f":
            bad = ~np.isfinite(_per_row(a)).all(axis=1)
            results.append(CheckResult(
                "finite_values", not bad.any(),
                f"{int(bad.sum())} of {n} rows hold NaN or +-inf" if bad.any() else "no NaN or inf",
                "slimgate", name, [int(i) for i in np.flatnonzero(bad)[:5]], "input",
            ))  # fmt: skip
        bounds = ranges.get(name, ranges.get("*"))
        if bounds is not None:
            low, high = bounds
            flat = _per_row(a)
            with np.errstate(invalid="ignore"):
                out = ((flat < low) | (flat > high)).any(axis=1)
            seen = (f"values in [{np.nanmin(flat):.6g}, {np.nanmax(flat):.6g}]"
                    if flat.size else "no values")  # fmt: skip
            results.append(CheckResult(
                "values_in_range", not out.any(),
                f"{int(out.sum())} of {n} rows outside [{low:g}, {high:g}] ({seen})" if out.any()
                else f"{seen} within [{low:g}, {high:g}]", "slimgate", name,
                [int(i) for i in np.flatnonzero(out)[:5]], "input",
            ))  # fmt: skip
    missing = [i for i, v in enumerate(labels.tolist())
               if v is None or (isinstance(v, float) and np.isnan(v))]  # fmt: skip
    results.append(CheckResult(
        "labels_not_null", not missing, f"{len(missing)} of {n} rows have no label" if missing
        else "every row has a label", "slimgate", "label", missing[:5],
    ))  # fmt: skip
    if labels_allowed is not None:
        unknown = sorted({str(v) for v in labels.tolist()} - set(labels_allowed))
        results.append(CheckResult(
            "label_set", not unknown, f"labels outside {labels_allowed}: {unknown[:5]}" if unknown
            else "every label is known", "slimgate", "label",
        ))  # fmt: skip
    if duplicates:
        rows = np.concatenate([_per_row(a).astype(np.float64) for a in inputs.values()], axis=1)
        _, first, counts = np.unique(rows, axis=0, return_index=True, return_counts=True)
        dup = int((counts - 1).sum())
        results.append(CheckResult(
            "no_duplicate_rows", dup == 0,
            f"{dup} rows repeat an earlier row (every input equal)" if dup else "no duplicate rows",
            "slimgate", None, [int(i) for i in first[counts > 1][:5]],
        ))  # fmt: skip
    return DataReport(results)
