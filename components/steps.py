"""One step for an orchestrator: what ``slimgate step NAME``, a Kubeflow lightweight component
and an Airflow task call. It runs the step as the pipeline declares it
(:func:`components.pipeline.run_step`) and writes the files the orchestrator asked for
(``--<output>-out PATH``): artifacts for the KFP UI, XCom for Airflow.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from components.hostlock import host_lock
from components.layout import RunLayout
from components.pipeline import run_step, step
from components.records import StepRecord
from components.spec import Spec

__all__ = ["OUTPUTS", "execute"]


def _copy(src: Path) -> Callable[[str], None]:
    def write(dest: str) -> None:
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)

    return write


def _text(text: str) -> Callable[[str], None]:
    def write(dest: str) -> None:
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        Path(dest).write_text(text)

    return write


def _metrics(name: str, result: Any) -> dict[str, Any]:
    """The numbers of a step's result that an orchestrator shows (KFP Metrics)."""
    if result is None:
        return {}
    if name == "search":
        summary = {k: result.get(k) for k in ("screened_out", "failed", "stopped_by", "seconds")}
        return {**summary, "trials": len(result["trials"]), "front": result.get("front", [])}
    if name == "gate":
        return {c.name: c.outcome for c in result.candidates}
    return {k: v for k, v in result.items() if isinstance(v, int | float)}


# Every output a step may declare, and how it is written from the step's record and result.
Writer = Callable[[str], None]
OUTPUTS: dict[str, Callable[[RunLayout, StepRecord, Any], Writer | None]] = {
    "dataset": lambda run, rec, result: _copy(run.dataset),
    "names": lambda run, rec, result: _text(json.dumps(rec.value)),
    # a recorded failure leaves an empty file: an orchestrator expects the artifact to exist
    "model": lambda run, rec, result: _copy(
        (run.candidate(rec.item) if rec.item else run.baseline).model
    ) if rec.status == "done" else _text(""),
    "metrics": lambda run, rec, result: _text(json.dumps(_metrics(rec.step, result))),
    "selected": lambda run, rec, result: _text(str(rec.value or "")),
    "promotion": lambda run, rec, result: _text(result.model_dump_json(exclude_unset=True)),
    "html": lambda run, rec, result: _copy(run.report_html),
    "value": lambda run, rec, result: _text(json.dumps(rec.value)),  # any step: Airflow's XCom
}  # fmt: skip


def execute(
    name: str,
    spec: Spec,
    run_dir: Path,
    *,
    item: str | None = None,
    inputs: Mapping[str, Any] | None = None,
    outputs: Mapping[str, str | None] | None = None,
) -> StepRecord:
    """Run step ``name`` and write the outputs asked for (``{output: path}``; None skips one).

    The model of a candidate whose failure was recorded is an empty file.
    """
    s = step(name)
    asked = {k: v for k, v in (outputs or {}).items() if v}
    unknown = sorted(set(asked) - {*s.outputs, "value"})
    if unknown:
        raise ValueError(f"step {name} has no output {unknown}; outputs: {[*s.outputs, 'value']}")
    run_dir.mkdir(parents=True, exist_ok=True)
    with host_lock().shared():  # the outputs too are work that no measurement may run beside
        record, result = run_step(name, spec, run_dir, item=item, **dict(inputs or {}))
        run = RunLayout(run_dir)
        for output, path in asked.items():
            writer = OUTPUTS[output](run, record, result)
            if writer is not None and path:
                writer(path)
    return record
