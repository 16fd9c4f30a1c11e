"""The candidate step: apply one recipe to the baseline, then evaluate and benchmark the result."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from components.baseline import data_sample, dataset_info, load_baseline_module
from components.benchmark import benchmark, disturbed, measuring
from components.cache import candidate_inputs, measurement_inputs, open_cache, reuse_or_make
from components.compare import compare
from components.data import load_split
from components.errors import SpecError
from components.evaluate import evaluate
from components.layout import RunLayout, read_json, write_json
from components.onnx_utils import check_model
from components.spec import Candidate, Spec
from components.stores import sha256_file
from optimizers.base import OnnxOptimizer, OptimizeContext, Stage, TorchOptimizer
from optimizers.tensors import Features
from optimizers.torch_utils import export_onnx

__all__ = ["build_candidate", "candidate", "find_candidate", "measure_candidate"]


def find_candidate(spec: Spec, name: str) -> Candidate:
    candidates = spec.candidate_names()
    for cand in candidates:
        if cand.name == name:
            return cand
    raise SpecError(
        [f"candidate {name!r} is not in the spec; candidates: {[c.name for c in candidates]}"]
    )


def candidate(spec: Spec, run_dir: Path, name: str) -> dict[str, Any]:
    """Build ``candidates/<name>/model.onnx`` from the baseline with the named recipe, and measure it.

    Torch-level steps run on the trained baseline module, which is then exported; ONNX-level
    steps run on the exported file, each writing a new one. The model and its measurements
    come from the cache when their inputs are unchanged; ``cache.json`` says which did.
    """
    run = RunLayout(run_dir)
    cand = find_candidate(spec, name)
    record = build_candidate(spec, run, cand)
    record["measurements"] = measure_candidate(spec, run, cand.name)
    write_json(run.candidate(name).cache_record, record)
    metrics: dict[str, Any] = read_json(run.candidate(name).metrics)
    return metrics


def build_candidate(spec: Spec, run: RunLayout, cand: Candidate) -> dict[str, Any]:
    """Write ``candidates/<name>/model.onnx`` (built, or from the cache); returns the cache record."""
    info = dataset_info(run)
    out = run.candidate(cand.name)
    shutil.rmtree(out.root, ignore_errors=True)  # a retried step starts clean
    out.root.mkdir(parents=True)
    torch_recipe = any(s.build().stage is Stage.TORCH for s in cand.steps)
    parent = {"model.onnx": sha256_file(run.baseline.model)}
    if torch_recipe:
        weights = run.baseline.weights
        parent["model.pt"] = sha256_file(weights) if weights.is_file() else "absent"
    inputs = candidate_inputs(spec, info["fingerprint"], parent, cand)
    record = {
        "model": reuse_or_make(open_cache(spec, run.root), "candidate", inputs, out.root,
                               lambda: _build(spec, run, cand, info), run_id=run.run_id),
    }  # fmt: skip
    check_model(out.model, data_sample(run), len(info["classes"]), spec.target.threads,
                spec.scored_output, task=spec.task)  # fmt: skip
    return record


def measure_candidate(spec: Spec, run: RunLayout, name: str) -> dict[str, Any]:
    """Evaluate, benchmark and compare a built candidate (or reuse the same measurements)."""
    out = run.candidate(name)

    def measure() -> list[str]:
        evaluate(out.model, run.split("test"), out.root, threads=spec.target.threads,
                 reference=run.baseline.predictions, output=spec.scored_output,
                 task=spec.task, pooling=spec.embedding.pooling)  # fmt: skip
        with measuring(out.model, spec.benchmark):  # one exclusive hold for both
            benchmark(out.model, run.split("test"), out.benchmark, spec.target, spec.benchmark)
            compare(out.model, run.baseline.model, run.split("test"), spec.speed_batch(),
                    target=spec.target, settings=spec.benchmark, out=out.comparison)  # fmt: skip
        return [out.metrics.name, out.predictions.name, out.benchmark.name, out.comparison.name]

    fingerprint = dataset_info(run)["fingerprint"]
    inputs = measurement_inputs(
        spec, fingerprint, sha256_file(out.model), sha256_file(run.baseline.model)
    )
    cache = open_cache(spec, run.root) if spec.cache.measurements else None
    return reuse_or_make(cache, "measurements", inputs, out.root, measure, run_id=run.run_id,
                         unfit=lambda: disturbed(out.benchmark, out.comparison))  # fmt: skip


def _build(spec: Spec, run: RunLayout, cand: Candidate, info: dict[str, Any]) -> list[str]:
    """Apply the recipe; writes ``model.onnx`` and ``optimize.json``, returns their names."""
    out = run.candidate(cand.name)
    work = out.root / "work"
    work.mkdir(parents=True)
    optimizers = [step.build() for step in cand.steps]
    torch_steps = [o for o in optimizers if isinstance(o, TorchOptimizer)]
    train = load_split(run.split("train"))
    module = load_baseline_module(spec, run) if torch_steps else None
    ctx = OptimizeContext(
        workdir=work,
        seed=spec.training.seed,
        task=spec.task,
        train=train,
        calibration=load_split(run.split("calibration")),
        threads=spec.target.threads,
        # no labels to fine-tune on: the baseline's own outputs are what is learnt
        targets=_outputs(module, train[0])
        if module is not None and spec.task == "embedding"
        else None,
    )
    records = []
    start = time.perf_counter()

    # A private copy: ONNX tools write temporary files next to their input (onnxruntime's
    # quantize_dynamic writes <input>-inferred.onnx), and candidates run in parallel.
    current = work / "baseline.onnx"
    shutil.copyfile(run.baseline.model, current)
    if module is not None:
        for opt in torch_steps:
            module, rec = opt.run(module, ctx)
            records.append(rec.to_dict())
        current = work / "exported.onnx"
        export_onnx(module, data_sample(run, 1), current)
    onnx_steps = [o for o in optimizers if isinstance(o, OnnxOptimizer)]
    for i, onnx_opt in enumerate(onnx_steps):
        nxt = work / f"step{i}-{onnx_opt.key}.onnx"
        records.append(onnx_opt.run(current, nxt, ctx).to_dict())
        current = nxt
    shutil.copyfile(current, out.model)
    shutil.rmtree(work)
    write_json(
        out.optimize_record,
        {
            "recipe": [s.model_dump() for s in cand.steps],
            "steps": records,
            "seconds": time.perf_counter() - start,
        },
    )
    return [out.model.name, out.optimize_record.name]


def _outputs(module: Any, x: Features, batch: int = 256) -> np.ndarray:
    """A module's outputs on every row, in batches."""
    import torch

    from optimizers.tensors import n_rows, subset, to_torch
    from optimizers.torch_utils import scores

    parts = []
    with torch.no_grad():
        for i in range(0, n_rows(x), batch):
            parts.append(scores(module, *to_torch(subset(x, slice(i, i + batch)))).numpy())
    return np.concatenate(parts)
