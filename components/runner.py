"""Run every step of a spec in this process: what ``slimgate run`` and ``make demo`` do.

The runner holds no step logic and no list of steps: it walks :data:`components.pipeline.STEPS`
in order and executes each with :func:`components.pipeline.run_step`, which applies the step's
condition and failure semantics. The ``always`` steps (the report) run whatever happened.
"""

from __future__ import annotations

import secrets
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from components.errors import EXIT_OK, EXIT_REJECTED, InputError, Rejected, SlimgateError
from components.layout import RunLayout, write_json
from components.pipeline import STEPS, Step, run_step
from components.records import Promotion
from components.spec import Spec

__all__ = ["RunResult", "StepEvent", "new_run_id", "run"]

Phase = Literal["start", "done", "failed", "skipped"]
StepEvent = Callable[[str, Phase, float | None, str | None], None]


@dataclass(frozen=True)
class RunResult:
    run_id: str
    run_dir: Path
    status: Literal["promoted", "rejected"]
    exit_code: int
    version: int | None = None


def new_run_id() -> str:
    """A sortable, unique run id: UTC time and 6 random hex digits."""
    return f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def _noop(step: str, phase: Phase, seconds: float | None, error: str | None) -> None:
    return None


def run(
    spec: Spec,
    runs_root: Path = Path("runs"),
    *,
    run_id: str | None = None,
    on_step: StepEvent = _noop,
) -> RunResult:
    """Run every step of the pipeline in order, then the report.

    Returns the outcome (promoted, or rejected: no candidate met every goal); raises
    :class:`SlimgateError` (or a bug's exception) when the run cannot go on, after writing
    ``error.json`` and the report.
    """
    missing = spec.missing_files()
    if missing:
        raise InputError("; ".join(missing))
    run_dir = runs_root / (run_id or new_run_id())
    run_dir.mkdir(parents=True, exist_ok=False)
    layout = RunLayout(run_dir)
    values: dict[str, Any] = {}  # what each step hands on, by step name

    def execute(s: Step, item: str | None = None) -> None:
        label = f"{s.name} {item}" if item else s.name
        on_step(label, "start", None, None)
        start = time.perf_counter()
        try:
            inputs = {keyword: values[source] for keyword, source in s.inputs}
            record, _ = run_step(s.name, spec, run_dir, item=item, **inputs)
        except Exception as exc:
            on_step(label, "failed", time.perf_counter() - start, str(exc))
            raise
        phase: Phase = "done" if record.status == "done" else record.status
        on_step(label, phase, time.perf_counter() - start, record.reason)
        values[s.name] = record.value

    try:
        for s in STEPS:
            if s.always:
                continue
            for item in values[s.fan_out] if s.fan_out is not None else [None]:
                execute(s, item)
        version = Promotion.read(layout.promotion).version
        return RunResult(layout.run_id, run_dir, "promoted", EXIT_OK, version)
    except Rejected:
        return RunResult(layout.run_id, run_dir, "rejected", EXIT_REJECTED)
    except BaseException as exc:
        message = str(exc) if isinstance(exc, SlimgateError) else f"{type(exc).__name__}: {exc}"
        write_json(layout.error, {"error": message, "traceback": traceback.format_exc()})
        raise
    finally:
        for s in STEPS:
            if s.always:
                execute(s)
