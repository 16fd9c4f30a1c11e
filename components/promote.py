"""The promote step: publish the selected candidate to the registry, only on a passing verdict."""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from pydantic import ValidationError

from components.errors import AliasRefused, PromotionRefused, RegistryError, Rejected
from components.layout import RunLayout, read_json
from components.onnx_utils import sha256_file
from components.records import Promotion, Verdict
from components.registry import ModelRegistry, Published, open_registry
from components.spec import Spec

__all__ = ["package_version", "promote"]

ALIAS = "production"


def package_version() -> str:
    try:
        return metadata.version("slimgate")
    except metadata.PackageNotFoundError:
        return "unknown"


def _refuse(run: RunLayout, reason: str) -> PromotionRefused:
    Promotion(status="refused", reason=reason).write(run.promotion)
    return PromotionRefused(f"not promoted: {reason}")


def promote(spec: Spec, run_dir: Path, expect: str | None = None) -> Promotion:
    """Publish the verdict's selected candidate as a new version, then move the alias to it.

    Refuses, writing nothing to the registry, unless ``verdict.json`` selects a candidate
    that passed every goal of this spec and whose file still has the checksum it was judged with.
    ``expect`` is the selection the gate step handed on ("" for none): a verdict that selects
    another candidate by now is refused.

    Raises:
        Rejected: the verdict selects no candidate (no candidate met every goal).
        PromotionRefused: there is no passing verdict for the selected candidate.
    """
    from components.report import render_report

    run = RunLayout(run_dir)
    if not run.verdict.is_file():
        raise _refuse(run, f"{run.verdict} not found; the gate step has not run")
    try:
        verdict = Verdict.read(run.verdict)
    except ValidationError as exc:
        raise _refuse(run, f"{run.verdict} is not a verdict the gate wrote: {exc}") from None
    name = verdict.selected
    if expect is not None and expect != (name or ""):
        raise _refuse(run, f"the gate selected {expect or 'no candidate'!r}, but {run.verdict} "
                           f"now selects {name or 'none'!r}")  # fmt: skip
    if not name:
        reason = verdict.reason or "the verdict selects no candidate"
        Promotion(status="rejected", reason=reason).write(run.promotion)
        raise Rejected(f"rejected: {reason}; nothing was promoted")
    entry = verdict.entry(name)
    if entry is None:
        raise _refuse(run, f"the verdict selects {name!r} but has no entry for it")
    failed = [g.goal for g in entry.goals if g.outcome != "pass"]
    if not entry.passed or failed or not entry.goals:
        raise _refuse(run, f"{name} did not pass every goal (not passed: {failed or 'all'})")
    if verdict.goals != spec.goals.model_dump(exclude_none=True):
        raise _refuse(
            run, "the verdict was reached on other goals than this spec's; re-run the gate"
        )
    cand = run.candidate(name)
    if not cand.model.is_file() or sha256_file(cand.model) != entry.sha256:
        raise _refuse(run, f"{cand.model} is missing or changed since the gate judged it")

    render_report(spec, run_dir)
    dataset = read_json(run.dataset)
    metrics = read_json(cand.metrics)
    bench = read_json(cand.benchmark)
    base_metrics = read_json(run.baseline.metrics)
    optimize = read_json(cand.optimize_record)
    card = {
        "model": spec.name,
        "created_at": datetime.now(UTC).isoformat(),
        "run_id": run.run_id,
        "candidate": name,
        "verdict": {
            "outcome": entry.outcome,
            "goals": [g.model_dump(mode="json") for g in entry.goals],
            "policy": verdict.policy,
        },
        "metrics": {k: v for k, v in metrics.items() if k != "per_class_accuracy"},
        "baseline_metrics": {k: v for k, v in base_metrics.items() if k != "per_class_accuracy"},
        "benchmark": {
            b: {k: v for k, v in r.items() if k != "samples_ms"}
            for b, r in bench["batches"].items()
        },
        "environment": bench["environment"],
        "lineage": {
            "spec_sha256": spec.digest(),
            "data_fingerprint": dataset["fingerprint"],
            "data_profile": dataset.get("profile"),
            "parent_model_sha256": base_metrics["sha256"],
            "recipe": optimize["recipe"],
            "optimizer_versions": {s["key"]: s["version"] for s in optimize["steps"]},
            "slimgate_version": package_version(),
        },
    }
    registry = open_registry(spec.registry_uri())
    seen = _seen_serial(run, registry, spec.name)
    published = registry.publish(
        spec.name,
        {"model.onnx": cand.model, "report.html": run.report_html},
        card,
        run_id=run.run_id,
    )
    result = Promotion(
        status="promoted",
        model=spec.name,
        version=published.version,
        created=published.created,
        alias=ALIAS,
        registry=registry.describe(),
        candidate=name,
    )
    result = _alias(registry, run, published, result, seen)
    result.write(run.promotion)
    return result


def _alias(
    registry: ModelRegistry, run: RunLayout, published: Published, result: Promotion, seen: int
) -> Promotion:
    """Move production to the published version; a refusal or failure is recorded first."""
    try:
        pointer = registry.move_alias(
            str(result.model),
            published.version,
            alias=ALIAS,
            seen_serial=seen,
            reason="passed every goal of the release gate",
            run_id=run.run_id,
        )
    except AliasRefused as exc:
        reason = str(exc)
        if not published.created:
            reason += f" (this run's model was already version {published.version})"
        result.model_copy(update={"status": "refused", "reason": reason}).write(run.promotion)
        raise AliasRefused(reason) from None
    except RegistryError as exc:  # a damaged registry, an unreachable one, endless contention
        result.model_copy(update={"status": "failed", "reason": str(exc)}).write(run.promotion)
        raise
    return result.model_copy(update={"previous": pointer.previous})


def _seen_serial(run: RunLayout, registry: ModelRegistry, model: str) -> int:
    """The production alias's serial when this run looked at it: when the champion step scored
    it, or else now, before publishing. A rollback after that refuses the promotion."""
    if run.champion_record.is_file():
        return int(read_json(run.champion_record).get("serial") or 0)
    pointer = registry.pointer(model, ALIAS)
    return 0 if pointer is None else pointer.serial
