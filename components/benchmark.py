"""The benchmark step: latency and throughput of an ONNX file in ONNX Runtime on the target.

For each batch size: session creation and the first inference are timed apart from the steady
state; then ``warmup`` untimed runs; then timed runs until both ``min_runs`` and
``min_seconds`` are reached (or ``max_runs``). Raw samples are kept in ``benchmark.json`` so
the gate can compute confidence bounds on any percentile.
"""

from __future__ import annotations

import gc
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from components.data import load_split
from components.layout import write_json
from components.onnx_utils import session
from components.spec import BenchmarkSettings, Target

__all__ = ["benchmark", "environment"]

PERCENTILES = (50, 90, 95, 99)


def benchmark(
    model: Path,
    data: Path,
    out: Path,
    target: Target,
    settings: BenchmarkSettings,
) -> dict[str, Any]:
    """Measure ``model`` at each of ``target.batch_sizes``, feeding rows of the split in ``data``."""
    x, _ = load_split(data)
    results = {}
    providers: list[str] = []
    for batch in target.batch_sizes:
        reps = -(-batch // len(x))
        inputs = np.ascontiguousarray(np.tile(x, (reps, 1))[:batch])
        result, providers = _measure(model, inputs, target.threads, settings)
        results[str(batch)] = result
    record = {
        "model": str(model),
        "size_bytes": model.stat().st_size,
        "batches": results,
        "settings": settings.model_dump(),
        "environment": environment(target.threads, providers),
    }
    write_json(out, record)
    return record


def _measure(
    model: Path, inputs: np.ndarray, threads: int, settings: BenchmarkSettings
) -> tuple[dict[str, Any], list[str]]:
    t0 = time.perf_counter_ns()
    sess = session(model, threads)
    created = time.perf_counter_ns()
    name = sess.get_inputs()[0].name
    feed = {name: inputs}
    sess.run(None, feed)
    first = time.perf_counter_ns()
    for _ in range(settings.warmup):
        sess.run(None, feed)

    samples: list[int] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection in the middle of a run is noise, not model latency
    try:
        min_ns = int(settings.min_seconds * 1e9)
        start = time.perf_counter_ns()
        while len(samples) < settings.max_runs and (
            len(samples) < settings.min_runs or time.perf_counter_ns() - start < min_ns
        ):
            a = time.perf_counter_ns()
            sess.run(None, feed)
            samples.append(time.perf_counter_ns() - a)
    finally:
        if gc_was_enabled:
            gc.enable()
    ms = np.asarray(samples, dtype=np.float64) / 1e6
    batch = inputs.shape[0]
    result = {
        "batch": batch,
        "session_create_ms": (created - t0) / 1e6,
        "first_inference_ms": (first - created) / 1e6,
        "runs": int(ms.size),
        "mean_ms": float(ms.mean()),
        "std_ms": float(ms.std()),
        "min_ms": float(ms.min()),
        **{f"p{p}_ms": float(np.percentile(ms, p)) for p in PERCENTILES},
        "throughput_per_s": float(batch / (ms.mean() / 1e3)),
        "samples_ms": [round(float(v), 5) for v in ms],
    }
    return result, list(sess.get_providers())


def environment(threads: int, providers: list[str]) -> dict[str, Any]:
    """What the numbers were measured on; stored with every benchmark."""
    import onnxruntime as ort

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "threads": threads,
        "providers": providers,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
