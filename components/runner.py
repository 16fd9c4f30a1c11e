"""Run every step of a spec in this process: what ``slimgate run`` and ``make demo`` do.

The runner holds no step logic: it calls the step functions in order, records a failed
candidate and goes on with the others, and writes the report whatever happens.
"""

from __future__ import annotations

import secrets
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from components.baseline import baseline
from components.champion import champion
from components.errors import EXIT_OK, EXIT_REJECTED, InputError, SlimgateError
from components.gate import gate
from components.layout import RunLayout, write_json
from components.optimize import candidate
from components.prepare import prepare_data
from components.promote import promote
from components.report import report
from components.search import search
from components.spec import Spec

__all__ = ["RunResult", "StepEvent", "new_run_id", "run"]

Phase = Literal["start", "done", "failed"]
StepEvent = Callable[[str, Phase, float | None, str | None], None]
T = TypeVar("T")


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
    """Run prepare_data, baseline, every candidate, the search, gate, promote and report.

    Returns the outcome; raises :class:`SlimgateError` (or a bug's exception) when the run
    cannot go on, after writing ``error.json`` and the report.
    """
    missing = spec.missing_files()
    if missing:
        raise InputError("; ".join(missing))
    run_dir = runs_root / (run_id or new_run_id())
    run_dir.mkdir(parents=True, exist_ok=False)
    layout = RunLayout(run_dir)

    def step(name: str, fn: Callable[..., T], *args: Any) -> T:
        on_step(name, "start", None, None)
        start = time.perf_counter()
        try:
            out = fn(spec, run_dir, *args)
        except Exception as exc:
            on_step(name, "failed", time.perf_counter() - start, str(exc))
            raise
        on_step(name, "done", time.perf_counter() - start, None)
        return out

    try:
        step("prepare_data", prepare_data)
        step("baseline", baseline)
        if spec.goals.champion is not None:
            step("champion", champion)
        for cand in spec.candidate_names():
            try:
                step(f"candidate {cand.name}", candidate, cand.name)
            except Exception as exc:  # one broken recipe must not stop the others
                write_json(
                    layout.candidate(cand.name).root / "error.json",
                    {"error": str(exc) or type(exc).__name__, "type": type(exc).__name__,
                     "traceback": traceback.format_exc()},
                )  # fmt: skip
        if spec.search is not None:
            step("search", search)
        verdict = step("gate", gate)
        if verdict["selected"]:
            promotion = step("promote", promote)
            return RunResult(layout.run_id, run_dir, "promoted", EXIT_OK, promotion["version"])
        write_json(layout.promotion, {"status": "rejected", "reason": verdict["reason"]})
        return RunResult(layout.run_id, run_dir, "rejected", EXIT_REJECTED)
    except BaseException as exc:
        message = str(exc) if isinstance(exc, SlimgateError) else f"{type(exc).__name__}: {exc}"
        write_json(run_dir / "error.json", {"error": message, "traceback": traceback.format_exc()})
        raise
    finally:
        step("report", report)
