"""MLflow tracking of a run (``tracking: {mlflow: URI}``), written by the report step.

One MLflow run per slimgate run, named by its run id, in the experiment ``slimgate/<name>``
(or ``tracking.experiment``), with one nested run per candidate:

- the parent: the spec's goals, target and policy as parameters; the baseline's metrics; the
  outcome (promoted, rejected, failed), the version promoted, and ``report.html``,
  ``report.json``, ``verdict.json`` and the spec as artifacts;
- each candidate: its recipe and every step's config as parameters; accuracy (or error),
  agreement, size, latency percentiles per batch, speedup and its interval as metrics; its
  outcome, the goals it failed and its error as tags.

Logging is idempotent: the report step run again (``--resume``) finds the runs it made by their
tags and logs into them. A tracking server that fails does not fail the run (the release has
been decided by then): ``tracking.json`` says what happened, and the step's log warns.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

from components.layout import RunLayout, read_json, write_json
from components.spec import Spec

__all__ = ["track"]

log = logging.getLogger(__name__)

RUN_TAG = "slimgate.run_id"
CANDIDATE_TAG = "slimgate.candidate"
KIND_TAG = "slimgate.kind"  # run, or candidate
_PARAM_MAX = 6000  # MLflow's limit on a parameter's value


def track(spec: Spec, run_dir: Path, report: dict[str, Any]) -> dict[str, Any] | None:
    """Log the run to the spec's tracking server; the record written to ``tracking.json``."""
    if spec.tracking is None:
        return None
    from components.mlflow_registry import mlflow_client, tracking_uri

    run = RunLayout(run_dir)
    experiment = spec.tracking.experiment or f"slimgate/{spec.name}"
    record: dict[str, Any] = {"server": spec.tracking.mlflow, "experiment": experiment}
    try:
        client = mlflow_client(spec.tracking.mlflow)
        record["server"] = tracking_uri(spec.tracking.mlflow)
        record |= _log(client, spec, run, report, experiment=experiment, server=record["server"])
        record["status"] = "logged"
    except Exception as exc:  # (the release is decided: tracking must not undo it)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        record |= {"status": "failed", "error": f"{type(exc).__name__}: {first}"}
        log.warning("could not log run %s to MLflow at %s: %s", run.run_id,
                    record["server"], record["error"])  # fmt: skip
    write_json(run.tracking, record)
    return record


def _log(
    client: Any, spec: Spec, run: RunLayout, report: dict[str, Any], *, experiment: str, server: str
) -> dict[str, Any]:
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)
    parent = _find_or_create(client, exp_id, f"tags.`{RUN_TAG}` = '{run.run_id}' and "
                             f"tags.`{KIND_TAG}` = 'run'", run.run_id,
                             {RUN_TAG: run.run_id, KIND_TAG: "run", "slimgate.model": spec.name})  # fmt: skip
    promotion = report.get("promotion") or {}
    verdict = report.get("verdict") or {}
    _params(client, parent, {
        "spec_sha256": spec.digest(), "task": spec.task, "select": spec.select,
        "threads": spec.target.threads, "batch_sizes": list(spec.target.batch_sizes),
        "registry": spec.registry, **_flat("goal", spec.goals.model_dump(exclude_none=True)),
    })  # fmt: skip
    client.set_tag(parent, "slimgate.outcome", report.get("status"))
    client.set_tag(parent, "slimgate.selected", verdict.get("selected") or "")
    if verdict.get("reason"):
        client.set_tag(parent, "slimgate.reason", str(verdict["reason"])[:5000])
    if promotion.get("version") is not None:
        client.set_tag(parent, "slimgate.version", str(promotion["version"]))
    if report.get("error"):
        client.set_tag(parent, "slimgate.error", str(report["error"])[:5000])
    _metrics(client, parent, _model_metrics(report.get("baseline") or {}, "baseline."))
    passed = sum(1 for c in report.get("candidates", []) if c.get("outcome") == "pass")
    _metrics(client, parent, {"candidates": len(report.get("candidates", [])), "passed": passed})
    nested = {}
    for cand in report.get("candidates", []):
        nested[cand["name"]] = _candidate(client, exp_id, parent, run, cand=cand, verdict=verdict)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "slimgate"
        folder.mkdir()
        for path in (run.report_html, run.report_json, run.verdict, run.promotion, run.spec):
            if path.is_file():
                (folder / path.name).write_bytes(path.read_bytes())
        client.log_artifacts(parent, str(folder), "slimgate")
    status = "FINISHED" if report.get("status") == "promoted" else "FAILED"
    if report.get("status") == "rejected":
        status = "FINISHED"  # the pipeline did its job: nothing met the goals
    client.set_terminated(parent, status)
    return {"run": parent, "candidates": nested,
            "url": f"{server}/#/experiments/{exp_id}/runs/{parent}"}  # fmt: skip


