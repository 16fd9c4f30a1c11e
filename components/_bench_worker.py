"""Measure one ONNX model in a fresh process: ``python -m components._bench_worker < request.json``.

Kept to numpy and onnxruntime so that starting it is cheap and nothing else shares its memory
or threads. Prints one JSON object: raw samples and what the process used to produce them.
"""

from __future__ import annotations

import gc
import json
import math
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
           "tensor(int64)": np.int64, "tensor(int32)": np.int32}  # fmt: skip


class ProviderFallback(RuntimeError):
    """ONNX Runtime quietly ran the model on another execution provider than the one asked for."""


def _rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * resource.getpagesize() / 1e6
    except (OSError, ValueError, IndexError):
        return float("nan")


def _peak_rss_mb() -> float:
    # VmHWM belongs to this address space; ru_maxrss would carry over the parent's peak
    # across fork and exec.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1e3
    except (OSError, ValueError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def _inputs(sess: Any, batch: int, data: str | None, seed: int) -> dict[str, np.ndarray]:
    inputs = sess.get_inputs()
    if data is not None:
        from optimizers.tensors import feeds, n_rows, subset

        with np.load(data, allow_pickle=False) as arrays:  # a split: x, or input.<name>
            x: Any = (
                arrays["x"]
                if "x" in arrays.files
                else {
                    k.removeprefix("input."): arrays[k]
                    for k in arrays.files
                    if k.startswith("input.")
                }
            )
        # the split's rows, repeated to fill the batch; token ids stay integers
        return feeds(inputs, subset(x, np.arange(batch) % n_rows(x)), data)
    rng = np.random.default_rng(seed)
    feed = {}
    for inp in inputs:
        shape = [batch if i == 0 and not isinstance(d, int) else d for i, d in enumerate(inp.shape)]
        if not all(isinstance(d, int) for d in shape):
            raise ValueError(
                f"input {inp.name!r} has shape {inp.shape}: only the batch axis may be symbolic "
                "for random inputs; pass a data split instead"
            )
        dtype = _DTYPES.get(inp.type)
        if dtype is None:
            raise ValueError(f"input {inp.name!r} has type {inp.type}; cannot make random inputs")
        if np.issubdtype(dtype, np.integer):
            feed[inp.name] = rng.integers(0, 100, size=shape).astype(dtype)
        else:
            feed[inp.name] = rng.standard_normal(shape).astype(dtype)
    return feed


def _median_rel_halfwidth(samples: list[int]) -> float:
    """Half-width of a 95% distribution-free CI of the median, relative to the median."""
    n = len(samples)
    s = sorted(samples)
    half = 1.96 * math.sqrt(n) / 2
    lo, hi = max(0, int(n / 2 - half)), min(n - 1, math.ceil(n / 2 + half))
    median = s[n // 2]
    return (s[hi] - s[lo]) / 2 / median if median else math.inf


def measure(req: dict[str, Any]) -> dict[str, Any]:
    import onnxruntime as ort

    rss_start = _rss_mb()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = req["threads"]
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    wanted = PROVIDERS[req["provider"]]
    providers = [wanted] if wanted == "CPUExecutionProvider" else [wanted, "CPUExecutionProvider"]

    t0 = time.perf_counter_ns()
    sess = ort.InferenceSession(req["model"], opts, providers=providers)
    created = time.perf_counter_ns()
    used = list(sess.get_providers())
    if used[0] != wanted:
        raise ProviderFallback(
            f"asked for {wanted}, but ONNX Runtime runs this model on {used[0]} "
            f"(available here: {ort.get_available_providers()})"
        )
    feed = _inputs(sess, req["batch"], req.get("data"), req.get("seed", 0))
    a = time.perf_counter_ns()
    sess.run(None, feed)
    first = time.perf_counter_ns() - a
    rss_loaded = _rss_mb()
    for _ in range(req["warmup"]):
        sess.run(None, feed)

    energy_path = Path("/sys/class/powercap/intel-rapl:0/energy_uj")
    energy_start = int(energy_path.read_text()) if req.get("energy") else None
    samples: list[int] = []
    stop = "max_runs"
    gc.disable()  # a collection in the middle of a run is noise, not model latency
    cpu0, wall0 = time.process_time(), time.perf_counter_ns()
    min_ns, max_ns = req["min_seconds"] * 1e9, req["max_seconds"] * 1e9
    while len(samples) < req["max_runs"]:
        a = time.perf_counter_ns()
        sess.run(None, feed)
        b = time.perf_counter_ns()
        samples.append(b - a)
        n, elapsed = len(samples), b - wall0
        if elapsed >= max_ns:
            stop = "max_seconds"
            break
        if n >= req["min_runs"]:
            if elapsed >= min_ns:
                stop = "min_runs and min_seconds"
                break
            target = req["target_rel_ci"]  # 0: never stop early
            if target > 0 and n % 50 == 0 and _median_rel_halfwidth(samples) <= target:
                stop = "median CI narrow enough"
                break
    cpu_s, wall_s = time.process_time() - cpu0, (time.perf_counter_ns() - wall0) / 1e9
    gc.enable()
    energy = None if energy_start is None else (int(energy_path.read_text()) - energy_start) / 1e6
    return {
        "providers_used": used,
        "session_create_ms": (created - t0) / 1e6,
        "first_inference_ms": first / 1e6,
        "samples_ms": [round(s / 1e6, 5) for s in samples],
        "stop_reason": stop,
        "wall_seconds": wall_s,
        "cpu_seconds": cpu_s,
        "energy_joules": energy,
        "rss_start_mb": rss_start,
        "rss_loaded_mb": rss_loaded,
        "peak_rss_mb": _peak_rss_mb(),
    }


def main() -> int:
    req = json.load(sys.stdin)
    try:
        out = measure(req)
    except Exception as exc:
        json.dump({"error": f"{type(exc).__name__}: {exc}"}, sys.stdout)
        return 1
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
