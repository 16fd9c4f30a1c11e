"""The prepare_data step: load, validate (great-expectations), split, fingerprint and profile.

Nothing downstream trains or calibrates on data that failed a check: a failure writes
``data/validation.json`` and the Data Docs, then stops the run with one line per failed check.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from components.data import (
    SPLITS,
    Table,
    builtin_labels,
    fingerprint,
    finite_check,
    is_tensor_npz,
    load_frame,
    load_tensors,
    save_split,
    split,
    to_table,
)
from components.errors import DataError
from components.layout import RunLayout, write_json
from components.spec import BuiltinData, FileData, Spec
from validation.data import (
    CheckResult,
    DataReport,
    feature_profile,
    goal_rows_checks,
    psi,
    run_suite,
    split_checks,
    tensor_checks,
    verdict_checks,
)

__all__ = ["prepare_data", "reference_profile"]

# Ranges known for the built-in datasets; a spec's own ranges replace them.
BUILTIN_RANGES: dict[str, dict[str, tuple[float, float]]] = {"digits": {"*": (0.0, 16.0)}}


def prepare_data(spec: Spec, run_dir: Path) -> dict[str, Any]:
    """Write the train, calibration and test splits, ``dataset.json`` and ``validation.json``."""
    run = RunLayout(run_dir)
    write_json(run.spec, {"digest": spec.digest(), "spec": spec.model_dump(mode="json")})
    rules = spec.validation
    builtin = spec.data.builtin if isinstance(spec.data, BuiltinData) else None
    ranges = rules.ranges or BUILTIN_RANGES.get(builtin or "", {})
    labels = rules.labels or (builtin_labels(builtin) if builtin else None)
    if spec.task != "classification":
        labels = None  # numeric targets, or no labels at all: no label set
    tensor_path = None
    if isinstance(spec.data, FileData) and spec.data.format in (None, "npz"):
        path = spec.resolve(spec.data.path)
        npz = path.is_dir() or path.suffix == ".npz" or spec.data.format == "npz"
        tensor_path = path if npz and is_tensor_npz(path) else None
    if isinstance(spec.data, FileData) and spec.data.text is not None:
        table, report, where = _text_table(spec, spec.data, ranges, labels)
    elif tensor_path is not None:
        label = spec.data.label if isinstance(spec.data, FileData) else "label"
        table, report, where = _tensor_table(spec, tensor_path, label, ranges, labels)
    else:
        table, report, where = _tabular_table(spec, ranges, labels, run)
    _stop_on_failure(report, run, where)
    splits = 3 if spec.split.calibration > 0 else 2
    report.results += verdict_checks(table.y, table.classes, spec.task, splits)
    _stop_on_failure(report, run, where)

    try:
        parts = split(table, spec.split)
    except ValueError as exc:  # scikit-learn's stratified split, on too few rows per class
        raise DataError(f"{where}: cannot split {len(table)} rows into train, calibration and "
                        f"test keeping every class in each: {exc}") from None  # fmt: skip
    report.results += goal_rows_checks(
        spec.goals.rows_needed(), len(parts["test"].y), len(table), spec.split.test
    )
    report.results += split_checks(
        {name: (parts[name].x if table.tabular else parts[name].rows(), parts[name].y)
         for name in SPLITS}, table.classes,
        min_rows_per_split=rules.min_rows_per_split, min_rows_per_class=rules.min_rows_per_class,
        max_class_ratio=rules.max_class_ratio, overlap=not rules.allow_train_test_overlap,
    )  # fmt: skip
    summary, names = _profiled(parts["train"])
    profile = feature_profile(summary, names)
    report.results.append(_drift(spec, summary, names))
    _stop_on_failure(report, run, where)

    run.data.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        save_split(run.split(name), parts[name])
    n_classes = len(table.classes)
    info = {
        "source": spec.data.model_dump(),
        "rows": len(table),
        "n_features": int(table.x.shape[1]) if table.tabular else None,
        "input_dtype": str(table.x.dtype) if table.tabular else None,  # float32, or int64 ids
        # tensor data: each input's dtype and shape per row, as the model takes them
        "inputs": None
        if table.tabular
        else {
            name: {"dtype": str(a.dtype), "shape": list(a.shape[1:])}
            for name, a in dict(table.inputs).items()
        },
        "feature_names": list(table.feature_names),
        "classes": list(table.classes),
        "split": spec.split.model_dump(),
        "rows_per_split": {name: len(parts[name]) for name in SPLITS},
        "task": spec.task,
        "class_counts": None
        if not table.classes
        else {name: np.bincount(parts[name].y, minlength=n_classes).tolist() for name in SPLITS},
        "fingerprint": fingerprint(table, spec.split),
        "validation": {"checks": len(report.results), "data_docs": str(report.docs)},
        "profile": profile,
    }
    write_json(run.dataset, info)
    return info


def _tabular_table(
    spec: Spec, ranges: dict[str, tuple[float, float]], labels: list[str] | None, run: RunLayout
) -> tuple[Table, DataReport, str]:
    """A table (CSV, Parquet, a 2-D npz, a built-in), checked by the great-expectations suite."""
    rules = spec.validation
    frame, label, where = load_frame(spec)
    try:
        report = run_suite(
            frame, label, ranges=ranges, labels=labels, min_rows=rules.min_rows,
            duplicates=not rules.allow_duplicates,
            user=[(e.type, e.kwargs) for e in rules.expectations],
            docs_dir=run.data / "docs",
        )  # fmt: skip
    except ValueError as exc:
        raise DataError(str(exc)) from exc
    infinite = finite_check(frame, label)
    report.results.append(CheckResult(
        "finite_values", not infinite,
        f"columns holding +-inf or values beyond float32's range (|x| > 3.4e38), which the model "
        f"computes in: {infinite[:5]}" if infinite else "no infinite values", "slimgate",
    ))  # fmt: skip
    if not report.success:
        return Table(np.zeros((0, 0), np.float32), np.zeros(0, np.int64), (), ()), report, where
    tokens = isinstance(spec.data, FileData) and spec.data.features == "tokens"
    return (
        to_table(frame, label, tokens=tokens, regression=spec.task == "regression"),
        report,
        where,
    )


def _tensor_table(
    spec: Spec,
    path: Path,
    label: str,
    ranges: dict[str, tuple[float, float]],
    labels: list[str] | None,
) -> tuple[Table, DataReport, str]:
    """One array per model input (an npz or a folder of them), checked input by input."""
    rules = spec.validation
    if rules.expectations:
        raise DataError(f"validation.expectations: great-expectations expectations apply to "
                        f"table columns; {path} holds tensors (use validation.ranges per input)")  # fmt: skip
    inputs, labelled = load_tensors(path, label, labelled=spec.task != "embedding")
    y = labelled if labelled is not None else np.zeros(len(next(iter(inputs.values()))), np.float32)
    report = tensor_checks(inputs, y, ranges=ranges, labels_allowed=labels,
                           min_rows=rules.min_rows, duplicates=not rules.allow_duplicates)  # fmt: skip
    return Table(inputs, *_labels(spec, y, label, str(path))), report, str(path)


def _text_table(
    spec: Spec,
    source: FileData,
    ranges: dict[str, tuple[float, float]],
    labels: list[str] | None,
) -> tuple[Table, DataReport, str]:
    """A text column turned into the model's inputs by a local Hugging Face tokenizer."""
    frame, label, where = load_frame(spec, labelled=spec.task != "embedding")
    text = str(source.text)
    if text not in frame.columns:
        raise DataError(f"{where}: text column {text!r} (data.text) not found; columns are "
                        f"{list(map(str, frame.columns))}")  # fmt: skip
    folder = spec.resolve(str(source.tokenizer))
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise DataError(f"data.tokenizer needs the transformers package: pip install "
                        f"'slimgate[text]' ({exc})") from None  # fmt: skip
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        raise DataError(f"data.tokenizer: cannot load a tokenizer from {folder}: {exc}") from None
    values = frame[text]
    empty = [int(i) for i, v in enumerate(values) if not isinstance(v, str) or not v.strip()]
    encoded = tokenizer([v if isinstance(v, str) else "" for v in values], max_length=source.max_length,
                        padding="max_length", truncation=True, return_tensors="np")  # fmt: skip
    inputs = {k: np.asarray(v, dtype=np.int64) for k, v in encoded.items()}
    y = frame[label].to_numpy() if spec.task != "embedding" else np.zeros(len(frame), np.float32)
    report = tensor_checks(inputs, y, ranges=ranges, labels_allowed=labels,
                           min_rows=spec.validation.min_rows,
                           duplicates=not spec.validation.allow_duplicates)  # fmt: skip
    report.results.insert(0, CheckResult(
        "text_not_empty", not empty, f"{len(empty)} of {len(values)} rows have no text"
        if empty else "every row has text", "slimgate", text, empty[:5],
    ))  # fmt: skip
    truncated = (
        int((inputs["attention_mask"][:, -1] == 1).sum()) if "attention_mask" in inputs else 0
    )
    report.results.append(CheckResult(
        "tokens_fit", True, f"{truncated} of {len(values)} texts fill all {source.max_length} "
        "tokens (longer ones are truncated; raise data.max_length)", "slimgate", text,
    ))  # fmt: skip
    return Table(inputs, *_labels(spec, y, label, where)), report, where