def _candidate(
    client: Any, exp_id: str, parent: str, run: RunLayout, *, cand: dict[str, Any],
    verdict: dict[str, Any],
) -> str:  # fmt: skip
    name = cand["name"]
    child = _find_or_create(client, exp_id, f"tags.`{RUN_TAG}` = '{run.run_id}' and "
                            f"tags.`{CANDIDATE_TAG}` = '{name}'", name,
                            {RUN_TAG: run.run_id, CANDIDATE_TAG: name, KIND_TAG: "candidate",
                             "mlflow.parentRunId": parent})  # fmt: skip
    params: dict[str, Any] = {"recipe": cand.get("recipe")}
    optimize = run.candidate(name).optimize_record
    if optimize.is_file():
        for i, step in enumerate(read_json(optimize).get("steps", [])):
            params[f"step{i}.key"] = step.get("key")
            params |= _flat(f"step{i}", step.get("config") or {})
    _params(client, child, params)
    _metrics(client, child, _model_metrics(cand, ""))
    failed = [g["goal"] for g in cand.get("goals", []) if g.get("outcome") != "pass"]
    client.set_tag(child, "slimgate.outcome", cand.get("outcome") or "not judged")
    client.set_tag(child, "slimgate.failed_goals", ", ".join(failed))
    client.set_tag(child, "slimgate.selected", str(verdict.get("selected") == name).lower())
    if cand.get("error"):
        client.set_tag(child, "slimgate.error", str(cand["error"])[:5000])
    for goal in cand.get("goals", []):
        if _number(goal.get("value")):
            _metrics(client, child, {f"goal.{goal['goal']}": goal["value"]})
    client.set_terminated(child, "FAILED" if cand.get("error") else "FINISHED")
    return str(child)


def _model_metrics(row: dict[str, Any], prefix: str) -> dict[str, float]:
    out = {}
    for key in ("accuracy", "mae", "rmse", "cosine", "agreement", "size_bytes", "parameters",
                "speedup", "limit_fraction"):  # fmt: skip
        if _number(row.get(key)):
            out[prefix + key] = float(row[key])
    interval = row.get("speedup_interval") or (None, None)
    for key, value in zip(("speedup_low", "speedup_high"), interval, strict=True):
        if _number(value):
            out[prefix + key] = float(value)
    for batch, rec in (row.get("batches") or {}).items():
        for key in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "p95_upper_ms", "throughput"):
            if _number(rec.get(key)):
                out[f"{prefix}batch{batch}.{key}"] = float(rec[key])
    return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _flat(prefix: str, data: Any) -> dict[str, Any]:
    """``{"goal.accuracy.max_drop": 0.01, ...}`` from nested dicts."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out |= _flat(f"{prefix}.{key}", value)
    return out


def _params(client: Any, run_id: str, params: dict[str, Any]) -> None:
    """Log parameters not yet logged (MLflow's are write-once; a resumed run logs the same)."""
    from mlflow.entities import Param

    have = client.get_run(run_id).data.params
    todo = []
    for key, value in params.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        if key not in have:
            todo.append(Param(key, text[:_PARAM_MAX]))
    for i in range(0, len(todo), 100):  # MLflow takes at most 100 parameters per batch
        client.log_batch(run_id, params=todo[i : i + 100])


def _metrics(client: Any, run_id: str, metrics: dict[str, float]) -> None:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, v, now, 0) for k, v in metrics.items()]
    for i in range(0, len(items), 1000):
        client.log_batch(run_id, metrics=items[i : i + 1000])


def _find_or_create(client: Any, exp_id: str, where: str, name: str, tags: dict[str, str]) -> str:
    found = client.search_runs([exp_id], where, max_results=1)
    if found:
        return str(found[0].info.run_id)
    return str(client.create_run(exp_id, run_name=name, tags=tags).info.run_id)
