"""The benchmark step: latency, throughput, memory and work of an ONNX file on the target.

Every measurement runs in a fresh process (``components._bench_worker``) with explicit thread
settings: session creation and the first inference are timed apart from the steady state; then
``warmup`` untimed runs; then timed runs until ``min_runs`` and ``min_seconds`` are both reached,
or the median's confidence interval is narrow enough, or a cap is hit. Raw samples are kept, so
the gate can bound any percentile. Each batch size also gets the graph's MACs and the time the
machine's nominal peak allows, to say how far from the physical limit the model runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from components.errors import SlimgateError
from components.hardware import (
    EnergyMeter,
    LoadMeter,
    cpu_info,
    environment,
    peak_macs_per_second,
)
from components.hostlock import host_lock
from components.layout import write_json
from components.onnx_cost import GraphCost, graph_cost
from components.spec import BenchmarkSettings, Target
from validation.stats import median_interval, percentile_upper_bound

__all__ = [
    "BenchmarkError",
    "benchmark",
    "disturbance",
    "disturbed",
    "measuring",
    "run_worker",
    "settle",
    "summarize",
    "theoretical_limit",
]

PERCENTILES = (50, 90, 95, 99)


class BenchmarkError(SlimgateError):
    """A measurement could not be taken, or was taken on other hardware than asked for."""


def run_worker(request: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
    """Measure in a fresh Python process; raise BenchmarkError with the worker's message.

    The result's ``load`` is what other processes ran meanwhile (:class:`LoadMeter`).
    """
    with LoadMeter() as load:
        proc = subprocess.run(
            [sys.executable, "-m", "components._bench_worker"],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    try:
        out: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise BenchmarkError(
            f"{request['model']}: the benchmark process exited with {proc.returncode}: "
            f"{proc.stderr.strip()[-500:]}"
        ) from None
    if "error" in out:
        raise BenchmarkError(f"{request['model']}: {out['error']}")
    out["load"] = load.result
    return out


def disturbance(loads: list[dict[str, Any]], settings: BenchmarkSettings) -> str | None:
    """Why measurements taken under these loads cannot be trusted, or None when they can.

    The load is averaged over the measurement's processes, weighted by their wall time (a
    comparison's statistic tolerates one disturbed round of many; a sustained load it cannot),
    and counts both other processes' CPU time and time the hypervisor gave to other guests.
    """
    known = [x for x in loads if x.get("competing_cores") is not None]
    if not known:
        return None  # /proc/stat unreadable: each load record says so
    wall = sum(x["wall_s"] for x in known)
    busy = sum((x["competing_cores"] + (x.get("steal_cores") or 0.0)) * x["wall_s"] for x in known)
    cores = round(busy / wall, 4) if wall > 0 else 0.0  # as precise as the loads are
    if cores <= settings.max_competing_cores:
        return None
    return (
        f"other processes kept {cores:.2f} cores busy while it was measured "
        f"(at most {settings.max_competing_cores:g} allowed: benchmark.max_competing_cores)"
    )


def disturbed(*records: Path) -> str | None:
    """The first of these benchmark or comparison files' disturbance notes (missing: none)."""
    for path in records:
        if path.is_file():
            note = json.loads(path.read_text()).get("disturbed")
            if note:
                return f"{path.name}: {note}"
    return None


