"""The candidate step: apply one recipe to the baseline, then evaluate and benchmark the result."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from components.baseline import dataset_info, load_baseline_module
from components.benchmark import benchmark
from components.compare import compare
from components.data import load_split
from components.errors import SpecError
from components.evaluate import evaluate
from components.layout import RunLayout, write_json
from components.models import export_onnx
from components.onnx_utils import check_model
from components.spec import Candidate, Spec
from optimizers.base import OnnxOptimizer, OptimizeContext, TorchOptimizer

__all__ = ["candidate", "find_candidate"]


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
    steps run on the exported file, each writing a new one.
    """
    run = RunLayout(run_dir)
    cand = find_candidate(spec, name)
    info = dataset_info(run)
    out = run.candidate(name)
    work = out.root / "work"
    shutil.rmtree(out.root, ignore_errors=True)  # a retried step starts clean
    work.mkdir(parents=True)
    ctx = OptimizeContext(
        workdir=work,
        seed=spec.training.seed,
        train=load_split(run.split("train")),
        calibration=load_split(run.split("calibration")),
        threads=spec.target.threads,
    )
    optimizers = [step.build() for step in cand.steps]
    records = []
    start = time.perf_counter()

    torch_steps = [o for o in optimizers if isinstance(o, TorchOptimizer)]
    # A private copy: ONNX tools write temporary files next to their input (onnxruntime's
    # quantize_dynamic writes <input>-inferred.onnx), and candidates run in parallel.
    current = work / "baseline.onnx"
    shutil.copyfile(run.baseline.model, current)
    if torch_steps:
        module = load_baseline_module(spec, run)
        for opt in torch_steps:
            module, rec = opt.run(module, ctx)
            records.append(rec.to_dict())
        current = work / "exported.onnx"
        export_onnx(module, info["n_features"], current)
    onnx_steps = [o for o in optimizers if isinstance(o, OnnxOptimizer)]
    for i, onnx_opt in enumerate(onnx_steps):
        nxt = work / f"step{i}-{onnx_opt.key}.onnx"
        records.append(onnx_opt.run(current, nxt, ctx).to_dict())
        current = nxt
    shutil.copyfile(current, out.model)
    shutil.rmtree(work)

    check_model(out.model, info["n_features"], len(info["classes"]), spec.target.threads)
    write_json(
        out.root / "optimize.json",
        {
            "name": name,
            "recipe": [s.model_dump() for s in cand.steps],
            "steps": records,
            "seconds": time.perf_counter() - start,
        },
    )
    metrics = evaluate(
        out.model,
        run.split("test"),
        out.root,
        threads=spec.target.threads,
        reference=run.baseline.predictions,
    )
    benchmark(out.model, run.split("test"), out.benchmark, spec.target, spec.benchmark)
    compare(out.model, run.baseline.model, run.split("test"), spec.speed_batch(),
            target=spec.target, settings=spec.benchmark, out=out.comparison)  # fmt: skip
    return metrics
