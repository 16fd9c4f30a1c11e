"""The champion step: score the model behind the registry's production alias on this run's data.

Runs only when the spec has a ``champion`` goal. Writes ``champion/champion.json`` (which
version, or why none), and when there is one, its metrics and predictions on this run's test
split, so the gate can compare challenger and champion example by example.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from components.baseline import data_sample, dataset_info
from components.errors import SlimgateError
from components.evaluate import evaluate
from components.layout import RunLayout, write_json
from components.onnx_utils import check_model
from components.registry import open_registry
from components.spec import Spec

__all__ = ["champion"]


def champion(spec: Spec, run_dir: Path) -> dict[str, Any]:
    run = RunLayout(run_dir)
    out = run.champion
    out.root.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"model": spec.name, "alias": "production", "version": None}
    registry = open_registry(spec.registry_uri())
    pointer = registry.alias(spec.name)
    if pointer is None:
        record["reason"] = (
            f"no version of {spec.name} is behind production in {registry.describe()}"
        )
        write_json(run.champion_record, record)
        return record
    record["version"] = pointer["version"]
    record["serial"] = pointer["serial"]  # a rollback after this refuses the promotion
    try:
        # download checks every file against the checksums the version's card recorded
        registry.download(spec.name, pointer["version"], out.root / "version")
        shutil.copyfile(out.root / "version" / "model.onnx", out.model)
        info = dataset_info(run)
        check_model(out.model, data_sample(run), len(info["classes"]), spec.target.threads,
                    spec.scored_output, task=spec.task)  # fmt: skip
        record["metrics"] = evaluate(out.model, run.split("test"), out.root,
                                     threads=spec.target.threads, output=spec.scored_output,
                 task=spec.task, pooling=spec.embedding.pooling)  # fmt: skip
    except SlimgateError as exc:
        # The champion exists but cannot be scored on today's data: champion goals fail closed.
        record["error"] = str(exc)
    write_json(run.champion_record, record)
    return record