def _labels(
    spec: Spec, y: np.ndarray, label: str, where: str
) -> tuple[np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """Class indices and the sorted classes, or a regression's float32 targets and no classes;
    with the feature names of tensor data (none)."""
    if spec.task == "embedding":  # no labels: zeros stand in, never scored
        return y.astype(np.float32), (), ()
    if spec.task == "regression":
        if y.dtype.kind not in "biuf":
            raise DataError(f"{where}: labels {label!r} must be numeric for task regression; "
                            f"they are {y.dtype}")  # fmt: skip
        return y.astype(np.float32), (), ()
    classes, codes = np.unique(y.astype(str), return_inverse=True)
    return codes.astype(np.int64), (), tuple(str(c) for c in classes)


def _profiled(part: Table) -> tuple[np.ndarray, tuple[str, ...]]:
    """What the profile and drift see: a table's columns; for tensor data, each row's mean of
    each input (one summary per input, so a shifted input shows as drift)."""
    if part.tabular:
        return part.x, part.feature_names
    inputs = dict(part.inputs)
    means = [a.reshape(len(a), -1).astype(np.float64).mean(axis=1) for a in inputs.values()]
    return np.stack(means, axis=1), tuple(f"{name}:row_mean" for name in inputs)


def _stop_on_failure(report: DataReport, run: RunLayout, where: str) -> None:
    write_json(run.data_validation, report.to_dict())
    failures = report.failures()
    if failures:
        docs = f", Data Docs {report.docs}" if report.docs else ""
        raise DataError(
            f"{where}: {len(failures)} data check{'s' if len(failures) > 1 else ''} failed; "
            f"nothing was trained (details in {run.data / 'validation.json'}{docs})\n"
            + "\n".join(f.line() for f in failures)
        )


def reference_profile(spec: Spec) -> tuple[dict[str, Any] | None, str]:
    """The profile the spec's ``validation.reference`` names, and where it came from."""
    ref = spec.validation.reference
    if ref is None:
        return None, "no reference"
    if ref == "production":
        from components.registry import open_registry

        registry = open_registry(spec.registry_uri())
        pointer = registry.alias(spec.name)
        if pointer is None:
            return None, f"{spec.name} has no production version yet"
        card = registry.card(spec.name, pointer["version"])
        return card.get("lineage", {}).get("data_profile"), f"{spec.name} v{pointer['version']}"
    path = spec.resolve(ref)
    if not path.is_file():
        raise DataError(f"validation.reference: file not found: {path}")
    data = json.loads(path.read_text())
    profile = data.get("profile") or data.get("lineage", {}).get("data_profile")
    if profile is None:
        raise DataError(
            f"validation.reference: {path} holds no data profile; "
            "use a run's data/dataset.json or a registry card.json"
        )
    return profile, str(path)


def _drift(spec: Spec, x: np.ndarray, names: tuple[str, ...]) -> CheckResult:
    profile, origin = reference_profile(spec)
    if profile is None:
        return CheckResult("drift", True, f"not checked: {origin}", "slimgate")
    if profile["features"] != list(names):
        return CheckResult(
            "drift", False,
            f"the features differ from the reference ({origin}): "
            f"{sorted(set(profile['features']) ^ set(names))[:5]}", "slimgate",
        )  # fmt: skip
    scores = psi(profile, x)
    limit = spec.validation.max_drift_psi
    drifted = sorted(((v, k) for k, v in scores.items() if v > limit), reverse=True)
    worst = max(scores.values()) if scores else 0.0
    return CheckResult(
        "drift", not drifted,
        f"largest PSI against {origin} is {worst:.3f}, at most {limit:g} allowed"
        + (f"; {len(drifted)} features drifted" if drifted else ""), "slimgate",
        examples=[f"{k}: PSI {v:.2f}" for v, k in drifted[:5]],
    )  # fmt: skip
