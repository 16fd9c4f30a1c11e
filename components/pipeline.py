"""The pipeline, declared once: its steps, their order, when each runs and what its failure means.

Every way of running slimgate is built from :data:`STEPS`: the in-process runner
(``slimgate run``), ``slimgate step NAME``, the Airflow DAG (local and Kubernetes modes) and the
Kubeflow pipeline (lightweight and container forms). None of them lists steps by hand, and
:func:`run_step` is the one place a step is executed, so conditions and failure semantics are the
same in all of them::

    prepare_data -> baseline -> champion? -> candidate x N -> search? -> gate -> promote -> report

- A step with a ``when`` condition runs only when its spec asks for it (``champion`` with a
  champion goal, ``search`` with a search); otherwise it is recorded as skipped.
- A ``fan_out`` step runs once per item of an earlier step's value (a candidate per name).
- ``Failure.CONTINUE``: a failure is recorded as evidence (``error.json``) and later steps run;
  the gate fails that candidate. ``Failure.STOP``: later steps do not run, except ``always``
  ones (the report is written whatever happened).
- ``promote`` takes the gate's selection; with none it raises :class:`Rejected` after writing
  ``promotion.json``, so a rejected release fails the run visibly in every orchestrator.

Steps hold the host's lock shared while they run and measurements hold it exclusively
(:mod:`components.hostlock`), so candidates may build in parallel in any orchestrator, but no
benchmark on a host runs beside other slimgate work.

Each executed step leaves ``steps/<step>[.<item>].json`` (a :class:`StepRecord`) in the run
directory: what ran, when, and how it ended.
"""

from __future__ import annotations

import importlib
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from components.hostlock import host_lock
from components.layout import RunLayout
from components.records import StepError, StepRecord

if TYPE_CHECKING:
    from components.records import Promotion, Verdict
    from components.spec import Spec

__all__ = [
    "STEPS",
    "Condition",
    "Failure",
    "Step",
    "StepRecord",
    "Trace",
    "run_step",
    "step",
    "step_arguments",
]


class Failure(StrEnum):
    """What a step's failure means for the steps after it."""

    STOP = "stop"  # later steps do not run, but the `always` ones; the run fails
    CONTINUE = "continue"  # recorded as the step's error.json; later steps run and judge it


@dataclass(frozen=True)
class Condition:
    """When a step runs: ``test(spec)`` is true; otherwise it is skipped, ``unless`` says why."""

    test: Callable[[Spec], bool]
    unless: str


@dataclass(frozen=True)
class Value:
    """What a step hands on to later steps: ``extract(spec, result)``, also written as its
    ``output`` (``--<output>-out``), which is how orchestrators pass it between tasks."""

    output: str
    extract: Callable[[Spec, Any], Any]


@dataclass(frozen=True)
class Step:
    """One step of the pipeline.

    ``function`` is ``"module:name"``, imported only when the step runs, and called as
    ``function(spec, run_dir, **inputs)``, or ``function(spec, run_dir, item, **inputs)`` for a
    fan-out step.
    """

    name: str
    function: str
    summary: str
    when: Condition | None = None
    fan_out: str | None = None  # the step whose value lists the items, one run per item
    item: str | None = None  # what an item is called (`slimgate step NAME --<item> VALUE`)
    inputs: tuple[tuple[str, str], ...] = ()  # (keyword, the step whose value it takes)
    value: Value | None = None  # what it hands on (the candidate names, the gate's selection)
    on_failure: Failure = Failure.STOP
    always: bool = False  # runs whatever happened before it
    # it benchmarks: where its runs cannot share a host lock (pods on a cluster), a fan-out of
    # it runs one item at a time
    measures: bool = False
    outputs: tuple[str, ...] = ()  # files an orchestrator may ask for: --<output>-out

    def load(self) -> Callable[..., Any]:
        module, _, name = self.function.partition(":")
        fn: Callable[..., Any] = getattr(importlib.import_module(module), name)
        return fn

    def record_path(self, run: RunLayout, item: str | None = None) -> Path:
        return run.step_record(self.name, item)


def _candidate_names(spec: Spec, result: Any) -> list[str]:
    return [c.name for c in spec.candidate_names()]


def _selected(spec: Spec, result: Verdict) -> str:
    return result.selected or ""


def _promotion(spec: Spec, result: Promotion) -> dict[str, Any]:
    return result.model_dump(mode="json", exclude_unset=True)


STEPS: tuple[Step, ...] = (
    Step("prepare_data", "components.prepare:prepare_data",
         "load, validate (great-expectations) and split the data",
         value=Value("names", _candidate_names), outputs=("dataset", "names")),
    Step("baseline", "components.baseline:baseline",
         "train or load the model, export it to ONNX, evaluate and benchmark it",
         measures=True, outputs=("model", "metrics")),
    Step("champion", "components.champion:champion",
         "score the model behind production on this run's test split",
         when=Condition(lambda spec: spec.goals.champion is not None,
                        "the spec has no champion goal")),
    Step("candidate", "components.optimize:candidate",
         "build one candidate with its recipe, evaluate and benchmark the exported model",
         fan_out="prepare_data", item="candidate", on_failure=Failure.CONTINUE,
         measures=True, outputs=("model", "metrics")),
    Step("search", "components.search:search",
         "search recipes under the goals; its Pareto front joins the candidates",
         when=Condition(lambda spec: spec.search is not None, "the spec has no search"),
         on_failure=Failure.CONTINUE, measures=True, outputs=("metrics",)),
    Step("gate", "components.gate:gate",
         "one verdict per candidate on every goal, and the selection among those that passed",
         value=Value("selected", _selected), outputs=("metrics", "selected")),
    Step("promote", "components.promote:promote",
         "publish the selected candidate and move the production alias; or reject the release",
         inputs=(("expect", "gate"),), value=Value("promotion", _promotion),
         outputs=("promotion",)),
    Step("report", "components.report:report",
         "write report.json and report.html; log the run to MLflow tracking if asked",
         always=True, outputs=("html",)),
)  # fmt: skip

