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
    builtin_labels,
    fingerprint,
    finite_check,
    load_frame,
    save_split,
    split,
    to_table,
)
from components.errors import DataError
from components.layout import RunLayout, write_json
from components.spec import BuiltinData, FileData, Spec
from validation.data import CheckResult, DataReport, feature_profile, psi, run_suite, split_checks

__all__ = ["prepare_data", "reference_profile"]

# Ranges known for the built-in datasets; a spec's own ranges replace them.
BUILTIN_RANGES: dict[str, dict[str, tuple[float, float]]] = {"digits": {"*": (0.0, 16.0)}}


def prepare_data(spec: Spec, run_dir: Path) -> dict[str, Any]:
    """Write the train, calibration and test splits, ``dataset.json`` and ``validation.json``."""
    run = RunLayout(run_dir)
    write_json(run.spec, {"digest": spec.digest(), "spec": spec.model_dump(mode="json")})
    rules = spec.validation
    frame, label, where = load_frame(spec)
    builtin = spec.data.builtin if isinstance(spec.data, BuiltinData) else None
    ranges = rules.ranges or BUILTIN_RANGES.get(builtin or "", {})
    labels = rules.labels or (builtin_labels(builtin) if builtin else None)
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
        "finite_values", not infinite, f"columns holding +-inf: {infinite}" if infinite
        else "no infinite values", "slimgate",
    ))  # fmt: skip
    _stop_on_failure(report, run, where)

    tokens = isinstance(spec.data, FileData) and spec.data.features == "tokens"
    table = to_table(frame, label, tokens=tokens)
    parts = split(table, spec.split)
    report.results += split_checks(
        {name: (parts[name].x, parts[name].y) for name in SPLITS}, table.classes,
        min_rows_per_split=rules.min_rows_per_split, min_rows_per_class=rules.min_rows_per_class,
        max_class_ratio=rules.max_class_ratio, overlap=not rules.allow_train_test_overlap,
    )  # fmt: skip
    profile = feature_profile(parts["train"].x, table.feature_names)
    report.results.append(_drift(spec, parts["train"].x, table.feature_names))
    _stop_on_failure(report, run, where)

    run.data.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        save_split(run.split(name), parts[name])
    n_classes = len(table.classes)
    info = {
        "source": spec.data.model_dump(),
        "rows": len(table),
        "n_features": int(table.x.shape[1]),
        "input_dtype": str(table.x.dtype),  # float32, or int64 for token ids
        "feature_names": list(table.feature_names),
        "classes": list(table.classes),
        "split": spec.split.model_dump(),
        "rows_per_split": {name: len(parts[name]) for name in SPLITS},
        "class_counts": {
            name: np.bincount(parts[name].y, minlength=n_classes).tolist() for name in SPLITS
        },
        "fingerprint": fingerprint(table, spec.split),
        "validation": {"checks": len(report.results), "data_docs": str(report.docs)},
        "profile": profile,
    }
    write_json(run.dataset, info)
    return info


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