def settle(settings: BenchmarkSettings, window: float = 0.1) -> dict[str, Any]:
    """Wait, up to ``settings.settle_seconds``, until other processes leave the machine quiet
    (at most ``max_competing_cores`` busy over a short window): what holds the host's lock has
    stopped, but processes starting up or finishing (an orchestrator's, imports before a step
    takes its share) may still run. Returns how long it waited and the last window's load
    (``quiet`` is None where nothing was looked at or ``/proc/stat`` cannot be read)."""
    import time

    if settings.settle_seconds == 0:
        return {"settle_s": 0.0, "quiet": None, "competing_cores": None}
    start = time.monotonic()
    while True:
        with LoadMeter() as load:
            time.sleep(window)
        if load.result["competing_cores"] is None:
            return {"settle_s": round(time.monotonic() - start, 3), "quiet": None,
                    "competing_cores": None}  # fmt: skip
        busy = load.result["competing_cores"] + (load.result["steal_cores"] or 0.0)
        waited = time.monotonic() - start
        if busy <= settings.max_competing_cores or waited >= settings.settle_seconds:
            return {"settle_s": round(waited, 3), "quiet": busy <= settings.max_competing_cores,
                    "competing_cores": round(busy, 4)}  # fmt: skip


@contextmanager
def measuring(what: Path, settings: BenchmarkSettings) -> Iterator[dict[str, Any]]:
    """Hold the host's lock exclusively while measuring ``what``, once the machine is quiet
    (:func:`settle`); yields the hold's record, which gets its release time when the hold ends.
    Within an outer hold, the machine was settled by the outer one (if it was not, now)."""
    lock = host_lock()
    with lock.exclusive(str(what)) as hold:
        outer = lock.outermost
        if outer.settled is None:
            outer.settled = settle(settings)
        record = {**hold.to_dict(), "settled": outer.settled}
        yield record
    record["released"] = hold.released


def request(
    model: Path,
    data: Path | None,
    batch: int,
    target: Target,
    settings: BenchmarkSettings,
    *,
    min_runs: int | None = None,
    min_seconds: float | None = None,
) -> dict[str, Any]:
    return {
        "model": str(model),
        "data": str(data) if data else None,
        "batch": batch,
        "threads": target.threads,
        "provider": target.execution_provider,
        "warmup": settings.warmup,
        "min_runs": min_runs if min_runs is not None else settings.min_runs,
        "min_seconds": min_seconds if min_seconds is not None else settings.min_seconds,
        "max_runs": settings.max_runs,
        "max_seconds": settings.max_seconds,
        "target_rel_ci": settings.target_rel_ci,
        "energy": EnergyMeter().available,
    }


def summarize(samples_ms: list[float], confidence: float) -> dict[str, Any]:
    """Percentiles with their one-sided upper bounds, and the median's two-sided interval."""
    ms = np.asarray(samples_ms, dtype=np.float64)
    out: dict[str, Any] = {
        "runs": int(ms.size),
        "mean_ms": float(ms.mean()),
        "std_ms": float(ms.std()),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
    }
    for p in PERCENTILES:
        out[f"p{p}_ms"] = float(np.percentile(ms, p))
        out[f"p{p}_upper_ms"] = percentile_upper_bound(ms, p, confidence)
    interval = median_interval(ms, confidence)
    out["median_interval_ms"] = list(interval) if interval else None
    out["confidence"] = confidence
    return out


def theoretical_limit(cost: GraphCost, target: Target) -> dict[str, Any] | None:
    """The least time the graph's MACs allow at the CPU's nominal peak for its instruction set.

    This is compute only, and a true lower bound. Memory is not turned into a bound: no
    portable measurement reaches the bandwidth ONNX Runtime's prepacked kernels get (on the
    development machine an ONNX Runtime GEMV read 25 GB/s while the digits CNN's prepacked
    Gemm streamed its weights at over 45 GB/s), so such a "bound" would be beaten. Weight
    traffic is reported as measured effective bandwidth instead.
    """
    if target.execution_provider != "cpu":
        return None
    cpu = cpu_info()
    peak_fp, how_fp = peak_macs_per_second(cpu, target.threads, int8=False)
    peak_i8, how_i8 = peak_macs_per_second(cpu, target.threads, int8=True)
    if peak_fp is None or peak_i8 is None:
        return {"note": how_fp}
    compute_s = cost.macs_fp / peak_fp + cost.macs_int8 / peak_i8
    return {
        "min_ms": compute_s * 1e3,
        "peak_fp32_macs_per_s": peak_fp,
        "peak_int8_macs_per_s": peak_i8,
        "derivation": [how_fp, how_i8],
    }