_BY_NAME = {s.name: s for s in STEPS}


def after_fan_out(s: Step) -> bool:
    """Whether ``s`` comes right after a fan-out step: orchestrators run it when that step's
    items are done whatever their state (none, because there were no items; or a task killed
    before it could record its failure), and the gate judges what it finds."""
    i = STEPS.index(s)
    return i > 0 and STEPS[i - 1].fan_out is not None


def consumed(s: Step) -> bool:
    """Whether a later step takes what ``s`` hands on."""
    return any(t.fan_out == s.name or any(src == s.name for _, src in t.inputs) for t in STEPS)


def step(name: str) -> Step:
    """The step called ``name``."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown step {name!r}; steps: {', '.join(_BY_NAME)}") from None


def run_step(
    name: str, spec: Spec, run_dir: Path, *, item: str | None = None, **inputs: Any
) -> tuple[StepRecord, Any]:
    """Run one step as the pipeline declares it: its condition, its failure semantics, its record.

    Returns the record and the step function's result (None when skipped or when a
    ``CONTINUE`` failure was recorded). A ``STOP`` failure is raised after its record is written.
    """
    s = step(name)
    run = RunLayout(run_dir)
    started = datetime.now(UTC).isoformat(timespec="microseconds")
    clock = time.perf_counter()

    def record(status: Literal["done", "skipped", "failed"], **fields: Any) -> StepRecord:
        rec = StepRecord(step=s.name, item=item, status=status, started=started,
                         seconds=round(time.perf_counter() - clock, 6), **fields)  # fmt: skip
        rec.write(s.record_path(run, item))
        return rec

    if s.when is not None and not s.when.test(spec):
        return record("skipped", reason=s.when.unless), None
    items: tuple[str, ...] = ()
    if s.fan_out is not None:
        if item is None:
            raise ValueError(f"step {s.name} runs once per {s.item}: give one")
        items = (item,)
    try:
        # held shared: steps may run beside each other, never beside a measurement
        with host_lock().shared():
            result = s.load()(spec, run_dir, *items, **inputs)
    except Exception as exc:
        error = str(exc) or type(exc).__name__
        if s.on_failure is Failure.CONTINUE:
            # the evidence the gate reads: it fails this candidate with the reason
            StepError(error=error, type=type(exc).__name__,
                      traceback=traceback.format_exc()).write(run.step_error(s.name, item))  # fmt: skip
            return record("failed", reason=error), None
        record("failed", reason=error)
        raise
    value = s.value.extract(spec, result) if s.value is not None else None
    return record("done", value=value), result


def step_arguments(
    name: str,
    spec: Any,
    runs_dir: Any,
    run_id: Any,
    *,
    item: Any = None,
    inputs: dict[str, Any] | None = None,
    outputs: dict[str, Any] | None = None,
) -> list[Any]:
    """The arguments of ``slimgate step NAME`` for one step: what every container runs.

    Values may be orchestrator placeholders (KFP, Airflow templates); they are passed through.
    """
    s = step(name)
    args: list[Any] = [s.name, "--spec", spec, "--runs-dir", runs_dir, "--run-id", run_id]
    if s.fan_out is not None:
        args += [f"--{s.item}", item]
    for keyword, _source in s.inputs:
        if inputs and keyword in inputs:
            args += [f"--{keyword}", inputs[keyword]]
    for output, path in (outputs or {}).items():
        if output not in (*s.outputs, "value"):
            raise ValueError(f"step {s.name} has no output {output!r}; outputs: {s.outputs}")
        args += [f"--{output}-out", path]
    return args


@dataclass
class Trace:
    """The steps a run executed, in the order they started, read from its step records."""

    records: list[StepRecord] = field(default_factory=list)

    @classmethod
    def read(cls, run_dir: Path) -> Trace:
        paths = sorted(RunLayout(run_dir).steps.glob("*.json"))
        records = [StepRecord.read(p) for p in paths]
        return cls(sorted(records, key=lambda r: (r.started, r.step, r.item or "")))

    def sequence(self) -> list[tuple[str, str]]:
        """``(step, status)`` in the order steps started; the items of a fan-out step fold into
        one entry, at its first item, with the statuses of all its items (``"done,failed"``)."""
        out: list[tuple[str, str]] = []
        seen: set[str] = set()
        for r in self.records:
            if step(r.step).fan_out is None:
                out.append((r.step, r.status))
            elif r.step not in seen:
                seen.add(r.step)
                statuses = sorted({x.status for x in self.records if x.step == r.step})
                out.append((r.step, ",".join(statuses)))
        return out

    def items(self, name: str) -> dict[str | None, str]:
        """``{item: status}`` of one step."""
        return {r.item: r.status for r in self.records if r.step == name}
