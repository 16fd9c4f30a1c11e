"""Run every step of a spec in this process: what ``slimgate run`` and ``make demo`` do.

The runner holds no step logic and no list of steps: it walks :data:`components.pipeline.STEPS`
in order and executes each with :func:`components.pipeline.run_step`, which applies the step's
condition and failure semantics. The ``always`` steps (the report) run whatever happened.
"""

from __future__ import annotations

import logging
import secrets
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from components.errors import EXIT_OK, EXIT_REJECTED, InputError, Rejected, SlimgateError
from components.layout import RunLayout, read_json, write_json
from components.pipeline import STEPS, Step, run_step
from components.records import Promotion, StepRecord
from components.runstate import inputs_fingerprint, mark_abandoned, resumable, write_state
from components.spec import Spec

__all__ = ["RunResult", "StepEvent", "new_run_id", "run"]

log = logging.getLogger(__name__)


def _finished(s: Step, run: RunLayout, item: str | None) -> StepRecord | None:
    """The record of a step an interrupted run finished (a recorded candidate failure counts:
    it is the gate's evidence), or None if it must run again."""
    path = s.record_path(run, item)
    if not path.is_file():
        return None
    record = StepRecord.read(path)
    # a failure (a candidate's too: it may have been transient) runs again, and so does the
    # champion step: production may have moved since
    return record if record.status in ("done", "skipped") and s.name != "champion" else None


def _log_to(path: Path) -> Callable[[], None]:
    """Send every library's INFO lines to the run's log file, leaving the terminal as it was
    (its handlers keep the level they had). Returns what undoes it."""
    root = logging.getLogger()
    before = root.level
    pinned = [h for h in root.handlers if h.level == logging.NOTSET]
    for handler in pinned:
        handler.setLevel(before)
    file = logging.FileHandler(path)
    file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    added: list[tuple[logging.Logger, logging.Handler]] = [(root, file)]
    if not root.handlers:  # what logging's last resort did: warnings still reach stderr
        terminal = logging.StreamHandler()
        terminal.setLevel(logging.WARNING)
        added.append((root, terminal))
    for name in ("components", "optimizers"):  # ours, when they feed only the spinner
        ours = logging.getLogger(name)
        if not ours.propagate:
            added.append((ours, file))
    for logger, handler in added:
        logger.addHandler(handler)
    root.setLevel(min(before, logging.INFO))

    def detach() -> None:
        for logger, handler in added:
            logger.removeHandler(handler)
        file.close()
        root.setLevel(before)
        for handler in pinned:
            handler.setLevel(logging.NOTSET)

    return detach


def _open_run(spec: Spec, runs_root: Path, run_id: str | None, resume: bool) -> Path:
    """Check the inputs, mark abandoned runs, and create (or, resuming, find) the run's folder."""
    from components.preflight import preflight

    missing = spec.missing_files()
    if missing:
        raise InputError("; ".join(missing))
    preflight(spec, runs_root)
    if runs_root.is_dir():
        mark_abandoned(runs_root)
    if resume:
        if run_id is None:
            raise InputError("--resume needs the id of the run to continue")
        run_dir = runs_root / run_id
        record = resumable(run_dir)
        _same_spec(spec, RunLayout(run_dir))
        now, then = inputs_fingerprint(spec.input_files()), record.get("inputs") or {}
        changed = sorted(k for k in now.keys() | then.keys() if now.get(k) != then.get(k))
        if changed:
            raise InputError(f"--resume: {changed[0]} changed since run {run_id} started "
                             f"({len(changed)} input file(s)); start a new run")  # fmt: skip
        return run_dir
    run_dir = runs_root / (run_id or new_run_id())
    run_dir.mkdir(parents=True, exist_ok=False)
    write_state(run_dir, "running", inputs=inputs_fingerprint(spec.input_files()))
    return run_dir


def _same_spec(spec: Spec, run: RunLayout) -> None:
    if run.spec.is_file() and read_json(run.spec).get("digest") != spec.digest():
        raise InputError(f"--resume: the spec changed since run {run.run_id} started; a run is "
                         "continued only with the spec it began with (start a new run)")  # fmt: skip


Phase = Literal["start", "done", "failed", "skipped", "kept"]  # kept: finished before a resume
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
    resume: bool = False,
) -> RunResult:
    """Run every step of the pipeline in order, then the report.

    With ``resume``, continue the run ``run_id`` that was interrupted (or failed): the steps it
    finished are kept, the others run. Returns the outcome (promoted, or rejected: no candidate
    met every goal); raises :class:`SlimgateError` (or a bug's exception) when the run cannot go
    on, after writing ``error.json``, the run's state and the report.
    """
    run_dir = _open_run(spec, runs_root, run_id, resume)
    layout = RunLayout(run_dir)
    write_state(run_dir, "running", resumed=resume)
    detach = _log_to(run_dir / "run.log")  # every library's detail, not the terminal's
    values: dict[str, Any] = {}  # what each step hands on, by step name

    def execute(s: Step, item: str | None = None) -> None:
        label = f"{s.name} {item}" if item else s.name
        kept = _finished(s, layout, item) if resume and not s.always else None
        if kept is not None:
            on_step(label, "kept", kept.seconds, None)
            values[s.name] = kept.value
            return
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
        write_state(run_dir, "promoted", version=version)
        return RunResult(layout.run_id, run_dir, "promoted", EXIT_OK, version)
    except Rejected:
        write_state(run_dir, "rejected")
        return RunResult(layout.run_id, run_dir, "rejected", EXIT_REJECTED)
    except BaseException as exc:
        message = str(exc) if isinstance(exc, SlimgateError) else f"{type(exc).__name__}: {exc}"
        write_json(layout.error, {"error": message, "traceback": traceback.format_exc()})
        log.error("the run stopped: %s\n%s", message, traceback.format_exc())
        write_state(run_dir, "failed", error=message.splitlines()[0] if message else "")
        raise
    finally:
        try:
            for s in STEPS:
                if s.always:
                    execute(s)
        finally:
            detach()