def row_shapes(data: Path | None) -> dict[str, tuple[int, ...]]:
    """One row's shape of each input of a split (what sizes a model's other symbolic axes)."""
    if data is None:
        return {}
    with np.load(data, allow_pickle=False) as arrays:
        if "x" in arrays.files:  # one unnamed input: it sizes every input of one-input models
            return {"*": tuple(arrays["x"].shape[1:])}
        return {k.removeprefix("input."): tuple(arrays[k].shape[1:])
                for k in arrays.files if k.startswith("input.")}  # fmt: skip


def benchmark(
    model: Path,
    data: Path | None,
    out: Path,
    target: Target,
    settings: BenchmarkSettings,
) -> dict[str, Any]:
    """Measure ``model`` at each of ``target.batch_sizes`` and write ``benchmark.json`` to ``out``.

    ``data`` is a split written by prepare_data whose rows are fed to the model (None: random
    inputs of the model's declared shape).
    """
    energy = EnergyMeter().available
    batches: dict[str, Any] = {}
    used: list[str] = []
    with measuring(model, settings) as hold:
        raws = {
            b: run_worker(request(model, data, b, target, settings)) for b in target.batch_sizes
        }
    rows = row_shapes(data)
    for batch, raw in raws.items():
        used = raw["providers_used"]
        cost = graph_cost(model, batch, rows)
        stats = summarize(raw["samples_ms"], settings.confidence)
        # Nodes whose shapes ONNX cannot infer (ONNX Runtime's fused contrib ops) hide their
        # MACs: say "unknown" rather than report a count that is too low, or a limit from it.
        counted = not cost.unknown_nodes
        limit = theoretical_limit(cost, target) if counted else None
        if limit and "min_ms" in limit:
            limit["fraction_of_p50"] = limit["min_ms"] / stats["p50_ms"]
        weight_gb_per_s = cost.weight_bytes / (stats["p50_ms"] / 1e3) / 1e9
        runs = stats["runs"]
        batches[str(batch)] = {
            "batch": batch,
            **stats,
            "throughput_per_s": batch * runs / raw["wall_seconds"],
            "session_create_ms": raw["session_create_ms"],
            "first_inference_ms": raw["first_inference_ms"],
            "stop_reason": raw["stop_reason"],
            "peak_rss_mb": raw["peak_rss_mb"],
            "session_rss_mb": raw["rss_loaded_mb"] - raw["rss_start_mb"],
            "cpu_seconds_per_inference": raw["cpu_seconds"] / runs,
            "energy_joules_per_inference": (
                raw["energy_joules"] / runs if raw["energy_joules"] is not None else None
            ),
            "macs": cost.macs if counted else None,
            "uncounted_nodes": cost.unknown_nodes,
            "limit": limit,
            "effective_weight_gb_per_s": weight_gb_per_s,
            "load": raw["load"],
            "samples_ms": raw["samples_ms"],
        }
    first_cost = graph_cost(model, 1, rows)
    record = {
        "model": str(model),
        "size_bytes": model.stat().st_size,
        "parameters": first_cost.parameters,
        "weight_bytes": first_cost.weight_bytes,
        "macs_per_example": None if first_cost.unknown_nodes else first_cost.macs,
        "macs_int8_per_example": None if first_cost.unknown_nodes else first_cost.macs_int8,
        "uncounted_nodes": first_cost.unknown_nodes,
        "energy_source": "RAPL package energy"
        if energy
        else "none: no readable energy counter here; cpu_seconds_per_inference is reported instead",
        "batches": batches,
        "host_lock": hold,
        "disturbed": disturbance([b["load"] for b in batches.values()], settings),
        "settings": settings.model_dump(),
        "environment": environment(target.threads, target.execution_provider, used),
    }
    write_json(out, record)
    return record
